"""cluster/routing/leader_map.py: the merge rules of leader claims, example by
example and as properties (any order of announcements ends the same)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.routing.leader_map import (
    NO_LEADER,
    InconsistentLeaderMap,
    LeaderClaim,
    LeaderMap,
    best_leader,
)

# --- the rules, one example each ------------------------------------------------------------


def test_a_higher_term_replaces_the_leader_and_a_lower_one_is_ignored() -> None:
    leaders = LeaderMap()
    assert leaders.announce(1, [(7, 3)]) == 1
    assert leaders.announce(2, [(7, 4)]) == 1
    assert leaders.leader(7) == 2
    assert leaders.announce(1, [(7, 3)]) == 0  # the old leader's late announcement
    assert leaders.claim(7) == LeaderClaim(term=4, leader=2)


def test_the_same_claim_again_changes_nothing() -> None:
    leaders = LeaderMap()
    leaders.announce(3, [(5, 2), (6, 2)])
    assert leaders.announce(3, [(5, 2), (6, 2)]) == 0
    assert leaders.snapshot() == {5: LeaderClaim(2, 3), 6: LeaderClaim(2, 3)}


def test_withdraw_drops_only_the_senders_own_claims() -> None:
    leaders = LeaderMap()
    leaders.announce(1, [(5, 3), (6, 3)])
    leaders.announce(2, [(6, 4)])
    assert leaders.withdraw(1, [5, 6, 7]) == [5]  # 6 is node 2's now, 7 nobody's
    assert leaders.snapshot() == {6: LeaderClaim(4, 2)}


def test_an_equal_term_keeps_the_higher_node_id_whatever_the_order() -> None:
    first, second = LeaderMap(), LeaderMap()
    first.announce(2, [(9, 5)])
    first.announce(4, [(9, 5)])
    second.announce(4, [(9, 5)])
    second.announce(2, [(9, 5)])
    assert first.leader(9) == second.leader(9) == 4


def test_claims_without_a_group_leader_or_term_are_ignored() -> None:
    leaders = LeaderMap()
    assert leaders.announce(1, [(0, 3), (4, 0)]) == 0
    assert leaders.learn(4, 0, 3) is False
    assert len(leaders) == 0
    assert leaders.leader(4) == NO_LEADER


def test_retain_drops_unassigned_groups_but_keeps_ids_not_allocated_yet() -> None:
    leaders = LeaderMap()
    leaders.announce(1, [(1, 1), (2, 1), (3, 1), (10, 1)])
    # The metadata allocated ids 1..4 and still assigns 1 and 3; group 10
    # was created by a newer metadata version than this node applied.
    assert leaders.retain({1, 3}.__contains__, next_group_id=5) == 1
    assert sorted(leaders.snapshot()) == [1, 3, 10]


def test_check_invariants_catches_a_bad_claim() -> None:
    leaders = LeaderMap()
    leaders.announce(1, [(2, 2)])
    leaders.check_invariants()
    leaders._claims[3] = LeaderClaim(term=0, leader=1)  # what learn() refuses to store
    with pytest.raises(InconsistentLeaderMap):
        leaders.check_invariants()


# --- best_leader: the local replica against the announced claim ---------------------------------


@pytest.mark.parametrize(
    ("local", "announced", "expected"),
    [
        (None, None, 0),
        (None, LeaderClaim(3, 2), 2),
        (LeaderClaim(3, 1), None, 1),
        (LeaderClaim(4, 0), None, 0),  # hosted, election under way: honest 0
        (LeaderClaim(4, 1), LeaderClaim(3, 2), 1),  # the replica saw a later term
        (LeaderClaim(4, 0), LeaderClaim(3, 2), 0),  # ... even with no leader yet
        (LeaderClaim(3, 1), LeaderClaim(5, 2), 2),  # a lagging replica loses
        (LeaderClaim(5, 0), LeaderClaim(5, 2), 2),  # same term, replica knows none
        (LeaderClaim(5, 3), LeaderClaim(5, 2), 3),  # same term: the replica saw it
    ],
)
def test_best_leader(local: LeaderClaim | None, announced: LeaderClaim | None, expected: int) -> None:
    assert best_leader(local, announced) == expected


# --- properties -----------------------------------------------------------------------------------

# (sender, group, term): small ranges so that groups and terms collide often.
claims = st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 8))
announcements = st.lists(
    st.tuples(st.integers(1, 5), st.lists(st.tuples(st.integers(1, 6), st.integers(1, 8)), max_size=6)),
    max_size=25,
)


def _expected(announced: list[tuple[int, list[tuple[int, int]]]]) -> dict[int, LeaderClaim]:
    """Each group's highest claim by (term, node id): what the rules say."""
    best: dict[int, LeaderClaim] = {}
    for sender, pairs in announced:
        for group, term in pairs:
            claim = LeaderClaim(term, sender)
            if group not in best or claim > best[group]:
                best[group] = claim
    return best


@given(announcements, st.randoms(use_true_random=False))
def test_any_order_and_any_repetition_ends_with_the_highest_term_leader(
    announced: list[tuple[int, list[tuple[int, int]]]], rng: random.Random
) -> None:
    shuffled = list(announced)
    rng.shuffle(shuffled)
    replayed = shuffled + rng.sample(shuffled, k=len(shuffled) // 2)  # duplicates, as a reconnect sends
    leaders = LeaderMap()
    for sender, pairs in replayed:
        leaders.announce(sender, pairs)
    leaders.check_invariants()
    assert leaders.snapshot() == _expected(announced)
    for group, claim in _expected(announced).items():
        # The highest term wins: no announcement named a later term for it.
        assert claim.term == max(t for _, pairs in announced for g, t in pairs if g == group)


@given(announcements, announcements)
def test_merging_in_two_halves_equals_merging_everything(
    left: list[tuple[int, list[tuple[int, int]]]], right: list[tuple[int, list[tuple[int, int]]]]
) -> None:
    """Two nodes that heard different halves and then the other half agree."""
    a, b = LeaderMap(), LeaderMap()
    for sender, pairs in left + right:
        a.announce(sender, pairs)
    for sender, pairs in right + left:
        b.announce(sender, pairs)
    assert a.snapshot() == b.snapshot()


@given(claims, st.lists(claims, max_size=20))
def test_a_claim_never_goes_back(first: tuple[int, int, int], later: list[tuple[int, int, int]]) -> None:
    leaders = LeaderMap()
    sender, group, term = first
    leaders.learn(group, sender, term)
    held = leaders.claim(group)
    for s, g, t in later:
        leaders.learn(g, s, t)
        now = leaders.claim(group)
        assert held is not None and now is not None and now >= held
        held = now
