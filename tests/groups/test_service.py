"""The GroupService servicer over an in-memory OffsetsLog: the protocol over a
real gRPC connection (behind the front door, as on a node: the caller's
tenant comes from it, its errors become status codes with reasons),
coordinator failover, append failures, pagination across coordinator
partitions."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import pytest

from cluster.controller import Principal
from cluster.frontend.front_door import Caller, FrontDoor
from cluster.frontend.grpc_errors import ServiceError, error_info
from cluster.groups.membership import GroupConfig
from cluster.groups.offsets import (
    CoordinatorStarted,
    GroupMetadataDeleted,
    GroupMetadataRecord,
    OffsetCommitRecord,
    decode_record,
)
from cluster.groups.service import GroupService, NotCoordinatorError, coordinator_partition
from partitions.replica_errors import Backpressure, OutcomeUnknown
from raftlog.v1 import groups_pb2, groups_pb2_grpc
from raftlog.v1.reasons import Reason

TENANT_KEY = "x-test-tenant"
CONFIG = GroupConfig(
    default_session_timeout_ms=3_000,
    min_session_timeout_ms=1_000,
    max_session_timeout_ms=4_000,
    failover_margin_ms=1_000,
)
TOPICS = {("acme", "a"): 4, ("zeta", "a"): 1}


class MemoryLog:
    """An OffsetsLog in memory; ``fail``, ``gate`` and ``leader_term`` are
    knobs for the tests."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.leader_term = 1
        self.fail: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.reads = 0

    async def append(self, records: Sequence[bytes]) -> int:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        base = len(self.records)
        self.records.extend(records)
        return base

    async def read_all(self) -> AsyncIterator[tuple[int, bytes]]:
        self.reads += 1
        for log_offset, record in enumerate(list(self.records)):
            await asyncio.sleep(0)  # a replay takes time: let other requests in
            yield log_offset, record


class MemoryLogs:
    def __init__(self, count: int = 4) -> None:
        self.logs = {p: MemoryLog() for p in range(count)}
        self.led = set(self.logs)
        self.leader_address = "10.0.0.2:7001"

    @property
    def partition_count(self) -> int:
        return len(self.logs)

    def log(self, partition: int) -> MemoryLog:
        if partition not in self.led:
            raise NotCoordinatorError(partition, self.leader_address)
        return self.logs[partition]

    def led_partitions(self) -> Sequence[int]:
        return sorted(self.led)


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000


async def caller_from_header(context: grpc.aio.ServicerContext) -> Caller:
    """The front door's identification in these tests: the tenant header."""
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_KEY:
            return Caller(Principal("k", str(value)), str(value))
    raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, Reason.MISSING_API_KEY, "who are you?")


@dataclass
class Harness:
    service: GroupService
    logs: MemoryLogs
    clock: Clock

    def log_of(self, group: str, tenant: str = "acme") -> MemoryLog:
        return self.logs.logs[coordinator_partition(tenant, group, self.logs.partition_count)]


def harness() -> Harness:
    logs, clock = MemoryLogs(), Clock()
    ids = iter(f"server-chosen-{i}" for i in range(1000))
    service = GroupService(
        logs,
        lambda tenant, topic: TOPICS.get((tenant, topic), 0),
        config=CONFIG,
        monotonic_ms=lambda: clock.ms,
        wall_ms=lambda: 1_700_000_000_000,
        new_member_id=lambda: next(ids),
    )
    return Harness(service, logs, clock)


