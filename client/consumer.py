"""``Consumer``: reads assigned partitions from their leaders, in order.

The consumer keeps, per assigned partition, a *position* (the offset of the
next record ``poll`` returns) and a fetcher task that reads from the
partition's leader from its *fetch offset* and buffers the decoded records.
``poll`` hands buffered records over, up to ``max_poll_records``, taking
partitions in turn.

Fetch modes (``fetch_mode``): ``"poll"`` long-polls (one ``Fetch`` per
answer, held up to ``fetch_max_wait_ms`` when there is nothing new);
``"stream"`` opens one ``StreamFetch`` per partition at the fetch offset and
reads the responses the leader pushes as records commit, so an idle
partition costs one open stream and no requests. Both modes buffer through
the same path (``_append``) and share the error handling below; a stream
that ends (leader move, unreachable node, a silent stream: nothing, not even
a heartbeat, for ``stream_heartbeat_ms`` + ``request_timeout_s``) is opened
again at the fetch offset, which is where the records in the buffer end, so
nothing is skipped or read twice. A stream belongs to its fetcher task:
``seek``, ``assign``, revocation and ``close`` cancel the task and the task
cancels its stream. While a partition's buffer is full the fetcher stops
reading its stream (it stays open): gRPC's flow-control window then holds
the server back.

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
  ``fetch_max_bytes`` and waits for ``poll`` to drain it; the fetch (or
  stream response) that crosses the limit may bring up to
  ``fetch_max_bytes`` more, so a buffer can reach about twice that (plus,
  in stream mode, what gRPC holds in the stream's window).
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

Consumer groups. With ``group_id``, ``subscribe(topics)`` makes the
consumer a member of the group (client/group_member.py runs the
membership: one task per consumer, owned, cancelled on close): the group's
coordinator splits the subscribed topics' partitions among the members and
moves them when members come and go. ``assign`` and ``subscribe`` are
exclusive. A partition granted to this consumer starts at the group's
committed offset (``auto_offset_reset`` when there is none); a partition
revoked stops at once: its fetcher is stopped, its buffered records
dropped, and (auto commit) its processed position committed, all before
the next heartbeat reports it released. When the membership is lost
(``FENCED_MEMBER``, ``UNKNOWN_MEMBER_ID``, no heartbeat answered for
``session_timeout_ms``), every partition is dropped without committing and
the consumer joins again. ``on_assigned``, ``on_revoked`` and ``on_lost``
(default: ``on_revoked``) are told, on the member task; keep them short.

Commits name, per partition, the offset of the next record to read:

- ``commit()`` commits the *position* (last record ``poll`` returned + 1)
  of every owned partition; ``commit(offsets)`` commits what it is given.
- Auto commit (``enable_auto_commit``, every ``auto_commit_interval_ms``,
  and on revocation) commits the *processed* position: the position when
  ``poll`` was last called, as Kafka does. The records the latest ``poll``
  returned may still be in the application's hands, so they are not
  committed until the next ``poll`` (or ``commit()``, or ``close()``).
- ``close()`` (auto commit) commits the positions, then leaves the group;
  leaving ``async with`` on an exception commits the processed positions
  only.

The group invariant (at least once): **a committed offset never passes a
record that ``poll`` has not returned to the application**, so a record
that was committed past was delivered, and no record is skipped by a new
owner that starts at the committed offset. Positions move only as ``poll``
returns records (or on ``seek``/offset reset, which the application or its
policy asked for), a commit snapshots positions and the member epoch in one
synchronous step, and a killed member leaves its last commit behind. The
price is duplicates: records after the last commit are delivered again to
the next owner of their partition after a rebalance or a crash.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import os
import socket
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Literal, NamedTuple, TypeVar

import grpc

from client.errors import (
    ClientClosedError,
    DeliveryTimeoutError,
    GroupMembershipError,
    InvalidBatchError,
    NotLeaderError,
    OffsetOutOfRangeError,
    RaftlogError,
    RequestTimeoutError,
    RetriableError,
    UnavailableError,
    from_rpc_error,
)
from client.group_member import GroupMember, GroupRpc, MemberIdentity, to_topic_partitions
from client.metadata import MetadataCache, TopicPartition, client_transport
from raftlog.v1 import groups_pb2, log_pb2
from raftlog.v1.record_batch import InvalidBatch, decode_records, decode_records_as, parse_header

__all__ = ["Consumer", "ConsumerRecord", "FetchMode", "OffsetReset", "RebalanceCallback"]

T = TypeVar("T")
logger = logging.getLogger(__name__)

RebalanceCallback = Callable[[frozenset[TopicPartition]], Awaitable[None] | None]
"""``on_assigned``/``on_revoked``/``on_lost``: called with the partitions
(never an empty set); may be a coroutine function."""


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


class _PartitionState:
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


class Consumer:
    """Reads records from assigned partitions; see the module docstring.

    ``bootstrap``: node addresses. ``max_poll_records``: most records one
    ``poll`` returns. ``fetch_max_bytes``: soft limit of one fetch (and of
    a partition's buffer). ``fetch_max_wait_ms``: how long the leader holds
    a fetch that has no data yet. ``fetch_mode``: ``"poll"`` (long polls)
    or ``"stream"`` (one server stream per partition); see the module
    docstring. ``stream_heartbeat_ms``: in stream mode, how long the leader
    may stay silent before it sends an empty response (0: never); a stream
    silent for this plus ``request_timeout_s`` is taken for dead and opened
    again (with 0, only a failed connection ends it). ``auto_offset_reset``:
    see the module docstring. ``request_timeout_s``: deadline of one call
    beyond the long poll wait. ``api_timeout_s``: how long ``seek_to_*``
    keep retrying. ``api_key``, ``tenant``: who is calling
    (``client.auth``). ``address_map``: advertised node address -> address
    to dial.

    Consumer groups (see the module docstring): ``group_id`` names the
    group (needed by ``subscribe``, ``commit`` and ``committed``).
    ``enable_auto_commit``, ``auto_commit_interval_ms``: commit processed
    positions on a timer, on revocation and on close (subscribed consumers
    only). ``session_timeout_ms``: how long the coordinator keeps this
    member without a heartbeat (the server bounds it; it answers with the
    heartbeat interval). ``rebalance_timeout_ms``: how long the member may
    take to release revoked partitions (0: the server's default).
    ``client_id``: shown by ``DescribeGroup``. ``on_assigned``,
    ``on_revoked``, ``on_lost`` (``RebalanceCallback``): run on the member
    task; an exception they raise is raised by the next ``poll``. With
    ``SyncConsumer`` they run on its loop thread and must not call the
    facade.
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        max_poll_records: int = 500,
        fetch_max_bytes: int = 1 << 20,
        fetch_max_wait_ms: int = 500,
        fetch_mode: FetchMode | Literal["poll", "stream"] = FetchMode.POLL,
        stream_heartbeat_ms: int = 5000,
        auto_offset_reset: OffsetReset | str = OffsetReset.EARLIEST,
        request_timeout_s: float = 10.0,
        api_timeout_s: float = 60.0,
        retry_backoff_ms: float = 20.0,
        retry_backoff_max_ms: float = 1000.0,
        api_key: str | None = None,
        tenant: str | None = None,
        address_map: Mapping[str, str] | None = None,
        group_id: str | None = None,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        session_timeout_ms: int = 10_000,
        rebalance_timeout_ms: int = 0,
        client_id: str | None = None,
        on_assigned: RebalanceCallback | None = None,
        on_revoked: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        if max_poll_records < 1 or fetch_max_bytes < 1 or fetch_max_wait_ms < 0:
            raise ValueError("max_poll_records and fetch_max_bytes must be >= 1, fetch_max_wait_ms >= 0")
        if not 0 <= stream_heartbeat_ms <= 30_000:
            raise ValueError(f"stream_heartbeat_ms must be in [0, 30000], got {stream_heartbeat_ms}")
        if group_id is not None and not group_id:
            raise ValueError("group_id must not be empty (None: no group)")
        if auto_commit_interval_ms < 1 or session_timeout_ms < 1 or rebalance_timeout_ms < 0:
            raise ValueError(
                "auto_commit_interval_ms and session_timeout_ms must be >= 1, rebalance_timeout_ms >= 0"
            )
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
        self._fetch_mode = FetchMode(fetch_mode)
        self._stream_heartbeat_ms = stream_heartbeat_ms
        self._reset = OffsetReset(auto_offset_reset)
        self._request_timeout_s = request_timeout_s
        self._api_timeout_s = api_timeout_s
        self._states: dict[TopicPartition, _PartitionState] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._data = asyncio.Event()  # set when some buffer gained records or an error
        self._next_index = 0  # where the next poll starts taking records
        self._dirty = True  # some partition may need a fetcher started
        self._closed = False
        # --- consumer groups
        self._group_id = group_id
        self._group_rpc = (
            GroupRpc(self._pool, self._metadata, self._backoff, request_timeout_s=request_timeout_s)
            if group_id is not None
            else None
        )
        self._auto_commit = enable_auto_commit
        self._auto_commit_interval_s = auto_commit_interval_ms / 1000
        self._session_timeout_ms = session_timeout_ms
        self._rebalance_timeout_ms = rebalance_timeout_ms
        self._client_id = client_id or f"raftlog-python/{socket.gethostname()}/{os.getpid()}"
        self._member_id = str(uuid.uuid4())  # kept for the life of the consumer
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._on_lost = on_lost
        self._subscription: frozenset[str] | None = None  # None: not subscribed
        self._member: GroupMember | None = None
        self._member_task: asyncio.Task[None] | None = None
        self._revoking: dict[TopicPartition, _PartitionState] = {}  # released, being committed
        self._committed: dict[TopicPartition, int] = {}  # what the group is known to hold
        self._commit_lock = asyncio.Lock()  # commits land in the order they snapshot positions
        self._lookups: set[asyncio.Task[None]] = set()  # committed-offset lookups of grants
        self._callback_error: BaseException | None = None  # raised by the next poll
        self._leaving = False  # close()/unsubscribe() under way: commit() still works

    # --- context manager and iteration ------------------------------------------

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # On an exception the records of the last poll may be unprocessed:
        # commit only what earlier polls returned.
        await self._close(commit_returned=exc is None)

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

    @property
    def group_id(self) -> str | None:
        return self._group_id

    @property
    def member_id(self) -> str:
        """This consumer's member id in its group (the same across rejoins)."""
        return self._member.member_id if self._member is not None else self._member_id

    @property
    def member_epoch(self) -> int | None:
        """The member's current epoch; None when not a member right now."""
        return self._member.member_epoch if self._member is not None else None

    def subscription(self) -> frozenset[str] | None:
        """The subscribed topics; None when not subscribed."""
        return self._subscription

    # --- assignment and positions -------------------------------------------------

    def subscribe(self, topics: Iterable[str] | str) -> None:
        """Consume ``topics`` as a member of ``group_id``: the group's
        coordinator assigns this consumer its share of their partitions
        (``assignment()`` follows it). Calling it again changes the
        subscription. Raises ``ValueError`` without a ``group_id``, without
        topics, or after ``assign`` (they are exclusive). The membership
        starts here when an event loop runs, else at the first ``poll``."""
        self._check_open()
        if self._group_id is None:
            raise ValueError(
                "subscribe() needs a consumer group: create the consumer with group_id='...' "
                "(or use assign() to pick partitions yourself)"
            )
        wanted = frozenset([topics] if isinstance(topics, str) else topics)
        if not wanted or not all(isinstance(t, str) and t for t in wanted):
            raise ValueError("subscribe() needs at least one topic name; unsubscribe() leaves the group")
        if self._subscription is None and self._states:
            raise ValueError(
                "assign() and subscribe() are exclusive: this consumer has assigned partitions; "
                "assign([]) first"
            )
        self._subscription = wanted
        if self._member is None:
            assert self._group_rpc is not None
            self._member = GroupMember(
                self._group_rpc,
                _GroupPartitions(self),
                group=self._group_id,
                topics=wanted,
                member_id=self._member_id,
                client_id=self._client_id,
                session_timeout_ms=self._session_timeout_ms,
                rebalance_timeout_ms=self._rebalance_timeout_ms,
                auto_commit_interval_s=self._auto_commit_interval_s if self._auto_commit else None,
                backoff=self._backoff,
                request_timeout_s=self._request_timeout_s,
            )
        else:
            self._member.set_topics(wanted)
        self._start_member()

    async def unsubscribe(self) -> None:
        """Leave the group: stop fetching, commit the positions (auto
        commit), tell ``on_revoked``, send ``LeaveGroup``. The consumer
        stays open (``assign`` or ``subscribe`` again). No-op when not
        subscribed."""
        self._check_open()
        if self._subscription is not None:
            await self._leave_group(commit_returned=True)

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read exactly these partitions from now on. Partitions kept from
        the previous assignment keep their positions; new ones start where
        ``auto_offset_reset`` says unless you ``seek`` them. Raises
        ``ValueError`` while subscribed (``assign`` and ``subscribe`` are
        exclusive)."""
        self._check_open()
        if self._subscription is not None:
            raise ValueError(
                "assign() and subscribe() are exclusive: this consumer is subscribed to "
                f"{sorted(self._subscription)}; unsubscribe() first"
            )
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
        """The partitions read now (assigned, or granted by the group)."""
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
        self._raise_group_error()
        self._start_member()
        for state in self._states.values():
            state.processed = state.position  # the application is done with earlier records
        limit = max_records or self._max_poll_records
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while True:
            if self._dirty:
                self._start_fetchers()
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

    # --- committed offsets ---------------------------------------------------------

    async def commit(self, offsets: Mapping[tuple[str, int], int] | None = None) -> dict[TopicPartition, int]:
        """Commit, for the group, the position (last record ``poll``
        returned + 1) of every owned partition, or the given ``offsets``
        (each the offset of the next record to read) of owned partitions.
        Partitions whose offset the group already holds are left out.
        Returns what was committed (nothing while the member is between
        memberships: it owns nothing then). Retries for ``api_timeout_s``, then
        raises ``DeliveryTimeoutError``; ``FencedMemberError``/
        ``UnknownMemberIdError`` mean the partitions were lost (the member
        joins again), ``StaleMemberEpochError`` that one was revoked
        meanwhile. A consumer using ``assign()`` commits without membership
        (the server allows it only while the group has no members)."""
        self._check_open_or_leaving()
        self._require_group("commit()")
        given: dict[TopicPartition, int] | None = None
        if offsets is not None:
            given = {}
            for tp, offset in offsets.items():
                if offset < 0:
                    raise ValueError(f"offset must be >= 0, got {offset} for {tp[0]}/{tp[1]}")
                if not self._owns(TopicPartition(*tp)):
                    raise ValueError(f"{tp[0]}/{tp[1]} is not owned by this consumer")
                given[TopicPartition(*tp)] = int(offset)

        def pick() -> dict[TopicPartition, int]:
            if given is not None:
                return {tp: offset for tp, offset in given.items() if self._owns(tp)}
            return self._offsets(processed=False)

        deadline = asyncio.get_running_loop().time() + self._api_timeout_s
        try:
            return await self._commit(pick, deadline)
        except RetriableError as error:
            raise DeliveryTimeoutError(
                f"group {self._group_id}: commit not answered within {self._api_timeout_s:g} s; "
                f"last error: {error}",
                cause=error,
            ) from None

    async def committed(
        self, partitions: Iterable[tuple[str, int]] | None = None
    ) -> dict[TopicPartition, int | None]:
        """The group's committed offsets of ``partitions`` (default: the
        assigned ones); None for a partition without one."""
        self._check_open()
        rpc = self._require_group("committed()")
        wanted = sorted(
            {TopicPartition(*tp) for tp in partitions} if partitions is not None else self._states
        )
        if not wanted:
            return {}
        deadline = asyncio.get_running_loop().time() + self._api_timeout_s
        try:
            found = await self._fetch_committed(rpc, wanted, deadline)
        except RetriableError as error:
            raise DeliveryTimeoutError(
                f"group {self._group_id}: no answer within {self._api_timeout_s:g} s; last error: {error}",
                cause=error,
            ) from None
        return {tp: found.get(tp) for tp in wanted}

    async def close(self) -> None:
        """Stop every fetcher; when subscribed, commit the positions (auto
        commit: every record ``poll`` returned counts as processed), tell
        ``on_revoked`` and leave the group; close the channels. Idempotent."""
        await self._close(commit_returned=True)

    async def _close(self, *, commit_returned: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._data.set()  # wake a poll() waiting in another task
        try:
            if self._member is not None:
                await self._leave_group(commit_returned=commit_returned)
        finally:
            for state in self._states.values():
                self._retire(state)
            for task in self._lookups:
                task.cancel()
            tasks = [*self._retired, *self._lookups]
            self._retired.clear()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._pool.close()

    # --- internals ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the consumer is closed")

    def _check_open_or_leaving(self) -> None:
        """Open, or closing and leaving the group (``on_revoked`` may commit)."""
        if self._closed and not self._leaving:
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
            if (
                state.task is None
                and state.error is None
                and not state.parked
                and not state.awaiting_committed
            ):
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
                    state.buffered_bytes -= sum(map(_record_bytes, chunk))
                state.position = chunk[-1].offset + 1
                taken += chunk
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
            response: log_pb2.FetchResponse | None = None
            error: RaftlogError | None = None
            try:
                address = await self._metadata.require_leader(topic, partition)
                if self._fetch_mode is FetchMode.STREAM:
                    opened, error = await self._stream_into(state, generation, address, offset)
                    if opened:
                        attempt = 0  # the leader answered: a failure now is a new one
                else:
                    response = await self._pool.log(address).Fetch(
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
            if state.generation != generation:
                return
            if error is None:
                assert response is not None  # a stream returns no error only for a stale generation
                attempt = 0
                if not self._append(state, response, offset) and self._fetch_max_wait_ms == 0:
                    # Without a long poll the leader answers at once: do not spin.
                    await asyncio.sleep(self._backoff.initial_s)
                continue
            if state.fetch_offset is not None:
                offset = state.fetch_offset  # a stream may have moved it before it failed
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

    async def _stream_into(
        self, state: _PartitionState, generation: int, address: str, offset: int
    ) -> tuple[bool, RaftlogError | None]:
        """Read one ``StreamFetch`` from ``address``, starting at ``offset``
        (the fetch offset), into ``state``'s buffer until the stream fails or
        ``generation`` is over. Returns whether a response came (the stream
        opened) and the error that ended it, None only when the generation
        is over. The stream is cancelled on the way out, also when this task
        is cancelled (seek, assign, revocation, close)."""
        topic, partition = state.tp
        call = self._pool.log(address).StreamFetch(
            log_pb2.StreamFetchRequest(
                topic=topic,
                partition=partition,
                offset=offset,
                max_bytes=self._fetch_max_bytes,
                max_wait_ms=self._stream_heartbeat_ms,
            ),
            # No deadline: the stream lives as long as this fetcher.
        )
        silent_s = (
            self._stream_heartbeat_ms / 1000 + self._request_timeout_s if self._stream_heartbeat_ms else None
        )
        opened = False
        try:
            while True:
                if state.buffered_bytes >= self._fetch_max_bytes:
                    # Not reading lets gRPC's window fill, which stops the
                    # server; the stream stays open meanwhile.
                    state.room.clear()
                    await state.room.wait()
                    if state.generation != generation:
                        return opened, None
                    continue
                try:
                    async with asyncio.timeout(silent_s):
                        response = await call.read()
                except TimeoutError:
                    return opened, RequestTimeoutError(
                        f"{topic}/{partition}: the stream from {address} sent nothing for {silent_s:g} s",
                        reason="STREAM_SILENT",
                    )
                except grpc.aio.AioRpcError as exc:
                    return opened, from_rpc_error(exc)
                if state.generation != generation:
                    return opened, None
                if response is grpc.aio.EOF:
                    # The server never ends a stream without a status.
                    return opened, UnavailableError(
                        f"{topic}/{partition}: the stream from {address} ended without a status",
                        reason="STREAM_ENDED",
                    )
                opened = True
                fetch_offset = state.fetch_offset
                assert fetch_offset is not None  # set before the stream opened; only a reposition clears it
                self._append(state, response, fetch_offset)
        finally:
            call.cancel()

    def _after_retriable(self, topic: str, partition: int, address: str | None, error: RaftlogError) -> None:
        if isinstance(error, NotLeaderError) and error.leader_address:
            self._metadata.leader_moved(topic, partition, error.leader_address)
        elif address is not None:
            self._metadata.forget_leader(topic, partition, address)

    def _append(self, state: _PartitionState, response: log_pb2.FetchResponse, offset: int) -> bool:
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
                # The fetch starts at the batch holding `offset`.
                decoded = decoded[next_offset - header.base_offset :]
            buffer.extend(decoded)
            state.buffered_bytes += sum(map(_record_bytes, decoded))
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

    # --- consumer groups ------------------------------------------------------------

    def _require_group(self, what: str) -> GroupRpc:
        if self._group_rpc is None:
            raise ValueError(f"{what} needs a consumer group: create the consumer with group_id='...'")
        return self._group_rpc

    def _start_member(self) -> None:
        """Start the member task if subscribed and it is not running (it
        needs a running event loop; ``poll`` tries again)."""
        if self._member is None or self._member_task is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._member_task = loop.create_task(self._member.run(), name=f"raftlog-group-{self._group_id}")

    def _raise_group_error(self) -> None:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error
        if self._member is not None and self._member.error is not None:
            raise self._member.error  # every time: the membership is over; close the consumer

    async def _fetch_committed(
        self, rpc: GroupRpc, partitions: Iterable[TopicPartition], deadline: float | None
    ) -> dict[TopicPartition, int]:
        """The group's committed offsets of ``partitions`` (those that have one)."""
        request = groups_pb2.FetchCommittedOffsetsRequest(
            group=self._group_id, partitions=to_topic_partitions(partitions)
        )
        response = await rpc.fetch_committed(request, deadline=deadline)
        return {TopicPartition(o.topic, int(o.partition)): int(o.offset) for o in response.offsets}

    def _owns(self, tp: TopicPartition) -> bool:
        return tp in self._states or tp in self._revoking

    def _offsets(
        self, *, processed: bool, only: Iterable[_PartitionState] | None = None
    ) -> dict[TopicPartition, int]:
        """Per owned partition (or per state of ``only``), the position or
        the processed position, where known."""
        states = list(only) if only is not None else [*self._states.values(), *self._revoking.values()]
        offsets: dict[TopicPartition, int] = {}
        for state in states:
            offset = state.processed if processed else state.position
            if offset is not None:
                offsets[state.tp] = offset
        return offsets

    async def _commit(
        self, pick: Callable[[], dict[TopicPartition, int]], deadline: float
    ) -> dict[TopicPartition, int]:
        """Commit what ``pick()`` returns, minus what the group holds
        already. ``pick`` runs under the commit lock in the same synchronous
        step that reads the member's identity (module invariant)."""
        rpc = self._require_group("commit()")
        async with self._commit_lock:
            identity: MemberIdentity | None
            if self._member is not None:
                identity = self._member.identity()
                if identity is None:
                    return {}  # not a member right now: nothing is owned
            else:
                identity = MemberIdentity("", 0)  # assign(): a commit outside membership
            offsets = pick()
            if self._member is not None:  # the group holds what we committed: nobody else commits ours
                offsets = {tp: o for tp, o in offsets.items() if self._committed.get(tp) != o}
            if not offsets:
                return {}
            request = groups_pb2.CommitOffsetsRequest(
                group=self._group_id,
                member_id=identity.member_id,
                member_epoch=identity.member_epoch,
                offsets=[
                    groups_pb2.OffsetToCommit(topic=tp.topic, partition=tp.partition, offset=offset)
                    for tp, offset in sorted(offsets.items())
                ],
            )
            try:
                await rpc.commit(request, deadline=deadline)
            except GroupMembershipError:
                if self._member is not None:
                    self._member.wake()  # the heartbeat finds out what happened
                raise
            for tp, offset in offsets.items():
                if self._owns(tp):
                    self._committed[tp] = offset
            return offsets

    async def _leave_group(self, *, commit_returned: bool) -> None:
        """Stop the membership: cancel the member task, stop fetching,
        commit (auto commit), ``on_revoked``, ``LeaveGroup``; every owned
        partition is dropped."""
        member, task = self._member, self._member_task
        assert member is not None
        if task is not None and task is asyncio.current_task():
            raise RuntimeError("close() and unsubscribe() cannot be called from a rebalance callback")
        self._member_task = None
        self._leaving = True
        try:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            for lookup in self._lookups:
                lookup.cancel()
            for state in [*self._states.values(), *self._revoking.values()]:
                self._retire(state)
            owned = frozenset([*self._states, *self._revoking])
            if self._auto_commit and member.identity() is not None:
                loop = asyncio.get_running_loop()
                try:
                    await self._commit(
                        lambda: self._offsets(processed=not commit_returned),
                        loop.time() + self._request_timeout_s,
                    )
                except RaftlogError as error:
                    logger.warning("group %s: the last commit failed: %s", self._group_id, error)
            await self._run_callback("on_revoked", self._on_revoked, owned)
            await member.leave(min(self._request_timeout_s, 5.0))
        finally:
            self._leaving = False
            self._member = None
            self._subscription = None
            for state in self._states.values():
                self._retire(state)
            self._states.clear()
            self._revoking.clear()
            self._committed.clear()

    def _detach(self, partitions: Iterable[TopicPartition]) -> list[_PartitionState]:
        """Stop reading ``partitions``: retire their fetchers and drop their
        buffers (``poll`` never returns their records again); the states
        (positions) are returned."""
        detached: list[_PartitionState] = []
        for tp in sorted(partitions):
            state = self._states.pop(tp, None)
            if state is None:
                continue
            self._retire(state)
            state.generation += 1  # a fetcher that has not seen its cancellation yet is stale
            state.buffer.clear()
            state.buffered_bytes = 0
            detached.append(state)
        return detached

    async def _group_revoked(self, partitions: frozenset[TopicPartition], deadline: float) -> None:
        states = self._detach(partitions)
        for state in states:
            self._revoking[state.tp] = state
        try:
            if self._auto_commit and states:
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._commit(lambda: self._offsets(processed=True, only=states), deadline)
                except (RaftlogError, TimeoutError) as error:
                    logger.warning(
                        "group %s: committing revoked partitions failed (%s); their next owner may "
                        "read some records again",
                        self._group_id,
                        str(error) or "timed out",
                    )
            await self._run_callback("on_revoked", self._on_revoked, partitions)
        finally:
            for state in states:
                if self._revoking.get(state.tp) is state:
                    del self._revoking[state.tp]
                self._committed.pop(state.tp, None)

    async def _group_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        states: list[_PartitionState] = []
        for tp in sorted(partitions):
            state = _PartitionState(tp)
            state.awaiting_committed = True
            self._states[tp] = state
            self._committed.pop(tp, None)
            states.append(state)
        task = asyncio.get_running_loop().create_task(
            self._load_committed(states), name=f"raftlog-group-{self._group_id}-committed"
        )
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)
        await self._run_callback("on_assigned", self._on_assigned, partitions)

    async def _group_lost(self, partitions: frozenset[TopicPartition]) -> None:
        self._detach(partitions)
        for tp in partitions:
            self._committed.pop(tp, None)
        await self._run_callback("on_lost", self._on_lost or self._on_revoked, partitions)

    async def _group_auto_commit(self) -> None:
        deadline = asyncio.get_running_loop().time() + min(
            self._request_timeout_s, self._auto_commit_interval_s
        )
        try:
            await self._commit(lambda: self._offsets(processed=True), deadline)
        except RaftlogError as error:
            logger.info("group %s: auto commit failed: %s", self._group_id, error)

    async def _load_committed(self, states: list[_PartitionState]) -> None:
        """Position granted partitions at their committed offsets (the reset
        policy where there is none), unless they were sought or released
        meanwhile; then start their fetchers."""
        rpc = self._require_group("subscribe()")
        try:
            found = await self._fetch_committed(rpc, [s.tp for s in states], deadline=None)
        except RaftlogError as error:
            for state in states:
                if self._states.get(state.tp) is state and state.awaiting_committed:
                    state.awaiting_committed = False
                    state.error = error
            self._data.set()
            return
        for state in states:
            if self._states.get(state.tp) is not state or not state.awaiting_committed:
                continue
            offset = found.get(state.tp)
            # A committed offset was reached by reading: at or below a high
            # watermark, so "above the end" later means a lagging leader.
            state.reposition(offset, confirmed=offset is not None)
            if offset is not None:
                self._committed[state.tp] = offset
        self._dirty = True
        self._data.set()  # a waiting poll() starts the fetchers

    async def _run_callback(
        self, name: str, callback: RebalanceCallback | None, partitions: frozenset[TopicPartition]
    ) -> None:
        if callback is None or not partitions:
            return
        try:
            result = callback(partitions)
            if inspect.isawaitable(result):
                await result
        except Exception as error:
            logger.exception("group %s: %s callback failed", self._group_id, name)
            if self._callback_error is None:
                self._callback_error = error


class _GroupPartitions:
    """The consumer as its ``GroupMember`` sees it (a ``PartitionOwner``)."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    async def partitions_revoked(self, partitions: frozenset[TopicPartition], deadline: float) -> None:
        await self._consumer._group_revoked(partitions, deadline)

    async def partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        await self._consumer._group_assigned(partitions)

    async def partitions_lost(self, partitions: frozenset[TopicPartition]) -> None:
        await self._consumer._group_lost(partitions)

    async def auto_commit(self) -> None:
        await self._consumer._group_auto_commit()


def _record_bytes(record: ConsumerRecord) -> int:
    """What a buffered record counts against ``fetch_max_bytes``."""
    size = 32
    if record.key is not None:
        size += len(record.key)
    if record.value is not None:
        size += len(record.value)
    return size
