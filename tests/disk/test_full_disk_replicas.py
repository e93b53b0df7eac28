"""A full disk under real Raft groups, with a fake free-space probe per node
(in-process hosts, real RocksDB; tests/disk/test_full_disk_cluster.py does
the same with a real small filesystem and node processes).

Rules checked here (partitions/disk_space.py has the design):
- a leader below its reserve refuses produce with ``DiskFull`` (reason
  ``DISK_FULL``) before proposing, keeps serving reads, and takes produce
  again once space returns;
- a follower below its reserve drops incoming entries, the leader commits
  with the other follower, and the follower catches up once it has room;
- followers below their reserve tell the leader (a disk-low notice, kept
  by its driver: partitions/disk_wait.py); once fewer than a quorum of
  voters have room, the leader refuses produce with ``DiskFull`` naming the
  full nodes (before: it accepted the produce, which could not commit, and
  the client timed out); the produce proposed before it knew commits once
  space returns, and one full follower never blocks produce;
- a write the writer refuses below the floor stalls its replica instead of
  failing the node: the produce answers only once its entry is durable, and
  every acknowledged record is in every log exactly once, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from partitions.commands import decode_produce
from partitions.disk_space import MiB
from partitions.disk_wait import FULL_PEER_TTL_S, FullPeers, disk_low_notice, is_disk_low_notice
from partitions.replica import ProduceResult, Replica, ReplicaConfig
from partitions.replica_errors import DiskFull, NotLeaderError, OutcomeUnknown
from partitions.replica_host import HostConfig
from raft.progress import Progress
from raft.types import Message, MessageType
from raftlog.v1.reasons import Reason
from raftlog.v1.record_batch import decode_records
from tests.partitions.replica_cluster import InProcessCluster, batch

pytestmark = pytest.mark.timeout(60)

RESERVE = 64 * MiB
ROOMY = 10_000 * MiB


class FakeDisks:
    """Free bytes per node, read by every host's guard (``node<N>`` dirs)."""

    def __init__(self) -> None:
        self.free: dict[int, int] = {}

    def probe(self, path: Path) -> int:
        return self.free.get(int(path.name.removeprefix("node")), ROOMY)


@pytest.fixture
def disks() -> FakeDisks:
    return FakeDisks()


@pytest.fixture
async def cluster(tmp_path: Path, disks: FakeDisks) -> AsyncIterator[InProcessCluster]:
    config = HostConfig(
        tick_interval_s=0.01,
        replica=ReplicaConfig(election_tick=10),
        min_free_bytes=RESERVE,
        disk_probe=disks.probe,
        disk_refresh_s=0.0,
    )
    c = InProcessCluster(tmp_path, config=config)
    await c.start()
    yield c
    await c.close()


def values(replica: Replica) -> list[tuple[int, bytes]]:
    out = []
    for b in replica.read(0, 64 << 20).batches:
        for record in decode_records(b):
            assert record.value is not None
            out.append((record.offset, record.value))
    return out


def log_of(replica: Replica) -> list[bytes]:
    """The record values of a replica's partition log (leader or not), from
    its start offset in offset order: the batches its state machine gave
    offsets to (an idempotent retry it deduplicated is a Raft entry, but
    not in the log)."""
    sm, storage = replica._sm, replica._storage  # a test reads the replica's own copy
    locations = sm.locate(sm.log_start_offset, 64 << 20)
    if not locations:
        return []
    located = {loc.raft_index for loc in locations}
    out = []
    for entry in storage.entries(locations[0].raft_index, locations[-1].raft_index + 1):
        if entry.index in located:
            batch_bytes = bytes(decode_produce(entry.data).batch)
            out += [r.value for r in decode_records(batch_bytes) if r.value is not None]
    return out


async def produce_until_acked(cluster: InProcessCluster, data: bytes) -> ProduceResult:
    """An idempotent producer's loop: the same batch again until it is acked."""
    while True:
        leader = await cluster.leader()
        try:
            return await leader.produce(data)
        except (NotLeaderError, OutcomeUnknown):
            await asyncio.sleep(0.02)


async def test_a_full_leader_refuses_produce_and_keeps_serving_reads(
    cluster: InProcessCluster, disks: FakeDisks
) -> None:
    leader = await cluster.leader()
    for i in range(5):
        await leader.produce(batch([f"a{i}".encode()]))
    last_index = leader.status().last_index

    disks.free[leader.node_id] = RESERVE - 1
    with pytest.raises(DiskFull) as refused:
        await leader.produce(batch([b"refused"]))
    assert refused.value.reason == Reason.DISK_FULL
    assert "below its reserve" in refused.value.message and "reads still work" in refused.value.message
    assert leader.status().last_index == last_index  # nothing proposed
    assert [v for _, v in values(leader)] == [f"a{i}".encode() for i in range(5)]

    disks.free[leader.node_id] = ROOMY
    await leader.produce(batch([b"a5"]))
    await cluster.wait_until(lambda: all(r.high_watermark == 6 for r in cluster.replicas()), what="commit")
    for replica in cluster.replicas():
        assert log_of(replica) == [f"a{i}".encode() for i in range(6)]


async def test_a_full_follower_drops_entries_and_catches_up(
    cluster: InProcessCluster, disks: FakeDisks
) -> None:
    leader = await cluster.leader()
    await leader.produce(batch([b"b0"]))
    await cluster.wait_until(lambda: all(r.high_watermark == 1 for r in cluster.replicas()), what="commit")
    full = next(r for r in cluster.replicas() if not r.is_leader)
    held = full.status().last_index
    disks.free[full.node_id] = RESERVE // 2

    for i in range(1, 6):  # the leader commits with the other follower
        await leader.produce(batch([f"b{i}".encode()]))
    await asyncio.sleep(0.1)
    assert full.status().last_index == held
    assert full.disk_dropped_messages > 0

    disks.free[full.node_id] = ROOMY
    await cluster.wait_until(
        lambda: full.status().applied_index == leader.status().applied_index, what="catch up"
    )
    assert log_of(full) == log_of(leader) == [f"b{i}".encode() for i in range(6)]


