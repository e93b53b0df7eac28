"""Membership changes, one server at a time (Raft thesis §4.1; raft/membership.py).

Rules checked here:
- A new node starting from empty storage is caught up (snapshot, then log)
  and becomes a voter; a removed node is no longer replicated to or counted.
- Only one change may be uncommitted at a time, and a new leader may change
  membership only after committing an entry of its own term.
- A configuration takes effect when its entry is appended: a leader that
  removes itself keeps leading until the entry commits, then steps down.
- Invalid changes are refused with InvalidConfChange.
- A configuration entry truncated from a follower's log rolls back its
  membership; a restart rebuilds membership from snapshot plus log.
"""

from __future__ import annotations

import pytest

from raft.errors import ConfChangePending, InvalidConfChange
from raft.types import ConfChange, ConfChangeType, ConfState, MessageType, Role
from tests.raft.harness import Network

MT = MessageType
ADD_VOTER, ADD_LEARNER, REMOVE = (
    ConfChangeType.ADD_VOTER,
    ConfChangeType.ADD_LEARNER,
    ConfChangeType.REMOVE_NODE,
)


def voters_everywhere(net: Network, nodes: list[int]) -> list[frozenset[int]]:
    return [net.node(i).effective_conf_state.voters for i in nodes]


def test_added_node_is_caught_up_and_becomes_a_voter() -> None:
    """Node 4 starts with an empty storage. Once ``ADD_VOTER 4`` is proposed,
    the leader sends it the snapshot and the log; it applies everything
    after the snapshot, and all nodes count it as a voter."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.propose(1, b"before")
    net.deliver()
    net.add_member(4)

    leader.propose_conf_change(ConfChange(ADD_VOTER, 4))
    net.deliver()
    net.propose(1, b"after")
    net.deliver()

    assert net.sent_of(MT.SNAPSHOT, sender=1, to=4)
    assert voters_everywhere(net, [1, 2, 3, 4]) == [frozenset({1, 2, 3, 4})] * 4
    assert net.applied_data(4) == [b"before", b"after"]
    assert net.log(4) == net.log(1)
    assert net.node(4).commit_index == leader.commit_index


def test_removed_node_is_no_longer_replicated_to_or_counted() -> None:
    """After ``REMOVE_NODE 3`` commits, the leader drops node 3's progress,
    sends it nothing more, and commits with node 2 alone."""
    net = Network([1, 2, 3])
    leader = net.elect(1)

    leader.propose_conf_change(ConfChange(REMOVE, 3))
    net.deliver()
    assert leader.effective_conf_state == ConfState(voters=frozenset({1, 2}))
    assert leader.progress(3) is None
    sent_to_3 = len([m for m in net.sent if m.to == 3])

    net.isolate(3)  # it no longer matters
    index = net.propose(1, b"a")
    net.tick_all(3)

    assert leader.commit_index >= index
    assert net.applied_data(2) == [b"a"]
    assert len([m for m in net.sent if m.to == 3]) == sent_to_3


def test_only_one_change_at_a_time() -> None:
    """A second change is refused while the first is uncommitted, and allowed
    once it has committed."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.add_member(4)
    leader.propose_conf_change(ConfChange(ADD_LEARNER, 4))

    with pytest.raises(ConfChangePending):
        leader.propose_conf_change(ConfChange(REMOVE, 3))
    net.deliver()
    leader.propose_conf_change(ConfChange(REMOVE, 3))
    net.deliver()

    assert leader.effective_conf_state == ConfState(voters=frozenset({1, 2}), learners=frozenset({4}))


def test_new_leader_changes_membership_only_after_committing_in_its_term() -> None:
    """A leader whose empty entry is not yet committed refuses a change (its
    idea of the configuration may be stale); once it commits, it accepts."""
    net = Network([1, 2, 3])
    net.node(1).campaign()
    net.deliver(only=lambda m: m.type != MT.APPEND)
    leader = net.node(1)
    assert leader.role == Role.LEADER
    assert leader.term_at(leader.commit_index) != leader.term

    with pytest.raises(ConfChangePending):
        leader.propose_conf_change(ConfChange(REMOVE, 3))
    net.deliver()
    assert leader.term_at(leader.commit_index) == leader.term
    leader.propose_conf_change(ConfChange(REMOVE, 3))


