"""``GroupStorage``: ``raft.storage.Storage`` for one Raft group, on the node's RocksDB.

Reads follow the contract of raft/storage.py exactly (``MemoryStorage`` is the
reference and the tests compare the two). Writes are two-phase, because the
node's group-commit writer, not the replica, talks to RocksDB::

    prepared = storage.prepare(ready)                  # nothing written yet
    await writer.write(prepared.write_set, sync=prepared.sync)
    storage.apply_prepared(prepared)                   # now durable: caches move
    node.advance(ready)

Invariants:

- The cached ``GroupState`` (hard state, snapshot metadata, truncated
  index/term, the term of every entry as runs, the indexes of CONF_CHANGE
  entries) always describes what is durable, never a write in flight: it is
  replaced only by ``apply_prepared``, after the writer reported the write
  durable. ``term``, ``first_index``, ``last_index`` and ``initial_state``
  never read RocksDB; ``entries``, ``conf_entries`` and ``snapshot`` read only
  the bodies.
- A ``PreparedWrite`` is computed from the state it was prepared against
  (``base``) and may be applied only while that is still the current state:
  one write in flight per group, applied in order (``StaleWrite`` otherwise).
  The Raft loop gives this for free (no new Ready before ``advance``); the
  driver must not interleave ``compact``/``create_snapshot`` with a Ready's
  write.
- A write that drops a prefix of the log (snapshot install, compaction,
  destroy) raises the read floor at ``prepare`` time: from then on
  ``entries`` answers ``Compacted`` below it, so a concurrent reader never
  finds a key missing that the cache still promises.
- On disk, a group's log is contiguous from ``first_index()`` to
  ``last_index()`` and every write of a group is one atomic batch, so the
  log, the hard state and the indexes never disagree after a crash.
- ``rewrite`` replaces the data of stored entries in place (key
  compaction): same index, term and kind, so nothing the cache of terms and
  indexes says changes; the entry cache swaps its copies once durable.
- Terms never decrease along the log (a Raft invariant ``prepare`` checks:
  start-up rebuilds the term runs by binary search and relies on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from partitions import codec
from partitions.entry_cache import DEFAULT_CACHE_BYTES, EntryCache
from partitions.keys import (
    ColumnFamily,
    group_end,
    group_prefix,
    hard_state_key,
    log_key,
    parse_log_key,
    snapshot_key,
    truncated_key,
)
from partitions.node_store import NodeStore, StoreOptions
from partitions.storage_errors import StaleWrite, StoreCorrupted
from partitions.term_index import TermIndex
from partitions.write_set import WriteSet
from raft.errors import Compacted, SnapshotTemporarilyUnavailable, Unavailable
from raft.ready import Ready
from raft.storage import Storage
from raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMetadata

__all__ = ["GroupState", "GroupStorage", "NodeStore", "PreparedWrite", "StoreOptions", "bootstrap_ready"]

RANGE_DELETE_MIN = 64
"""Deleting at least this many log entries writes one range tombstone instead
of point tombstones. Measured (``measure_storage.py compaction``, compacting
10k entries): the range delete is a 0.1 KiB batch written and synced in
0.5-8 ms, against 186 KiB and 8-24 ms for 10k point deletes; and the next
read of the group's first remaining entry (what a lagging follower or
consumer does) takes 8-420 us after the range delete but 1-4 ms (1 KiB
entries) and ~180 ms (64 KiB entries) after point deletes, which every
iterator has to step over one by one. A short stale tail (the usual
truncation) stays point deletes: no range tombstone for later reads to
consult."""

_LOG = ColumnFamily.RAFT_LOG
_STATE = ColumnFamily.RAFT_STATE
_CONF = ColumnFamily.CONF_INDEX
_ENTRY_OVERHEAD = 16 - codec.ENTRY_HEADER_SIZE  # Entry.size() minus the stored value's length


@dataclass(frozen=True, slots=True)
class GroupState:
    """What a group has durably stored, cached in memory (immutable)."""

    hard_state: HardState
    snapshot: SnapshotMetadata
    truncated_index: int
    truncated_term: int
    terms: TermIndex
    conf_indexes: tuple[int, ...]

    @classmethod
    def empty(cls) -> GroupState:
        return cls(HardState(), SnapshotMetadata(), 0, 0, TermIndex.empty(1), ())

    @property
    def first_index(self) -> int:
        return self.truncated_index + 1

    @property
    def last_index(self) -> int:
        return self.terms.last


@dataclass(frozen=True, slots=True)
class PreparedWrite:
    """A write computed by ``GroupStorage`` and not yet durable.

    ``write_set`` goes to the group-commit writer (with ``sync``); once it is
    durable, ``GroupStorage.apply_prepared`` installs ``result``.
    """

    group_id: int
    write_set: WriteSet
    sync: bool
    base: GroupState
    result: GroupState
    appended: tuple[Entry, ...] = ()
    """The entries this write stores, for the entry cache once durable."""
    rewritten: tuple[Entry, ...] = ()
    """Entries rewritten in place, for the entry cache once durable."""

    @property
    def empty(self) -> bool:
        """Nothing to write: ``apply_prepared`` may be called at once."""
        return not self.write_set.ops


def bootstrap_ready(voters: Sequence[int], learners: Sequence[int] = ()) -> Ready:
    """The Ready that makes a fresh member of a new group (like
    ``MemoryStorage.bootstrap``): the initial membership as a snapshot at
    index 1, term 1, and hard state (term 1, commit 1)."""
    conf = ConfState(voters=frozenset(voters), learners=frozenset(learners))
    return Ready(
        hard_state=HardState(term=1, vote=0, commit=1),
        snapshot=Snapshot(SnapshotMetadata(index=1, term=1, conf_state=conf)),
        must_sync=True,
    )


class GroupStorage:
    """``raft.storage.Storage`` for group ``group_id`` of ``store``.

    Loading reads the group's state keys, seeks its last log key, and
    rebuilds the term runs with ``O(runs * log(entries))`` point reads.
    """

    def __init__(self, store: NodeStore, group_id: int, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.store = store
        self._cache = EntryCache(cache_bytes)
        self.group_id = group_id
        self._prefix = group_prefix(group_id)
        self._end = group_end(group_id)
        self._state = self._load()
        self._read_floor = 0
        self._pending = False

    # --- loading ---

    def _load(self) -> GroupState:
        g = self.group_id
        value = self.store.get(_STATE, hard_state_key(g))
        hard_state = HardState() if value is None else codec.decode_hard_state(value)
        value = self.store.get(_STATE, snapshot_key(g))
        snapshot = SnapshotMetadata() if value is None else codec.decode_snapshot(value).metadata
        value = self.store.get(_STATE, truncated_key(g))
        if value is None:
            truncated_index, truncated_term = snapshot.index, snapshot.term
        else:
            truncated_index, truncated_term = codec.decode_truncated(value)
        first = truncated_index + 1
        last_key = self.store.last_key(_LOG, log_key(g, first), self._end)
        last = truncated_index if last_key is None else parse_log_key(last_key)[1]
        terms = TermIndex.scan(first, last, self._stored_term)
        conf = tuple(parse_log_key(key)[1] for key, _ in self.store.scan(_CONF, log_key(g, first), self._end))
        if conf and conf[-1] > last:
            raise StoreCorrupted(f"group {g}: conf index {conf[-1]} is beyond the last entry {last}")
        return GroupState(hard_state, snapshot, truncated_index, truncated_term, terms, conf)

    def _stored_term(self, index: int) -> int:
        value = self.store.get(_LOG, log_key(self.group_id, index))
        if value is None:
            raise StoreCorrupted(f"group {self.group_id}: entry {index} is missing from the log")
        return codec.entry_term(index, value)

    # --- the Storage protocol (reads) ---

    @property
    def state(self) -> GroupState:
        """The cached durable state (for the driver and tests)."""
        return self._state

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._state.hard_state, self._state.snapshot.conf_state

    def first_index(self) -> int:
        return self._state.first_index

    def last_index(self) -> int:
        return self._state.last_index

    def term(self, index: int) -> int:
        state = self._state
        if index < state.truncated_index:
            raise Compacted(f"index {index} is before the compacted index {state.truncated_index}")
        if index > state.last_index:
            raise Unavailable(f"index {index} is beyond the last index {state.last_index}")
        if index == state.truncated_index:
            return state.truncated_term
        return state.terms.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        state = self._state
        if lo <= state.truncated_index or lo < self._read_floor:
            raise Compacted(f"index {lo} is compacted (first is {max(state.first_index, self._read_floor)})")
        if hi > state.last_index + 1:
            raise Unavailable(f"entries up to {hi - 1} asked, last is {state.last_index}")
        if lo >= hi:
            return []
        cached = self._cache.get(lo, hi, max_bytes)
        if cached is not None:
            return cached
        g = self.group_id
        items, stopped = self.store.scan_within(
            _LOG, log_key(g, lo), log_key(g, hi), max_bytes, _ENTRY_OVERHEAD
        )
        entries: list[Entry] = []
        for index, (key, value) in enumerate(items, start=lo):
            if parse_log_key(key)[1] != index:
                self._missing(index)
            entries.append(codec.decode_entry(index, value))
        if len(entries) < hi - lo and not stopped:
            self._missing(lo + len(entries))
        return entries

    def _missing(self, index: int) -> None:
        if self._pending:
            raise Unavailable(f"entry {index} is being rewritten")
        raise StoreCorrupted(f"group {self.group_id}: entry {index} is missing from the log")

    def snapshot(self) -> Snapshot:
        state = self._state
        value = self.store.get(_STATE, snapshot_key(self.group_id))
        if value is None:
            if state.snapshot.index == 0:
                return Snapshot()
        else:
            snapshot = codec.decode_snapshot(value)
            if snapshot.metadata == state.snapshot:
                return snapshot
        if self._pending:
            raise SnapshotTemporarilyUnavailable("a snapshot write is in flight")
        raise StoreCorrupted(f"group {self.group_id}: stored snapshot differs from the cached one")

    def conf_entries(self, lo: int) -> list[Entry]:
        state = self._state
        start = max(lo, state.first_index, self._read_floor)
        result: list[Entry] = []
        for index in state.conf_indexes:
            if index < start:
                continue
            value = self.store.get(_LOG, log_key(self.group_id, index))
            if value is None:
                self._missing(index)
            else:
                result.append(codec.decode_entry(index, value))
        return result

    # --- writes: prepare, then apply once durable ---

    def prepare(self, ready: Ready) -> PreparedWrite:
        """The write for ``ready``'s snapshot, entries and hard state, in
        that order (raft/storage.py: a snapshot replaces the whole log;
        entries replace the stored suffix from their first index)."""
        base = self._state
        ws = WriteSet()
        state = base
        floor = 0
        if ready.snapshot is not None and ready.snapshot.metadata.index > state.snapshot.index:
            state = self._install_snapshot(ws, state, ready.snapshot)
            floor = state.first_index
        if ready.entries:
            state = self._append(ws, state, ready.entries)
        if ready.hard_state is not None:
            ws.put(_STATE, hard_state_key(self.group_id), codec.encode_hard_state(ready.hard_state))
            state = replace(state, hard_state=ready.hard_state)
        return replace(self._prepared(ws, ready.must_sync, base, state, floor), appended=ready.entries)

    def create_snapshot(
        self, index: int, conf_state: ConfState, data: bytes, *, sync: bool = False
    ) -> PreparedWrite:
        """Record a snapshot of the applied state at ``index`` (applied by the
        caller); does not compact. A stale ``index`` is a no-op. No sync by
        default: losing it in a crash only means taking it again."""
        base = self._state
        ws = WriteSet()
        if index <= base.snapshot.index:
            return self._prepared(ws, sync, base, base, 0)
        if index > base.last_index:
            raise Unavailable(f"snapshot at {index} beyond last index {base.last_index}")
        meta = SnapshotMetadata(index=index, term=self.term(index), conf_state=conf_state)
        ws.put(_STATE, snapshot_key(self.group_id), codec.encode_snapshot(Snapshot(meta, data)))
        return self._prepared(ws, sync, base, replace(base, snapshot=meta), 0)

    def compact(self, index: int, *, sync: bool = False) -> PreparedWrite:
        """Drop entries up to and including ``index``, which the snapshot must
        cover. No sync by default: a lost compaction leaves entries that are
        still valid."""
        base = self._state
        ws = WriteSet()
        if index <= base.truncated_index:
            return self._prepared(ws, sync, base, base, 0)
        if index > base.snapshot.index:
            raise Unavailable(f"compacting to {index} beyond the snapshot at {base.snapshot.index}")
        term = self.term(index)
        self._delete_log(ws, base.first_index, index + 1)
        kept_conf = []
        for conf_index in base.conf_indexes:
            if conf_index <= index:
                ws.delete(_CONF, log_key(self.group_id, conf_index))
            else:
                kept_conf.append(conf_index)
        ws.put(_STATE, truncated_key(self.group_id), codec.encode_truncated(index, term))
        result = replace(
            base,
            truncated_index=index,
            truncated_term=term,
            terms=base.terms.drop_through(index),
            conf_indexes=tuple(kept_conf),
        )
        return self._prepared(ws, sync, base, result, index + 1)

    def rewrite(self, entries: Sequence[Entry], *, sync: bool = False) -> PreparedWrite:
        """Replace the data of stored entries (key compaction). Each must be
        inside the log with its stored term and kind NORMAL; the caller
        rewrites only applied entries. No sync by default: a lost rewrite
        leaves the older bytes, which are still valid (compaction runs again
        after a restart)."""
        base = self._state
        ws = WriteSet()
        for entry in entries:
            if not base.first_index <= entry.index <= base.last_index:
                raise Unavailable(f"cannot rewrite entry {entry.index}: the log holds {base.first_index}..")
            if entry.kind != EntryKind.NORMAL or base.terms.term(entry.index) != entry.term:
                raise ValueError(f"rewrite of entry {entry.index} must keep its term and be NORMAL")
            ws.put(_LOG, log_key(self.group_id, entry.index), codec.encode_entry(entry))
        return replace(self._prepared(ws, sync, base, base, 0), rewritten=tuple(entries))

    def destroy(self, *, sync: bool = True) -> PreparedWrite:
        """Delete everything the group stored; once applied it reads as a
        fresh, empty group."""
        base = self._state
        ws = WriteSet()
        for cf in (_LOG, _CONF, _STATE):
            ws.delete_range(cf, self._prefix, self._end)
        return self._prepared(ws, sync, base, GroupState.empty(), base.last_index + 1)

    def apply_prepared(self, prepared: PreparedWrite) -> None:
        """``prepared`` is durable: make the caches say so."""
        if prepared.group_id != self.group_id:
            raise StaleWrite(f"write for group {prepared.group_id} applied to group {self.group_id}")
        if prepared.base is not self._state:
            raise StaleWrite(f"group {self.group_id}: the state moved on since this write was prepared")
        result = self._state = prepared.result
        self._read_floor = 0
        self._pending = False
        cache = self._cache
        cache.truncate_after(result.last_index)  # destroyed, or a snapshot replaced the log
        cache.drop_through(result.truncated_index)
        if prepared.appended:
            cache.append([e for e in prepared.appended if e.index > result.truncated_index])
        if prepared.rewritten:
            cache.replace(prepared.rewritten)

    # --- helpers ---

    def _prepared(
        self, ws: WriteSet, sync: bool, base: GroupState, result: GroupState, floor: int
    ) -> PreparedWrite:
        if ws.ops:
            self._pending = True
            self._read_floor = max(self._read_floor, floor)
        return PreparedWrite(self.group_id, ws, sync, base, result)

    def _delete_log(self, ws: WriteSet, lo: int, hi: int) -> None:
        """Delete entries ``[lo, hi)`` of the group's log."""
        if hi - lo >= RANGE_DELETE_MIN:
            ws.delete_range(_LOG, log_key(self.group_id, lo), log_key(self.group_id, hi))
        else:
            for index in range(lo, hi):
                ws.delete(_LOG, log_key(self.group_id, index))

    def _install_snapshot(self, ws: WriteSet, state: GroupState, snapshot: Snapshot) -> GroupState:
        meta = snapshot.metadata
        ws.delete_range(_LOG, self._prefix, self._end)
        ws.delete_range(_CONF, self._prefix, self._end)
        ws.put(_STATE, snapshot_key(self.group_id), codec.encode_snapshot(snapshot))
        ws.put(_STATE, truncated_key(self.group_id), codec.encode_truncated(meta.index, meta.term))
        return GroupState(state.hard_state, meta, meta.index, meta.term, TermIndex.empty(meta.index + 1), ())

    def _append(self, ws: WriteSet, state: GroupState, entries: Sequence[Entry]) -> GroupState:
        if entries[0].index <= state.truncated_index:
            # Entries already covered by the snapshot are skipped.
            entries = [e for e in entries if e.index > state.truncated_index]
            if not entries:
                return state
        first = entries[0].index
        last = state.last_index
        if first > last + 1:
            raise Unavailable(f"gap: appending at {first}, last is {last}")
        for offset, entry in enumerate(entries):
            if entry.index != first + offset:
                raise ValueError(f"entries are not contiguous: {entry.index} after {first + offset - 1}")
        previous_term = (
            state.truncated_term if first - 1 == state.truncated_index else state.terms.term(first - 1)
        )
        if entries[0].term < previous_term:
            raise ValueError(f"entry {first} has term {entries[0].term}, below {previous_term} before it")
        g = self.group_id
        new_last = entries[-1].index
        if new_last < last:
            self._delete_log(ws, new_last + 1, last + 1)
        conf = [i for i in state.conf_indexes if i < first]
        for stale in state.conf_indexes[len(conf) :]:
            ws.delete(_CONF, log_key(g, stale))
        for entry in entries:
            key = log_key(g, entry.index)
            ws.put(_LOG, key, codec.encode_entry(entry))
            if entry.kind == EntryKind.CONF_CHANGE:
                ws.put(_CONF, key, b"")
                conf.append(entry.index)
        terms = state.terms.truncate_after(first - 1).append(first, (e.term for e in entries))
        return replace(state, terms=terms, conf_indexes=tuple(conf))

    # --- checking (tests, tools) ---

    def verify(self) -> None:
        """Read the whole group back and check it against the cache: the log
        is contiguous over ``[first_index, last_index]`` with the cached terms,
        nothing is stored outside it, and the conf index matches the
        CONF_CHANGE entries. Raises ``StoreCorrupted``. Reads everything."""
        state = self._state
        g = self.group_id
        expected = state.first_index
        conf: list[int] = []
        for key, value in self.store.scan(_LOG, self._prefix, self._end):
            index = parse_log_key(key)[1]
            if index != expected:
                raise StoreCorrupted(f"group {g}: log holds {index}, expected {expected}")
            entry = codec.decode_entry(index, value)
            if entry.term != state.terms.term(index):
                raise StoreCorrupted(f"group {g}: entry {index} has term {entry.term}, cache says otherwise")
            if entry.kind == EntryKind.CONF_CHANGE:
                conf.append(index)
            expected += 1
        if expected != state.last_index + 1:
            raise StoreCorrupted(f"group {g}: log ends at {expected - 1}, cache says {state.last_index}")
        stored_conf = [parse_log_key(k)[1] for k, _ in self.store.scan(_CONF, self._prefix, self._end)]
        if stored_conf != conf or tuple(conf) != state.conf_indexes:
            raise StoreCorrupted(
                f"group {g}: conf index {stored_conf}, entries {conf}, cache {state.conf_indexes}"
            )


def _is_storage(storage: GroupStorage) -> Storage:
    """Static check (mypy) that ``GroupStorage`` implements the protocol."""
    return storage
