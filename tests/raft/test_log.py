"""``RaftLog`` (raft/log.py): the stable log plus the unstable tail.

Unit tests of the building block behind log matching (§5.3): appending and
truncating conflicting tails, the follower side of AppendEntries, the fast
back-off search, and the invariants that protect committed entries.
"""

from __future__ import annotations

import pytest

from raft.errors import Compacted, Unavailable
from raft.log import LogInvariantBroken, RaftLog
from raft.storage import MemoryStorage
from raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata


def entries(first: int, terms: list[int]) -> list[Entry]:
    return [Entry(term=t, index=i, data=f"{i}@{t}".encode()) for i, t in enumerate(terms, start=first)]


def stored_log(terms: list[int], commit: int = 1) -> RaftLog:
    """A log over storage holding the bootstrap snapshot (index 1, term 1)
    and entries of ``terms`` from index 2."""
    storage = MemoryStorage.bootstrap([1])
    storage.append(entries(2, terms))
    storage.set_hard_state(HardState(term=max(terms, default=1), commit=commit))
    return RaftLog(storage)


def terms_of(log: RaftLog) -> list[int]:
    return [e.term for e in log.entries(log.first_index(), log.last_index() + 1)]


def test_append_extends_and_reads_across_stable_and_unstable() -> None:
    """New entries go to the unstable tail; reads span storage and tail."""
    log = stored_log([1, 2])
    assert log.append(entries(4, [2, 3])) == 5
    assert log.unstable_entries() == tuple(entries(4, [2, 3]))
    assert terms_of(log) == [1, 2, 2, 3]
    assert log.term(3) == 2 and log.term(5) == 3
    assert log.last_term() == 3


def test_append_conflicting_tail_replaces_stored_entries() -> None:
    """Appending at an index already stored replaces the suffix from there;
    the unstable tail then overrides storage."""
    log = stored_log([1, 1, 1, 1])
    log.append(entries(3, [2, 2]))
    assert log.last_index() == 4
    assert terms_of(log) == [1, 2, 2]
    assert log.unstable_entries() == tuple(entries(3, [2, 2]))


def test_append_conflicting_unstable_tail_is_truncated() -> None:
    log = stored_log([1])
    log.append(entries(3, [1, 1, 1]))
    log.append(entries(4, [3]))
    assert terms_of(log) == [1, 1, 3]
    assert log.last_index() == 4


def test_append_refuses_to_truncate_committed_entries_or_leave_a_gap() -> None:
    """Replacing an entry at or below the commit index, or appending past the
    end, breaks an invariant and raises."""
    log = stored_log([1, 1, 1], commit=3)
    with pytest.raises(LogInvariantBroken, match="committed"):
        log.append(entries(3, [2]))
    with pytest.raises(LogInvariantBroken, match="gap"):
        log.append(entries(6, [2]))
    log.append(entries(4, [2]))  # just above the commit index is fine
    assert terms_of(log) == [1, 1, 2]


def test_maybe_append_rejects_on_missing_or_mismatched_previous_entry() -> None:
    """Log matching: the append is accepted only if we hold the entry before
    it with the same term."""
    log = stored_log([1, 2])
    assert log.maybe_append(3, 1, 0, entries(4, [2])) == (False, 0, 0)  # wrong term at 3
    assert log.maybe_append(5, 2, 0, entries(6, [2])) == (False, 0, 0)  # no entry 5
    assert log.last_index() == 3


def test_maybe_append_skips_held_entries_and_writes_from_the_conflict() -> None:
    """Entries we already hold are not rewritten; writing starts at the first
    conflicting one. The commit index follows the leader's, capped at the
    last entry the append vouches for."""
    log = stored_log([1, 2, 2])
    accepted, last_new, written = log.maybe_append(2, 1, 9, [*entries(3, [2]), *entries(4, [3, 3])])
    assert (accepted, last_new, written) == (True, 5, 4)
    assert terms_of(log) == [1, 2, 3, 3]
    assert log.committed == 5

    accepted, last_new, written = log.maybe_append(2, 1, 9, entries(3, [2]))
    assert (accepted, last_new, written) == (True, 3, 0)
    assert terms_of(log) == [1, 2, 3, 3], "a shorter, matching append must not truncate"


def test_maybe_append_conflicting_with_committed_entry_raises() -> None:
    log = stored_log([1, 2], commit=3)
    with pytest.raises(LogInvariantBroken):
        log.maybe_append(2, 1, 3, entries(3, [5]))


