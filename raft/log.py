"""``RaftLog``: the stable log in ``Storage`` plus the unstable tail in memory.

Invariants:
- Unstable entries (written by this node but not yet reported persisted via
  ``stable_to``) start at ``_offset`` and are contiguous. Storage entries at
  or beyond ``_offset`` are stale: the unstable tail overrides them.
- An unstable snapshot, when present, supersedes everything in storage;
  then ``_offset == snapshot.index + 1``.
- ``committed <= last_index()`` and ``applied <= committed`` always; entries
  are handed out for applying only once they are persisted locally
  (``<= stable_last_index()``), so a crash never un-applies anything.
- A committed entry is never truncated: asking for it is a bug and raises.
"""

from __future__ import annotations

from collections.abc import Sequence

from raft.errors import Compacted, RaftError, Unavailable
from raft.storage import Storage, limit_size
from raft.types import Entry, Snapshot


class LogInvariantBroken(RaftError):
    """The log was asked to do something that would lose committed data."""


class RaftLog:
    def __init__(self, storage: Storage, applied: int | None = None) -> None:
        self.storage = storage
        hard_state, _ = storage.initial_state()
        # A snapshot only ever covers committed entries, and it may be ahead
        # of both the compaction point and a commit index lost in a crash
        # (commit-only hard states are written without a sync).
        snapshot_index = max(storage.snapshot().metadata.index, storage.first_index() - 1)
        self._unstable_snapshot: Snapshot | None = None
        self._unstable: list[Entry] = []
        self._offset = storage.last_index() + 1
        self.committed = max(hard_state.commit, snapshot_index)
        self.applied = snapshot_index if applied is None else max(applied, storage.first_index() - 1)
        if self.applied > self.committed:
            raise LogInvariantBroken(f"applied {self.applied} is beyond committed {self.committed}")

    # --- indexes and terms ---

    def first_index(self) -> int:
        if self._unstable_snapshot is not None:
            return self._unstable_snapshot.metadata.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self._unstable:
            return self._offset + len(self._unstable) - 1
        if self._unstable_snapshot is not None:
            return self._unstable_snapshot.metadata.index
        return self.storage.last_index()

    def stable_last_index(self) -> int:
        """The last index known to be persisted (after the last advance)."""
        if self._unstable or self._unstable_snapshot is not None:
            return self._offset - 1
        return self.storage.last_index()

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; raises Compacted / Unavailable."""
        snap = self._unstable_snapshot
        if snap is not None and index == snap.metadata.index:
            return snap.metadata.term
        if self._unstable and index >= self._offset:
            pos = index - self._offset
            if pos < len(self._unstable):
                return self._unstable[pos].term
            raise Unavailable(f"index {index} beyond last {self.last_index()}")
        if index < self.first_index() - 1:
            raise Compacted(f"index {index} compacted (first is {self.first_index()})")
        if index > self.last_index():
            raise Unavailable(f"index {index} beyond last {self.last_index()}")
        # With a pending snapshot every index is its own, compacted or beyond
        # the last: all answered above.
        return self.storage.term(index)

    def term_or_none(self, index: int) -> int | None:
        try:
            return self.term(index)
        except (Compacted, Unavailable):
            return None

    def last_term(self) -> int:
        return self.term(self.last_index())

    def matches(self, index: int, term: int) -> bool:
        return self.term_or_none(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """The election restriction (§5.4.1): is a candidate whose log ends
        at (last_index, last_term) at least as up to date as ours?"""
        ours = self.last_term()
        return last_term > ours or (last_term == ours and last_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, with its
        term: where a leader should probe next (fast back-off)."""
        while index > 0:
            t = self.term_or_none(index)
            if t is None:
                # Compacted: everything before the first index is committed,
                # so it agrees with any leader.
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # --- reading entries ---

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)`` (never empty if ``lo < hi``); raises Compacted."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise Compacted(f"index {lo} compacted (first is {self.first_index()})")
        if hi > self.last_index() + 1:
            raise Unavailable(f"entries to {hi - 1} asked, last is {self.last_index()}")
        result: list[Entry] = []
        if lo < self._offset:
            stored = self.storage.entries(lo, min(hi, self._offset), max_bytes)
            if len(stored) < min(hi, self._offset) - lo:
                return stored  # size limit reached inside storage
            result = stored
        if hi > self._offset:
            start = max(lo, self._offset) - self._offset
            result.extend(self._unstable[start : hi - self._offset])
        return limit_size(result, max_bytes)

    # --- writing ---

    def append(self, entries: Sequence[Entry]) -> int:
        """Append ``entries`` (contiguous), truncating any conflicting tail.
        Returns the new last index."""
        if not entries:
            return self.last_index()
        first = entries[0].index
        if first - 1 < self.committed:
            raise LogInvariantBroken(f"truncating at {first} would lose committed index {self.committed}")
        if first > self.last_index() + 1:
            raise LogInvariantBroken(f"gap: appending at {first}, last is {self.last_index()}")
        if first == self._offset + len(self._unstable):
            self._unstable.extend(entries)
        elif first <= self._offset:
            # Replaces stored entries from `first` on: the storage tail is stale.
            self._offset = first
            self._unstable = list(entries)
        else:
            del self._unstable[first - self._offset :]
            self._unstable.extend(entries)
        return self.last_index()

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or disagrees with ours; 0 if
        we already hold all of them."""
        for entry in entries:
            if not self.matches(entry.index, entry.term):
                return entry.index
        return 0

    def maybe_append(
        self, index: int, log_term: int, commit: int, entries: Sequence[Entry]
    ) -> tuple[bool, int, int]:
        """The follower side of AppendEntries. Returns (accepted, last new
        index, first index actually written or 0)."""
        if not self.matches(index, log_term):
            return False, 0, 0
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        written = 0
        if conflict:
            if conflict <= self.committed:
                raise LogInvariantBroken(f"entry {conflict} conflicts with the committed log")
            self.append(entries[conflict - index - 1 :])
            written = conflict
        self.commit_to(min(commit, last_new))
        return True, last_new, written

    def commit_to(self, index: int) -> bool:
        if index <= self.committed:
            return False
        if index > self.last_index():
            raise LogInvariantBroken(f"commit {index} beyond last index {self.last_index()}")
        self.committed = index
        return True

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit up to ``index`` only if it holds an entry of ``term`` (the
        leader's current term: §5.4.2, never count replicas of old terms)."""
        return index > self.committed and self.term_or_none(index) == term and self.commit_to(index)

    def restore(self, snapshot: Snapshot) -> None:
        meta = snapshot.metadata
        self.committed = meta.index
        self._unstable_snapshot = snapshot
        self._unstable = []
        self._offset = meta.index + 1

    # --- persistence and apply bookkeeping ---

    def has_unstable(self) -> bool:
        return bool(self._unstable) or self._unstable_snapshot is not None

    def unstable_entries(self) -> tuple[Entry, ...]:
        return tuple(self._unstable)

    def unstable_snapshot(self) -> Snapshot | None:
        return self._unstable_snapshot

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (of ``term``) are now in storage."""
        if self.term_or_none(index) != term or index < self._offset:
            return
        del self._unstable[: index + 1 - self._offset]
        self._offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        """The snapshot at ``index`` is persisted and installed in the state
        machine: everything up to it counts as applied."""
        if self._unstable_snapshot is not None and self._unstable_snapshot.metadata.index == index:
            self._unstable_snapshot = None
            self.applied = max(self.applied, index)

    def applicable_limit(self) -> int:
        return min(self.committed, self.stable_last_index())

    def has_next_committed_entries(self) -> bool:
        return self._unstable_snapshot is None and self.applicable_limit() > self.applied

    def next_committed_entries(self, max_bytes: int | None) -> list[Entry]:
        if self._unstable_snapshot is not None:
            return []
        hi = self.applicable_limit()
        if hi <= self.applied:
            return []
        return self.entries(self.applied + 1, hi + 1, max_bytes)

    def applied_to(self, index: int) -> None:
        if index > self.committed or index < self.applied:
            raise LogInvariantBroken(f"applied {index} outside ({self.applied}, {self.committed}]")
        self.applied = index
