"""``RaftNode.heard_from_node``: election liveness fed by a node's traffic
(issue 20).

Rules checked here:
- Off by default (``leader_node_grace_ticks=0``): node traffic changes nothing.
- A follower that keeps hearing from its leader's node does not campaign
  while its leader was silent in this group for less than the grace, and
  does once the grace and an election timeout ran out (a leader replica
  wedged on a live node is still replaced).
- Traffic from another node than the leader's does not hold the election.
- A leader counts a follower whose node it hears from as recently active
  (check-quorum), so it keeps leading while that follower's group replica
  is silent.
"""

from __future__ import annotations

import pytest

from raft.config import InvalidConfig, RaftConfig
from raft.types import Role
from tests.raft.harness import Network

ELECTION_TICK = 10
GRACE = 5 * ELECTION_TICK


def silent_leader(grace: int) -> Network:
    """Node 1 leads; from now on its group messages to node 2 are lost."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK, leader_node_grace_ticks=grace)
    net.elect(1)
    net.cut |= {(1, 2)}
    return net


def test_off_by_default_node_traffic_does_not_hold_an_election() -> None:
    net = silent_leader(0)
    follower = net.node(2)
    for _ in range(2 * ELECTION_TICK):
        follower.heard_from_node(1)
        net.tick(2)
    assert follower.election_timeouts == 1


def test_the_leaders_node_holds_the_election_for_the_grace_then_not() -> None:
    net = silent_leader(GRACE)
    follower = net.node(2)
    for _ in range(GRACE - 1):
        follower.heard_from_node(1)
        net.tick(2)
    assert follower.election_timeouts == 0
    assert follower.role == Role.FOLLOWER and follower.leader == 1
    # Past the grace node traffic no longer counts: one election timeout more.
    for _ in range(2 * ELECTION_TICK):
        follower.heard_from_node(1)
        net.tick(2)
    assert follower.election_timeouts == 1


def test_a_message_of_the_leader_in_the_group_restarts_the_grace() -> None:
    net = silent_leader(GRACE)
    follower = net.node(2)
    for _ in range(3):
        for _ in range(GRACE - 1):
            follower.heard_from_node(1)
            net.tick(2)
        net.heal()
        net.tick(1)  # a heartbeat reaches node 2
        net.deliver()
        net.cut |= {(1, 2)}
    assert follower.election_timeouts == 0


def test_another_nodes_traffic_does_not_hold_the_election() -> None:
    net = silent_leader(GRACE)
    follower = net.node(2)
    for _ in range(2 * ELECTION_TICK):
        follower.heard_from_node(3)
        net.tick(2)
    assert follower.election_timeouts == 1


def test_a_leader_keeps_a_quorum_of_nodes_it_hears_from() -> None:
    net = Network([1, 2, 3], election_tick=ELECTION_TICK, leader_node_grace_ticks=GRACE)
    leader = net.elect(1)
    net.isolate(1)  # no group message in either direction
    for _ in range(3 * ELECTION_TICK):
        leader.heard_from_node(2)
        net.tick(1)
    assert leader.role == Role.LEADER
    # Without the node traffic check-quorum deposes it.
    net.tick(1, 2 * ELECTION_TICK + 1)
    assert leader.role == Role.FOLLOWER


def test_a_negative_grace_is_refused() -> None:
    with pytest.raises(InvalidConfig, match="leader_node_grace_ticks"):
        RaftConfig(id=1, leader_node_grace_ticks=-1).validate()
