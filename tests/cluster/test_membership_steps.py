"""``next_membership_step``: how a partition leader walks its group's Raft
membership toward the controller's assignment without losing quorum."""

from __future__ import annotations

from cluster.controller import Assignment
from cluster.reconciler import next_membership_step
from raft.types import ConfChange, ConfChangeType

ADD_LEARNER, ADD_VOTER, REMOVE = (
    ConfChangeType.ADD_LEARNER,
    ConfChangeType.ADD_VOTER,
    ConfChangeType.REMOVE_NODE,
)


def assignment(replicas: tuple[int, ...], learners: tuple[int, ...] = ()) -> Assignment:
    return Assignment(7, "acme", "t", 1, 0, replicas, learners, 4)


def walk(
    me: int, voters: set[int], learners: set[int], target: Assignment, caught_up: set[int]
) -> list[object]:
    """Apply steps until none is left; checks quorum safety at each one."""
    steps: list[object] = []
    for _ in range(20):
        step = next_membership_step(
            me, frozenset(voters), frozenset(learners), target, caught_up.__contains__
        )
        if step is None:
            return steps
        steps.append(step)
        if isinstance(step, int):
            return steps  # leadership handed over: the new leader goes on
        assert isinstance(step, ConfChange)
        if step.type == ADD_LEARNER:
            learners.add(step.node_id)
        elif step.type == ADD_VOTER:
            learners.discard(step.node_id)
            voters.add(step.node_id)
        else:
            voters.discard(step.node_id)
            learners.discard(step.node_id)
        # Never fewer voters than the assignment asks for, while it is not reached.
        assert len(voters) >= len(target.replicas) or voters >= set(target.replicas)
    raise AssertionError(f"no fixed point: {steps}")


def test_a_dead_voter_is_replaced_learner_first_then_promoted_then_removed() -> None:
    target = assignment((1, 2, 4))  # node 3 died; node 4 replaces it
    steps = walk(1, {1, 2, 3}, set(), target, caught_up={1, 2, 4})
    assert steps == [
        ConfChange(ADD_LEARNER, 4),
        ConfChange(ADD_VOTER, 4),
        ConfChange(REMOVE, 3),
    ]


def test_a_learner_that_has_not_caught_up_is_not_promoted_and_the_old_voter_stays() -> None:
    target = assignment((1, 2, 4))
    voters, learners = {1, 2, 3}, {4}
    assert walk(1, voters, learners, target, caught_up={1, 2}) == []
    assert voters == {1, 2, 3} and learners == {4}


def test_a_leader_that_must_leave_hands_over_to_a_caught_up_replica() -> None:
    target = assignment((2, 3, 4))  # node 1, the leader, is decommissioned
    steps = walk(1, {1, 2, 3}, set(), target, caught_up={2, 3, 4})
    assert steps[:2] == [ConfChange(ADD_LEARNER, 4), ConfChange(ADD_VOTER, 4)]
    assert steps[-1] == 2
    assert walk(1, {1, 2, 3, 4}, set(), target, caught_up=set()) == []  # nobody to hand over to yet


def test_a_stale_learner_is_dropped_and_a_converged_group_needs_nothing() -> None:
    assert walk(1, {1, 2, 3}, {5}, assignment((1, 2, 3)), caught_up={1, 2, 3}) == [ConfChange(REMOVE, 5)]
    assert walk(1, {1, 2, 3}, set(), assignment((1, 2, 3)), caught_up=set()) == []
    assert walk(1, {1, 2, 3}, {4}, assignment((1, 2, 3), (4,)), caught_up={4}) == []
