"""``raftlog.v1.GroupService``: consumer groups over the pure coordinator and
an abstract durable log.

Each group belongs to one *coordinator partition*, chosen by
``coordinator_partition`` (a stable hash of tenant and group). The leader of
that partition's log is the group's coordinator. This module does not know
how the log is replicated: it sees it through ``CoordinatorLogs`` and
``OffsetsLog`` (the node wires in the Raft-backed ones, cluster/groups/group_logs.py).
Calls reach it through the front door (cluster/frontend/front_door.py),
which authenticated the caller and turns every error that leaves a handler
into a status with a reason. A node that does not lead the partition does not
forward: it answers ``NOT_COORDINATOR`` with the leader's address when it
knows it, and the client goes there.

Invariants:

- A coordinator partition is served only from a ``GroupCoordinator`` built
  by replaying its whole log under the current leadership term, and only
  once its ``CoordinatorStarted`` record is durable (the next leader's
  failover fence depends on it); likewise a join with a longer session
  than the log allows is answered only once a record allowing it is
  durable (``GroupCoordinator.prepare_join``). A new term (or a lost leadership)
  discards the in-memory state and the next request replays again. Replays
  of one partition never run concurrently.
- A join, heartbeat or leave is answered only once the log holds the
  group's metadata as of the answer (``takeover``, invariant 1): a change
  appends every unrecorded group of the partition in one batch; a
  heartbeat that changed nothing appends nothing. Appends of metadata and
  of coordinator-started records run one at a time per partition, each
  built when its turn comes, so the log's latest record per key is the
  latest state.
- A commit is answered only after the log stored it and the table applied
  it, so a fetch that follows a successful commit sees it. The append is
  never abandoned half-way: it runs as a tracked task that applies its
  records when it completes, even if the caller gave up.
- An append that failed in a way that leaves its outcome unknown discards
  the partition's state (membership included, members rejoin): the table
  must not disagree with the log.
- Every expected failure leaves a handler as a ``ServiceError``
  (``cluster.frontend.grpc_errors``) with a ``Reason``: the core's errors
  map to status codes in ``STATUS`` only (cluster/groups/service_errors.py).
- A group name that breaks the naming rule, or a member id longer than
  ``MEMBER_ID_MAX``, is refused (``INVALID_NAME``) before a coordinator
  partition is chosen or loaded, and every message quotes a client-supplied
  name through ``shown``: the core's messages echo what they are given, so
  they are only given names of bounded length.
- Handlers take the caller's tenant (``join_group(tenant, request)``...).
  The gRPC methods, which obtain it and check a client key's scope first,
  are ``GroupServiceMethods`` (service_scopes.py), ``GroupService``'s base.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from cluster.controller.model import Principal
from cluster.frontend.front_door import caller_tenant
from cluster.groups import TopicPartition
from cluster.groups.coordinator import GroupCoordinator, GroupSummary, OffsetCommit, TopicMetadata
from cluster.groups.membership import GroupConfig, GroupState, MemberState
from cluster.groups.service_errors import NotCoordinatorError, as_service_errors, check_group, check_member_id
from cluster.groups.service_scopes import GroupServiceMethods, TenantOf, door_principal
from cluster.primitives.pagination import Listing, paginate, text_key
from partitions.replica_errors import Backpressure, ProduceRejected
from raftlog.v1 import groups_pb2

__all__ = [
    "CoordinatorLogs",
    "GroupService",
    "NotCoordinatorError",
    "OffsetsLog",
    "TenantOf",
    "coordinator_partition",
]


class OffsetsLog(Protocol):
    """One coordinator partition's log, as its leader on this node sees it."""

    @property
    def leader_term(self) -> int:
        """The Raft term of this node's current leadership. It must grow with
        every new leadership, so that state built under an older one is
        recognised as stale."""
        ...

    async def append(self, records: Sequence[bytes]) -> int:
        """Append ``records`` as one atomic unit and return the log offset of
        the first (record i is at that + i) once they are committed through
        Raft. Raises ``NotCoordinatorError`` when not the leader (nothing
        appended); ``partitions.replica_errors.Backpressure`` or
        ``ProduceRejected`` when refused (nothing appended); anything else
        means the outcome is unknown."""
        ...

    def read_all(self) -> AsyncIterator[tuple[int, bytes]]:
        """Every committed record ``(log offset, bytes)`` from the start of the
        log, in log order. It must include every record committed under
        earlier terms: call it only after this leader has committed an entry
        of its own term (Raft's no-op), and only after appends made earlier
        in this term have resolved."""
        ...


