"""Pre-vote (Raft thesis §9.6, "Preventing disruptions when a server rejoins").

A node that times out first asks whether it *could* win, without changing
its term. A node cut off from the group therefore never inflates its term,
and when it rejoins it neither bumps the group's term nor deposes a healthy
leader. The classic protocol (no pre-vote, no check-quorum) is the contrast:
there the rejoining node's higher term forces an election.
"""

from __future__ import annotations

from raft.types import MessageType, Role
from tests.raft.harness import Network

MT = MessageType


def partition_and_rejoin(net: Network) -> None:
    """Node 1 leads; node 3 is cut off for 10 election timeouts and rejoins."""
    net.elect(1)
    net.isolate(3)
    net.tick_all(100)
    assert net.node(1).role == Role.LEADER
    net.heal()
    net.tick_all(30)


def test_rejoining_node_with_pre_vote_does_not_disrupt() -> None:
    """With pre-vote the isolated node keeps campaigning but never raises its
    term; after it rejoins, node 1 still leads in term 2 and node 3 follows."""
    net = Network([1, 2, 3])
    partition_and_rejoin(net)

    assert net.sent_of(MT.PRE_VOTE, sender=3), "node 3 never tried to campaign"
    assert not net.sent_of(MT.VOTE, sender=3)
    for node_id in net.members:
        assert net.node(node_id).term == 2
        assert net.node(node_id).leader == 1
    assert net.leaders() == [1]


def test_rejoining_node_without_pre_vote_forces_an_election() -> None:
    """Contrast: without pre-vote (and check-quorum) the isolated node raises
    its term at every timeout, and on rejoining it deposes node 1."""
    net = Network([1, 2, 3], pre_vote=False, check_quorum=False)
    net.elect(1)
    net.isolate(3)
    net.tick_all(100)
    isolated_term = net.node(3).term
    assert isolated_term > 5
    net.heal()
    net.tick_all(30)

    assert net.node(1).term >= isolated_term
    assert net.node(2).term >= isolated_term
    [leader] = net.leaders()
    assert net.node(leader).term >= isolated_term


def test_pre_vote_does_not_change_term_or_vote() -> None:
    """Asking for and granting a pre-vote changes no durable state: the
    pre-candidate and the voter keep their term and vote. Only a won pre-vote
    starts the real election in the next term."""
    net = Network([1, 2, 3])
    net.isolate(1)
    net.node(2).campaign()
    assert net.node(2).role == Role.PRE_CANDIDATE

    net.deliver(only=lambda m: m.type == MT.PRE_VOTE)

    [response] = net.sent_of(MT.PRE_VOTE_RESPONSE, sender=3)
    assert not response.reject
    for node_id in (2, 3):
        assert (net.node(node_id).term, net.node(node_id).vote) == (1, 0)
    assert net.node(3).role == Role.FOLLOWER

    net.deliver(only=lambda m: m.type == MT.PRE_VOTE_RESPONSE)

    assert net.node(2).role == Role.CANDIDATE
    assert (net.node(2).term, net.node(2).vote) == (2, 2)
