"""A simulated disk: a ``MemoryStorage`` that forgets unsynced writes on crash.

Invariants:
- ``live`` is what the running node sees (reads go there, writes land
  there at once); ``durable`` is what survives a crash.
- Writes (``set_hard_state``, ``append``, ``apply_snapshot``) go to ``live``
  and to a journal. ``sync()`` replays the journal onto ``durable`` in order,
  so after a sync ``durable`` equals ``live``. ``crash()`` drops the journal
  and rebuilds ``live`` from ``durable``: exactly the unsynced writes are
  lost, in one piece (no torn writes).
- Snapshots the application takes of its own applied state
  (``create_snapshot``) and the compaction after them are durable at once:
  the state they cover was applied, hence already synced (the driver applies
  only after the Ready's sync), so they hold on both copies. Like any synced
  write to one write-ahead log (RocksDB's, in partitions/), taking one also
  makes every earlier write durable: the journal is synced first. (Without
  that, a snapshot could be durable while a commit-only hard state written
  before it is lost, and a restart would find applied > committed.)
- Implements the ``Storage`` protocol (raft/storage.py) by reading ``live``.
"""

from __future__ import annotations

from collections.abc import Sequence

from raft.errors import Unavailable
from raft.storage import MemoryStorage
from raft.types import ConfState, Entry, HardState, Snapshot

_HARD_STATE = 0
_APPEND = 1
_SNAPSHOT = 2

_Write = tuple[int, HardState | tuple[Entry, ...] | Snapshot]


class Disk:
    def __init__(self, durable: MemoryStorage | None = None) -> None:
        self.durable = durable if durable is not None else MemoryStorage()
        self.live = self.durable.copy()
        self._journal: list[_Write] = []
        self.syncs = 0
        self.crashes = 0
        self.lost_writes = 0

    # --- Storage protocol (reads see the live copy) ---

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.live.initial_state()

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self.live.entries(lo, hi, max_bytes)

    def term(self, index: int) -> int:
        return self.live.term(index)

    def first_index(self) -> int:
        return self.live.first_index()

    def last_index(self) -> int:
        return self.live.last_index()

    def snapshot(self) -> Snapshot:
        return self.live.snapshot()

    def conf_entries(self, lo: int) -> list[Entry]:
        return self.live.conf_entries(lo)

    # --- writes ---

    @property
    def dirty(self) -> bool:
        """Whether some write would be lost by a crash now."""
        return bool(self._journal)

    def set_hard_state(self, hard_state: HardState) -> None:
        self.live.set_hard_state(hard_state)
        self._journal.append((_HARD_STATE, hard_state))

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        batch = tuple(entries)
        self.live.append(batch)
        self._journal.append((_APPEND, batch))

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self.live.apply_snapshot(snapshot)
        self._journal.append((_SNAPSHOT, snapshot))

    def sync(self) -> None:
        """Make every write so far durable."""
        durable = self.durable
        for kind, payload in self._journal:
            if kind == _HARD_STATE:
                assert isinstance(payload, HardState)
                durable.set_hard_state(payload)
            elif kind == _APPEND:
                assert isinstance(payload, tuple)
                durable.append(payload)
            else:
                assert isinstance(payload, Snapshot)
                durable.apply_snapshot(payload)
        self._journal.clear()
        self.syncs += 1

    def crash(self) -> None:
        """Lose every unsynced write."""
        self.lost_writes += len(self._journal)
        self._journal.clear()
        self.live = self.durable.copy()
        self.crashes += 1

    # --- the application's snapshots (durable at once) ---

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at ``index`` on both copies
        (after syncing every earlier write)."""
        self.sync()
        snapshot = self.live.create_snapshot(index, conf_state, data)
        durable = self.durable
        if durable.snapshot().metadata.index < index <= durable.last_index():
            if durable.term(index) != snapshot.metadata.term:
                raise Unavailable(f"durable log disagrees with the live one at {index}")
            durable.create_snapshot(index, conf_state, data)
        return snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to ``index`` (covered by a snapshot) on both copies."""
        self.live.compact(index)
        if index <= self.durable.snapshot().metadata.index:
            self.durable.compact(index)
