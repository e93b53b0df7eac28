"""The consumer's fetching: per-partition fetch state and one fetcher task per
partition, in long-poll or stream mode, filling per-partition buffers that
``Consumer.poll`` drains (``take``).

Fetch modes (``FetchMode``): ``"poll"`` long-polls (one ``Fetch`` per
answer, held up to ``fetch_max_wait_ms`` when there is nothing new);
``"stream"`` opens one ``StreamFetch`` per partition at the fetch offset and
reads the responses the leader pushes as records commit, so an idle
partition costs one open stream and no requests. Both modes buffer through
the same path (``_append``) and go through the SDK's call path
(client/leader_calls.py: locate the leader, per-attempt timeout, error
mapping, ``max(backoff, retry_after)``, redirects, silent nodes). A stream
that ends (leader move, unreachable node, a silent stream: nothing, not even
a heartbeat, for ``stream_heartbeat_ms`` plus the attempt timeout) is opened
again at the fetch offset, which is where the records in the buffer end, so
nothing is skipped or read twice. A stream belongs to its fetcher task:
``seek``, ``assign``, revocation and ``close`` cancel the task and the task
cancels its stream. While a partition's buffer is full the fetcher stops
reading its stream (it stays open): gRPC's flow-control window then holds
the server back.

Invariants:

- Per partition, records are buffered in offset order, each once, with no
  gap: the fetch offset only advances past records appended to the buffer,
  and a reposition (seek, reset) drops the buffer and bumps the partition's
  generation; a fetcher of an older generation never touches the partition
  again (it is cancelled, and checks its generation after every await).
- A fetch returns whole batches; records before the fetch offset (the
  start of a batch the offset falls into) are skipped.
- A partition's fetcher stops fetching once its buffer holds
  ``fetch_max_bytes`` and waits for ``take`` to drain it; the fetch (or
  stream response) that crosses the limit may bring up to
  ``fetch_max_bytes`` more, so a buffer can reach about twice that (plus,
  in stream mode, what gRPC holds in the stream's window).
- The fetcher owns its tasks: ``retire`` cancels a task and keeps it until
  it has finished (``start_fetchers`` drops the finished ones, ``close``
  awaits all).

Offsets: ``OFFSET_OUT_OF_RANGE`` when the fetch offset is one the consumer
reached by reading (or got from the server) but lies above a new leader's
high watermark means the leader has not caught up yet: the fetch is
retried. Otherwise ``auto_offset_reset`` decides: ``"earliest"`` (log
start), ``"latest"`` (high watermark) or ``"error"`` (the partition's error
is raised by ``raise_error`` once and it waits for a seek). A partition
without a position starts where ``auto_offset_reset`` says (under
``"error"``, ``OffsetOutOfRangeError`` with reason ``NO_OFFSET``).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import NamedTuple

import grpc

from client.errors import (
    InvalidBatchError,
    OffsetOutOfRangeError,
    RaftlogError,
    RequestTimeoutError,
    UnavailableError,
    from_rpc_error,
)
from client.leader_calls import Attempts, LeaderCalls, PartitionRoute, UnaryCall, leader_trailer
from client.metadata import ChannelPool, TopicPartition
from client.offset_lookup import OffsetLookup
from client.trace_context import untraced
from raftlog.v1 import log_pb2
from raftlog.v1.record_batch import InvalidBatch, decode_records_as, parse_header

__all__ = ["ConsumerRecord", "FetchMode", "Fetcher", "OffsetReset", "PartitionState", "record_bytes"]


class OffsetReset(enum.StrEnum):
    """Where a partition without a valid position starts."""

    EARLIEST = "earliest"
    LATEST = "latest"
    ERROR = "error"


class FetchMode(enum.StrEnum):
    """How a partition's records are fetched (module docstring)."""

    POLL = "poll"
    STREAM = "stream"


