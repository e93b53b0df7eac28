"""A draining host (``ReplicaHost.start_draining``: its node is stopping)
refuses leadership by transfer: it drops and counts inbound ``TIMEOUT_NOW``,
so a peer leader's transfer times out and that leader stays; its replicas
still campaign on a real election timeout. Three in-process hosts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from raft.types import Message, MessageType
from tests.partitions.replica_cluster import InProcessCluster

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    c = InProcessCluster(tmp_path)
    await c.start()
    yield c
    await c.close()


async def test_a_draining_host_refuses_transfers_and_counts_them(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    target = next(n for n in cluster.node_ids if n != leader.node_id)
    draining = cluster.hosts[target]
    await cluster.wait_until(lambda: leader.caught_up(target), what="the target to catch up")
    draining.start_draining()
    draining.start_draining()  # idempotent
    assert draining.draining and draining.refused_transfers == 0

    leader.transfer_leadership(target)
    await cluster.wait_until(lambda: draining.refused_transfers == 1, what="the TIMEOUT_NOW to be dropped")
    # Longer than the transfer's own timeout (an election timeout: 10-20
    # ticks of 10 ms): the transfer was abandoned, the leader stayed.
    await asyncio.sleep(0.5)
    assert leader.is_leader and await cluster.leader() is leader
    assert draining.replica(leader.group) is not None
    assert not draining.replica(leader.group).is_leader  # type: ignore[union-attr]

    # Only TIMEOUT_NOW is refused: other messages still reach the replica
    # (the leader's heartbeats keep the draining follower's log in step).
    stray = Message(MessageType.TIMEOUT_NOW, to=target, sender=leader.node_id, term=leader.status().term)
    draining.deliver([(leader.group, stray, False)])
    assert draining.refused_transfers == 2
    assert await cluster.leader() is leader

    # The same transfer to a host that is not draining goes through.
    other = next(n for n in cluster.node_ids if n not in (leader.node_id, target))
    await cluster.wait_until(lambda: leader.caught_up(other), what="the other to catch up")
    leader.transfer_leadership(other)
    await cluster.wait_until(
        lambda: cluster.hosts[other].replica(leader.group).is_leader,  # type: ignore[union-attr]
        what="the transfer to the host that is not draining",
    )
    assert cluster.hosts[other].refused_transfers == 0


async def test_draining_hosts_still_elect_a_leader_when_theirs_dies(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    for node, host in cluster.hosts.items():
        if node != leader.node_id:
            host.start_draining()
    await cluster.stop_host(leader.node_id)
    successor = await cluster.leader()  # by election timeout: a dead leader is replaced
    assert successor.node_id != leader.node_id
    assert all(host.draining for host in cluster.hosts.values())
