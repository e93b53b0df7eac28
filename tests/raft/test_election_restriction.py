"""The election restriction (Raft paper §5.4.1).

A voter grants its vote only to a candidate whose log is at least as up to
date as its own: the candidate's last term is higher, or the last terms are
equal and the candidate's log is at least as long. Together with majority
commit this guarantees every leader holds every committed entry (leader
completeness).
"""

from __future__ import annotations

import random

import pytest

from raft.config import RaftConfig
from raft.node import RaftNode
from raft.screening import NOT_A_VOTER
from raft.storage import MemoryStorage
from raft.types import Entry, HardState, Message, MessageType, Role
from tests.raft.harness import Network

MT = MessageType


def node_with_log(terms: list[int]) -> RaftNode:
    """Node 1 of {1, 2, 3} whose log holds entries of ``terms`` from index 2
    (index 1 is the bootstrap snapshot, term 1)."""
    storage = MemoryStorage.bootstrap([1, 2, 3])
    storage.append([Entry(term=t, index=i) for i, t in enumerate(terms, start=2)])
    storage.set_hard_state(HardState(term=max(terms), commit=1))
    return RaftNode(RaftConfig(id=1, pre_vote=False, check_quorum=False), storage, random.Random(1))


def grants(node: RaftNode, last_index: int, last_term: int) -> bool:
    node.step(Message(MT.VOTE, to=1, sender=2, term=node.term + 1, index=last_index, log_term=last_term))
    rd = node.ready()
    node.advance(rd)
    [response] = [m for m in rd.messages_after_persist if m.type == MT.VOTE_RESPONSE]
    return not response.reject


# The voter's log: indexes 2..5 with terms 2, 2, 3, 3 (last entry: index 5, term 3).
VOTER_TERMS = [2, 2, 3, 3]


@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"),
    [
        (5, 3, True),  # identical last entry
        (6, 3, True),  # same last term, longer
        (4, 3, False),  # same last term, shorter
        (3, 4, True),  # higher last term wins even with a much shorter log
        (9, 2, False),  # a longer log with a lower last term loses
        (1, 1, False),  # only the bootstrap entry
    ],
)
def test_up_to_date_compares_last_term_then_index(last_index: int, last_term: int, granted: bool) -> None:
    """The vote goes by the candidate's last (term, index): last term first,
    log length only to break a tie."""
    node = node_with_log(VOTER_TERMS)
    assert grants(node, last_index, last_term) == granted
    assert node.vote == (2 if granted else 0)


def test_node_missing_committed_entries_cannot_win() -> None:
    """Node 3 missed committed entries. When the leader fails it campaigns,
    but node 2 (which holds them) refuses; node 3 stays a non-leader, and node
    2 wins and keeps every committed entry."""
    net = Network([1, 2, 3], pre_vote=False, check_quorum=False)
    net.elect(1)
    net.isolate(3)
    for n in range(3):
        net.propose(1, f"{n}".encode())
    net.deliver()
    committed = net.node(1).commit_index
    assert net.node(2).commit_index == committed > net.node(3).last_index
    net.heal()
    net.isolate(1)

    net.node(3).campaign()
    net.deliver()

    assert net.node(3).role != Role.LEADER
    assert net.sent_of(MT.VOTE_RESPONSE, sender=2, to=3)[-1].reject

    net.node(2).campaign()
    net.deliver()

    assert net.leader() == 2  # (node 1, cut off, still thinks it leads term 2)
    assert net.applied_data(3) == [b"0", b"1", b"2"]


def test_longer_log_of_stale_term_cannot_win() -> None:
    """A node whose log is longer but ends in an older term (an old leader's
    uncommitted tail) is refused by voters holding a newer term's entry, even
    when it campaigns in a term where their votes are still free."""
    net = Network([1, 2, 3], pre_vote=False, check_quorum=False)
    net.elect(1)
    net.isolate(1)
    for n in range(5):
        net.propose(1, f"stale-{n}".encode())
    net.elect(2)
    net.propose(2, b"fresh")
    net.deliver()
    assert net.node(1).last_index > net.node(2).last_index
    assert net.node(1).term_at(net.node(1).last_index) == 2 < net.node(2).term

    old_leader = net.restart(1)  # back as a follower, with its stale log
    for _ in range(2):  # campaigns alone: terms 3 and 4
        old_leader.campaign()
        net.process(1)
    net.drop_queued()
    net.heal()
    old_leader.campaign()  # term 5: nobody has voted in it yet
    net.deliver(only=lambda m: m.type in (MT.VOTE, MT.VOTE_RESPONSE))

    assert old_leader.term == 5
    assert old_leader.role != Role.LEADER
    responses = [m for m in net.sent_of(MT.VOTE_RESPONSE, to=1) if m.term == 5]
    assert len(responses) == 2
    assert all(m.reject for m in responses)
    assert net.node(2).vote == net.node(3).vote == 0


@pytest.mark.parametrize("kind", [MT.VOTE, MT.PRE_VOTE])
def test_a_member_with_an_empty_log_never_votes(kind: MessageType) -> None:
    """A member that has no log at all (added to a running group and not
    yet caught up, or whose data was deleted after a removal it never saw
    commit) cannot know what is committed: it refuses even a candidate with
    a long log, until a leader has given it one. It knows no voters either,
    so it ignores the request outright, without taking the candidate's term
    (raft/screening.py: a non-voter's request it could not grant)."""
    node = RaftNode(RaftConfig(id=1, pre_vote=False, check_quorum=False), MemoryStorage(), random.Random(1))
    node.step(Message(kind, to=1, sender=2, term=node.term + 10, index=50, log_term=9))
    rd = node.ready()
    node.advance(rd)
    responses = [m for m in (*rd.messages, *rd.messages_after_persist) if m.type != MT.HEARTBEAT]
    assert not [m for m in responses if not m.reject]
    assert node.vote == 0
    assert node.term == 0
    assert node.dropped_messages == {NOT_A_VOTER: 1}
