"""``Consumer``: reads assigned partitions from their leaders, in order.

The consumer keeps, per assigned partition, a *position* (the offset of the
next record ``poll`` returns) and a fetcher task that long-polls the
partition's leader (``Fetch`` with ``fetch_max_wait_ms``) from its *fetch
offset* and buffers the decoded records. ``poll`` hands buffered records
over, up to ``max_poll_records``, taking partitions in turn.

Invariants:

- Per partition, records are returned in offset order, each once, with no
  gap: the fetch offset only advances past records appended to the buffer,
  the position only past records returned, and ``seek`` (or a reset) drops
  the buffer and restarts the fetcher from the new position. A fetcher
  started before a seek never touches the partition again (it is cancelled
  and its generation no longer matches).
- A fetch returns whole batches; records before the fetch offset (the
  start of a batch the offset falls into) are skipped.
- A partition's fetcher stops fetching once its buffer holds
  ``fetch_max_bytes`` and waits for ``poll`` to drain it; the fetch that
  crosses the limit may bring up to ``fetch_max_bytes`` more, so a buffer
  can reach about twice that.
- The consumer owns its tasks: ``assign``/``seek`` cancel the fetchers
  they replace and keep them until they have finished (``poll`` drops the
  finished ones, ``close`` cancels and awaits all).

Leader moves: ``NOT_LEADER`` answers, unreachable nodes and timeouts make
the fetcher look the leader up again and retry with backoff, from the same
offset. ``OFFSET_OUT_OF_RANGE``: when the fetch offset is one the consumer
reached by reading (or got from the server) but lies above a new leader's
high watermark, the leader has not caught up yet and the fetch is retried;
otherwise ``auto_offset_reset`` decides: ``"earliest"`` (log start),
``"latest"`` (high watermark) or ``"error"`` (``poll`` raises
``OffsetOutOfRangeError`` once and the partition waits for a ``seek``).
A partition without a position starts where ``auto_offset_reset`` says
(under ``"error"``, ``poll`` raises ``OffsetOutOfRangeError`` with reason
``NO_OFFSET`` once and the partition waits for a ``seek``).

Consumer groups (``subscribe``, committed offsets) need the group
coordinator, which the server does not have yet; ``subscribe`` raises
``NotImplementedError``. The per-partition state and ``assign`` are what a
group member will drive when it arrives.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import grpc

from client.errors import (
    ClientClosedError,
    DeliveryTimeoutError,
    InvalidBatchError,
    NotLeaderError,
    OffsetOutOfRangeError,
    RaftlogError,
    from_rpc_error,
)
from client.metadata import MetadataCache, TopicPartition, client_transport
from raftlog.v1 import log_pb2
from raftlog.v1.record_batch import InvalidBatch, decode_records, parse_header

__all__ = ["Consumer", "ConsumerRecord", "OffsetReset"]

T = TypeVar("T")


class OffsetReset(enum.StrEnum):
    """Where a partition without a valid position starts."""

    EARLIEST = "earliest"
    LATEST = "latest"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ConsumerRecord:
    """One record as read from a partition."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class _PartitionState:
    """One assigned partition. Touched only on the consumer's event loop."""

    __slots__ = (
        "buffer",
        "buffered_bytes",
        "error",
        "fetch_confirmed",
        "fetch_offset",
        "generation",
        "parked",
        "position",
        "room",
        "task",
        "tp",
    )

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.position: int | None = None  # next offset poll() returns
        self.fetch_offset: int | None = None  # next offset to fetch
        # True when fetch_offset came from the log itself (records read, or
        # an offset the server listed): it was at or below a committed high
        # watermark, so "out of range above the end" means a lagging leader.
        self.fetch_confirmed = False
        self.buffer: deque[ConsumerRecord] = deque()
        self.buffered_bytes = 0
        self.error: RaftlogError | None = None  # raised by the next poll
        self.parked = False  # its error was raised: no fetcher until a seek
        self.generation = 0
        self.task: asyncio.Task[None] | None = None
        self.room = asyncio.Event()  # set while the buffer has room

    def reposition(self, offset: int | None, *, confirmed: bool) -> None:
        """Move to ``offset`` (None: decided by the reset policy), dropping
        the buffer; the caller retires the fetcher."""
        self.position = offset
        self.fetch_offset = offset
        self.fetch_confirmed = confirmed
        self.buffer.clear()
        self.buffered_bytes = 0
        self.error = None
        self.parked = False
        self.generation += 1
        self.room.set()


