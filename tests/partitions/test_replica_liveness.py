"""A follower's election timer under load (issue 20): ticks are stepped in
the order they arrived relative to the leader's messages, and traffic from
the leader's node (``ReplicaHost.node_heard``, fed by the transport) keeps a
follower from campaigning for a bounded grace only.

The hosts' clocks are stopped (an hour a tick) and the tests tick by hand,
so every figure here is in ticks, not in seconds of a loaded machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cluster.transport.raft_transport import RaftTransport
from partitions.replica import Replica, ReplicaConfig
from partitions.replica_host import HostConfig
from raft.types import Message, MessageType
from tests.partitions.replica_cluster import InProcessCluster

pytestmark = pytest.mark.timeout(60)

ELECTION_TICK = 10
GRACE = 3 * ELECTION_TICK  # ReplicaConfig's default


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    config = HostConfig(
        tick_interval_s=3600.0,  # no clock: the tests tick
        replica=ReplicaConfig(election_tick=ELECTION_TICK, hibernate=False),
    )
    c = InProcessCluster(tmp_path, config=config)
    await c.start()
    c.hosts[1].replica(1).campaign()  # type: ignore[union-attr]
    leader = await c.leader()
    assert leader.node_id == 1
    await c.wait_until(lambda: all(r.leader == 1 for r in c.replicas()), what="followers know the leader")
    yield c
    await c.close()


def _replica(cluster: InProcessCluster, node: int) -> Replica:
    replica = cluster.hosts[node].replica(1)
    assert replica is not None
    return replica


async def _tick_all(cluster: InProcessCluster) -> None:
    """One tick on every replica, then let the messages it caused flow:
    a round trip (heartbeat, response) through every owner task, whatever
    their writes to a loaded disk take, so ticks never outrun messages."""
    for replica in cluster.replicas():
        replica.tick()
    for _ in range(3):  # send, deliver, answer
        await asyncio.sleep(0.001)
        while any(r._inbox for r in cluster.replicas()):
            await asyncio.sleep(0.001)


async def _ticks_until_campaign(cluster: InProcessCluster, heard_from: int | None, limit: int) -> int:
    """Cut the leader (node 1) off from node 3 and tick until node 3
    campaigns; each tick node 3's host hears from ``heard_from``'s node
    (None: from nobody). Returns the ticks it took (``limit`` + 1: never)."""
    follower = _replica(cluster, 3)
    before = follower.election_timeouts
    cluster.cut.add((1, 3))
    for n in range(1, limit + 1):
        if heard_from is not None:
            cluster.hosts[3].node_heard(heard_from)
        await _tick_all(cluster)
        if follower.election_timeouts > before:
            return n
    return limit + 1


async def test_ticks_queued_behind_leader_messages_start_no_election(cluster: InProcessCluster) -> None:
    # The follower's owner task was busy (a long write) while the leader's
    # heartbeats kept arriving, two ticks apart: 2 * ELECTION_TICK + 4 ticks
    # in all, more than any randomized timeout. Stepped in arrival order,
    # the timer never passes 2; all ticks first would start an election.
    follower = _replica(cluster, 3)
    term = follower.term
    before = follower.election_timeouts
    for _ in range(ELECTION_TICK + 2):
        follower.deliver(Message(MessageType.HEARTBEAT, to=3, sender=1, term=term))
        follower.tick()
        follower.tick()
    await asyncio.sleep(0.05)
    assert follower.election_timeouts == before
    assert follower.leader == 1 and follower.term == term


async def test_heard_from_the_leaders_node_holds_off_an_election_for_the_grace_only(
    cluster: InProcessCluster,
) -> None:
    took = await _ticks_until_campaign(cluster, heard_from=1, limit=GRACE + 3 * ELECTION_TICK)
    # Not while the grace lasts; and once it ran out, within one election
    # timeout (randomized: below 2 * ELECTION_TICK): a leader replica
    # wedged on a live node is still replaced.
    assert GRACE <= took < GRACE + 2 * ELECTION_TICK + 2, took


async def test_heard_from_another_node_changes_nothing(cluster: InProcessCluster) -> None:
    # Node 2 is not node 3's leader: its traffic must not keep node 3's
    # timer from running out as usual.
    took = await _ticks_until_campaign(cluster, heard_from=2, limit=GRACE + 3 * ELECTION_TICK)
    assert ELECTION_TICK <= took < 2 * ELECTION_TICK + 2, took


async def test_without_grace_node_traffic_is_ignored(tmp_path: Path) -> None:
    config = HostConfig(
        tick_interval_s=3600.0,
        replica=ReplicaConfig(election_tick=ELECTION_TICK, hibernate=False, leader_node_grace_ticks=0),
    )
    c = InProcessCluster(tmp_path, config=config)
    await c.start()
    try:
        c.hosts[1].replica(1).campaign()  # type: ignore[union-attr]
        await c.leader()
        await c.wait_until(lambda: all(r.leader == 1 for r in c.replicas()), what="followers know the leader")
        took = await _ticks_until_campaign(c, heard_from=1, limit=GRACE + 3 * ELECTION_TICK)
        assert took < 2 * ELECTION_TICK + 2, took
    finally:
        await c.close()


async def test_the_transport_reports_a_peer_at_most_once_an_interval() -> None:
    heard: list[int] = []
    transport = RaftTransport(
        1,
        {2: "127.0.0.1:1", 3: "127.0.0.1:2"},
        lambda _n, _b: None,
        on_heard=heard.append,
        heard_interval=0.05,
    )  # never started: _heard is what a batch, a ping or an ack calls
    peers = transport._peers
    for now in (10.0, 10.01, 10.04, 10.06, 10.07, 10.2):
        transport._heard(peers[2], now)
        transport._heard(peers[3], now + 0.001)
    assert heard == [2, 3] * 3  # at 10.0, 10.06 and 10.2 for each
