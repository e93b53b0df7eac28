"""Check-quorum and the leader lease (Raft thesis §6.2 and §4.2.3).

Rules checked here:
- A leader that has not heard from a quorum for an election timeout steps
  down, so a leader cut off from the majority stops acting as one.
- A follower that heard from a live leader within the election timeout
  ignores vote requests of a higher term (it would otherwise depose a
  healthy leader), unless the request is part of a leader transfer.
"""

from __future__ import annotations

from raft.types import CAMPAIGN_TRANSFER, Message, MessageType, Role
from tests.raft.harness import Network

MT = MessageType
ELECTION_TICK = 10


def test_isolated_leader_steps_down() -> None:
    """A leader cut off from both followers is still leader one tick short of
    an election timeout, and a follower within two timeouts (the first check
    still sees the acknowledgements of its election)."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK)
    leader = net.elect(1)
    net.isolate(1)

    net.tick(1, ELECTION_TICK - 1)
    assert leader.role == Role.LEADER
    net.tick(1, ELECTION_TICK + 1)
    assert leader.role == Role.FOLLOWER
    assert leader.term == 2
    assert leader.leader == 0


def test_leader_with_a_quorum_keeps_leading() -> None:
    """Losing one follower of three leaves a quorum: the leader stays."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK)
    net.elect(1)
    net.isolate(3)
    net.tick_all(5 * ELECTION_TICK)
    assert net.node(1).role == Role.LEADER
    assert net.node(1).term == 2


def test_without_check_quorum_isolated_leader_stays() -> None:
    """Contrast: with ``check_quorum=False`` an isolated leader never notices."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK, check_quorum=False)
    leader = net.elect(1)
    net.isolate(1)
    net.tick(1, 5 * ELECTION_TICK)
    assert leader.role == Role.LEADER


def higher_term_vote(net: Network, to: int, context: bytes = b"") -> Message:
    """A vote request from node 3, whose log is as up to date as any, in a
    term well above the group's."""
    node = net.node(3)
    return Message(
        MT.VOTE,
        to=to,
        sender=3,
        term=node.term + 5,
        index=node.last_index,
        log_term=node.term_at(node.last_index) or 0,
        context=context,
    )


def test_follower_in_lease_ignores_higher_term_vote() -> None:
    """Node 2 heard from leader 1 a tick ago: it ignores node 3's vote
    request of a higher term entirely (no term change, no vote, no reply)."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK)
    net.elect(1)
    net.tick_all()
    follower = net.node(2)

    follower.step(higher_term_vote(net, 2))
    net.process(2)

    assert (follower.term, follower.vote, follower.leader) == (2, 1, 1)
    assert not net.sent_of(MT.VOTE_RESPONSE, sender=2, to=3)


def test_leader_in_lease_ignores_higher_term_vote() -> None:
    """The leader itself also ignores a disruptive higher-term vote request."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK)
    leader = net.elect(1)
    leader.step(higher_term_vote(net, 1))
    assert leader.role == Role.LEADER
    assert leader.term == 2


def test_leader_transfer_vote_overrides_the_lease() -> None:
    """A vote request marked as a leader transfer is honoured in the lease:
    node 2 adopts the term and grants its vote."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK)
    net.elect(1)
    net.tick_all()
    follower = net.node(2)

    follower.step(higher_term_vote(net, 2, context=CAMPAIGN_TRANSFER))
    net.process(2)

    assert (follower.term, follower.vote) == (7, 3)
    assert not net.sent_of(MT.VOTE_RESPONSE, sender=2, to=3)[-1].reject


def test_follower_votes_once_the_lease_expired() -> None:
    """When node 2 has not heard from a leader for an election timeout, the
    same higher-term vote request is processed and granted."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK, pre_vote=False)
    net.elect(1)
    net.isolate(2)
    follower = net.node(2)
    net.tick(2, ELECTION_TICK)
    net.drop_queued()  # whatever it sent while cut off is lost
    vote = higher_term_vote(net, 2)

    follower.step(vote)
    net.process(2)

    assert (follower.term, follower.vote) == (vote.term, 3)
    assert not net.sent_of(MT.VOTE_RESPONSE, sender=2, to=3)[-1].reject