class Consumer:
    """Reads records from assigned partitions; see the module docstring.

    ``bootstrap``: node addresses. ``max_poll_records``: most records one
    ``poll`` returns. ``fetch_max_bytes``: soft limit of one fetch (and of
    a partition's buffer). ``fetch_max_wait_ms``: how long the leader holds
    a fetch that has no data yet. ``auto_offset_reset``: see the module
    docstring. ``request_timeout_s``: deadline of one call beyond the long
    poll wait. ``api_timeout_s``: how long ``seek_to_*`` keep retrying.
    ``api_key``, ``tenant``: who is calling (``client.auth``).
    ``address_map``: advertised node address -> address to dial.
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        max_poll_records: int = 500,
        fetch_max_bytes: int = 1 << 20,
        fetch_max_wait_ms: int = 500,
        auto_offset_reset: OffsetReset | str = OffsetReset.EARLIEST,
        request_timeout_s: float = 10.0,
        api_timeout_s: float = 60.0,
        retry_backoff_ms: float = 20.0,
        retry_backoff_max_ms: float = 1000.0,
        api_key: str | None = None,
        tenant: str | None = None,
        address_map: Mapping[str, str] | None = None,
    ) -> None:
        if max_poll_records < 1 or fetch_max_bytes < 1 or fetch_max_wait_ms < 0:
            raise ValueError("max_poll_records and fetch_max_bytes must be >= 1, fetch_max_wait_ms >= 0")
        self._pool, self._metadata, self._backoff = client_transport(
            bootstrap,
            request_timeout_s=request_timeout_s,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms,
            api_key=api_key,
            tenant=tenant,
            address_map=address_map,
        )
        self._max_poll_records = max_poll_records
        self._fetch_max_bytes = fetch_max_bytes
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._reset = OffsetReset(auto_offset_reset)
        self._request_timeout_s = request_timeout_s
        self._api_timeout_s = api_timeout_s
        self._states: dict[TopicPartition, _PartitionState] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._data = asyncio.Event()  # set when some buffer gained records or an error
        self._next_index = 0  # where the next poll starts taking records
        self._dirty = True  # some partition may need a fetcher started
        self._closed = False

    # --- context manager and iteration ------------------------------------------

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[ConsumerRecord]:
        """Records as they arrive, until the consumer is closed. The
        position advances per record handed out, so leaving the loop early
        loses nothing."""
        while not self._closed:
            for record in await self.poll(1.0, max_records=1):
                yield record

    @property
    def metadata(self) -> MetadataCache:
        return self._metadata

    # --- assignment and positions -------------------------------------------------

    def subscribe(self, topics: Iterable[str]) -> None:
        """Not yet: group membership needs the consumer group coordinator."""
        raise NotImplementedError(
            "subscribe() needs consumer groups, which arrive with the group coordinator; "
            "use assign([(topic, partition), ...]) and manage positions yourself for now"
        )

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read exactly these partitions from now on. Partitions kept from
        the previous assignment keep their positions; new ones start where
        ``auto_offset_reset`` says unless you ``seek`` them."""
        self._check_open()
        wanted = [TopicPartition(t, p) for t, p in partitions]
        for tp, state in list(self._states.items()):
            if tp not in wanted:
                self._retire(state)
                del self._states[tp]
        for tp in wanted:
            if tp not in self._states:
                self._states[tp] = _PartitionState(tp)
                self._dirty = True

    def assignment(self) -> set[TopicPartition]:
        return set(self._states)

    def position(self, tp: tuple[str, int]) -> int | None:
        """The offset of the next record ``poll`` returns for ``tp``; None
        until it is known (a fresh assignment before the first fetch)."""
        return self._state(tp).position

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``topic``/``partition`` from ``offset`` on. An offset outside
        the log is handled by ``auto_offset_reset`` at the next fetch."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        state = self._state((topic, partition))
        self._retire(state)
        state.reposition(offset, confirmed=False)

    async def seek_to_beginning(self, *partitions: tuple[str, int]) -> None:
        """Move ``partitions`` (default: all assigned) to their log start."""
        for tp in self._targets(partitions):
            response = await self._list_offsets(tp)
            self._seek_confirmed(tp, int(response.log_start_offset))

    async def seek_to_end(self, *partitions: tuple[str, int]) -> None:
        """Move ``partitions`` (default: all assigned) to their high
        watermark: only records written from now on are read."""
        for tp in self._targets(partitions):
            response = await self._list_offsets(tp)
            self._seek_confirmed(tp, int(response.high_watermark))

    async def seek_to_timestamp(
        self, timestamp_ms: int, *partitions: tuple[str, int]
    ) -> dict[TopicPartition, int | None]:
        """Move ``partitions`` (default: all assigned) to the first record
        whose timestamp is at or after ``timestamp_ms``. A partition with no
        such record moves to its end; its entry in the answer is None
        (the others give the new position)."""
        found: dict[TopicPartition, int | None] = {}
        for tp in self._targets(partitions):
            response = await self._list_offsets(tp, timestamp_ms)
            if not response.HasField("offset_for_timestamp"):
                self._seek_confirmed(tp, int(response.high_watermark))
                found[tp] = None
                continue
            offset = await self._first_at_or_after(tp, int(response.offset_for_timestamp), timestamp_ms)
            self._seek_confirmed(tp, offset)
            found[tp] = offset
        return found

    # --- polling -----------------------------------------------------------------

    async def poll(self, timeout_s: float = 1.0, *, max_records: int | None = None) -> list[ConsumerRecord]:
        """Records from the assigned partitions, waiting up to ``timeout_s``
        for some to arrive; an empty list when none did. Raises a partition's
        non-retriable error (``OffsetOutOfRangeError`` under the ``"error"``
        policy, ``UnknownTopicOrPartitionError``...) once; that partition
        then stays idle until it is sought."""
        self._check_open()
        limit = max_records or self._max_poll_records
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        if self._dirty:
            self._start_fetchers()
        while True:
            records = self._take(limit)
            if records:
                return records
            self._raise_error()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            self._data.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._data.wait()
            except TimeoutError:
                return []
            self._check_open()

    async def close(self) -> None:
        """Stop every fetcher and close the channels. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._data.set()  # wake a poll() waiting in another task
        for state in self._states.values():
            self._retire(state)
        tasks = list(self._retired)
        self._retired.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._pool.close()

    # --- internals ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the consumer is closed")

    def _state(self, tp: tuple[str, int]) -> _PartitionState:
        state = self._states.get(TopicPartition(*tp))
        if state is None:
            raise ValueError(f"{tp[0]}/{tp[1]} is not assigned to this consumer; assign() it first")
        return state

    def _targets(self, partitions: Sequence[tuple[str, int]]) -> list[TopicPartition]:
        self._check_open()
        targets = [TopicPartition(*tp) for tp in partitions] if partitions else list(self._states)
        for tp in targets:
            self._state(tp)
        return targets

    def _seek_confirmed(self, tp: TopicPartition, offset: int) -> None:
        state = self._states.get(tp)
        if state is not None:  # unassigned while we asked the server
            self._retire(state)
            state.reposition(offset, confirmed=True)

    def _retire(self, state: _PartitionState) -> None:
        self._dirty = True
        task, state.task = state.task, None
        if task is not None:
            task.cancel()
            self._retired.add(task)

    def _start_fetchers(self) -> None:
        self._dirty = False
        for task in [t for t in self._retired if t.done()]:
            self._retired.discard(task)
        for state in self._states.values():
            if state.task is None and state.error is None and not state.parked:
                state.task = asyncio.create_task(
                    self._fetch_loop(state, state.generation),
                    name=f"raftlog-fetch-{state.tp.topic}-{state.tp.partition}",
                )

    def _take(self, limit: int) -> list[ConsumerRecord]:
        states = list(self._states.values())
        if not states:
            return []
        taken: list[ConsumerRecord] = []
        start = self._next_index % len(states)
        for i in range(len(states)):
            state = states[(start + i) % len(states)]
            while state.buffer and len(taken) < limit:
                record = state.buffer.popleft()
                state.buffered_bytes -= _record_bytes(record)
                state.position = record.offset + 1
                taken.append(record)
            if state.buffered_bytes < self._fetch_max_bytes:
                state.room.set()
            if len(taken) >= limit:
                # Start after this partition next time, so a busy partition
                # cannot starve the others.
                self._next_index = (start + i + 1) % len(states)
                break
        return taken

    def _raise_error(self) -> None:
        for state in self._states.values():
            if state.error is not None and not state.buffer:
                error, state.error = state.error, None
                # Idle (no fetcher) until a seek: retrying would only raise
                # the same error again.
                state.parked = True
                self._retire(state)
                raise error

    async def _fetch_loop(self, state: _PartitionState, generation: int) -> None:
        """Fill ``state``'s buffer from the leader until cancelled; stores a
        non-retriable error in ``state.error`` and stops."""
        try:
            await self._fetch_forever(state, generation)
        except asyncio.CancelledError:
            raise
        except RaftlogError as error:
            if state.generation == generation:
                state.error = error
                self._data.set()
        except Exception as exc:  # a bug: surface it from poll() instead of hanging
            if state.generation == generation:
                state.error = RaftlogError(f"fetcher failed: {exc!r}", reason="CLIENT_BUG")
                self._data.set()

    async def _fetch_forever(self, state: _PartitionState, generation: int) -> None:
        topic, partition = state.tp
        attempt = 0
        while state.generation == generation:
            if state.buffered_bytes >= self._fetch_max_bytes:
                state.room.clear()
                await state.room.wait()
                continue
            if state.fetch_offset is None:
                offset = await self._reset_offset(state.tp, None)
                if state.generation != generation:
                    return
                state.reposition(offset, confirmed=True)
                generation = state.generation  # this task carries on at the new generation
                continue
            offset = state.fetch_offset
            address: str | None = None
            try:
                address = await self._metadata.require_leader(topic, partition)
                response: log_pb2.FetchResponse = await self._pool.log(address).Fetch(
                    log_pb2.FetchRequest(
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        max_bytes=self._fetch_max_bytes,
                        max_wait_ms=self._fetch_max_wait_ms,
                    ),
                    timeout=self._fetch_max_wait_ms / 1000 + self._request_timeout_s,
                )
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
            except RaftlogError as exc:
                error = exc
            else:
                if state.generation != generation:
                    return
                attempt = 0
                if not self._append(state, response, offset) and self._fetch_max_wait_ms == 0:
                    # Without a long poll the leader answers at once: do not spin.
                    await asyncio.sleep(self._backoff.initial_s)
                continue
            if state.generation != generation:
                return
            if isinstance(error, OffsetOutOfRangeError):
                above_end = error.high_watermark is not None and offset > error.high_watermark
                if above_end and state.fetch_confirmed:
                    # A new leader that has not applied up to where we read.
                    await asyncio.sleep(self._backoff.delay(attempt))
                    attempt += 1
                    continue
                new_offset = await self._reset_offset(state.tp, error)
                if state.generation != generation:
                    return
                state.reposition(new_offset, confirmed=True)
                generation = state.generation
                continue
            if not error.retriable:
                raise error
            self._after_retriable(topic, partition, address, error)
            await asyncio.sleep(self._backoff.delay(attempt))
            attempt += 1

    def _after_retriable(self, topic: str, partition: int, address: str | None, error: RaftlogError) -> None:
        if isinstance(error, NotLeaderError) and error.leader_address:
            self._metadata.leader_moved(topic, partition, error.leader_address)
        elif address is not None:
            self._metadata.forget_leader(topic, partition, address)

    def _append(self, state: _PartitionState, response: log_pb2.FetchResponse, offset: int) -> bool:
        """Buffer the fetched records from ``offset`` on; whether there were any."""
        topic, partition = state.tp
        next_offset = offset
        for batch in response.batches:
            try:
                header = parse_header(batch)
                if header.last_offset < next_offset:
                    continue
                decoded = decode_records(batch)
            except InvalidBatch as exc:
                raise InvalidBatchError(
                    f"{topic}/{partition}: a fetched batch near offset {next_offset} does not decode "
                    f"({exc.message}); seek past it to skip it",
                    reason=str(exc.reason),
                ) from None
            for r in decoded:
                if r.offset < next_offset:
                    continue  # the fetch starts at the batch holding `offset`
                record = ConsumerRecord(topic, partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers)
                state.buffer.append(record)
                state.buffered_bytes += _record_bytes(record)
            next_offset = header.last_offset + 1
        if next_offset == offset:
            return False
        state.fetch_offset = next_offset
        state.fetch_confirmed = True
        self._data.set()
        return True

    async def _reset_offset(self, tp: TopicPartition, cause: OffsetOutOfRangeError | None) -> int:
        """Where ``tp`` goes when its position is missing or out of range."""
        if self._reset is OffsetReset.ERROR:
            if cause is not None:
                raise cause
            raise OffsetOutOfRangeError(
                f"{tp.topic}/{tp.partition} has no position and auto_offset_reset is 'error'; "
                "seek() it first",
                reason="NO_OFFSET",
            )
        if cause is not None:
            known = cause.log_start_offset if self._reset is OffsetReset.EARLIEST else cause.high_watermark
            if known is not None:
                return known
        response = await self._list_offsets(tp)
        if self._reset is OffsetReset.EARLIEST:
            return int(response.log_start_offset)
        return int(response.high_watermark)

    async def _list_offsets(
        self, tp: TopicPartition, timestamp_ms: int | None = None
    ) -> log_pb2.ListOffsetsResponse:
        """``ListOffsets`` on the leader, retried for ``api_timeout_s``."""
        request = log_pb2.ListOffsetsRequest(topic=tp.topic, partition=tp.partition)
        if timestamp_ms is not None:
            request.timestamp_ms = timestamp_ms

        async def call(address: str) -> log_pb2.ListOffsetsResponse:
            response: log_pb2.ListOffsetsResponse = await self._pool.log(address).ListOffsets(
                request, timeout=self._request_timeout_s
            )
            return response

        return await self._on_leader(tp, call)

    async def _first_at_or_after(self, tp: TopicPartition, base_offset: int, timestamp_ms: int) -> int:
        """The server names the first batch whose newest record is recent
        enough; the answer is the first record in it that is."""

        async def call(address: str) -> log_pb2.FetchResponse:
            response: log_pb2.FetchResponse = await self._pool.log(address).Fetch(
                log_pb2.FetchRequest(topic=tp.topic, partition=tp.partition, offset=base_offset, max_bytes=1),
                timeout=self._request_timeout_s,
            )
            return response

        response = await self._on_leader(tp, call)
        for batch in response.batches[:1]:
            try:
                records = decode_records(batch)
            except InvalidBatch:
                return base_offset
            for record in records:
                if record.offset >= base_offset and record.timestamp_ms >= timestamp_ms:
                    return record.offset
            return parse_header(batch).last_offset + 1
        return base_offset

    async def _on_leader(self, tp: TopicPartition, call: Callable[[str], Awaitable[T]]) -> T:
        """``call(leader address)``, following leader moves and retrying
        retriable errors for ``api_timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._api_timeout_s
        attempt = 0
        while True:
            self._check_open()
            address: str | None = None
            try:
                address = await self._metadata.require_leader(tp.topic, tp.partition)
                return await call(address)
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
            except RaftlogError as exc:
                error = exc
            if not error.retriable:
                raise error
            if loop.time() >= deadline:
                raise DeliveryTimeoutError(
                    f"{tp.topic}/{tp.partition}: no answer within {self._api_timeout_s:g} s; last error: {error}",
                    cause=error,
                )
            self._after_retriable(tp.topic, tp.partition, address, error)
            await asyncio.sleep(self._backoff.delay(attempt))
            attempt += 1


def _record_bytes(record: ConsumerRecord) -> int:
    """What a buffered record counts against ``fetch_max_bytes``."""
    size = 32
    if record.key is not None:
        size += len(record.key)
    if record.value is not None:
        size += len(record.value)
    return size