class CoordinatorLogs(Protocol):
    """The coordinator partitions, as this node sees them."""

    @property
    def partition_count(self) -> int:
        """How many coordinator partitions the cluster has (fixed for its life:
        changing it would move groups between coordinators)."""
        ...

    def log(self, partition: int) -> OffsetsLog:
        """The partition's log, or ``NotCoordinatorError`` when this node does
        not lead it. Heartbeats are answered from memory, without touching
        the log, so this must stop returning the log soon after the
        leadership is lost (Raft check-quorum, or a leader lease): a deposed
        leader answering heartbeats keeps old members consuming, and the new
        coordinator's fence allows only ``GroupConfig.failover_margin_ms``
        for that."""
        ...

    def led_partitions(self) -> Sequence[int]:
        """The coordinator partitions this node leads now."""
        ...


def coordinator_partition(tenant: str, group: str, partitions: int) -> int:
    """The coordinator partition of a group: CRC-32 of ``tenant/group`` (stable
    across processes and versions, unlike ``hash``) modulo ``partitions``."""
    if partitions < 1:
        raise ValueError(f"there must be at least one coordinator partition, not {partitions}")
    return zlib.crc32(f"{tenant}/{group}".encode()) % partitions


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _new_member_id() -> str:
    return str(uuid.uuid4())


# --- proto conversions -------------------------------------------------------------

_GROUP_STATE = {
    GroupState.EMPTY: groups_pb2.GROUP_STATE_EMPTY,
    GroupState.RECONCILING: groups_pb2.GROUP_STATE_RECONCILING,
    GroupState.STABLE: groups_pb2.GROUP_STATE_STABLE,
}
_MEMBER_STATE = {
    MemberState.STABLE: groups_pb2.MEMBER_STATE_STABLE,
    MemberState.UNREVOKED_PARTITIONS: groups_pb2.MEMBER_STATE_UNREVOKED_PARTITIONS,
    MemberState.UNRELEASED_PARTITIONS: groups_pb2.MEMBER_STATE_UNRELEASED_PARTITIONS,
}


def _to_proto(partitions: Iterable[TopicPartition]) -> list[groups_pb2.TopicPartitions]:
    by_topic: dict[str, list[int]] = {}
    for tp in sorted(partitions):
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return [groups_pb2.TopicPartitions(topic=t, partitions=p) for t, p in by_topic.items()]


def _from_proto(messages: Iterable[groups_pb2.TopicPartitions]) -> list[TopicPartition]:
    return [TopicPartition(m.topic, p) for m in messages for p in m.partitions]


# --- the servicer ------------------------------------------------------------------


@dataclass(slots=True)
class _Shard:
    """A loaded coordinator partition: its state and the term it is valid for."""

    partition: int
    term: int
    log: OffsetsLog
    coordinator: GroupCoordinator
    records_lock: asyncio.Lock
    """Held while a metadata or coordinator-started record is appended."""