@pytest.fixture
async def served() -> AsyncIterator[tuple[Harness, groups_pb2_grpc.GroupServiceStub]]:
    h = harness()
    server = grpc.aio.server(interceptors=[FrontDoor(caller_from_header, lambda node: "")])
    groups_pb2_grpc.add_GroupServiceServicer_to_server(h.service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield h, groups_pb2_grpc.GroupServiceStub(channel)
    finally:
        await server.stop(grace=None)
        await h.service.close()


def legacy_started(term: int, session_ms: int) -> bytes:
    """A coordinator-started record as a node of version 1 wrote it."""
    return b"\x01\x02" + term.to_bytes(8, "big") + session_ms.to_bytes(4, "big")


def started_records(log: MemoryLog) -> list[object]:
    return [r for r in map(decode_record, log.records) if isinstance(r, CoordinatorStarted)]


def acme(tenant: str = "acme") -> tuple[tuple[str, str], ...]:
    return ((TENANT_KEY, tenant),)


def parts(assignment: Sequence[groups_pb2.TopicPartitions]) -> set[tuple[str, int]]:
    return {(tp.topic, p) for tp in assignment for p in tp.partitions}


def owned(*pairs: tuple[str, int]) -> list[groups_pb2.TopicPartitions]:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in pairs:
        by_topic.setdefault(topic, []).append(partition)
    return [groups_pb2.TopicPartitions(topic=t, partitions=p) for t, p in by_topic.items()]


async def refused(call: object) -> tuple[grpc.StatusCode, str, grpc.aio.AioRpcError]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    info = error_info(caught.value)
    assert info is not None
    return caught.value.code(), info.reason, caught.value


def join_request(member: str = "", group: str = "g") -> groups_pb2.JoinGroupRequest:
    return groups_pb2.JoinGroupRequest(group=group, topics=["a"], member_id=member, client_id="test")


def commit_request(
    member_epoch: int, partition: int, offset: int, *, member: str = "m1", topic: str = "a"
) -> groups_pb2.CommitOffsetsRequest:
    """A commit of one offset to group "g"."""
    return groups_pb2.CommitOffsetsRequest(
        group="g",
        member_id=member,
        member_epoch=member_epoch,
        offsets=[groups_pb2.OffsetToCommit(topic=topic, partition=partition, offset=offset)],
    )


# --- the protocol over gRPC ---------------------------------------------------------


async def test_two_members_share_a_topic_and_commits_survive(
    served: tuple[Harness, groups_pb2_grpc.GroupServiceStub],
) -> None:
    h, stub = served
    one = await stub.JoinGroup(join_request("m1"), metadata=acme())
    assert one.member_id == "m1" and parts(one.assignment) == {("a", p) for p in range(4)}
    assert one.heartbeat_interval_ms == 1_000

    await stub.CommitOffsets(
        groups_pb2.CommitOffsetsRequest(
            group="g",
            member_id="m1",
            member_epoch=one.member_epoch,
            offsets=[
                groups_pb2.OffsetToCommit(topic="a", partition=p, offset=10 + p, metadata="x")
                for p in range(4)
            ],
        ),
        metadata=acme(),
    )

    two = await stub.JoinGroup(join_request(), metadata=acme())
    assert two.member_id == "server-chosen-0" and not two.assignment
    beat = await stub.Heartbeat(
        groups_pb2.HeartbeatRequest(
            group="g", member_id="m1", member_epoch=one.member_epoch, owned=one.assignment
        ),
        metadata=acme(),
    )
    kept = parts(beat.assignment)
    assert len(kept) == 2
    # m1 commits what it gives up, lets go, then m2 gets it.
    await stub.Heartbeat(
        groups_pb2.HeartbeatRequest(
            group="g", member_id="m1", member_epoch=beat.member_epoch, owned=owned(*kept)
        ),
        metadata=acme(),
    )
    got = await stub.Heartbeat(
        groups_pb2.HeartbeatRequest(group="g", member_id=two.member_id, member_epoch=two.member_epoch),
        metadata=acme(),
    )
    assert parts(got.assignment) == {("a", p) for p in range(4)} - kept

    fetched = await stub.FetchCommittedOffsets(
        groups_pb2.FetchCommittedOffsetsRequest(group="g", partitions=got.assignment), metadata=acme()
    )
    assert {(o.topic, o.partition, o.offset, o.metadata) for o in fetched.offsets} == {
        ("a", p, 10 + p, "x") for _, p in parts(got.assignment)
    }
    assert all(o.commit_timestamp_ms == 1_700_000_000_000 for o in fetched.offsets)

    described = await stub.DescribeGroup(groups_pb2.DescribeGroupRequest(group="g"), metadata=acme())
    assert described.state == groups_pb2.GROUP_STATE_STABLE
    assert [m.member_id for m in described.members] == ["m1", "server-chosen-0"]
    assert described.coordinator_partition == coordinator_partition("acme", "g", 4)
    assert all(m.state == groups_pb2.MEMBER_STATE_STABLE and m.topics == ["a"] for m in described.members)

    await stub.LeaveGroup(
        groups_pb2.LeaveGroupRequest(group="g", member_id="m1", member_epoch=beat.member_epoch),
        metadata=acme(),
    )
    await stub.LeaveGroup(  # again: harmless
        groups_pb2.LeaveGroupRequest(group="g", member_id="m1", member_epoch=beat.member_epoch),
        metadata=acme(),
    )
    listed = await stub.ListGroups(groups_pb2.ListGroupsRequest(), metadata=acme())
    assert [(g.group, g.member_count) for g in listed.groups] == [("g", 1)] and not listed.next_page_token

    # The log holds the coordinator's start, the session the first join
    # needed, then exactly the committed records, among the group's
    # metadata (tests/groups/test_takeover.py); the last one is the member left.
    records = [decode_record(r) for r in h.log_of("g").records]
    last = records[-1]
    assert isinstance(last, GroupMetadataRecord)
    assert [m.member_id for m in last.snapshot.members] == ["server-chosen-0"]
    first, sessions, *commits = [
        r for r in records if not isinstance(r, GroupMetadataRecord | GroupMetadataDeleted)
    ]
    assert first == CoordinatorStarted(term=1, max_session_timeout_ms=0)
    assert sessions == CoordinatorStarted(term=1, max_session_timeout_ms=CONFIG.default_session_timeout_ms)
    assert [
        (r.tenant, r.group, r.partition, r.offset) for r in commits if isinstance(r, OffsetCommitRecord)
    ] == [("acme", "g", p, 10 + p) for p in range(4)]
    assert len(commits) == 4


async def test_errors_carry_codes_and_reasons(
    served: tuple[Harness, groups_pb2_grpc.GroupServiceStub],
) -> None:
    h, stub = served
    Code = grpc.StatusCode
    assert (
        await refused(stub.DescribeGroup(groups_pb2.DescribeGroupRequest(group="nope"), metadata=acme()))
    )[:2] == (Code.NOT_FOUND, "GROUP_NOT_FOUND")
    assert (await refused(stub.JoinGroup(join_request(group="bad name"), metadata=acme())))[:2] == (
        Code.INVALID_ARGUMENT,
        "INVALID_NAME",
    )
    assert (await refused(stub.JoinGroup(join_request(), metadata=())))[:2] == (
        Code.UNAUTHENTICATED,
        "MISSING_API_KEY",
    )
    one = await stub.JoinGroup(join_request("m1"), metadata=acme())
    commit = commit_request(one.member_epoch + 1, 0, 1)
    assert (await refused(stub.CommitOffsets(commit, metadata=acme())))[:2] == (
        Code.FAILED_PRECONDITION,
        "FENCED_MEMBER",
    )
    commit.member_id = "ghost"
    assert (await refused(stub.CommitOffsets(commit, metadata=acme())))[:2] == (
        Code.FAILED_PRECONDITION,
        "UNKNOWN_MEMBER_ID",
    )
    await stub.JoinGroup(join_request("m2"), metadata=acme())  # m1 must give some partitions up
    beat = await stub.Heartbeat(
        groups_pb2.HeartbeatRequest(
            group="g", member_id="m1", member_epoch=one.member_epoch, owned=one.assignment
        ),
        metadata=acme(),
    )
    given_up = parts(one.assignment) - parts(beat.assignment)
    await stub.Heartbeat(
        groups_pb2.HeartbeatRequest(
            group="g", member_id="m1", member_epoch=beat.member_epoch, owned=beat.assignment
        ),
        metadata=acme(),
    )
    (topic, partition) = sorted(given_up)[0]
    stale = commit_request(beat.member_epoch, partition, 1, topic=topic)
    assert (await refused(stub.CommitOffsets(stale, metadata=acme())))[:2] == (
        Code.FAILED_PRECONDITION,
        "STALE_MEMBER_EPOCH",
    )
    assert (
        await refused(stub.ListGroups(groups_pb2.ListGroupsRequest(page_token="garbage"), metadata=acme()))
    )[:2] == (Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")

    h.logs.led.discard(coordinator_partition("acme", "g", 4))
    code, reason, error = await refused(
        stub.Heartbeat(groups_pb2.HeartbeatRequest(group="g"), metadata=acme())
    )
    assert (code, reason) == (Code.FAILED_PRECONDITION, "NOT_COORDINATOR")
    info = error_info(error)
    assert info is not None and info.leader_address == "10.0.0.2:7001"
    assert info.metadata["coordinator_partition"] == str(coordinator_partition("acme", "g", 4))


async def test_tenants_do_not_see_each_other(
    served: tuple[Harness, groups_pb2_grpc.GroupServiceStub],
) -> None:
    _, stub = served
    mine = await stub.JoinGroup(join_request("m1"), metadata=acme("acme"))
    theirs = await stub.JoinGroup(join_request("m1"), metadata=acme("zeta"))
    assert len(parts(mine.assignment)) == 4 and parts(theirs.assignment) == {("a", 0)}
    listed = await stub.ListGroups(groups_pb2.ListGroupsRequest(), metadata=acme("nobody"))
    assert not listed.groups
    code, reason, _ = await refused(
        stub.DescribeGroup(groups_pb2.DescribeGroupRequest(group="g"), metadata=acme("nobody"))
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "GROUP_NOT_FOUND")


# --- handlers called directly -----------------------------------------------------


async def test_a_new_leadership_replays_offsets_and_keeps_members() -> None:
    h = harness()
    service = h.service
    one = await service.join_group("acme", join_request("m1"))
    assert parts(one.assignment) == {("a", p) for p in range(4)} and one.member_epoch > 1 << 32
    await service.commit_offsets("acme", commit_request(one.member_epoch, 2, 42))
    h.log_of("g").leader_term = 2  # leadership moved away and back, or another node took over

    kept = await service.heartbeat(
        "acme", groups_pb2.HeartbeatRequest(group="g", member_id="m1", member_epoch=one.member_epoch)
    )
    assert parts(kept.assignment) == {("a", p) for p in range(4)} and kept.member_epoch == one.member_epoch
    fetched = await service.fetch_committed_offsets(
        "acme", groups_pb2.FetchCommittedOffsetsRequest(group="g")
    )
    assert [(o.partition, o.offset) for o in fetched.offsets] == [(2, 42)]


async def test_a_new_leadership_over_an_older_versions_log_holds_grants() -> None:
    """The fall-back: a log whose coordinator recorded no group (version 1)."""
    h = harness()
    h.log_of("g").records.append(legacy_started(1, CONFIG.default_session_timeout_ms))
    service = h.service
    again = await service.join_group("acme", join_request("m1"))
    assert not again.assignment, "nothing is granted while members of the old coordinator may hold partitions"
    assert again.member_epoch > 1 << 32
    request = groups_pb2.HeartbeatRequest(group="g", member_id="m1", member_epoch=again.member_epoch)
    h.clock.ms += 2_500
    assert not (await service.heartbeat("acme", request)).assignment
    h.clock.ms += 2_500
    beat = await service.heartbeat("acme", request)
    assert parts(beat.assignment) == {("a", p) for p in range(4)}


async def test_a_failover_holds_grants_for_the_sessions_members_use_not_the_longest_allowed() -> None:
    """The regression: a new coordinator waited ``max_session_timeout_ms``
    plus the margin after every failover (a leader balance moving the
    offsets partition stalled each group for 65 s), whatever sessions its
    members had; now it waits for the longest session the log recorded."""
    h = harness()
    short = CONFIG.min_session_timeout_ms
    assert short + CONFIG.failover_margin_ms < CONFIG.max_session_timeout_ms
    request = join_request("m1")
    request.session_timeout_ms = short
    one = await h.service.join_group("acme", request)
    assert parts(one.assignment) == {("a", p) for p in range(4)}
    assert started_records(h.log_of("g")) == [
        CoordinatorStarted(1, 0),
        CoordinatorStarted(1, short),
    ], "the session is recorded before the member is admitted"
    await h.service.join_group("acme", request)  # again: the log allows it already
    assert len(started_records(h.log_of("g"))) == 2

    # The same log as a coordinator of an older version would have left it.
    h.log_of("g").records = [legacy_started(1, 0), legacy_started(1, short)]
    h.log_of("g").leader_term = 2
    again = await h.service.join_group("acme", request)
    assert not again.assignment, "members of the old coordinator may still hold partitions"
    beat = groups_pb2.HeartbeatRequest(group="g", member_id="m1", member_epoch=again.member_epoch)
    fence_ends = h.clock.ms + short + CONFIG.failover_margin_ms
    for now in [*range(h.clock.ms + 400, fence_ends, 400), fence_ends - 1]:
        h.clock.ms = now  # heartbeats within the session keep the member
        assert not (await h.service.heartbeat("acme", beat)).assignment
    h.clock.ms = fence_ends
    granted = await h.service.heartbeat("acme", beat)
    assert parts(granted.assignment) == {("a", p) for p in range(4)}


async def test_a_join_is_answered_only_once_the_log_allows_its_session() -> None:
    h = harness()
    await h.service.join_group("acme", join_request("m1"))  # loads the partition
    log = h.log_of("g")
    log.fail = NotCoordinatorError(0, "10.0.0.9:7001")
    longer = join_request("m2")
    longer.session_timeout_ms = CONFIG.max_session_timeout_ms
    with pytest.raises(ServiceError) as caught:
        await h.service.join_group("acme", longer)
    assert caught.value.info.reason == "NOT_COORDINATOR"
    log.fail = None
    described = await h.service.describe_group("acme", groups_pb2.DescribeGroupRequest(group="g"))
    assert [m.member_id for m in described.members] == ["m1"], "not admitted without the record"


async def test_a_coordinator_serves_only_once_its_start_is_recorded() -> None:
    h = harness()
    log = h.log_of("g")
    log.fail = NotCoordinatorError(0, "10.0.0.9:7001")  # lost the leadership while loading
    with pytest.raises(ServiceError) as caught:
        await h.service.join_group("acme", join_request("m1"))
    assert (
        caught.value.info.reason == "NOT_COORDINATOR" and caught.value.info.leader_address == "10.0.0.9:7001"
    )
    log.fail = None
    assert parts((await h.service.join_group("acme", join_request("m1"))).assignment)
    assert log.reads == 2 and started_records(log) == [
        CoordinatorStarted(1, 0),
        CoordinatorStarted(1, CONFIG.default_session_timeout_ms),
    ]


async def test_an_append_of_unknown_outcome_discards_the_partition_state() -> None:
    h = harness()
    one = await h.service.join_group("acme", join_request("m1"))
    h.log_of("g").fail = OutcomeUnknown(7, 0)
    with pytest.raises(ServiceError) as caught:
        await h.service.commit_offsets("acme", commit_request(one.member_epoch, 0, 1))
    assert (caught.value.code, caught.value.info.reason) == (grpc.StatusCode.UNAVAILABLE, "OUTCOME_UNKNOWN")
    h.log_of("g").fail = None
    await h.service.heartbeat(  # the member is back from the log's metadata
        "acme", groups_pb2.HeartbeatRequest(group="g", member_id="m1", member_epoch=one.member_epoch)
    )
    assert h.log_of("g").reads == 2, "the partition was replayed again"


async def test_a_cancelled_append_discards_the_partition_state() -> None:
    """The append itself was cancelled (not its caller): the outcome is unknown."""
    h = harness()
    one = await h.service.join_group("acme", join_request("m1"))
    h.log_of("g").fail = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        await h.service.commit_offsets("acme", commit_request(one.member_epoch, 0, 1))
    h.log_of("g").fail = None
    await h.service.heartbeat(  # the member is back from the log's metadata
        "acme", groups_pb2.HeartbeatRequest(group="g", member_id="m1", member_epoch=one.member_epoch)
    )
    assert h.log_of("g").reads == 2, "the partition was replayed again"


async def test_a_refused_append_keeps_the_partition_state() -> None:
    h = harness()
    one = await h.service.join_group("acme", join_request("m1"))
    h.log_of("g").fail = Backpressure("too many bytes waiting")
    commit = commit_request(one.member_epoch, 0, 1)
    with pytest.raises(ServiceError) as caught:
        await h.service.commit_offsets("acme", commit)
    assert (caught.value.code, caught.value.info.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "BACKPRESSURE",
    )
    h.log_of("g").fail = None
    await h.service.commit_offsets("acme", commit)
    assert h.log_of("g").reads == 1


async def test_a_commit_whose_caller_gave_up_still_lands() -> None:
    h = harness()
    one = await h.service.join_group("acme", join_request("m1"))
    gate = h.log_of("g").gate = asyncio.Event()
    caller = asyncio.ensure_future(h.service.commit_offsets("acme", commit_request(one.member_epoch, 3, 9)))
    await asyncio.sleep(0.01)
    caller.cancel()  # the client's deadline passed
    with pytest.raises(asyncio.CancelledError):
        await caller
    gate.set()
    await h.service.close()
    fetched = await h.service.fetch_committed_offsets(
        "acme", groups_pb2.FetchCommittedOffsetsRequest(group="g")
    )
    assert [(o.partition, o.offset) for o in fetched.offsets] == [(3, 9)]
    assert h.log_of("g").reads == 1, "the state was kept: the append did land"


async def test_concurrent_first_requests_replay_once() -> None:
    h = harness()
    h.log_of("g").records.extend(OffsetCommitRecord("acme", "g", "a", p, p, 0).encode() for p in range(4))
    answers = await asyncio.gather(
        *(
            h.service.fetch_committed_offsets("acme", groups_pb2.FetchCommittedOffsetsRequest(group="g"))
            for _ in range(5)
        )
    )
    assert h.log_of("g").reads == 1
    assert all(len(a.offsets) == 4 for a in answers)


async def test_an_unreadable_log_is_not_served() -> None:
    h = harness()
    h.log_of("g").records.append(b"\x09future record")
    with pytest.raises(ServiceError) as caught:
        await h.service.describe_group("acme", groups_pb2.DescribeGroupRequest(group="g"))
    assert (caught.value.code, caught.value.info.reason) == (
        grpc.StatusCode.INTERNAL,
        "OFFSETS_LOG_UNREADABLE",
    )


async def test_list_groups_pages_through_every_led_partition() -> None:
    h = harness()
    names = [f"group-{i:02d}" for i in range(23)]
    for name in names:
        await h.service.join_group("acme", join_request("m1", group=name))
    await h.service.join_group("zeta", join_request("m1", group="zeta-only"))
    seen: list[str] = []
    tokens: list[str] = []
    token = ""
    while True:
        page = await h.service.list_groups(
            "acme", groups_pb2.ListGroupsRequest(page_size=5, page_token=token)
        )
        assert len(page.groups) <= 5
        seen += [g.group for g in page.groups]
        token = page.next_page_token
        if not token:
            break
        tokens.append(token)
    assert seen == names and len(tokens) == 4

    h.logs.led.discard(0)  # partition 0 is led elsewhere now: its groups are listed there
    page = await h.service.list_groups("acme", groups_pb2.ListGroupsRequest(page_size=100))
    assert [g.group for g in page.groups] == [n for n in names if coordinator_partition("acme", n, 4) != 0]
    with pytest.raises(ServiceError) as caught:  # a page token is bound to its tenant's listing
        await h.service.list_groups("zeta", groups_pb2.ListGroupsRequest(page_token=tokens[0]))
    assert caught.value.info.reason == "INVALID_PAGE_TOKEN"


def test_coordinator_partition_is_a_stable_hash() -> None:
    assert coordinator_partition("acme", "g", 50) == zlib.crc32(b"acme/g") % 50
    assert coordinator_partition("acme", "g", 1) == 0
    spread = {coordinator_partition("acme", f"g{i}", 8) for i in range(200)}
    assert spread == set(range(8))
    with pytest.raises(ValueError):
        coordinator_partition("acme", "g", 0)
