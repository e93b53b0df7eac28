"""The storage contract between the Raft core and whoever persists its log.

The core never writes: it hands writes out in a ``Ready`` and reads back
through the ``Storage`` protocol below.

Durability contract (what must be on disk before which message leaves):

1. ``Ready.hard_state``, ``Ready.entries`` and ``Ready.snapshot`` are written
   first. When ``Ready.must_sync`` is true they must be *synced* (fsync or a
   synced RocksDB WriteBatch) before anything in
   ``Ready.messages_after_persist`` is sent and before ``advance`` is called.
   ``must_sync`` is false only when nothing but the commit index changed;
   losing that write in a crash is harmless.
2. ``Ready.messages`` may be sent at once, before or during the write: they
   promise nothing about this node's disk (a leader's appends and heartbeats,
   pre-votes). A leader counts its own copy of an entry toward commit only
   after ``advance`` reports it persisted (Raft thesis §10.2.1).
3. Vote grants, candidacy (self-vote) and append acknowledgements are always
   in ``messages_after_persist``: a node that crashes and loses an unsynced
   vote or entry has never told anyone about it.
4. Entries in ``Ready.entries`` whose index is at or below the last stored
   index *replace* the stored suffix from that index on (a conflicting tail
   written by an old leader).
5. ``Ready.snapshot``, when present, replaces the whole log: afterwards
   ``first_index() == snapshot.index + 1`` and ``term(snapshot.index)`` is the
   snapshot's term.

Read contract: ``term(i)`` answers for ``first_index() - 1 <= i <=
last_index()`` (the entry before the first is the snapshot's), raising
``Compacted`` below and ``Unavailable`` above.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raft.errors import Compacted, Unavailable
from raft.ready import Ready
from raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMetadata


class Storage(Protocol):
    """What the core reads. Implemented in memory here and on RocksDB in
    ``partitions/``."""

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)``; at least one if any is asked for, then as
        many as fit in ``max_bytes``."""
        ...

    def term(self, index: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...

    def conf_entries(self, lo: int) -> list[Entry]:
        """Every CONF_CHANGE entry at index >= ``lo``, in order. Read once at
        start-up; a persistent store should index them rather than scan."""
        ...


def limit_size(entries: Sequence[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix within ``max_bytes``, but never empty if
    ``entries`` is not (a single huge entry must still make progress)."""
    if max_bytes is None or not entries:
        return list(entries)
    total = 0
    for n, entry in enumerate(entries):
        total += entry.size()
        if total > max_bytes and n > 0:
            return list(entries[:n])
    return list(entries)


class MemoryStorage:
    """An in-memory ``Storage`` with the write side the application drives.

    Invariant: ``self._entries[0]`` is a dummy entry whose index and term are
    the snapshot's, so ``term(first_index() - 1)`` needs no special case.
    """

    def __init__(self) -> None:
        self.hard_state = HardState()
        self._snapshot = Snapshot()
        self._entries: list[Entry] = [Entry(term=0, index=0)]

    @classmethod
    def bootstrap(cls, voters: Sequence[int], learners: Sequence[int] = ()) -> MemoryStorage:
        """A fresh member of a new group: the initial membership is a
        snapshot at index 1, term 1, so nodes that join later are caught up
        by snapshot and learn it too."""
        storage = cls()
        conf = ConfState(voters=frozenset(voters), learners=frozenset(learners))
        storage.apply_snapshot(Snapshot(SnapshotMetadata(index=1, term=1, conf_state=conf)))
        storage.set_hard_state(HardState(term=1, vote=0, commit=1))
        return storage

    # --- read side (the Storage protocol) ---

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.metadata.conf_state

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise Compacted(f"index {index} is before the snapshot at {offset}")
        if index - offset >= len(self._entries):
            raise Unavailable(f"index {index} is beyond the last index {self.last_index()}")
        return self._entries[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise Compacted(f"index {lo} is compacted (snapshot at {offset})")
        if hi > self.last_index() + 1:
            raise Unavailable(f"entries up to {hi - 1} asked, last is {self.last_index()}")
        return limit_size(self._entries[lo - offset : hi - offset], max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def conf_entries(self, lo: int) -> list[Entry]:
        start = max(lo, self.first_index()) - self._entries[0].index
        return [e for e in self._entries[start:] if e.kind == EntryKind.CONF_CHANGE]

    # --- write side (driven by the application from a Ready) ---

    def persist(self, ready: Ready) -> None:
        """Write a Ready's snapshot, entries and hard state, in that order
        (rule 5, then rule 4, of the contract above). Memory needs no sync."""
        if ready.snapshot is not None:
            self.apply_snapshot(ready.snapshot)
        self.append(ready.entries)
        if ready.hard_state is not None:
            self.set_hard_state(ready.hard_state)

    def set_hard_state(self, hard_state: HardState) -> None:
        self.hard_state = hard_state

    def append(self, entries: Sequence[Entry]) -> None:
        """Append, replacing any stored suffix from ``entries[0].index`` on."""
        if not entries:
            return
        first = entries[0].index
        offset = self._entries[0].index
        if first <= offset:
            # Entries already covered by the snapshot are skipped.
            entries = [e for e in entries if e.index > offset]
            if not entries:
                return
            first = entries[0].index
        if first > self.last_index() + 1:
            raise Unavailable(f"gap: appending at {first}, last is {self.last_index()}")
        del self._entries[first - offset :]
        self._entries.extend(entries)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log with ``snapshot`` (stale ones are ignored)."""
        meta = snapshot.metadata
        if meta.index <= self._snapshot.metadata.index:
            return
        self._snapshot = snapshot
        self._entries = [Entry(term=meta.term, index=meta.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at ``index`` (the caller
        guarantees ``index`` has been applied). Does not compact."""
        if index <= self._snapshot.metadata.index:
            return self._snapshot
        if index > self.last_index():
            raise Unavailable(f"snapshot at {index} beyond last index {self.last_index()}")
        term = self.term(index)
        self._snapshot = Snapshot(SnapshotMetadata(index=index, term=term, conf_state=conf_state), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to and including ``index``; the snapshot must
        already cover ``index``."""
        offset = self._entries[0].index
        if index <= offset:
            return
        if index > self._snapshot.metadata.index:
            raise Unavailable(f"compacting to {index} beyond the snapshot at {self._snapshot.metadata.index}")
        dummy = Entry(term=self.term(index), index=index)
        self._entries = [dummy, *self._entries[index - offset + 1 :]]

    def copy(self) -> MemoryStorage:
        """An independent copy (entries are immutable, so a shallow list copy)."""
        other = MemoryStorage()
        other.hard_state = self.hard_state
        other._snapshot = self._snapshot
        other._entries = list(self._entries)
        return other