class GroupService(GroupServiceMethods):
    def __init__(
        self,
        logs: CoordinatorLogs,
        topic_metadata: TopicMetadata,
        tenant_of: TenantOf = caller_tenant,
        *,
        config: GroupConfig | None = None,
        monotonic_ms: Callable[[], int] = _monotonic_ms,
        wall_ms: Callable[[], int] = _wall_ms,
        new_member_id: Callable[[], str] = _new_member_id,
        principal_of: Callable[[], Principal] = door_principal,
    ) -> None:
        super().__init__(tenant_of, principal_of)
        self._logs = logs
        self._topic_metadata = topic_metadata
        self._config = config or GroupConfig()
        self._config.validate()
        self._monotonic_ms = monotonic_ms
        self._wall_ms = wall_ms
        self._new_member_id = new_member_id
        self._shards: dict[int, _Shard] = {}
        self._loading: dict[int, asyncio.Lock] = {}
        self._appends: set[asyncio.Task[int]] = set()

    # --- handlers ------------------------------------------------------------------

    async def join_group(
        self, tenant: str, request: groups_pb2.JoinGroupRequest
    ) -> groups_pb2.JoinGroupResponse:
        check_member_id(request.member_id)
        member_id = request.member_id or self._new_member_id()
        with as_service_errors():
            shard = await self._shard(tenant, request.group)
            async with shard.records_lock:
                sessions = shard.coordinator.prepare_join(
                    tenant,
                    request.group,
                    member_id=member_id,
                    client_id=request.client_id,
                    topics=list(request.topics),
                    session_timeout_ms=request.session_timeout_ms,
                    rebalance_timeout_ms=request.rebalance_timeout_ms,
                )
                if sessions is not None:
                    # A longer session than the log allows: record it first, so
                    # that the next coordinator waits long enough for this member.
                    await shard.log.append([sessions.encode()])
                    shard.coordinator.record_sessions(sessions)
            answer = shard.coordinator.join(
                tenant,
                request.group,
                member_id=member_id,
                client_id=request.client_id,
                topics=list(request.topics),
                session_timeout_ms=request.session_timeout_ms,
                rebalance_timeout_ms=request.rebalance_timeout_ms,
                now_ms=self._monotonic_ms(),
            )
            await self._record_group(shard, tenant, request.group)
        return groups_pb2.JoinGroupResponse(
            member_id=answer.member_id,
            member_epoch=answer.member_epoch,
            assignment=_to_proto(answer.partitions),
            heartbeat_interval_ms=answer.heartbeat_interval_ms,
        )

    async def heartbeat(
        self, tenant: str, request: groups_pb2.HeartbeatRequest
    ) -> groups_pb2.HeartbeatResponse:
        check_member_id(request.member_id)
        with as_service_errors():
            shard = await self._shard(tenant, request.group)
            answer = shard.coordinator.heartbeat(
                tenant,
                request.group,
                member_id=request.member_id,
                member_epoch=request.member_epoch,
                owned=_from_proto(request.owned),
                now_ms=self._monotonic_ms(),
                topics=list(request.subscription.topics) if request.HasField("subscription") else None,
            )
            await self._record_group(shard, tenant, request.group)
        return groups_pb2.HeartbeatResponse(
            member_epoch=answer.member_epoch,
            assignment=_to_proto(answer.partitions),
            heartbeat_interval_ms=answer.heartbeat_interval_ms,
        )

    async def leave_group(
        self, tenant: str, request: groups_pb2.LeaveGroupRequest
    ) -> groups_pb2.LeaveGroupResponse:
        check_member_id(request.member_id)
        with as_service_errors():
            shard = await self._shard(tenant, request.group)
            shard.coordinator.leave(
                tenant,
                request.group,
                member_id=request.member_id,
                member_epoch=request.member_epoch,
                now_ms=self._monotonic_ms(),
            )
            await self._record_group(shard, tenant, request.group)
        return groups_pb2.LeaveGroupResponse()

    async def commit_offsets(
        self, tenant: str, request: groups_pb2.CommitOffsetsRequest
    ) -> groups_pb2.CommitOffsetsResponse:
        check_member_id(request.member_id)
        commit_timestamp_ms = self._wall_ms()
        with as_service_errors():
            shard = await self._shard(tenant, request.group)
            records = shard.coordinator.prepare_commit(
                tenant,
                request.group,
                member_id=request.member_id,
                member_epoch=request.member_epoch,
                offsets=[OffsetCommit(o.topic, o.partition, o.offset, o.metadata) for o in request.offsets],
                now_ms=self._monotonic_ms(),
                commit_timestamp_ms=commit_timestamp_ms,
            )
            if records:

                def apply(base: int) -> None:
                    for i, record in enumerate(records):
                        shard.coordinator.apply(base + i, record)

                await self._append(shard, [record.encode() for record in records], apply)
        return groups_pb2.CommitOffsetsResponse(commit_timestamp_ms=commit_timestamp_ms)

    async def fetch_committed_offsets(
        self, tenant: str, request: groups_pb2.FetchCommittedOffsetsRequest
    ) -> groups_pb2.FetchCommittedOffsetsResponse:
        with as_service_errors():
            shard = await self._shard(tenant, request.group)
            wanted = _from_proto(request.partitions) if request.partitions else None
            offsets = shard.coordinator.fetch_offsets(tenant, request.group, wanted)
        return groups_pb2.FetchCommittedOffsetsResponse(
            offsets=[
                groups_pb2.CommittedOffset(
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=entry.offset,
                    metadata=entry.metadata,
                    commit_timestamp_ms=entry.commit_timestamp_ms,
                )
                for tp, entry in offsets.items()
            ]
        )

    async def list_groups(
        self,
        tenant: str,
        request: groups_pb2.ListGroupsRequest,
        visible: Callable[[str], bool] = lambda _group: True,
    ) -> groups_pb2.ListGroupsResponse:
        """The tenant's groups this node coordinates that ``visible`` keeps."""
        with as_service_errors():
            summaries: list[GroupSummary] = []
            for partition in sorted(self._logs.led_partitions()):
                try:
                    shard = await self._load_partition(partition)
                except NotCoordinatorError:
                    continue  # lost it since led_partitions answered
                listed = shard.coordinator.list_groups(tenant, now_ms=self._monotonic_ms())
                summaries += [s for s in listed if visible(s.group)]
            # Each group hashes to one partition, so names are unique here.
            rows = sorted((text_key(s.group), s) for s in summaries)
            page = paginate(Listing("groups", (tenant,)), rows, request.page_size, request.page_token)
        return groups_pb2.ListGroupsResponse(
            groups=[
                groups_pb2.GroupSummary(
                    group=s.group, state=_GROUP_STATE[s.state], member_count=s.member_count
                )
                for s in page.items
            ],
            next_page_token=page.next_page_token,
        )

    async def describe_group(
        self, tenant: str, request: groups_pb2.DescribeGroupRequest
    ) -> groups_pb2.DescribeGroupResponse:
        with as_service_errors():
            shard = await self._shard(tenant, request.group)
            description = shard.coordinator.describe(tenant, request.group, now_ms=self._monotonic_ms())
        return groups_pb2.DescribeGroupResponse(
            group=description.group,
            state=_GROUP_STATE[description.state],
            group_epoch=description.group_epoch,
            assignment_epoch=description.assignment_epoch,
            coordinator_partition=shard.partition,
            members=[
                groups_pb2.MemberDescription(
                    member_id=m.member_id,
                    client_id=m.client_id,
                    member_epoch=m.member_epoch,
                    state=_MEMBER_STATE[m.state],
                    topics=m.topics,
                    assignment=_to_proto(m.assigned),
                    revoking=_to_proto(m.revoking),
                    target=_to_proto(m.target),
                    session_timeout_ms=m.session_timeout_ms,
                    rebalance_timeout_ms=m.rebalance_timeout_ms,
                    fenced=m.fenced,
                )
                for m in description.members
            ],
        )

    def committed_offsets(self) -> Iterator[tuple[str, str, TopicPartition, int]]:
        """``(tenant, group, partition, committed offset)`` of every group
        this node coordinates now, as loaded (a coordinator partition is
        loaded by the first request after it is led here; until then its
        groups are not listed). Read-only, never awaits: for the node's
        metrics (cluster/telemetry/node_collector.py)."""
        for partition, shard in list(self._shards.items()):
            try:
                if self._logs.log(partition).leader_term != shard.term:
                    continue  # led again since: replayed by the next request
            except NotCoordinatorError:
                continue
            for (tenant, group, tp), entry in shard.coordinator.offsets.snapshot().items():
                yield tenant, group, tp, entry.offset

    # --- upkeep --------------------------------------------------------------------------

    async def close(self) -> None:
        """Wait for appends still in flight (their callers may be gone)."""
        if self._appends:
            await asyncio.gather(*self._appends, return_exceptions=True)

    # --- shards ---------------------------------------------------------------------------

    async def _shard(self, tenant: str, group: str) -> _Shard:
        check_group(group)  # before any partition is loaded for it
        shard = await self._load_partition(coordinator_partition(tenant, group, self._logs.partition_count))
        if shard.coordinator.holders_known_record(self._monotonic_ms()) is not None:
            async with shard.records_lock:
                # The old fence has passed: say so, so that the next
                # coordinator takes over at once (takeover, invariant 4).
                record = shard.coordinator.holders_known_record(self._monotonic_ms())
                if record is not None:
                    await shard.log.append([record.encode()])
                    shard.coordinator.record_sessions(record)
        return shard

    async def _load_partition(self, partition: int) -> _Shard:
        """The partition's coordinator, replaying its log first when this node
        has no state for the current term."""
        try:
            log = self._logs.log(partition)
        except NotCoordinatorError:
            self._shards.pop(partition, None)
            raise
        shard = self._shards.get(partition)
        if shard is not None and shard.term == log.leader_term:
            return shard
        lock = self._loading.setdefault(partition, asyncio.Lock())
        async with lock:
            shard = self._shards.get(partition)
            term = log.leader_term
            if shard is None or shard.term != term:
                self._shards.pop(partition, None)
                # Epochs above any an earlier leadership handed out.
                coordinator = GroupCoordinator(self._topic_metadata, self._config, epoch_base=term << 32)
                async for log_offset, data in log.read_all():
                    coordinator.replay_record(log_offset, data)
                started = coordinator.start(self._monotonic_ms(), term)
                # Durable before anything is granted: the failover fence of
                # the next coordinator depends on it (coordinator.py).
                await log.append([started.encode()])
                coordinator.record_sessions(started)
                shard = _Shard(partition, term, log, coordinator, asyncio.Lock())
                self._shards[partition] = shard
            return shard

    def _discard(self, shard: _Shard) -> None:
        if self._shards.get(shard.partition) is shard:
            del self._shards[shard.partition]

    async def _record_group(self, shard: _Shard, tenant: str, group: str) -> None:
        """Return once the log holds the group's metadata as it is now
        (``takeover``, invariant 1). One append at a time per partition,
        carrying every group the log lacks, built when its turn comes."""
        needed = shard.coordinator.unrecorded_change(tenant, group)
        if needed is None:
            return  # nothing changed that the log lacks: a steady heartbeat
        async with shard.records_lock:
            if shard.coordinator.recorded_seq >= needed:
                return  # an append made while this one waited covered it
            seq, records = shard.coordinator.metadata_records()
            await self._append(
                shard,
                [record.encode() for record in records],
                lambda _: shard.coordinator.metadata_recorded(seq),
            )

    async def _append(self, shard: _Shard, entries: list[bytes], stored: Callable[[int], None]) -> None:
        """Append ``entries``, then call ``stored(first log offset)``; see the
        module invariants."""
        task = asyncio.ensure_future(shard.log.append(entries))
        self._appends.add(task)

        def settle(done: asyncio.Task[int]) -> None:
            # Runs when the append ends, before the waiting handler resumes
            # (it was registered before the shield's own callback).
            self._appends.discard(done)
            if done.cancelled():
                self._discard(shard)
                return
            error = done.exception()
            if error is None:
                stored(done.result())
            elif not isinstance(error, Backpressure | ProduceRejected):
                # Not led any more, or the outcome is unknown.
                self._discard(shard)

        task.add_done_callback(settle)
        await asyncio.shield(task)