async def test_a_leader_refuses_produce_once_a_quorum_of_its_followers_is_full(
    cluster: InProcessCluster, disks: FakeDisks
) -> None:
    leader = await cluster.leader()
    await leader.produce(batch([b"d0"]))
    await cluster.wait_until(lambda: all(r.high_watermark == 1 for r in cluster.replicas()), what="commit")
    followers = sorted(r.node_id for r in cluster.replicas() if not r.is_leader)
    for node in followers:
        disks.free[node] = RESERVE // 2  # below the reserve, above the floor: only followers

    # Proposed before the leader heard: it cannot commit, and stays pending.
    unknowing = asyncio.ensure_future(leader.produce(batch([b"d1"])))
    await cluster.wait_until(lambda: leader._full_peers.full() == set(followers), what="the notices")
    assert not unknowing.done()
    last_index = leader.status().last_index
    with pytest.raises(DiskFull) as refused:
        await asyncio.wait_for(leader.produce(batch([b"refused"])), 2)  # before: pending, then a timeout
    assert refused.value.reason == Reason.DISK_FULL
    assert f"node(s) {followers[0]}, {followers[1]}" in refused.value.message
    assert "quorum of its 3 replicas" in refused.value.message and "reads still work" in refused.value.message
    assert leader.status().last_index == last_index  # nothing proposed
    assert [v for _, v in values(leader)] == [b"d0"]

    del disks.free[followers[0]]  # one follower has room again: a quorum can commit
    assert (await asyncio.wait_for(unknowing, 10)).base_offset == 1
    assert (await leader.produce(batch([b"d2"]))).base_offset == 2  # the other is still full
    assert not leader._full_peers.blocking_quorum(leader.voters, leader.node_id)

    del disks.free[followers[1]]
    await cluster.wait_until(lambda: all(r.high_watermark == 3 for r in cluster.replicas()), what="catch up")
    for replica in cluster.replicas():
        assert log_of(replica) == [b"d0", b"d1", b"d2"]


def test_full_peers_count_until_new_entries_or_the_ttl() -> None:
    now = [0.0]
    peers = FullPeers(clock=lambda: now[0])
    append = Message(MessageType.APPEND, to=2, sender=1, term=3, entries=())
    notice = disk_low_notice(append)
    assert is_disk_low_notice(notice) and notice.to == 1 and notice.sender == 2
    assert not is_disk_low_notice(Message(MessageType.HEARTBEAT_RESPONSE, to=1, sender=2, term=3))
    peers.heard(2)
    peers.heard(3)
    assert peers.blocking_quorum({1, 2, 3}, 1) == (2, 3)
    assert peers.blocking_quorum({1, 2, 3, 4, 5}, 1) == ()  # 1, 4 and 5 still make a quorum
    match = Progress(11, max_inflight=8)
    match.match = 10
    stale = Message(MessageType.APPEND_RESPONSE, to=1, sender=2, term=3, index=10)
    peers.answered(stale, lambda node: match)  # nothing new stored: still full
    peers.answered(
        Message(MessageType.APPEND_RESPONSE, to=1, sender=2, term=3, index=11, reject=True), lambda n: match
    )
    assert peers.full() == {2, 3}
    peers.answered(Message(MessageType.APPEND_RESPONSE, to=1, sender=2, term=3, index=11), lambda node: match)
    assert peers.full() == {3} and peers.blocking_quorum({1, 2, 3}, 1) == ()
    now[0] = FULL_PEER_TTL_S + 0.1  # no notice since: forgotten
    assert peers.full() == frozenset()


async def test_a_write_refused_below_the_floor_stalls_and_resumes(
    cluster: InProcessCluster, disks: FakeDisks
) -> None:
    leader = await cluster.leader()
    acked = [await leader.produce(batch([b"c0"], producer_id=7, epoch=0, sequence=0))]
    await cluster.wait_until(lambda: all(r.high_watermark == 1 for r in cluster.replicas()), what="commit")

    data = batch([b"c1"], producer_id=7, epoch=0, sequence=1)
    pending = asyncio.ensure_future(leader.produce(data))
    await asyncio.sleep(0)  # the produce passed the reserve check and is queued
    for node in cluster.node_ids:  # then every disk fills up completely
        disks.free[node] = 0
    await asyncio.sleep(0.5)
    assert not pending.done()  # not acknowledged: nothing of it is durable here
    assert all(host.writer.failure is None for host in cluster.hosts.values())  # no node failed
    assert cluster.hosts[leader.node_id].disk.refusals > 0  # the leader's own write was refused

    for node in cluster.node_ids:
        disks.free[node] = ROOMY
    try:
        acked.append(await asyncio.wait_for(pending, 10))
    except (NotLeaderError, OutcomeUnknown):  # leadership moved while stalled: retry, deduplicated
        acked.append(await produce_until_acked(cluster, data))
    acked.append(await produce_until_acked(cluster, batch([b"c2"], producer_id=7, epoch=0, sequence=2)))
    assert [a.base_offset for a in acked] == [0, 1, 2]
    await cluster.wait_until(lambda: all(r.high_watermark == 3 for r in cluster.replicas()), what="commit")
    for replica in cluster.replicas():
        assert log_of(replica) == [b"c0", b"c1", b"c2"]
