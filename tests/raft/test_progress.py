"""``Progress``, ``Inflights`` and ``ProgressTracker`` (raft/progress.py,
raft/tracker.py): the leader's per-follower flow control and its quorum
arithmetic."""

from __future__ import annotations

from collections.abc import Iterable

from raft.progress import Inflights, Progress, ProgressState
from raft.tracker import ProgressTracker, VoteResult
from raft.types import ConfState


def test_inflights_fill_up_and_free_by_acknowledged_index() -> None:
    inflights = Inflights(3)
    for last in (5, 7, 9):
        inflights.add(last)
    assert inflights.full()
    inflights.free_le(7)  # an ack up to 7 covers the first two appends
    assert len(inflights) == 1
    assert not inflights.full()
    inflights.free_le(6)  # an older ack frees nothing more
    assert len(inflights) == 1
    inflights.free_first_one()
    assert len(inflights) == 0
    inflights.free_first_one()  # harmless when empty
    assert len(inflights) == 0


def replicating(match: int, next_index: int, capacity: int = 4) -> Progress:
    pr = Progress(match + 1, capacity)
    pr.match = match
    pr.become_replicate()
    pr.next = next_index
    return pr


def test_replicate_state_streams_until_the_window_is_full() -> None:
    """In REPLICATE, each append with entries moves ``next`` and takes a
    window slot; a full window pauses the follower."""
    pr = replicating(match=5, next_index=6, capacity=2)
    pr.sent_entries(8)
    assert (pr.next, pr.is_paused()) == (9, False)
    pr.sent_entries(10)
    assert (pr.next, pr.is_paused()) == (11, True)
    pr.sent_entries(None)  # an empty append takes no slot
    assert len(pr.inflights) == 2


def test_probe_state_allows_one_append_until_answered() -> None:
    pr = Progress(6, 4)
    assert pr.state == ProgressState.PROBE
    assert not pr.is_paused()
    pr.sent_entries(9)
    assert pr.is_paused()
    assert pr.next == 6, "probing does not move next optimistically"
    assert pr.maybe_update(9)
    assert not pr.is_paused()
    assert (pr.match, pr.next) == (9, 10)


def test_maybe_update_ignores_old_acknowledgements() -> None:
    pr = replicating(match=5, next_index=9)
    assert not pr.maybe_update(4)
    assert (pr.match, pr.next) == (5, 9)
    assert pr.maybe_update(7)
    assert (pr.match, pr.next) == (7, 9)


def test_replicate_rejection_falls_back_to_match() -> None:
    """A rejection above ``match`` means appends were lost or refused:
    restart from ``match + 1``. One at or below ``match`` is stale."""
    pr = replicating(match=5, next_index=12)
    assert not pr.maybe_decrease_to(rejected=5, match_hint=0)
    assert not pr.maybe_decrease_to(rejected=3, match_hint=0)
    assert pr.next == 12
    assert pr.maybe_decrease_to(rejected=9, match_hint=2)
    assert pr.next == 6


def test_probe_rejection_uses_the_hint_and_ignores_stale_ones() -> None:
    """In PROBE only the rejection of the outstanding probe counts (its
    rejected index is ``next - 1``); ``next`` moves to the hint, bounded
    below by ``match + 1`` and above by the rejected index."""
    pr = Progress(20, 4)
    pr.match = 3
    pr.sent_entries(None)
    assert not pr.maybe_decrease_to(rejected=15, match_hint=5), "not the outstanding probe"
    assert pr.next == 20 and pr.is_paused()

    assert pr.maybe_decrease_to(rejected=19, match_hint=10)
    assert pr.next == 11
    assert not pr.is_paused()

    pr.sent_entries(None)
    assert pr.maybe_decrease_to(rejected=10, match_hint=1)
    assert pr.next == 4, "never below match + 1"

    pr.sent_entries(None)
    assert pr.maybe_decrease_to(rejected=3, match_hint=50)
    assert pr.next == 4, "never above the rejected index"


def test_snapshot_state_is_paused_and_resumes_after_the_snapshot() -> None:
    pr = replicating(match=2, next_index=5)
    pr.become_snapshot(30)
    assert pr.is_paused()
    assert pr.pending_snapshot == 30
    pr.become_probe()
    assert pr.state == ProgressState.PROBE
    assert pr.next == 31
    assert pr.pending_snapshot == 0


def test_become_probe_and_replicate_reset_the_window() -> None:
    pr = replicating(match=2, next_index=3, capacity=1)
    pr.sent_entries(4)
    assert pr.is_paused()
    pr.become_probe()
    assert (pr.next, pr.is_paused(), len(pr.inflights)) == (3, False, 0)
    pr.maybe_update(4)
    pr.become_replicate()
    assert (pr.next, pr.is_paused()) == (5, False)


def tracker(voters: Iterable[int], learners: Iterable[int] = ()) -> ProgressTracker:
    t = ProgressTracker(max_inflight=4)
    t.set_conf(ConfState(voters=frozenset(voters), learners=frozenset(learners)), next_index=1)
    return t


def test_committed_index_is_the_quorum_match_of_voters_only() -> None:
    t = tracker({1, 2, 3, 4, 5}, {6})
    for node, match in {1: 9, 2: 7, 3: 5, 4: 2, 5: 1, 6: 100}.items():
        t.progress[node].match = match
    assert t.quorum() == 3
    assert t.committed_index() == 5


def test_committed_index_even_group() -> None:
    t = tracker({1, 2, 3, 4})
    for node, match in {1: 9, 2: 7, 3: 5, 4: 2}.items():
        t.progress[node].match = match
    assert t.quorum() == 3
    assert t.committed_index() == 5


def test_tally_counts_voters_only_and_first_answer_wins() -> None:
    t = tracker({1, 2, 3}, {4})
    t.record_vote(1, True)
    t.record_vote(4, True)
    assert t.tally() == VoteResult.PENDING
    t.record_vote(2, False)
    t.record_vote(2, True)  # a duplicate answer does not change the first
    assert t.tally() == VoteResult.PENDING
    t.record_vote(3, False)
    assert t.tally() == VoteResult.LOST
    t2 = tracker({1, 2, 3})
    t2.record_vote(1, True)
    t2.record_vote(3, True)
    assert t2.tally() == VoteResult.WON


def test_quorum_active_counts_the_leader_and_recently_heard_voters() -> None:
    t = tracker({1, 2, 3, 4, 5}, {6})
    t.progress[6].recent_active = True
    t.progress[2].recent_active = True
    assert not t.quorum_active(1)
    t.progress[3].recent_active = True
    assert t.quorum_active(1)


def test_set_conf_keeps_progress_of_promoted_learners_and_drops_removed() -> None:
    t = tracker({1, 2}, {3})
    t.progress[3].match = 42
    t.set_conf(ConfState(voters=frozenset({1, 3})), next_index=50)
    assert set(t.progress) == {1, 3}
    assert t.progress[3].match == 42
    assert not t.progress[3].is_learner
    assert t.peers(1) == [3]
