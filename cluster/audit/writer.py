"""The audit writer: audit events to ``__system/__audit``, durably, from any node.

Why this shape:

- **Where an event is appended.** The audit topic has one partition (one
  total order, and admin calls are rare), whose leader may be any node. The
  node that took the admin call appends through its own replica when it
  leads the partition; otherwise it sends the events to the leader's
  internal ``NodeAdmin.AppendAudit`` with its node proof (the internal door
  admits only nodes), and the leader appends them through its replica. A
  public ``Produce`` is not an option: internal topics are written by no API
  key (cluster/frontend/internal_topics.py), and a node has no key of its own.
- **Durable before the answer.** ``record`` returns once the event is
  committed by the partition's Raft group (acks=all), or after ``wait_s``
  (admin calls are rare; a short wait costs nothing). The admin change
  itself is already made by then and is never undone for the audit's sake:
  when the append fails or is slow, the event stays queued, the failure is
  logged at ERROR, and the owner task retries it with backoff for
  ``retry_for_s``. An event that still could not be appended, or that finds
  the queue full (``max_pending``), is logged at ERROR *with the whole
  event* (it holds no secret), so the node's log keeps it.
- **Refusals at the door cost the caller's flood, not the trail.** A call
  the door refused for its key (``record_door_refusal``) never waits: its
  refusal is coalesced (door_refusals.py: one event per key, method and
  reason a second, with a ``count``) and queued apart from the admin
  changes (the calls a handler ran, done or refused), in at most
  ``max_door_refusals`` of the ``max_pending`` places. When the queue is
  full, a queued door refusal is dropped to make room for a change; a door
  refusal that finds no room, or that could not be appended in
  ``retry_for_s``, is dropped too. Dropped door refusals are never silent:
  their calls are added up in ``dropped_refusals`` and the figure is logged
  at WARNING (at most every ``REPORT_EVERY_S``, and at shutdown).
- **One owner task** (``run``, a node loop like the reconciler) drains the
  queue: each round appends the pending events (changes first) as one
  record batch, so a burst costs one Raft entry. Callers only enqueue and
  wait on a future. At shutdown, once the server has stopped (calls that
  ended in its grace period have queued their events) and ``run`` is
  cancelled, ``drain`` appends what is left for at most ``DRAIN_S`` and logs
  whole, at ERROR, every event it could not append.

Invariants:

- An event is appended at least once while the cluster can commit within
  ``retry_for_s``; a retried append whose first attempt did commit stores
  it twice, with the same ``id`` (readers drop repeats, events.py).
- The queue (pending and in flight) holds at most ``max_pending`` events,
  door refusals at most ``max_door_refusals`` of them; ``record`` never
  blocks longer than ``wait_s``, ``record_door_refusal`` never blocks.
- A change is turned away (logged whole) only when no door refusal is
  queued that could make room for it.
- No event is forgotten silently: appended, logged whole at ERROR, or (a
  door refusal) counted in ``dropped_refusals``, logged at WARNING.
- A node appends to the audit partition only through a replica that leads
  it (``Replica.produce`` refuses otherwise), and ``append_here`` accepts
  only bytes that decode as audit events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import grpc

from cluster.audit.door_refusals import WINDOW_S, DoorRefusals
from cluster.audit.events import AUDIT_TOPIC, AuditEvent, BadAuditEvent, decode, encode
from cluster.controller import Assignment
from cluster.frontend.forwarding import ChannelCache
from cluster.groups.group_logs import SYSTEM_TENANT
from partitions.replica_errors import NotLeaderError, ReplicaError
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc
from raftlog.v1.record_batch import Record, encode_batch

__all__ = [
    "APPEND_AUDIT_METHOD",
    "AuditAppender",
    "AuditUnavailable",
    "AuditWriter",
]

log = logging.getLogger(__name__)

APPEND_AUDIT_METHOD: Final = "/raftlog.internal.v1.NodeAdmin/AppendAudit"
"""The method a node's proof names to append audit events on the leader."""
WAIT_S: Final = 3.0
RETRY_FOR_S: Final = 120.0
MAX_PENDING: Final = 10_000
DOOR_REFUSAL_SHARE: Final = 10
"""Door refusals may hold 1/10 of the queue by default."""
MAX_BATCH: Final = 256
ASK_TIMEOUT_S: Final = 2.0
BACKOFF_S: Final = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
DRAIN_S: Final = 5.0
"""How long a stopping node keeps appending what is left (node.py)."""
REPORT_EVERY_S: Final = 10.0