@pytest.mark.parametrize(
    ("index", "term", "expected"),
    [
        (6, 9, (6, 4)),
        (6, 4, (6, 4)),
        (6, 3, (5, 3)),  # the term-4 entry is skipped
        (6, 2, (3, 2)),  # both term-3 entries are skipped in one step
        (4, 2, (3, 2)),
        (6, 1, (1, 1)),  # down to the snapshot's entry
        (6, 0, (0, 0)),
    ],
)
def test_find_conflict_by_term(index: int, term: int, expected: tuple[int, int]) -> None:
    """The largest index <= ``index`` whose term is <= ``term``, with its term:
    where to probe next to skip a whole conflicting term at once."""
    log = stored_log([2, 2, 3, 3, 4])  # indexes 2..6
    assert log.find_conflict_by_term(index, term) == expected


def test_find_conflict_by_term_below_the_first_index() -> None:
    """Compacted entries are committed, so they agree with any leader: the
    search stops at the first compacted index with term 0 ("unknown")."""
    storage = MemoryStorage.bootstrap([1])
    storage.append(entries(2, [2, 2, 3]))
    storage.create_snapshot(3, ConfState(voters=frozenset({1})), b"")
    storage.compact(3)
    log = RaftLog(storage)
    assert log.first_index() == 4
    assert log.find_conflict_by_term(4, 2) == (3, 2)  # the snapshot entry still has a term
    assert log.find_conflict_by_term(4, 1) == (2, 0)


def test_is_up_to_date() -> None:
    """§5.4.1: compare last terms, then lengths."""
    log = stored_log([2, 3])  # last entry: index 3, term 3
    assert log.is_up_to_date(3, 3)
    assert log.is_up_to_date(9, 3)
    assert log.is_up_to_date(1, 4)
    assert not log.is_up_to_date(2, 3)
    assert not log.is_up_to_date(9, 2)


def test_commit_never_goes_back_or_past_the_log() -> None:
    log = stored_log([1, 1])
    assert log.commit_to(3)
    assert not log.commit_to(2)
    assert log.committed == 3
    with pytest.raises(LogInvariantBroken):
        log.commit_to(4)


def test_maybe_commit_only_for_the_given_term() -> None:
    """The §5.4.2 check: an index is committed by counting only if its entry
    is of the leader's term."""
    log = stored_log([1, 2])
    assert not log.maybe_commit(3, 3)
    assert log.committed == 1
    assert log.maybe_commit(3, 2)
    assert log.committed == 3


def test_committed_entries_are_handed_out_only_once_persisted() -> None:
    """Entries are offered for applying only up to the last persisted index,
    and only once."""
    storage = MemoryStorage.bootstrap([1])
    log = RaftLog(storage)
    new = entries(2, [2, 2])
    log.append(new)
    log.commit_to(3)
    assert not log.has_next_committed_entries()
    assert log.next_committed_entries(None) == []

    storage.append(new)
    log.stable_to(3, 2)
    assert log.unstable_entries() == ()
    assert log.next_committed_entries(None) == new
    log.applied_to(3)
    assert not log.has_next_committed_entries()
    with pytest.raises(LogInvariantBroken):
        log.applied_to(4)


def test_stable_to_ignores_a_stale_report() -> None:
    """A persist report for an entry that was replaced meanwhile (different
    term) must not mark the replacement stable."""
    log = stored_log([1])
    log.append(entries(3, [2]))
    log.append(entries(3, [3]))
    log.stable_to(3, 2)
    assert log.unstable_entries() == tuple(entries(3, [3]))


def test_restore_snapshot_replaces_everything() -> None:
    log = stored_log([1, 1])
    snapshot = Snapshot(SnapshotMetadata(index=10, term=4, conf_state=ConfState(voters=frozenset({1}))))
    log.restore(snapshot)
    assert (log.first_index(), log.last_index(), log.committed) == (11, 10, 10)
    assert log.term(10) == 4
    assert log.unstable_snapshot() == snapshot
    assert not log.has_next_committed_entries()
    with pytest.raises(Compacted):
        log.term(9)
    log.stable_snapshot_to(10)
    assert log.applied == 10


def test_reading_out_of_range_raises() -> None:
    log = stored_log([1, 1])
    with pytest.raises(Compacted):
        log.entries(1, 3)
    with pytest.raises(Unavailable):
        log.entries(2, 5)
    assert log.term_or_none(0) is None
    assert log.term_or_none(4) is None
    assert log.entries(3, 3) == []


def test_entries_respect_the_size_limit_but_return_at_least_one() -> None:
    log = stored_log([1, 1, 1])
    log.append(entries(5, [1, 1]))
    assert len(log.entries(2, 7, max_bytes=1)) == 1
    size = entries(2, [1])[0].size()
    assert len(log.entries(2, 7, max_bytes=2 * size)) == 2
    assert len(log.entries(3, 7, max_bytes=3 * size)) == 3  # across storage and tail
    assert len(log.entries(2, 7)) == 5


def test_applied_beyond_committed_at_start_is_refused() -> None:
    storage = MemoryStorage.bootstrap([1])
    with pytest.raises(LogInvariantBroken):
        RaftLog(storage, applied=5)