def test_removed_leader_steps_down_once_the_removal_commits() -> None:
    """Leader 1 removes itself. It keeps leading while the entry is
    uncommitted (replicating to nodes 2 and 3, the new configuration), steps
    down once it commits, and never campaigns again; 2 and 3 elect a leader
    between them."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    campaigns_by_1 = len(net.sent_of(MT.PRE_VOTE, sender=1)) + len(net.sent_of(MT.VOTE, sender=1))
    index = leader.propose_conf_change(ConfChange(REMOVE, 1))
    net.process(1)
    assert leader.role == Role.LEADER
    assert leader.commit_index < index

    net.deliver()
    assert leader.role == Role.FOLLOWER
    net.tick_until(lambda: bool(set(net.leaders()) & {2, 3}))
    net.tick_all(30)

    [new_leader] = net.leaders()
    assert new_leader in (2, 3)
    assert len(net.sent_of(MT.PRE_VOTE, sender=1)) + len(net.sent_of(MT.VOTE, sender=1)) == campaigns_by_1
    net.propose(new_leader, b"a")
    net.deliver()
    assert net.applied_data(2) == net.applied_data(3) == [b"a"]
    assert net.node(2).effective_conf_state.voters == {2, 3}


@pytest.mark.parametrize(
    ("voters", "change", "reason"),
    [
        ([1, 2, 3], ConfChange(ADD_VOTER, 2), "already a voter"),
        ([1, 2, 3], ConfChange(REMOVE, 9), "not a member"),
        ([1, 2, 3], ConfChange(ADD_VOTER, 0), "positive"),
        ([1], ConfChange(REMOVE, 1), "last voter"),
        ([1], ConfChange(ADD_LEARNER, 1), "last voter"),
    ],
)
def test_invalid_changes_are_refused(voters: list[int], change: ConfChange, reason: str) -> None:
    """Changes that make no sense for the current membership raise
    InvalidConfChange and append nothing."""
    net = Network(voters)
    leader = net.elect(1)
    net.deliver()
    last = leader.last_index

    with pytest.raises(InvalidConfChange, match=reason):
        leader.propose_conf_change(change)
    assert leader.last_index == last


def test_truncated_conf_entry_rolls_membership_back() -> None:
    """Node 2 holds an uncommitted ``REMOVE_NODE 5`` from leader 1 and uses
    it at once. A new leader without that entry overwrites it, and node 2
    falls back to the previous configuration."""
    net = Network([1, 2, 3, 4, 5])
    net.elect(1)
    net.partition([1, 2], [3, 4, 5])
    net.node(1).propose_conf_change(ConfChange(REMOVE, 5))
    net.deliver()
    assert net.node(2).effective_conf_state.voters == {1, 2, 3, 4}

    net.heal()
    net.isolate(1)
    net.isolate(2)
    net.tick_until(lambda: bool(set(net.leaders()) & {3, 4, 5}))
    new_leader = next(i for i in net.leaders() if i in (3, 4, 5))
    net.propose(new_leader, b"a")
    net.deliver()
    net.heal()
    net.isolate(1)
    net.tick_until(lambda: net.node(2).commit_index == net.node(new_leader).commit_index)

    assert net.node(2).effective_conf_state.voters == {1, 2, 3, 4, 5}
    assert net.log(2) == net.log(new_leader)


def test_restart_rebuilds_membership_from_the_log() -> None:
    """A node restarted from storage recovers the membership of its log:
    the bootstrap snapshot's configuration plus every change entry after it,
    the uncommitted one included."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.add_member(4)
    leader.propose_conf_change(ConfChange(ADD_LEARNER, 4))
    net.deliver()
    leader.propose_conf_change(ConfChange(ADD_VOTER, 4))
    net.process(1)
    net.deliver(until_quiet=False, only=lambda m: m.type == MT.APPEND and m.to == 2)
    net.drop_queued()
    assert net.node(2).commit_index < net.node(2).last_index

    restarted = net.restart(2)

    assert restarted.effective_conf_state == ConfState(voters=frozenset({1, 2, 3, 4}))
    assert restarted.conf_state == ConfState(voters=frozenset({1, 2, 3}))


def test_a_removal_counts_as_committed_only_once_it_commits() -> None:
    """``effective_conf_state`` drops a removed node on append;
    ``committed_conf_state`` (what a node may delete its copy on) only once
    the change commits, so a removal a dying leader never committed is
    never taken for done."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.isolate(1)
    leader.propose_conf_change(ConfChange(REMOVE, 3))
    net.process(1)
    assert leader.effective_conf_state.voters == frozenset({1, 2})
    assert leader.committed_conf_state.voters == frozenset({1, 2, 3})
    net.heal()
    net.tick_all(3)
    assert leader.committed_conf_state.voters == frozenset({1, 2})
