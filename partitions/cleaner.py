"""``LogCleaner``: one replica's progress compacting its own copy of the
partition, in bounded steps (the algorithm is partitions/compaction.py).

The replica driver calls ``step`` from its housekeeping (between Readys, so
no Raft write of the group is in flight) while ``pending`` is true; each
step reads and rewrites at most about ``step_bytes`` of batches, and the
driver writes the rewritten entries, then yields to the event loop.

Invariants:

- Only batches the state machine holds are read or rewritten: all of them
  are in applied entries (committed and durable here).
- Progress (``cleaned_offset``) is local and not in any snapshot: a replica
  that restarts or installs a snapshot starts again from its log start,
  which is harmless because the rewrite is idempotent (already compacted
  batches come out unchanged).
- A pass is (1) build the offset map over the dirty range, (2) rewrite from
  the log start to what the map covered; ``cleaned_offset`` moves only when
  a pass ends, to what it covered. Passes run until one reaches the current
  target whole (a target whose offset did not move but whose tombstone
  horizon did still takes one pass: the rewrite drops the tombstones).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from partitions.compaction import CompactionTarget, OffsetMap, StoredBatch, rewrite_batch
from partitions.state_machine import BatchLocation, PartitionStateMachine

__all__ = ["DEFAULT_STEP_BYTES", "LogCleaner", "Rewrite"]

DEFAULT_STEP_BYTES = 1 << 20
"""Batch bytes one step reads: about 1 MiB decoded and re-encoded (a few
milliseconds of the event loop) before the driver yields."""

ReadBatches = Callable[[list[BatchLocation]], list[StoredBatch]]


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Store ``batch`` in place of the batch of Raft entry ``raft_index``."""

    raft_index: int
    append_time_ms: int
    batch: bytes


class _Phase(enum.Enum):
    MAP = 1
    REWRITE = 2


class LogCleaner:
    __slots__ = (
        "_done",
        "_map",
        "_phase",
        "_position",
        "_sm",
        "_target",
        "cleaned_offset",
        "compacted_bytes",
        "passes",
    )

    def __init__(self) -> None:
        self.cleaned_offset = -1
        """This copy holds no record at or below it that compaction to the
        target would remove."""
        self.compacted_bytes = 0
        """Batch bytes removed by rewrites so far (this process)."""
        self.passes = 0
        self._sm: PartitionStateMachine | None = None
        self._map: OffsetMap | None = None
        self._phase = _Phase.MAP
        self._position = 0
        self._target: CompactionTarget | None = None
        self._done: CompactionTarget | None = None
        """The target the last complete pass reached (a later target with the
        same offset but a later tombstone horizon needs another pass)."""

    def pending(self, sm: PartitionStateMachine) -> bool:
        target = sm.compaction_target
        if sm is not self._sm:
            return target is not None
        return target is not None and (self._map is not None or target != self._done)

    def step(
        self, sm: PartitionStateMachine, read: ReadBatches, step_bytes: int = DEFAULT_STEP_BYTES
    ) -> tuple[list[Rewrite], bool]:
        """One bounded step: the rewrites to store (then report their sizes
        with ``sm.resize_batches``) and whether a pass just ended."""
        if sm is not self._sm:  # a restore or snapshot install: start over
            self._sm = sm
            self._map = None
            self._done = None
            self.cleaned_offset = -1
        target = sm.compaction_target
        if target is None:
            return [], False
        if self._map is None:
            if target == self._done:
                return [], False
            start = max(self.cleaned_offset + 1, sm.log_start_offset)
            self._map = OffsetMap(target.max_map_entries, start)
            self._phase = _Phase.MAP
            self._position = start
            self._target = target
        offsets = self._map
        pass_target = self._target
        assert pass_target is not None
        position = max(self._position, sm.log_start_offset)
        if self._phase is _Phase.MAP:
            limit = pass_target.clean_up_to_offset
            locations = self._locations(sm, position, limit, step_bytes)
            if not locations:
                position = limit + 1
            for location, stored in zip(locations, read(locations), strict=True):
                if not offsets.add(stored, limit):
                    break
                position = location.last_offset + 1
            if offsets.full or position > limit:
                self._phase = _Phase.REWRITE
                position = sm.log_start_offset
            self._position = position
            return [], False
        limit = offsets.covered_to
        rewrites: list[Rewrite] = []
        locations = self._locations(sm, position, limit, step_bytes)
        for stored in read(locations):
            new = rewrite_batch(stored, offsets, pass_target)
            if new is not None:
                rewrites.append(Rewrite(stored.raft_index, stored.append_time_ms, new))
        self._position = locations[-1].last_offset + 1 if locations else limit + 1
        if self._position > limit:
            self.cleaned_offset = max(self.cleaned_offset, limit)
            if limit >= pass_target.clean_up_to_offset:
                self._done = pass_target
            self._map = None
            self.passes += 1
            return rewrites, True
        return rewrites, False

    @staticmethod
    def _locations(
        sm: PartitionStateMachine, position: int, limit: int, step_bytes: int
    ) -> list[BatchLocation]:
        if position > limit or position >= sm.high_watermark:
            return []
        return [loc for loc in sm.locate(position, step_bytes) if loc.base_offset <= limit]
