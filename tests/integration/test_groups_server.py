"""Consumer groups on a real 3-node cluster, over the raw GroupService: the
coordinator is the leader of the group's ``__consumer_offsets`` partition;
members split partitions; commits are durable through Raft and survive the
coordinator's node being killed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import grpc
import pytest

from client.admin import Admin
from client.auth import authorized_channel
from cluster.frontend.grpc_errors import error_info
from cluster.groups.group_logs import OFFSETS_TOPIC, SYSTEM_TENANT
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.v1 import groups_pb2, groups_pb2_grpc

pytestmark = pytest.mark.timeout(180)
T = TypeVar("T")


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("groups"), topics=[TopicSpec("t", partitions=4)])
    c.start_all()
    yield c
    c.close()


async def _on_coordinator(
    cluster: LocalCluster,
    call: Callable[[groups_pb2_grpc.GroupServiceStub], Awaitable[T]],
    timeout: float = 30,
) -> tuple[T, int]:
    """``call`` on whichever live node coordinates (following NOT_COORDINATOR
    answers); returns its answer and the node."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        for node in list(cluster.processes):
            async with authorized_channel(cluster.addresses[node], cluster.api_key) as channel:
                try:
                    return await call(groups_pb2_grpc.GroupServiceStub(channel)), node
                except grpc.aio.AioRpcError as error:
                    info = error_info(error)
                    retriable = info is not None and info.reason in ("NOT_COORDINATOR", "OUTCOME_UNKNOWN")
                    if not retriable and error.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
        assert asyncio.get_running_loop().time() < deadline, "no coordinator answered"
        await asyncio.sleep(0.2)


def _heartbeat(
    request: groups_pb2.HeartbeatRequest,
) -> Callable[[groups_pb2_grpc.GroupServiceStub], Awaitable[groups_pb2.HeartbeatResponse]]:
    return lambda stub: stub.Heartbeat(request, timeout=5)


def _owned(assignment: object) -> set[tuple[str, int]]:
    return {(tp.topic, p) for tp in assignment for p in tp.partitions}  # type: ignore[attr-defined]


async def test_members_split_partitions_and_commits_survive_a_coordinator_kill(cluster: LocalCluster) -> None:
    join = groups_pb2.JoinGroupRequest(group="g", topics=["t"], session_timeout_ms=6000)
    a, _ = await _on_coordinator(cluster, lambda s: s.JoinGroup(join, timeout=5))
    b, _ = await _on_coordinator(cluster, lambda s: s.JoinGroup(join, timeout=5))
    owned = {a.member_id: _owned(a.assignment), b.member_id: _owned(b.assignment)}
    epochs = {a.member_id: a.member_epoch, b.member_id: b.member_epoch}
    # Heartbeat until the group settles: each partition with exactly one member.
    for _ in range(50):
        for member in list(owned):
            hb = groups_pb2.HeartbeatRequest(
                group="g",
                member_id=member,
                member_epoch=epochs[member],
                owned=[groups_pb2.TopicPartitions(topic=t, partitions=[p]) for t, p in sorted(owned[member])],
            )
            answer, _ = await _on_coordinator(cluster, _heartbeat(hb))
            owned[member], epochs[member] = _owned(answer.assignment), answer.member_epoch
        if sorted(len(o) for o in owned.values()) == [2, 2]:
            break
        await asyncio.sleep(0.1)
    first, second = owned.values()
    assert len(first) == len(second) == 2, owned
    assert not first & second and first | second == {("t", p) for p in range(4)}, owned

    member = a.member_id
    mine = sorted(owned[member])
    commit = groups_pb2.CommitOffsetsRequest(
        group="g",
        member_id=member,
        member_epoch=epochs[member],
        offsets=[groups_pb2.OffsetToCommit(topic=t, partition=p, offset=100 + p) for t, p in mine],
    )
    await _on_coordinator(cluster, lambda s: s.CommitOffsets(commit, timeout=5))
    # A commit for a partition the member does not own is refused.
    theirs = sorted(owned[b.member_id])[0]
    stolen = groups_pb2.CommitOffsetsRequest(
        group="g",
        member_id=member,
        member_epoch=epochs[member],
        offsets=[groups_pb2.OffsetToCommit(topic=theirs[0], partition=theirs[1], offset=5)],
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _on_coordinator(cluster, lambda s: s.CommitOffsets(stolen, timeout=5))
    info = error_info(refused.value)
    # UNKNOWN_MEMBER_ID if an election moved the coordinator meanwhile.
    assert info is not None and info.reason in ("STALE_MEMBER_EPOCH", "UNKNOWN_MEMBER_ID"), info

    # Kill the coordinator's node: the offsets were committed through Raft.
    _, coordinator = await _on_coordinator(
        cluster, lambda s: s.DescribeGroup(groups_pb2.DescribeGroupRequest(group="g"), timeout=5)
    )
    await asyncio.to_thread(cluster.kill, coordinator)
    fetch = groups_pb2.FetchCommittedOffsetsRequest(group="g")
    # Only live nodes are asked: the answer comes from the new coordinator.
    fetched, _ = await _on_coordinator(
        cluster, lambda s: s.FetchCommittedOffsets(fetch, timeout=5), timeout=60
    )
    assert {(o.topic, o.partition): o.offset for o in fetched.offsets} == {(t, p): 100 + p for t, p in mine}


async def test_the_offsets_topic_is_compacted(cluster: LocalCluster) -> None:
    """Committed offsets and group metadata are state: the latest record per
    key is what counts, so ``__consumer_offsets`` is a compacted topic."""
    async with Admin(
        list(cluster.addresses.values()), api_key=cluster.api_key, tenant=SYSTEM_TENANT
    ) as admin:
        described = await admin.describe_topic(OFFSETS_TOPIC)
    assert described.cleanup_policy == "compact"
    assert not described.HasField("retention_ms"), "kept forever: no time retention"