class AuditUnavailable(Exception):
    """The audit partition cannot take events now (no topic yet, no
    leader known, the leader did not answer); the writer retries."""


Append = Callable[[Sequence[bytes]], Awaitable[None]]
Prove = Callable[[str], tuple[tuple[str, str], ...]]


class Producing(Protocol):
    @property
    def is_leader(self) -> bool: ...
    @property
    def leader(self) -> int: ...
    async def produce(self, batch: bytes) -> object: ...


@dataclass(slots=True)
class _Pending:
    event: AuditEvent
    data: bytes
    queued_at: float
    done: asyncio.Future[bool] | None
    """None for a door refusal: nobody waits for it."""

    @property
    def at_door(self) -> bool:
        return self.done is None


class AuditWriter:
    """Queues events and appends them (module docstring)."""

    def __init__(
        self,
        append: Append,
        *,
        wait_s: float = WAIT_S,
        retry_for_s: float = RETRY_FOR_S,
        max_pending: int = MAX_PENDING,
        max_door_refusals: int | None = None,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_door_refusals``: default ``max_pending // DOOR_REFUSAL_SHARE``;
        ``window_s``: door refusals coalesce per key, method and reason over it."""
        self._append = append
        self._wait_s = wait_s
        self._retry_for_s = retry_for_s
        self._max_pending = max_pending
        self._max_door_refusals = (
            max_pending // DOOR_REFUSAL_SHARE if max_door_refusals is None else max_door_refusals
        )
        self._clock = clock
        self._changes: deque[_Pending] = deque()
        self._refusals: deque[_Pending] = deque()
        self._in_flight: list[_Pending] = []
        self._door = DoorRefusals(window_s)
        self._wake = asyncio.Event()
        self.appended = 0
        self.lost = 0
        self.dropped_refusals = 0
        """Refused calls (the sum of the dropped events' ``count``) whose
        door-refusal event was dropped (module docstring)."""
        self._unreported_drops = 0
        self._last_dropped: AuditEvent | None = None
        self._reported_at: float | None = None

    @property
    def pending(self) -> int:
        """Events queued or being appended (door refusals still being
        counted into their window are not events yet)."""
        return len(self._changes) + len(self._refusals) + len(self._in_flight)

    async def record(self, event: AuditEvent) -> bool:
        """Queue ``event``; True once it is durable, False when it is left to
        the background retry (or lost to a full queue), logged either way."""
        data = encode(event)
        if self.pending >= self._max_pending and not self._make_room():
            self.lost += 1
            log.error(
                "audit queue full (%d events): event NOT recorded: %s", self._max_pending, data.decode()
            )
            return False
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._changes.append(_Pending(event, data, self._clock(), done))
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(done), self._wait_s)
        except TimeoutError:
            log.error(
                "audit event %s (%s) not durable after %.1fs: the admin call answers anyway, the "
                "event is retried in the background",
                event.id,
                event.method,
                self._wait_s,
            )
            return False

    def record_door_refusal(self, event: AuditEvent) -> None:
        """Count a call the door refused for its key; never waits (module
        docstring): its event is queued now, or with the next ones."""
        released = self._door.add(event, self._clock())
        if released is not None:
            self._queue_refusal(released)
        self._wake.set()  # the owner task's next timer may have changed

    async def run(self) -> None:
        """The owner task: append what is queued, retrying with backoff."""
        failures = 0
        while True:
            await self._work()
            if await self._round():
                failures = 0
                continue
            failures += 1
            await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])

    async def drain(self, within_s: float = DRAIN_S) -> None:
        """At shutdown, after ``run`` is cancelled: append what is left
        (door refusals still being counted included) for at most
        ``within_s``, then log whole every event that is not appended."""
        for event in self._door.flush():
            self._queue_refusal(event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        failures = 0
        while self.pending and loop.time() < deadline:
            try:
                async with asyncio.timeout(deadline - loop.time()):
                    if await self._round():
                        failures = 0
                        continue
                    failures += 1
                    await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])
            except TimeoutError:
                break
        left = [*self._in_flight, *self._changes, *self._refusals]
        self._in_flight, self._changes, self._refusals = [], deque(), deque()
        for p in left:
            self.lost += 1
            log.error("audit event not appended before the node stopped: %s", p.data.decode())
            if p.done is not None and not p.done.done():
                p.done.set_result(False)
        self._report_drops(force=True)

    # --- the owner's steps -----------------------------------------------------------

    async def _work(self) -> None:
        """Until an event is queued; meanwhile, door refusals whose window
        ends are queued and dropped ones reported, on time."""
        while True:
            self._on_time()
            if self._changes or self._refusals:
                return
            self._wake.clear()
            timers = [t for t in (self._door.next_due(), self._report_due()) if t is not None]
            timeout = max(0.0, min(timers) - self._clock()) if timers else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _round(self) -> bool:
        """Append one batch of what is queued: True when done (or nothing to
        do), False when the append failed (put back, logged)."""
        self._on_time()
        self._drop_expired()
        batch = self._in_flight = self._take(MAX_BATCH)
        if not batch:
            return True
        try:
            await self._append([p.data for p in batch])
        except (AuditUnavailable, ReplicaError, grpc.aio.AioRpcError, TimeoutError) as error:
            self._put_back()
            log.error(
                "audit append of %d event(s) failed (%s: %s); retrying",
                len(batch),
                type(error).__name__,
                error,
            )
            return False
        except BaseException:
            self._put_back()  # cancelled (drain's bound, shutdown): still owed
            raise
        self._in_flight = []
        for p in batch:
            self.appended += 1
            if p.done is not None and not p.done.done():
                p.done.set_result(True)
        return True

    def _take(self, limit: int) -> list[_Pending]:
        """Changes first, then door refusals, oldest first."""
        batch: list[_Pending] = []
        for queue in (self._changes, self._refusals):
            while queue and len(batch) < limit:
                batch.append(queue.popleft())
        return batch

    def _put_back(self) -> None:
        for p in reversed(self._in_flight):
            (self._refusals if p.at_door else self._changes).appendleft(p)
        self._in_flight = []

    def _on_time(self) -> None:
        for event in self._door.due(self._clock()):
            self._queue_refusal(event)
        due = self._report_due()
        if due is not None and due <= self._clock():
            self._report_drops(force=True)

    def _drop_expired(self) -> None:
        now = self._clock()
        while self._changes and now - self._changes[0].queued_at > self._retry_for_s:
            lost = self._changes.popleft()
            self.lost += 1
            log.error(
                "audit event could not be appended for %.0fs and is dropped: %s",
                self._retry_for_s,
                lost.data.decode(),
            )
            if lost.done is not None and not lost.done.done():
                lost.done.set_result(False)
        while self._refusals and now - self._refusals[0].queued_at > self._retry_for_s:
            self._drop_refusal(self._refusals.popleft().event)

    # --- door refusals: a share of the queue, dropped first ------------------------

    def _queue_refusal(self, event: AuditEvent) -> None:
        if len(self._refusals) >= self._max_door_refusals or self.pending >= self._max_pending:
            self._drop_refusal(event)
            return
        self._refusals.append(_Pending(event, encode(event), self._clock(), None))
        self._wake.set()

    def _make_room(self) -> bool:
        """Drop the newest queued door refusal for a change; False: none."""
        if not self._refusals:
            return False
        self._drop_refusal(self._refusals.pop().event)
        return True

    def _drop_refusal(self, event: AuditEvent) -> None:
        self.dropped_refusals += event.count
        self._unreported_drops += event.count
        self._last_dropped = event
        self._report_drops(force=False)

    def _report_due(self) -> float | None:
        if not self._unreported_drops:
            return None
        return 0.0 if self._reported_at is None else self._reported_at + REPORT_EVERY_S

    def _report_drops(self, *, force: bool) -> None:
        due = self._report_due()
        if due is None or (not force and due > self._clock()):
            return
        last = self._last_dropped
        assert last is not None  # a drop is what made a report due
        log.warning(
            "audit: %d refused call(s) at the door were not recorded (dropped refusals: %d in all; "
            "the last: key %s, %s, %s): door refusals may hold %d of the %d queued events and "
            "admin changes come first",
            self._unreported_drops,
            self.dropped_refusals,
            last.key_id,
            last.method,
            last.reason,
            self._max_door_refusals,
            self._max_pending,
        )
        self._unreported_drops = 0
        self._reported_at = self._clock()


def audit_batch(events: Sequence[bytes]) -> bytes:
    """One record batch of ``events`` (checked: each must decode), keyed by
    event id and stamped with the event's time."""
    records = []
    for data in events:
        try:
            event = decode(data)
        except BadAuditEvent as error:
            raise ValueError(f"not an audit event: {error}") from None
        records.append(Record(value=data, key=event.id.encode(), timestamp_ms=max(0, event.time_ms)))
    return encode_batch(records)


class AuditAppender:
    """``append``: to this node's leader replica of the audit partition, or
    to its leader's NodeAdmin (module docstring)."""

    def __init__(
        self,
        node_id: int,
        partition_of: Callable[[str, str, int], Assignment | None],
        replica_of: Callable[[int], Producing | None],
        leader_of: Callable[[int], int],
        address_of: Callable[[int], str],
        prove: Prove,
        dial: dict[int, str] | None = None,
        channels: ChannelCache | None = None,
    ) -> None:
        """``channels``: how to reach other nodes (the node's own dialer:
        plaintext, or mTLS to their internal listener); owned from here on."""
        self._node_id = node_id
        self._partition_of = partition_of
        self._replica_of = replica_of
        self._leader_of = leader_of
        self._address_of = address_of
        self._prove = prove
        self._dial = dict(dial or {})
        self._channels = channels if channels is not None else ChannelCache()

    def _group(self) -> int:
        assignment = self._partition_of(SYSTEM_TENANT, AUDIT_TOPIC, 0)
        if assignment is None:
            raise AuditUnavailable(f"{SYSTEM_TENANT}/{AUDIT_TOPIC} does not exist yet")
        return assignment.group

    async def append_here(self, events: Sequence[bytes]) -> node_admin_pb2.AppendAuditResponse:
        """What ``NodeAdmin.AppendAudit`` answers: append through the local
        replica if it leads the audit partition, else say who does."""
        try:
            group = self._group()
        except AuditUnavailable as error:
            return node_admin_pb2.AppendAuditResponse(error="NO_TOPIC", message=str(error))
        replica = self._replica_of(group)
        if replica is None:
            return node_admin_pb2.AppendAuditResponse(error="NO_REPLICA", leader=self._leader_of(group))
        try:
            batch = audit_batch(events)
        except ValueError as error:
            return node_admin_pb2.AppendAuditResponse(error="BAD_EVENT", message=str(error))
        try:
            await replica.produce(batch)
        except NotLeaderError as error:
            return node_admin_pb2.AppendAuditResponse(error="NOT_LEADER", leader=error.leader)
        except ReplicaError as error:
            return node_admin_pb2.AppendAuditResponse(error=error.reason, message=str(error))
        return node_admin_pb2.AppendAuditResponse()

    async def append(self, events: Sequence[bytes]) -> None:
        """Append ``events`` durably, or raise ``AuditUnavailable``."""
        group = self._group()
        replica = self._replica_of(group)
        if replica is not None and replica.is_leader:
            answer = await self.append_here(events)
            if not answer.error:
                return
            leader = answer.leader
        else:
            leader = self._leader_of(group) or (replica.leader if replica is not None else 0)
        if not leader or leader == self._node_id:
            raise AuditUnavailable(f"no leader known for {SYSTEM_TENANT}/{AUDIT_TOPIC}")
        target = self._dial.get(leader) or self._address_of(leader)
        if not target:
            raise AuditUnavailable(f"no address for node {leader}")
        stub = node_admin_pb2_grpc.NodeAdminStub(self._channels.channel(target))
        response: node_admin_pb2.AppendAuditResponse = await stub.AppendAudit(
            node_admin_pb2.AppendAuditRequest(events=list(events)),
            timeout=ASK_TIMEOUT_S,
            metadata=self._prove(APPEND_AUDIT_METHOD),
        )
        if response.error:
            raise AuditUnavailable(
                f"node {leader} did not append: {response.error} {response.message}".strip()
            )

    async def close(self) -> None:
        await self._channels.close()
