"""Learners: non-voting members (Raft thesis §4.2.1, "catching up new servers").

A learner receives and applies the log like a follower but is not part of
any quorum: it does not vote, does not count toward commit and never
campaigns. ``ConfChange(ADD_VOTER)`` promotes it, keeping its progress.
"""

from __future__ import annotations

from raft.types import ConfChange, ConfChangeType, Message, MessageType, Role
from tests.raft.harness import Network

MT = MessageType


def test_learner_receives_and_applies_entries() -> None:
    """Learner 4 applies the same entries, in the same order, as the voters."""
    net = Network([1, 2, 3], learners=[4])
    net.elect(1)
    for n in range(3):
        net.propose(1, f"{n}".encode())
    net.deliver()
    assert net.applied_data(4) == [b"0", b"1", b"2"]
    assert net.log(4) == net.log(1)


def test_learner_is_never_asked_for_a_vote() -> None:
    """Candidates ask voters only."""
    net = Network([1, 2, 3], learners=[4])
    net.elect(1)
    assert net.sent_of(MT.PRE_VOTE, sender=1)
    assert not net.sent_of(MT.PRE_VOTE, to=4)
    assert not net.sent_of(MT.VOTE, to=4)


def test_learner_vote_does_not_count() -> None:
    """Candidate 1 of voters {1, 2} with node 2 down cannot win, even if the
    learner's grant arrives."""
    net = Network([1, 2], learners=[3], pre_vote=False)
    net.isolate(2)
    candidate = net.node(1)
    candidate.campaign()
    net.process(1)

    candidate.step(Message(MT.VOTE_RESPONSE, to=1, sender=3, term=candidate.term))

    assert candidate.role == Role.CANDIDATE
    candidate.step(Message(MT.VOTE_RESPONSE, to=1, sender=2, term=candidate.term))
    assert candidate.role == Role.LEADER


def test_learner_does_not_count_toward_commit() -> None:
    """With both other voters cut off, the leader's entry reaches the learner
    but is not committed; one voter's acknowledgement commits it."""
    net = Network([1, 2, 3], learners=[4])
    leader = net.elect(1)
    net.isolate(2)
    net.isolate(3)
    index = net.propose(1, b"a")
    net.deliver()
    assert net.node(4).last_index == index
    assert leader.commit_index < index

    net.heal()
    net.isolate(3)
    net.tick_all()
    assert leader.commit_index == index


def test_learner_never_campaigns() -> None:
    """A learner cut off from the leader for many election timeouts stays a
    follower and sends no (pre-)vote request."""
    net = Network([1, 2, 3], learners=[4])
    net.elect(1)
    net.isolate(4)
    net.tick_all(100)

    learner = net.node(4)
    assert learner.role == Role.FOLLOWER
    assert learner.term == 2
    assert not net.sent_of(MT.PRE_VOTE, sender=4)
    assert not net.sent_of(MT.VOTE, sender=4)


def test_promoted_learner_becomes_a_voter() -> None:
    """After ``ADD_VOTER`` of learner 4 commits, every node counts it as a
    voter: it needs three of four acknowledgements to commit, and node 4 can
    now take over leadership."""
    net = Network([1, 2, 3], learners=[4])
    leader = net.elect(1)
    net.propose(1, b"a")
    net.deliver()

    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 4))
    net.deliver()

    for node_id in net.members:
        conf = net.node(node_id).effective_conf_state
        assert conf.voters == {1, 2, 3, 4}
        assert conf.learners == frozenset()
    # Two of four is no longer a majority.
    net.isolate(3)
    net.isolate(4)
    index = net.propose(1, b"b")
    net.deliver()
    assert leader.commit_index < index
    net.heal()
    net.tick_all()
    assert leader.commit_index >= index

    leader.transfer_leader(4)
    net.deliver()
    assert net.leaders() == [4]
    assert net.applied_data(4) == [b"a", b"b"]
