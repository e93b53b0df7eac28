"""A deterministic, Raft-shaped sequence of writes for one group, with its oracle.

``GroupWorkload(rng)`` produces the writes a replica's driver would make -
appends (some replacing a stale tail under a new term), commit-only hard
states, snapshot installs, local snapshots and compactions - and applies each
one to a ``MemoryStorage``, the reference implementation. Replaying the same
seed yields the same steps and the same bytes, which is what lets the crash
test rebuild, after the fact, what an acknowledged write must have left on disk.

Invariants of the generated sequence (those of a real Raft log):
- terms never decrease along the log, and entries are contiguous;
- appends start at most one past the last index and replace only uncommitted
  entries (some start below the first index, to exercise the skip rule of
  ``MemoryStorage.append``);
- local snapshots are of committed state, compaction never passes the
  snapshot, installed snapshots are ahead of the commit index (or stale).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from partitions.raft_storage import GroupStorage, PreparedWrite
from raft.ready import Ready
from raft.storage import MemoryStorage
from raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMetadata

CONF = ConfState(voters=frozenset({1, 2, 3}))


@dataclass(frozen=True, slots=True)
class Step:
    """One write: a Ready to persist, or a local snapshot, or a compaction."""

    ready: Ready | None = None
    snapshot_at: int = 0
    snapshot_conf: ConfState = field(default_factory=ConfState)
    snapshot_data: bytes = b""
    compact_to: int = 0

    def prepare(self, storage: GroupStorage) -> PreparedWrite:
        """The same write for the RocksDB storage."""
        if self.ready is not None:
            return storage.prepare(self.ready)
        if self.snapshot_at:
            return storage.create_snapshot(self.snapshot_at, self.snapshot_conf, self.snapshot_data)
        return storage.compact(self.compact_to)

    def sync(self) -> bool:
        return self.ready.must_sync if self.ready is not None else False


def apply_to_model(model: MemoryStorage, step: Step) -> None:
    """``step`` on the reference storage, in the order of raft/storage.py."""
    if step.ready is not None:
        if step.ready.snapshot is not None:
            model.apply_snapshot(step.ready.snapshot)
        model.append(step.ready.entries)
        if step.ready.hard_state is not None:
            model.set_hard_state(step.ready.hard_state)
    elif step.snapshot_at:
        model.create_snapshot(step.snapshot_at, step.snapshot_conf, step.snapshot_data)
    else:
        model.compact(step.compact_to)


class GroupWorkload:
    """Generates steps for one group and keeps the oracle (``model``) in step."""

    def __init__(self, rng: random.Random, *, max_entry_bytes: int = 512, big_entry_bytes: int = 0) -> None:
        self.rng = rng
        self.model = MemoryStorage()
        self.term = 1
        self.max_entry_bytes = max_entry_bytes
        self.big_entry_bytes = big_entry_bytes
        self.steps = 0

    def next_step(self) -> Step:
        """The next write; it is already applied to ``model``."""
        step = self._choose()
        apply_to_model(self.model, step)
        self.steps += 1
        return step

    def _choose(self) -> Step:
        if self.steps == 0:
            return self._bootstrap()
        roll = self.rng.random()
        if roll < 0.68:
            return self._append()
        if roll < 0.76:
            return self._commit_only()
        if roll < 0.82:
            return self._install_snapshot()
        if roll < 0.91:
            return self._local_snapshot() or self._append()
        return self._compact() or self._append()

    def _hard_state(self, last: int) -> HardState:
        commit = self.rng.randint(min(self.model.hard_state.commit, last), last)
        return HardState(term=self.term, vote=self.rng.choice((0, 1, 2)), commit=commit)

    def _bootstrap(self) -> Step:
        snapshot = Snapshot(SnapshotMetadata(index=1, term=1, conf_state=CONF))
        return Step(Ready(hard_state=HardState(1, 0, 1), snapshot=snapshot, must_sync=True))

    def _data(self) -> bytes:
        if self.big_entry_bytes and self.rng.random() < 0.1:
            return self.rng.randbytes(self.big_entry_bytes)
        return self.rng.randbytes(self.rng.randint(0, self.max_entry_bytes))

    def _append(self) -> Step:
        model = self.model
        first_index, last = model.first_index(), model.last_index()
        commit = model.hard_state.commit
        # Only uncommitted entries are ever replaced. Starting below the
        # first index (entries the snapshot covers) is possible only when
        # nothing past the snapshot is committed yet.
        if commit < first_index and self.rng.random() < 0.1:
            lo = max(1, first_index - 2)
        else:
            lo = max(first_index, last - 5, commit + 1)
        start = self.rng.randint(lo, last + 1) if self.rng.random() < 0.3 else last + 1
        if start <= last:
            self.term += 1  # a new leader overwrites a stale tail
        count = self.rng.randint(1, 8)
        entries = tuple(
            Entry(
                term=self.term,
                index=start + k,
                kind=EntryKind.CONF_CHANGE if self.rng.random() < 0.08 else EntryKind.NORMAL,
                data=self._data(),
            )
            for k in range(count)
        )
        new_last = max(entries[-1].index, first_index - 1)
        return Step(Ready(hard_state=self._hard_state(new_last), entries=entries, must_sync=True))

    def _commit_only(self) -> Step:
        hs = self.model.hard_state
        commit = self.rng.randint(hs.commit, max(hs.commit, self.model.last_index()))
        return Step(Ready(hard_state=HardState(hs.term, hs.vote, commit), must_sync=False))

    def _install_snapshot(self) -> Step:
        model = self.model
        if self.rng.random() < 0.2:  # a stale snapshot: both storages ignore it
            index = max(1, model.snapshot().metadata.index - self.rng.randint(0, 1))
        else:  # the leader's snapshot is ahead of what this node has committed
            index = max(model.hard_state.commit, model.snapshot().metadata.index) + self.rng.randint(1, 12)
        if self.rng.random() < 0.5:
            self.term += 1
        conf = ConfState(voters=frozenset(self.rng.sample(range(1, 6), 3)), learners=frozenset({9}))
        snapshot = Snapshot(
            SnapshotMetadata(index, self.term, conf), self.rng.randbytes(self.rng.randint(0, 64))
        )
        hs = HardState(self.term, 0, max(index, model.hard_state.commit))
        return Step(Ready(hard_state=hs, snapshot=snapshot, must_sync=True))

    def _local_snapshot(self) -> Step | None:
        model = self.model
        lo = model.snapshot().metadata.index + 1
        hi = min(model.hard_state.commit, model.last_index())  # only applied state is snapshotted
        if lo > hi:
            return None
        index = self.rng.randint(lo, hi)
        return Step(snapshot_at=index, snapshot_conf=CONF, snapshot_data=self.rng.randbytes(16))

    def _compact(self) -> Step | None:
        model = self.model
        lo, hi = model.first_index(), model.snapshot().metadata.index
        if lo > hi:
            return None
        return Step(compact_to=self.rng.randint(lo, hi))
