"""Consumer groups in the SDK: ``Consumer.subscribe`` against the real
``cluster.groups.service.GroupService``.

Each test runs two in-process nodes (tests/client/fake_nodes.py): both serve
``FakeLog``'s partitions of topic ``t`` (node 0 leads them) and metadata;
node 0 also serves the real ``GroupService`` over in-memory offsets logs
(tests/groups/test_service.py), node 1 a ``GroupService`` that coordinates
nothing: it answers ``NOT_COORDINATOR`` (with node 0's address as the hint,
or without one) and lists no group.
Sessions are short (600 ms, heartbeats every 200 ms) so rebalances take a
fraction of a second.

Every offset commit that reaches the offsets log is audited against what
``poll`` has returned to the tests so far: the invariant under test is that
a committed offset never passes a record no ``poll`` returned.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from client import (
    Consumer,
    ConsumerRecord,
    FencedMemberError,
    GroupMembershipError,
    GroupNotFoundError,
    InvalidRequestError,
    NotCoordinatorError,
    NotFoundError,
    StaleMemberEpochError,
    SyncConsumer,
    TopicPartition,
    UnknownMemberIdError,
    from_rpc_error,
)
from client.admin import Admin
from cluster.frontend.grpc_errors import ServiceError, abort
from cluster.groups.membership import GroupConfig
from cluster.groups.offsets import OffsetCommitRecord, decode_record
from cluster.groups.service import GroupService, coordinator_partition
from raftlog.v1 import groups_pb2, groups_pb2_grpc
from raftlog.v1.reasons import Reason
from tests.client.test_consumer import FakeLog
from tests.groups.test_service import MemoryLog, MemoryLogs

pytestmark = pytest.mark.timeout(60)

TENANT = "acme"
GROUP = "g"
PARTITIONS = 4
SESSION_MS = 600
LOADED_SESSION_MS = 5_000
"""For a test whose member must never lose its session: on a loaded machine
(2 cores, load ~6) one heartbeat round trip through this in-process world
has taken over 600 ms, ending a short session and making the member rejoin."""
CONFIG = GroupConfig(
    default_session_timeout_ms=SESSION_MS,
    min_session_timeout_ms=100,
    max_session_timeout_ms=LOADED_SESSION_MS,
    failover_margin_ms=100,
)
ALL = {TopicPartition("t", p) for p in range(PARTITIONS)}


class AuditedLog(MemoryLog):
    """An offsets log that checks every offset commit appended to it
    against the records the tests' polls have returned."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world

    async def append(self, records: Sequence[bytes]) -> int:
        base = await super().append(records)
        for data in records:
            record = decode_record(data)
            if isinstance(record, OffsetCommitRecord):
                self.world.audit(record)
        return base