class ConsumerRecord(NamedTuple):
    """One record as read from a partition. A NamedTuple (like
    kafka-python's): one is built per record, and a frozen dataclass costs
    about four times as much to build."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def record_bytes(record: ConsumerRecord) -> int:
    """What a buffered record counts against ``fetch_max_bytes``."""
    size = 32
    if record.key is not None:
        size += len(record.key)
    if record.value is not None:
        size += len(record.value)
    return size


class PartitionState:
    """One assigned partition. Touched only on the consumer's event loop."""

    __slots__ = (
        "awaiting_committed",
        "buffer",
        "buffered_bytes",
        "error",
        "fetch_confirmed",
        "fetch_offset",
        "generation",
        "parked",
        "position",
        "processed",
        "room",
        "task",
        "tp",
    )

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.position: int | None = None  # next offset poll() returns
        # The position when poll() was last called: the application has
        # finished with the records before it (what auto commit commits).
        self.processed: int | None = None
        # Granted by the group; no fetcher until the committed offset is known.
        self.awaiting_committed = False
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
        self.awaiting_committed = False
        if offset is not None and self.processed is not None and offset < self.processed:
            self.processed = offset  # sought back: those records are to be processed again
        self.buffer.clear()
        self.buffered_bytes = 0
        self.error = None
        self.parked = False
        self.generation += 1
        self.room.set()


