"""Leadership transfer (Raft thesis §3.10).

The leader stops accepting proposals, brings the target's log up to date,
then sends it TIMEOUT_NOW so it campaigns at once (skipping pre-vote and
overriding the followers' lease). Rules checked here:
- transfer to an up-to-date follower is immediate; to a lagging one only
  after it has caught up;
- proposals are refused while a transfer is in progress;
- a transfer that cannot finish within an election timeout is abandoned;
- only voters can be transfer targets.
"""

from __future__ import annotations

import pytest

from raft.errors import LeaderTransferInProgress
from raft.types import NO_NODE, MessageType, Role
from tests.raft.harness import Network

MT = MessageType
ELECTION_TICK = 10


def test_transfer_to_up_to_date_follower() -> None:
    """Node 2 is up to date: the leader sends TIMEOUT_NOW straight away and
    node 2 wins the next term; node 1 follows it."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.propose(1, b"a")
    net.deliver()
    appends_before = len(net.sent_of(MT.APPEND, sender=1, to=2))

    net.node(1).transfer_leader(2)
    net.process(1)
    assert [m.to for m in net.queue if m.type == MT.TIMEOUT_NOW] == [2]
    net.deliver()

    assert len(net.sent_of(MT.APPEND, sender=1, to=2)) == appends_before
    assert net.leaders() == [2]
    assert net.node(2).term == 3
    assert net.node(1).role == Role.FOLLOWER
    assert net.node(1).leader == 2
    net.propose(2, b"b")
    net.deliver()
    assert net.applied_data(1) == [b"a", b"b"]


def test_transfer_to_lagging_follower_catches_it_up_first() -> None:
    """Node 3 missed entries: the leader first replicates them, and only
    after node 3 acknowledges the last one does TIMEOUT_NOW go out."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    for n in range(5):
        net.propose(1, f"{n}".encode())
    net.deliver()
    net.heal()
    last = net.node(1).last_index
    assert net.node(3).last_index < last

    net.node(1).transfer_leader(3)
    net.process(1)
    assert not [m for m in net.queue if m.type == MT.TIMEOUT_NOW]
    net.deliver()

    sequence = [
        m for m in net.sent if m.type in (MT.APPEND_RESPONSE, MT.TIMEOUT_NOW) and 3 in (m.sender, m.to)
    ]
    [timeout_now] = [n for n, m in enumerate(sequence) if m.type == MT.TIMEOUT_NOW]
    caught_up = sequence[timeout_now - 1]
    assert (caught_up.type, caught_up.index, caught_up.reject) == (MT.APPEND_RESPONSE, last, False)
    assert net.leaders() == [3]
    assert net.applied_data(3) == [f"{n}".encode() for n in range(5)]


def test_proposals_are_refused_during_a_transfer() -> None:
    """While the target catches up, the leader refuses proposals with
    LeaderTransferInProgress; the new leader accepts them afterwards."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.isolate(3)
    net.propose(1, b"a")
    net.deliver()

    leader.transfer_leader(3)
    assert leader.lead_transferee == 3
    with pytest.raises(LeaderTransferInProgress):
        leader.propose(b"refused")

    net.heal()
    net.deliver()
    assert net.leaders() == [3]
    net.propose(3, b"b")
    net.deliver()
    for node_id in net.members:
        assert net.applied_data(node_id) == [b"a", b"b"]


def test_transfer_that_cannot_finish_is_abandoned_after_an_election_timeout() -> None:
    """The target is unreachable: the transfer (and the proposal block) lasts
    until an election timeout has passed, then the leader carries on."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK)
    leader = net.elect(1)
    net.isolate(3)
    leader.transfer_leader(3)
    net.process(1)

    net.tick_all(ELECTION_TICK - 1)
    assert leader.lead_transferee == 3
    with pytest.raises(LeaderTransferInProgress):
        leader.propose(b"refused")

    net.tick_all()
    assert leader.role == Role.LEADER
    assert leader.lead_transferee == NO_NODE
    net.propose(1, b"accepted")
    net.deliver()
    assert net.applied_data(2) == [b"accepted"]


def test_transfer_to_a_learner_is_ignored() -> None:
    """A learner cannot lead: a transfer to one changes nothing."""
    net = Network([1, 2, 3], learners=[4])
    leader = net.elect(1)

    leader.transfer_leader(4)
    net.deliver()

    assert leader.lead_transferee == NO_NODE
    assert not net.sent_of(MT.TIMEOUT_NOW)
    assert net.leaders() == [1]
    net.propose(1, b"accepted")
    net.deliver()
    assert net.applied_data(4) == [b"accepted"]


def test_transfer_to_self_or_stranger_is_ignored() -> None:
    """Transferring to the leader itself or to a non-member is a no-op."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    for target in (1, 9):
        leader.transfer_leader(target)
        net.deliver()
        assert leader.lead_transferee == NO_NODE
    assert not net.sent_of(MT.TIMEOUT_NOW)
    assert net.leaders() == [1]


def test_follower_forwards_transfer_request_to_the_leader() -> None:
    """A transfer asked at a follower is forwarded to the leader and done."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.node(2).transfer_leader(2)
    net.deliver()
    assert net.sent_of(MT.TRANSFER_LEADER, sender=2, to=1)
    assert net.leaders() == [2]