class Redirecting(groups_pb2_grpc.GroupServiceServicer):
    """A node that does not serve the group and cannot forward."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.calls = 0

    async def _refuse(self, context: grpc.aio.ServicerContext) -> Any:
        self.calls += 1
        hint = self.world.fake.addresses[0] if self.world.hint else ""
        await abort(
            context,
            ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION, Reason.NOT_COORDINATOR, "not here", leader_address=hint
            ),
        )

    async def JoinGroup(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._refuse(context)

    async def Heartbeat(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._refuse(context)

    async def LeaveGroup(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._refuse(context)

    async def CommitOffsets(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._refuse(context)

    async def FetchCommittedOffsets(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._refuse(context)

    async def DescribeGroup(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._refuse(context)

    async def ListGroups(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return groups_pb2.ListGroupsResponse()  # it leads no coordinator partition


async def tenant_of(context: grpc.aio.ServicerContext) -> str:
    return TENANT


@dataclass
class World:
    fake: FakeLog
    hint: bool = True
    logs: MemoryLogs = field(default_factory=MemoryLogs)
    delivered: dict[TopicPartition, set[int]] = field(default_factory=lambda: defaultdict(set))
    violations: list[str] = field(default_factory=list)
    commits: list[OffsetCommitRecord] = field(default_factory=list)
    service: GroupService | None = None
    redirecting: Redirecting | None = None

    def audit(self, record: OffsetCommitRecord) -> None:
        self.commits.append(record)
        tp = TopicPartition(record.topic, record.partition)
        missing = set(range(record.offset)) - self.delivered[tp]
        if missing:
            self.violations.append(f"commit of {tp} at {record.offset} passes unpolled {sorted(missing)[:5]}")

    def delivered_by(self, records: list[ConsumerRecord]) -> None:
        for r in records:
            self.delivered[TopicPartition(r.topic, r.partition)].add(r.offset)

    def committed(self) -> dict[TopicPartition, int]:
        """The latest commit of each partition, from the log."""
        return {TopicPartition(r.topic, r.partition): r.offset for r in self.commits}

    @property
    def coordinator_log(self) -> MemoryLog:
        return self.logs.logs[coordinator_partition(TENANT, GROUP, self.logs.partition_count)]

    def consumer(self, *, bootstrap: list[str] | None = None, **options: Any) -> Consumer:
        settings: dict[str, Any] = {
            "group_id": GROUP,
            "session_timeout_ms": SESSION_MS,
            "auto_commit_interval_ms": 100,
            "fetch_max_wait_ms": 100,
            "retry_backoff_ms": 10,
            "retry_backoff_max_ms": 100,
        }
        settings.update(options)
        return Consumer(bootstrap or self.fake.addresses, **settings)

    async def start(self) -> None:
        for p in list(self.logs.logs):
            self.logs.logs[p] = AuditedLog(self)
        self.service = GroupService(
            self.logs,
            lambda tenant, topic: self.fake.topics.get(topic, 0) if tenant == TENANT else 0,
            tenant_of,
            config=CONFIG,
        )
        self.redirecting = Redirecting(self)
        service, redirecting = self.service, self.redirecting
        await self.fake.start(2, groups=lambda index: service if index == 0 else redirecting)

    async def stop(self) -> None:
        await self.fake.stop()
        if self.service is not None:
            await self.service.close()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World(FakeLog(partitions=PARTITIONS))
    await w.start()
    try:
        yield w
    finally:
        await w.stop()
    assert not w.violations, w.violations


def fill(world: World, per_partition: int, start: int = 0) -> None:
    for p in range(PARTITIONS):
        world.fake.append(p, [f"{p}-{i}".encode() for i in range(start, start + per_partition)])


async def poll_into(
    world: World, consumer: Consumer, got: list[ConsumerRecord], timeout_s: float = 0.1
) -> None:
    records = await consumer.poll(timeout_s)
    world.delivered_by(records)  # before anything else runs: no commit can come in between
    got.extend(records)


async def until(
    condition: Callable[[], bool],
    world: World,
    consumers: Sequence[Consumer],
    got: dict[Consumer, list[ConsumerRecord]] | None = None,
    timeout_s: float = 10.0,
) -> None:
    """Poll every consumer in turn until ``condition()`` holds."""
    deadline = time.monotonic() + timeout_s
    sink = got if got is not None else {c: [] for c in consumers}
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        for consumer in consumers:
            await poll_into(world, consumer, sink.setdefault(consumer, []), 0.05)


def offsets_of(records: list[ConsumerRecord]) -> dict[TopicPartition, list[int]]:
    found: dict[TopicPartition, list[int]] = defaultdict(list)
    for r in records:
        found[TopicPartition(r.topic, r.partition)].append(r.offset)
    return found


def everything_delivered(world: World, per_partition: int) -> bool:
    return all(world.delivered[tp] >= set(range(per_partition)) for tp in ALL)


async def describe(world: World) -> groups_pb2.DescribeGroupResponse:
    assert world.service is not None
    return await world.service.describe_group(TENANT, groups_pb2.DescribeGroupRequest(group=GROUP))


async def crash(consumer: Consumer) -> None:
    """The member stops dead: no commit, no LeaveGroup, no more heartbeats."""
    group = consumer._group
    assert group is not None
    task = group._member_task
    assert task is not None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    group.member = None  # so close() only stops the fetchers and the channels
    group._member_task = None
    await consumer.close()


# --- the API's rules -------------------------------------------------------------------


async def test_subscribe_needs_a_group_and_excludes_assign(world: World) -> None:
    async with Consumer(world.fake.addresses) as plain:
        with pytest.raises(ValueError, match="group_id"):
            plain.subscribe(["t"])
        with pytest.raises(ValueError, match="group_id"):
            await plain.commit()
        with pytest.raises(ValueError, match="group_id"):
            await plain.committed([("t", 0)])
    async with world.consumer() as consumer:
        consumer.assign([("t", 0)])
        with pytest.raises(ValueError, match="exclusive"):
            consumer.subscribe(["t"])
        consumer.assign([])
        with pytest.raises(ValueError, match="at least one topic"):
            consumer.subscribe([])
        consumer.subscribe("t")
        assert consumer.subscription() == frozenset({"t"})
        with pytest.raises(ValueError, match="exclusive"):
            consumer.assign([("t", 0)])
        await consumer.unsubscribe()
        assert consumer.subscription() is None
        consumer.assign([("t", 0)])
    with pytest.raises(ValueError):
        Consumer(world.fake.addresses, group_id="")


def test_group_reasons_map_to_their_classes() -> None:
    from tests.client.test_errors import server_error

    Code = grpc.StatusCode
    cases: list[tuple[grpc.StatusCode, str, type[Exception], bool]] = [
        (Code.FAILED_PRECONDITION, "NOT_COORDINATOR", NotCoordinatorError, True),
        (Code.FAILED_PRECONDITION, "FENCED_MEMBER", FencedMemberError, False),
        (Code.FAILED_PRECONDITION, "UNKNOWN_MEMBER_ID", UnknownMemberIdError, False),
        (Code.FAILED_PRECONDITION, "STALE_MEMBER_EPOCH", StaleMemberEpochError, False),
        (Code.NOT_FOUND, "GROUP_NOT_FOUND", GroupNotFoundError, False),
    ]
    for code, reason, cls, retriable in cases:
        error = from_rpc_error(server_error(code, reason, leader_address="h:1"))
        assert type(error) is cls and error.retriable is retriable and error.reason == reason
    assert issubclass(GroupNotFoundError, NotFoundError)
    assert FencedMemberError.rejoin and UnknownMemberIdError.rejoin and not StaleMemberEpochError.rejoin
    assert issubclass(StaleMemberEpochError, GroupMembershipError)
    hinted = from_rpc_error(server_error(Code.FAILED_PRECONDITION, "NOT_COORDINATOR", leader_address="h:1"))
    assert hinted.leader_address == "h:1"


# --- membership and rebalances ------------------------------------------------------------


async def test_two_members_split_the_partitions_and_one_takes_all_when_the_other_closes(
    world: World,
) -> None:
    fill(world, 30)
    assigned: list[frozenset[TopicPartition]] = []
    revoked: list[frozenset[TopicPartition]] = []
    one = world.consumer(max_poll_records=7, on_assigned=assigned.append, on_revoked=revoked.append)
    two = world.consumer(max_poll_records=7)
    got: dict[Consumer, list[ConsumerRecord]] = {one: [], two: []}
    try:
        one.subscribe(["t"])
        await until(lambda: one.assignment() == ALL, world, [one], got)
        assert assigned == [frozenset(ALL)]
        two.subscribe(["t"])
        await until(lambda: len(one.assignment()) == 2 and len(two.assignment()) == 2, world, [one, two], got)
        assert not one.assignment() & two.assignment()
        assert revoked and revoked[0] == frozenset(two.assignment())
        fill(world, 20, start=30)
        await until(lambda: everything_delivered(world, 50), world, [one, two], got)
        mine = set(two.assignment())
        positions = {tp: two.position(tp) for tp in mine}
        assert positions == {tp: 50 for tp in mine}
        await two.close()  # auto commit: the positions, then LeaveGroup
        committed = world.committed()
        assert {tp: committed[tp] for tp in mine} == positions
        assert [m.member_id for m in (await describe(world)).members] == [one.member_id]
        await until(lambda: one.assignment() == ALL, world, [one], got, timeout_s=2.0)
    finally:
        await one.close()
        await two.close()


async def test_a_member_that_stops_heartbeating_loses_its_partitions_and_nothing_is_skipped(
    world: World,
) -> None:
    fill(world, 40)
    one = world.consumer(max_poll_records=3)
    two = world.consumer(max_poll_records=3)
    got: dict[Consumer, list[ConsumerRecord]] = {one: [], two: []}
    try:
        one.subscribe(["t"])
        two.subscribe(["t"])
        await until(lambda: len(one.assignment()) == 2 and len(two.assignment()) == 2, world, [one, two], got)
        # Both read a while and auto-commit (every 100 ms) what they processed.
        await until(lambda: len(got[two]) >= 12, world, [one, two], got)
        orphaned = set(two.assignment())
        await asyncio.sleep(0.25)  # let a commit or two land; two does not poll meanwhile
        await crash(two)
        committed = world.committed()
        mark = len(got[one])
        started = time.monotonic()
        await until(lambda: one.assignment() == ALL, world, [one], got)
        took = time.monotonic() - started
        assert took < 3 * SESSION_MS / 1000, f"the session ran out late: {took:.2f} s"
        await until(lambda: everything_delivered(world, 40), world, [one], got)
        # one resumed each orphaned partition exactly at its committed offset:
        # the records two polled after its last commit come again, none is skipped.
        for tp in orphaned:
            mine = offsets_of(got[one][mark:])[tp]
            assert mine == list(range(committed.get(tp, 0), 40)), (tp, committed)
    finally:
        await one.close()
        await two.close()


async def test_a_revoked_partition_is_committed_only_up_to_the_records_of_earlier_polls(
    world: World,
) -> None:
    fill(world, 20)
    one = world.consumer(max_poll_records=3, auto_commit_interval_ms=60_000)
    two = world.consumer(max_poll_records=3, auto_commit_interval_ms=60_000)
    got: dict[Consumer, list[ConsumerRecord]] = {one: [], two: []}
    try:
        one.subscribe(["t"])
        await until(
            lambda: one.assignment() == ALL and len(offsets_of(got[one])) == PARTITIONS, world, [one], got
        )
        # The batch of the last poll is in the application's hands: when the
        # partitions go, it must not be committed.
        last = await one.poll(2.0)
        world.delivered_by(last)
        got[one].extend(last)
        assert last
        in_hand = offsets_of(last)
        two.subscribe(["t"])
        await until(lambda: len(two.assignment()) == 2, world, [two], got)
        moved = set(two.assignment())
        before_last = offsets_of(got[one][: -len(last)])
        # Committed: up to the records of earlier polls, not those in hand.
        expected = {
            tp: in_hand[tp][0] if tp in in_hand else max(before_last[tp], default=-1) + 1 for tp in moved
        }
        await until(lambda: world.committed().keys() >= moved, world, [two], got)
        assert {tp: world.committed()[tp] for tp in moved} == expected, in_hand
        unfinished = {tp for tp in moved if expected[tp] < 20}
        await until(lambda: set(offsets_of(got[two])) >= unfinished, world, [two], got)
        for tp in unfinished:
            assert offsets_of(got[two])[tp][0] == expected[tp], "two starts where one's commit says"
        assert one.assignment() == ALL - moved
    finally:
        await one.close()
        await two.close()


async def test_manual_commits_survive_the_member_and_committed_reads_them(world: World) -> None:
    fill(world, 10)
    first = world.consumer(enable_auto_commit=False, max_poll_records=4)
    got: list[ConsumerRecord] = []
    first.subscribe(["t"])
    await until(
        lambda: (
            first.assignment() == ALL and len(got) >= 4 and all(first.position(tp) is not None for tp in ALL)
        ),
        world,
        [first],
        {first: got},
    )
    positions = {tp: first.position(tp) for tp in ALL}  # what commit() snapshots, before any await
    done = await first.commit()
    assert done == {tp: o for tp, o in positions.items() if o is not None}
    assert await first.commit() == {}, "nothing new: nothing sent"
    assert await first.committed() == {tp: done.get(tp) for tp in ALL}
    with pytest.raises(ValueError, match="not owned"):
        await first.commit({("t", 99): 1})
    await first.close()  # manual mode: no commit on close
    assert world.committed() == done

    second = world.consumer(enable_auto_commit=False)
    again: list[ConsumerRecord] = []
    try:
        second.subscribe(["t"])
        await until(
            lambda: everything_delivered(world, 10) and len(again) > 0, world, [second], {second: again}
        )
        for tp, offsets in offsets_of(again).items():
            assert offsets[0] == done.get(tp, 0), "the next member starts at the committed offset"
    finally:
        await second.close()


async def test_a_fenced_member_drops_everything_and_joins_again(world: World) -> None:
    fill(world, 10)
    lost: list[frozenset[TopicPartition]] = []
    one = world.consumer(on_lost=lost.append)
    got: list[ConsumerRecord] = []
    try:
        one.subscribe(["t"])
        await until(lambda: one.assignment() == ALL and len(got) >= 8, world, [one], {one: got})
        member = one._group.member if one._group is not None else None
        assert member is not None and member.joins == 1
        commits_before = len(world.commits)
        # Another incarnation with the same member id (a late join, say):
        # the coordinator fences the one the consumer runs.
        async with grpc.aio.insecure_channel(world.fake.addresses[0]) as channel:
            stub = groups_pb2_grpc.GroupServiceStub(channel)
            await stub.JoinGroup(
                groups_pb2.JoinGroupRequest(group=GROUP, topics=["t"], member_id=one.member_id)
            )
        await until(lambda: bool(lost), world, [one], {one: got})
        assert lost == [frozenset(ALL)]
        assert len(world.commits) == commits_before, "a fenced member does not commit"
        await until(lambda: member.joins == 2 and one.assignment() == ALL, world, [one], {one: got})
        await until(lambda: everything_delivered(world, 10), world, [one], {one: got})
    finally:
        await one.close()


async def test_after_a_coordinator_failover_members_keep_their_partitions_and_offsets(world: World) -> None:
    fill(world, 10)
    # What is tested is the takeover, not the session: a long one, so that a
    # slow heartbeat on a loaded machine does not end it (a rejoin would be
    # counted below as the takeover's doing).
    one = world.consumer(session_timeout_ms=LOADED_SESSION_MS)
    got: list[ConsumerRecord] = []
    try:
        one.subscribe(["t"])
        await until(
            lambda: one.assignment() == ALL and everything_delivered(world, 10), world, [one], {one: got}
        )
        await one.poll(0.01)  # the records are processed now
        # An auto commit lands (every 100 ms; under load one may time out and the next lands).
        await until(lambda: world.committed() == {tp: 10 for tp in ALL}, world, [one], {one: got})
        member = one._group.member if one._group is not None else None
        assert member is not None
        reads = world.coordinator_log.reads
        world.coordinator_log.leader_term += 1  # a new leader: it takes the group over from the log
        await until(lambda: world.coordinator_log.reads > reads, world, [one], {one: got})
        fill(world, 5, start=10)
        await until(lambda: everything_delivered(world, 15), world, [one], {one: got})
        assert member.joins == 1, "the new coordinator knew the member: it kept its partitions"
        assert one.assignment() == ALL
        counts = Counter((r.partition, r.offset) for r in got)
        assert all(n == 1 for n in counts.values()), "the committed offsets survived: nothing came twice"
    finally:
        await one.close()


@pytest.mark.parametrize("hint", [True, False], ids=["hint", "no-hint"])
async def test_a_node_that_is_not_the_coordinator_sends_the_client_on(world: World, hint: bool) -> None:
    world.hint = hint
    fill(world, 5)
    # Node 1 (first in the bootstrap list) does not serve the group.
    one = world.consumer(bootstrap=[world.fake.addresses[1], world.fake.addresses[0]])
    got: list[ConsumerRecord] = []
    try:
        one.subscribe(["t"])
        await until(lambda: everything_delivered(world, 5), world, [one], {one: got})
        await one.commit()
        assert world.redirecting is not None and world.redirecting.calls >= 1
    finally:
        await one.close()
    assert world.committed() == {tp: 5 for tp in ALL}


@pytest.mark.parametrize("hint", [True, False], ids=["hint", "no-hint"])
async def test_admin_describes_and_lists_groups_through_a_node_that_is_not_the_coordinator(
    world: World, hint: bool
) -> None:
    world.hint = hint
    fill(world, 3)
    one = world.consumer()
    got: list[ConsumerRecord] = []
    try:
        one.subscribe(["t"])
        await until(lambda: one.assignment() == ALL, world, [one], {one: got})
        async with Admin([world.fake.addresses[1], world.fake.addresses[0]], timeout_s=5) as admin:
            described = await admin.describe_group(GROUP)
            assert [m.member_id for m in described.members] == [one.member_id]
            assert world.redirecting is not None and world.redirecting.calls >= 1
            listed = await admin.list_groups()
            assert [(g.group, g.member_count) for g in listed] == [(GROUP, 1)]
            with pytest.raises(GroupNotFoundError):
                await admin.describe_group("nobody")
    finally:
        await one.close()


async def test_the_sync_consumer_subscribes_commits_and_leaves(world: World) -> None:
    fill(world, 6)
    addresses = list(world.fake.addresses)

    def run() -> tuple[dict[TopicPartition, int], dict[TopicPartition, int | None], int]:
        with SyncConsumer(
            addresses, group_id=GROUP, session_timeout_ms=SESSION_MS, enable_auto_commit=False
        ) as consumer:
            consumer.subscribe("t")
            records: list[ConsumerRecord] = []
            deadline = time.monotonic() + 10
            while len(records) < 6 * PARTITIONS:
                assert time.monotonic() < deadline
                batch = consumer.poll(0.2)
                world.delivered_by(batch)
                records.extend(batch)
            done = consumer.commit()
            return done, consumer.committed([("t", p) for p in range(PARTITIONS)]), len(records)

    done, committed, count = await asyncio.to_thread(run)
    assert count == 6 * PARTITIONS
    assert done == {tp: 6 for tp in ALL} and committed == {tp: 6 for tp in ALL}
    assert not (await describe(world)).members, "it left the group"


async def test_a_refusal_no_retry_can_change_ends_the_membership_and_poll_raises_it(world: World) -> None:
    consumer = world.consumer(group_id="not a valid name")
    try:
        consumer.subscribe(["t"])
        deadline = time.monotonic() + 5
        with pytest.raises(InvalidRequestError) as caught:
            while time.monotonic() < deadline:
                await consumer.poll(0.05)
        assert caught.value.reason == "INVALID_NAME"
        with pytest.raises(InvalidRequestError):
            await consumer.poll(0.01)  # every time: the consumer is of no use any more
    finally:
        await consumer.close()