class Fetcher:
    """The partitions a consumer reads, their buffers and fetcher tasks.

    ``offsets`` (client/offset_lookup.py, with ``api_timeout_s`` and
    ``check_open``) looks offsets up for resets and seeks; fetches retry
    until cancelled."""

    def __init__(
        self,
        pool: ChannelPool,
        calls: LeaderCalls,
        *,
        mode: FetchMode,
        max_bytes: int,
        max_wait_ms: int,
        stream_heartbeat_ms: int,
        reset: OffsetReset,
        api_timeout_s: float,
        check_open: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._calls = calls
        self._metadata = calls.metadata
        self._backoff = calls.backoff
        self._mode = mode
        self.max_bytes = max_bytes
        self._max_wait_ms = max_wait_ms
        self._stream_heartbeat_ms = stream_heartbeat_ms
        self._reset = reset
        self.offsets = OffsetLookup(pool, calls, api_timeout_s=api_timeout_s, check_open=check_open)
        self.states: dict[TopicPartition, PartitionState] = {}
        self.data = asyncio.Event()  # set when some buffer gained records or an error
        self.dirty = True  # some partition may need a fetcher started
        self._retired: set[asyncio.Task[None]] = set()
        self._next_index = 0  # where the next take starts

    # --- the partitions ------------------------------------------------------------

    def owned(self) -> Mapping[TopicPartition, PartitionState]:
        return self.states

    def add(self, tp: TopicPartition, *, awaiting_committed: bool = False) -> PartitionState:
        """Start reading ``tp`` (replacing any state it had)."""
        state = PartitionState(tp)
        state.awaiting_committed = awaiting_committed
        self.states[tp] = state
        self.dirty = True
        return state

    def retire(self, state: PartitionState) -> None:
        """Cancel ``state``'s fetcher (kept until it has finished)."""
        self.dirty = True
        task, state.task = state.task, None
        if task is not None:
            task.cancel()
            self._retired.add(task)

    def detach(self, partitions: Iterable[TopicPartition]) -> list[PartitionState]:
        """Stop reading ``partitions``: retire their fetchers and drop their
        buffers (``take`` never returns their records again); the states
        (positions) are returned."""
        detached: list[PartitionState] = []
        for tp in sorted(partitions):
            state = self.states.pop(tp, None)
            if state is None:
                continue
            self.retire(state)
            state.generation += 1  # a fetcher that has not seen its cancellation yet is stale
            state.buffer.clear()
            state.buffered_bytes = 0
            detached.append(state)
        return detached

    def wake(self) -> None:
        """Something changed: start fetchers where needed, wake ``poll``."""
        self.dirty = True
        self.data.set()

    def seek_confirmed(self, tp: TopicPartition, offset: int) -> None:
        """Move ``tp`` to an offset the server listed (if still read)."""
        state = self.states.get(tp)
        if state is not None:  # unassigned while we asked the server
            self.retire(state)
            state.reposition(offset, confirmed=True)

    def start_fetchers(self) -> None:
        self.dirty = False
        for task in [t for t in self._retired if t.done()]:
            self._retired.discard(task)
        for state in self.states.values():
            if (
                state.task is None
                and state.error is None
                and not state.parked
                and not state.awaiting_committed
            ):
                state.task = asyncio.create_task(
                    self._fetch_loop(state, state.generation),
                    name=f"raftlog-fetch-{state.tp.topic}-{state.tp.partition}",
                    context=untraced(),  # outlives the caller's span: client/trace_context.py
                )

    def take(self, limit: int) -> list[ConsumerRecord]:
        """Up to ``limit`` buffered records, taking partitions in turn."""
        states = list(self.states.values())
        if not states:
            return []
        taken: list[ConsumerRecord] = []
        start = self._next_index % len(states)
        for i in range(len(states)):
            state = states[(start + i) % len(states)]
            buffer = state.buffer
            count = min(len(buffer), limit - len(taken))
            if count:
                if count == len(buffer):  # all of it: no per-record pops or sizes
                    chunk = list(buffer)
                    buffer.clear()
                    state.buffered_bytes = 0
                else:
                    popleft = buffer.popleft
                    chunk = [popleft() for _ in range(count)]
                    state.buffered_bytes -= sum(map(record_bytes, chunk))
                state.position = chunk[-1].offset + 1
                taken += chunk
            if state.buffered_bytes < self.max_bytes:
                state.room.set()
            if len(taken) >= limit:
                # Start after this partition next time, so a busy partition
                # cannot starve the others.
                self._next_index = (start + i + 1) % len(states)
                break
        return taken

    def raise_error(self) -> None:
        """Raise the first partition error whose records were all taken."""
        for state in self.states.values():
            if state.error is not None and not state.buffer:
                error, state.error = state.error, None
                # Idle (no fetcher) until a seek: retrying would only raise
                # the same error again.
                state.parked = True
                self.retire(state)
                raise error

    async def close(self) -> None:
        """Cancel every fetcher and wait for them all."""
        for state in self.states.values():
            self.retire(state)
        tasks = list(self._retired)
        self._retired.clear()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- one partition's fetcher task ------------------------------------------------

    async def _fetch_loop(self, state: PartitionState, generation: int) -> None:
        """Fill ``state``'s buffer from the leader until cancelled; stores a
        non-retriable error in ``state.error`` and stops."""
        try:
            await self._fetch_forever(state, generation)
        except asyncio.CancelledError:
            raise
        except RaftlogError as error:
            if state.generation == generation:
                state.error = error
                self.data.set()
        except Exception as exc:  # a bug: surface it from poll() instead of hanging
            if state.generation == generation:
                state.error = RaftlogError(f"fetcher failed: {exc!r}", reason="CLIENT_BUG")
                self.data.set()

    async def _fetch_forever(self, state: PartitionState, generation: int) -> None:
        route = PartitionRoute(self._metadata, *state.tp)
        attempts = self._calls.attempts(route, deadline=None)  # the stream's retries
        lagging = 0  # waits for a new leader to catch up
        while state.generation == generation:
            if state.buffered_bytes >= self.max_bytes:
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
            try:
                if self._mode is FetchMode.STREAM:
                    await self._stream(state, generation, attempts, offset)
                else:
                    response = await self._long_poll(route, state.tp, offset)
                    if state.generation != generation:
                        return
                    if not self._append(state, response, offset) and self._max_wait_ms == 0:
                        # Without a long poll the leader answers at once: do not spin.
                        await asyncio.sleep(self._backoff.initial_s)
                lagging = 0
            except OffsetOutOfRangeError as error:
                if state.generation != generation:
                    return
                if state.fetch_offset is not None:
                    offset = state.fetch_offset  # a stream may have moved it before it failed
                above_end = error.high_watermark is not None and offset > error.high_watermark
                if above_end and state.fetch_confirmed:
                    # A new leader that has not applied up to where we read.
                    await asyncio.sleep(self._backoff.delay(lagging))
                    lagging += 1
                    continue
                new_offset = await self._reset_offset(state.tp, error)
                if state.generation != generation:
                    return
                state.reposition(new_offset, confirmed=True)
                generation = state.generation

    async def _long_poll(
        self, route: PartitionRoute, tp: TopicPartition, offset: int
    ) -> log_pb2.FetchResponse:
        """One ``Fetch`` answered, through the call path (retried until it
        is; the attempt timeout is added to the long-poll wait)."""
        request = log_pb2.FetchRequest(
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            max_bytes=self.max_bytes,
            max_wait_ms=self._max_wait_ms,
        )

        def invoke(address: str, timeout: float) -> UnaryCall[log_pb2.FetchResponse]:
            call: UnaryCall[log_pb2.FetchResponse] = self._pool.log(address).Fetch(request, timeout=timeout)
            return call

        return await self._calls.call(route, invoke, deadline=None, extra_timeout_s=self._max_wait_ms / 1000)

    async def _stream(self, state: PartitionState, generation: int, attempts: Attempts, offset: int) -> None:
        """One ``StreamFetch`` opened on the leader and read until it ends;
        the failure that ended it goes through the call path's rules
        (``Attempts.failed``: learn, wait, raise what is not retriable)."""
        address: str | None = None
        trailer = ""
        try:
            address = await attempts.route.address()
            opened, error, trailer = await self._stream_into(state, generation, address, offset)
            if opened:
                attempts.answered(address)  # the leader answered: a failure now is a new one
        except RaftlogError as exc:
            error = exc
        if error is None or state.generation != generation:
            return
        await attempts.failed(address, error, trailer)

    async def _stream_into(
        self, state: PartitionState, generation: int, address: str, offset: int
    ) -> tuple[bool, RaftlogError | None, str]:
        """Read one ``StreamFetch`` from ``address``, starting at ``offset``
        (the fetch offset), into ``state``'s buffer until the stream fails or
        ``generation`` is over. Returns whether a response came (the stream
        opened), the error that ended it (None only when the generation is
        over) and its ``raftlog-leader`` trailer. The stream is cancelled on
        the way out, also when this task is cancelled (seek, assign,
        revocation, close)."""
        topic, partition = state.tp
        call = self._pool.log(address).StreamFetch(
            log_pb2.StreamFetchRequest(
                topic=topic,
                partition=partition,
                offset=offset,
                max_bytes=self.max_bytes,
                max_wait_ms=self._stream_heartbeat_ms,
            ),
            # No deadline: the stream lives as long as this fetcher.
        )
        silent_s = (
            self._stream_heartbeat_ms / 1000 + self._calls.attempt_timeout_s
            if self._stream_heartbeat_ms
            else None
        )
        opened = False
        try:
            while True:
                if state.buffered_bytes >= self.max_bytes:
                    # Not reading lets gRPC's window fill, which stops the
                    # server; the stream stays open meanwhile.
                    state.room.clear()
                    await state.room.wait()
                    if state.generation != generation:
                        return opened, None, ""
                    continue
                try:
                    async with asyncio.timeout(silent_s):
                        response = await call.read()
                except TimeoutError:
                    return (
                        opened,
                        RequestTimeoutError(
                            f"{topic}/{partition}: the stream from {address} sent nothing for {silent_s:g} s",
                            reason="STREAM_SILENT",
                        ),
                        "",
                    )
                except grpc.aio.AioRpcError as exc:
                    return opened, from_rpc_error(exc), leader_trailer(exc.trailing_metadata())
                if state.generation != generation:
                    return opened, None, ""
                if response is grpc.aio.EOF:
                    # The server never ends a stream without a status.
                    return (
                        opened,
                        UnavailableError(
                            f"{topic}/{partition}: the stream from {address} ended without a status",
                            reason="STREAM_ENDED",
                        ),
                        "",
                    )
                opened = True
                fetch_offset = state.fetch_offset
                assert fetch_offset is not None  # set before the stream opened; only a reposition clears it
                self._append(state, response, fetch_offset)
        finally:
            call.cancel()

    def _append(self, state: PartitionState, response: log_pb2.FetchResponse, offset: int) -> bool:
        """Buffer the fetched records from ``offset`` on; whether there were any."""
        topic, partition = state.tp
        build = partial(ConsumerRecord, topic, partition)
        next_offset = offset
        buffer = state.buffer
        for batch in response.batches:
            try:
                header = parse_header(batch)
                if header.last_offset < next_offset:
                    continue
                decoded = decode_records_as(batch, build)
            except InvalidBatch as exc:
                raise InvalidBatchError(
                    f"{topic}/{partition}: a fetched batch near offset {next_offset} does not decode "
                    f"({exc.message}); seek past it to skip it",
                    reason=str(exc.reason),
                ) from None
            if header.base_offset < next_offset:
                # The fetch starts at the batch holding `offset`. By offset,
                # not position: a compacted batch has gaps.
                decoded = [record for record in decoded if record.offset >= next_offset]
            buffer.extend(decoded)
            state.buffered_bytes += sum(map(record_bytes, decoded))
            next_offset = header.last_offset + 1
        if next_offset == offset:
            return False
        state.fetch_offset = next_offset
        state.fetch_confirmed = True
        self.data.set()
        return True

    # --- offsets -------------------------------------------------------------------

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
        response = await self.offsets.list_offsets(tp)
        if self._reset is OffsetReset.EARLIEST:
            return int(response.log_start_offset)
        return int(response.high_watermark)
