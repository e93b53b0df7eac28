"""The replica driver on three in-process hosts: replication, produce results,
idempotent retries, bad input, hibernation, restart, retention."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from partitions.replica import ReplicaConfig
from partitions.replica_errors import NotLeaderError, ProduceRejected
from partitions.replica_host import HostConfig
from partitions.state_machine import OffsetOutOfRange, PartitionConfig
from raft.types import ConfChange, ConfChangeType
from raftlog.v1.record_batch import decode_records, parse_header
from tests.partitions.replica_cluster import InProcessCluster, batch

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    c = InProcessCluster(tmp_path)
    await c.start()
    yield c
    await c.close()


def _all_values(result_batches: list[bytes]) -> list[tuple[int, bytes]]:
    out = []
    for b in result_batches:
        for record in decode_records(b):
            assert record.value is not None
            out.append((record.offset, record.value))
    return out


async def test_produce_assigns_contiguous_offsets_and_every_replica_applies(
    cluster: InProcessCluster,
) -> None:
    leader = await cluster.leader()
    offsets = []
    for i in range(20):
        result = await leader.produce(batch([f"v{i}-{j}".encode() for j in range(3)]))
        offsets.append((result.base_offset, result.last_offset))
    assert offsets == [(3 * i, 3 * i + 2) for i in range(20)]
    await cluster.wait_until(lambda: all(r.high_watermark == 60 for r in cluster.replicas()), what="replicas")
    read = leader.read(0, 1 << 20)
    assert [v for _, v in _all_values(read.batches)] == [
        f"v{i}-{j}".encode() for i in range(20) for j in range(3)
    ]
    assert [o for o, _ in _all_values(read.batches)] == list(range(60))
    # A read from the middle starts at the batch containing the offset.
    middle = leader.read(31, 1)
    assert parse_header(middle.batches[0]).base_offset == 30
    assert len(middle.batches) == 1


async def test_concurrent_produces_commit_in_one_order(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    results = await asyncio.gather(*(leader.produce(batch([str(i).encode()])) for i in range(200)))
    assert sorted(r.base_offset for r in results) == list(range(200))
    values = dict(_all_values(leader.read(0, 1 << 24).batches))
    for i, result in enumerate(results):
        assert values[result.base_offset] == str(i).encode()


async def test_a_retried_batch_returns_its_original_offsets(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    first = await leader.produce(batch([b"a", b"b"], producer_id=7, epoch=0, sequence=0))
    again = await leader.produce(batch([b"a", b"b"], producer_id=7, epoch=0, sequence=0))
    assert (again.base_offset, again.last_offset, again.duplicate) == (
        first.base_offset,
        first.last_offset,
        True,
    )
    assert leader.high_watermark == 2
    with pytest.raises(ProduceRejected) as gap:
        await leader.produce(batch([b"c"], producer_id=7, epoch=0, sequence=5))
    assert gap.value.reason == "OUT_OF_ORDER_SEQUENCE"
    assert leader.high_watermark == 2


async def test_bad_batches_are_rejected_and_change_nothing(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    await leader.produce(batch([b"x"], producer_id=9, epoch=3, sequence=0))
    good = batch([b"hello", b"world"])
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    cases = {
        "CORRUPT_BATCH": bytes(corrupt),
        "BATCH_TOO_LARGE": batch([b"z" * (1 << 20)]),
        "INVALID_PRODUCER_EPOCH": batch([b"old"], producer_id=9, epoch=2, sequence=1),
    }
    before = leader.status()
    for reason, data in cases.items():
        with pytest.raises(ProduceRejected) as info:
            await leader.produce(data)
        assert info.value.reason == reason, info.value.message
    after = leader.status()
    assert (after.high_watermark, after.last_index) == (before.high_watermark, before.last_index)


async def test_followers_refuse_produce_and_name_the_leader(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    await leader.produce(batch([b"x"]))
    follower = next(r for r in cluster.replicas() if not r.is_leader)
    await cluster.wait_until(lambda: follower.leader == leader.node_id, what="follower knows the leader")
    with pytest.raises(NotLeaderError) as info:
        await follower.produce(batch([b"y"]))
    assert info.value.leader == leader.node_id
    with pytest.raises(NotLeaderError):
        follower.read(0, 100)


async def test_idle_groups_hibernate_and_wake_on_produce(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    await leader.produce(batch([b"x"]))
    await cluster.wait_until(lambda: all(r.hibernating for r in cluster.replicas()), what="hibernation")
    assert all(not host.awake for host in cluster.hosts.values())
    sent = cluster.sent
    await asyncio.sleep(0.3)  # 30 ticks: nothing may be sent while asleep
    assert cluster.sent == sent
    result = await leader.produce(batch([b"y"]))
    assert result.base_offset == 1
    await cluster.wait_until(
        lambda: all(r.high_watermark == 2 for r in cluster.replicas()), what="replication"
    )
    await cluster.wait_until(lambda: all(r.hibernating for r in cluster.replicas()), what="hibernation again")


async def test_hibernated_followers_elect_a_new_leader_when_its_node_dies(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    await leader.produce(batch([b"before"]))
    await cluster.wait_until(lambda: all(r.hibernating for r in cluster.replicas()), what="hibernation")
    await cluster.stop_host(leader.node_id)
    new_leader = await cluster.leader()
    assert new_leader.node_id != leader.node_id
    result = await new_leader.produce(batch([b"after"]))
    assert result.base_offset == 1
    assert [v for _, v in _all_values(new_leader.read(0, 1 << 20).batches)] == [b"before", b"after"]


async def test_restart_keeps_every_acknowledged_batch(tmp_path: Path) -> None:
    c = InProcessCluster(tmp_path)
    await c.start()
    try:
        leader = await c.leader()
        acked = [await leader.produce(batch([f"{i}".encode()])) for i in range(30)]
        await c.close()
        await c.start()
        leader = await c.leader()
        await c.wait_until(lambda: leader.high_watermark >= 30, what="replay")
        values = _all_values(leader.read(0, 1 << 20).batches)
        assert [(o, v) for o, v in values[:30]] == [
            (r.base_offset, str(i).encode()) for i, r in enumerate(acked)
        ]
    finally:
        await c.close()


async def test_retention_drops_old_batches_and_a_lagging_follower_gets_a_snapshot(tmp_path: Path) -> None:
    partition = PartitionConfig(retention_bytes=20_000, checkpoint_interval_bytes=4_000)
    config = HostConfig(tick_interval_s=0.01, replica=ReplicaConfig(partition=partition, hibernate=False))
    c = InProcessCluster(tmp_path, config=config)
    await c.start()
    try:
        leader = await c.leader()
        lagging = next(r.node_id for r in c.replicas() if not r.is_leader)
        c.cut |= {(leader.node_id, lagging), (lagging, leader.node_id)}
        others = [n for n in c.node_ids if n not in (leader.node_id, lagging)]
        c.cut |= {(others[0], lagging), (lagging, others[0])}
        for i in range(100):
            await leader.produce(batch([bytes([i % 256]) * 1000]))
        for host in c.hosts.values():
            replica = host.replica(1)
            assert replica is not None
            replica.request_retention()
        await c.wait_until(lambda: leader.status().log_start_offset > 0, what="retention on the leader")
        start = leader.status().log_start_offset
        with pytest.raises(OffsetOutOfRange):
            leader.read(0, 100)
        assert parse_header(leader.read(start, 100).batches[0]).base_offset == start
        c.cut.clear()
        follower = c.hosts[lagging].replica(1)
        assert follower is not None
        await c.wait_until(lambda: follower.high_watermark == 100, what="the lagging follower catches up")
        assert follower.status().log_start_offset >= start
    finally:
        await c.close()


async def test_long_polls_that_time_out_leave_nothing_behind(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    await leader.produce(batch([b"x"]))
    for _ in range(20):
        assert not await leader.wait_for_data(1, 0.001)
    assert not leader._hw_waiters  # an idle partition is long-polled forever
    waiter = asyncio.create_task(leader.wait_for_data(1, 5.0))
    await asyncio.sleep(0.01)
    await leader.produce(batch([b"y"]))
    assert await waiter
    assert not leader._hw_waiters


async def test_removing_a_replica_with_its_data_leaves_an_empty_group(tmp_path: Path) -> None:
    """``remove_replica(delete_data=True)`` deletes what the group stored on
    that node (the others keep theirs); plain ``remove_replica`` keeps it."""
    c = InProcessCluster(tmp_path)
    await c.start(groups=(1, 2))
    try:
        for group in (1, 2):
            leader = await c.leader(group)
            await leader.produce(batch([b"x", b"y"]))
        await c.wait_until(
            lambda: all(r.high_watermark == 2 for g in (1, 2) for r in c.replicas(g)),
            what="replication",
        )
        host = c.hosts[3]
        await host.remove_replica(1, delete_data=True)
        await host.remove_replica(2)
        assert host.replica(1) is None and host.replica(2) is None
        # Reopened empty (as a node re-added to the group would be): group 1
        # has nothing, group 2 still has its log.
        emptied = await host.join_group(1)
        assert emptied.voters == frozenset() and emptied.high_watermark == 0
        kept = await host.join_group(2)
        assert kept.voters == frozenset(c.node_ids)
    finally:
        await c.close()


async def test_a_joined_member_catches_up_and_committed_members_drops_a_removed_node(
    cluster: InProcessCluster,
) -> None:
    """A node added to a running group (``join_group``: empty, no
    bootstrap) learns the log and the membership from the leader;
    ``change_membership`` answers once the change applied, and only a
    follower refuses it; ``committed_members`` drops a removed node once
    the removal committed."""
    leader = await cluster.leader()
    await leader.produce(batch([b"a", b"b"]))
    follower = next(r for r in cluster.replicas() if not r.is_leader)
    with pytest.raises(NotLeaderError):
        await follower.change_membership(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    host = await cluster.start_host(4, groups=())
    joined = await host.join_group(1)
    assert joined.members == frozenset() and joined.high_watermark == 0
    await leader.change_membership(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    assert leader.learners == frozenset({4})
    await cluster.wait_until(lambda: joined.high_watermark == 2, what="the learner catching up")
    await leader.change_membership(ConfChange(ConfChangeType.ADD_VOTER, 4))
    gone = follower.node_id
    await leader.change_membership(ConfChange(ConfChangeType.REMOVE_NODE, gone))
    assert gone not in leader.voters and gone not in leader.committed_members
    await cluster.wait_until(
        lambda: joined.voters == leader.voters and gone not in joined.committed_members,
        what="the new member learning the membership",
    )
