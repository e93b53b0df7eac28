"""The partition state machine: offsets, producer dedup, reads, retention.

Pure and deterministic: no I/O, no clock, no randomness. The replica driver
feeds it every committed entry of the partition's Raft group in log order
(``apply`` for command entries, ``apply_noop`` for the rest) and asks it
where to read. The record bytes themselves stay in the Raft log (the Raft
log is the partition log); this object keeps only where each batch is.

Invariants:

- Applied indexes strictly increase; ``applied_index`` is the last one.
- Offsets are assigned at apply, in log order: an ``Appended`` batch gets
  ``next_offset .. next_offset + last_offset_delta`` (its span: equal to
  ``record_count`` for a batch as produced, larger for one key compaction
  rewrote, which a replica re-applies after a restart). ``Duplicate`` and
  ``Rejected`` entries consume no offset and are never read. Since only
  committed entries are applied, ``high_watermark == next_offset``.
- ``log_start_offset <= high_watermark``; every offset in between belongs to
  exactly one retained batch (``locate``).
- The clock is the largest append time applied so far (``last_append_ms``):
  a batch's append time is the clock after its entry, so append times never
  go backwards even if a new leader's wall clock does.
- Snapshots: ``checkpoint()`` encodes the small state after
  ``applied_index`` (counters and producer table; see
  ``partition_snapshot``). ``restore(config, I, checkpoint_at_I.data)`` then
  re-applying entries ``> I`` gives a state machine whose reads, offsets and
  producer answers equal those of one that applied everything (for the
  batches it still holds).
- Retention: every ``checkpoint_interval_bytes`` of applied entry bytes a
  checkpoint is recorded in memory. ``retention_cut`` picks the newest
  checkpoint (or the current state) before the first batch retention keeps;
  the driver stores it as the Raft snapshot, compacts the Raft log to its
  index and calls ``compacted``. Whole batches only.
- Key compaction (partitions/compaction.py): applying a compact command
  merges it into ``compaction_target`` (each field only grows) and is part
  of the checkpoint; the rewrite itself happens outside, per replica
  (partitions/cleaner.py), which reports new batch sizes with
  ``resize_batches``. Neither the apply results nor the offsets depend on
  whether a batch was rewritten, nor on ``cleanup_policy`` and the other
  compaction settings (those only steer the leader's decisions).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from partitions.commands import CompactCommand, MalformedCommand, decode_command
from partitions.compaction import CompactionTarget
from partitions.offset_index import BatchIndex, BatchLocation, OffsetOutOfRange
from partitions.partition_snapshot import CorruptSnapshot, PartitionImage, decode_image, encode_image
from partitions.producer_state import ProducerEntry, ProducerTable
from partitions.results import Appended, ApplyResult, CompactionScheduled, Duplicate, Rejected, RejectReason
from raftlog.v1.record_batch import BatchHeader, InvalidBatch, validate_header

__all__ = [
    "CLEANUP_POLICIES",
    "Appended",
    "ApplyResult",
    "BatchLocation",
    "Checkpoint",
    "CompactionScheduled",
    "CorruptSnapshot",
    "Duplicate",
    "OffsetOutOfRange",
    "PartitionConfig",
    "PartitionStateMachine",
    "ProducerEntry",
    "RejectReason",
    "Rejected",
]

_DAY_MS = 24 * 60 * 60 * 1000
CLEANUP_POLICIES = ("delete", "compact", "compact,delete")


@dataclass(frozen=True, slots=True)
class PartitionConfig:
    """The partition's policies. Every replica of a partition must use the
    same values (they decide what apply returns)."""

    retention_ms: int | None = 7 * _DAY_MS
    """Batches appended longer ago than this may be deleted; None: forever."""
    retention_bytes: int | None = None
    """Oldest batches may be deleted while the rest holds at least this many
    batch bytes; None: no size limit."""
    producer_expiry_ms: int = _DAY_MS
    """A producer's dedup state is forgotten after this long without a write."""
    checkpoint_interval_bytes: int = 16 * 1024 * 1024
    """Applied entry bytes between two in-memory checkpoints: the grain of
    retention (a cut can only fall on a checkpoint or on the current state)."""
    dedup_window: int = 5
    """Recent batches remembered per producer (a retry of any is a duplicate)."""
    cleanup_policy: str = "delete"
    """``delete`` (retention only), ``compact`` (key compaction; records
    need a key) or ``compact,delete`` (both)."""
    min_compaction_lag_ms: int = 0
    """A record appended less than this long ago is never compacted away."""
    delete_retention_ms: int = _DAY_MS
    """How long a tombstone survives compaction."""
    max_compaction_lag_ms: int | None = None
    """The leader compacts once the oldest uncompacted batch is this old,
    however little is dirty; None: only by dirty size (or on request)."""
    compaction_map_entries: int = 100_000
    """Keys one compaction pass's offset map holds (about 100 bytes each);
    more keys take more passes."""

    @property
    def compacts(self) -> bool:
        return self.cleanup_policy in ("compact", "compact,delete")

    def validate(self) -> None:
        """Raise ``ValueError`` for a setting that makes no sense."""
        if self.retention_ms is not None and self.retention_ms <= 0:
            raise ValueError(f"retention_ms must be positive or None, got {self.retention_ms}")
        if self.retention_bytes is not None and self.retention_bytes < 0:
            raise ValueError(f"retention_bytes must be >= 0 or None, got {self.retention_bytes}")
        if self.producer_expiry_ms <= 0:
            raise ValueError(f"producer_expiry_ms must be positive, got {self.producer_expiry_ms}")
        if self.checkpoint_interval_bytes <= 0:
            raise ValueError(
                f"checkpoint_interval_bytes must be positive, got {self.checkpoint_interval_bytes}"
            )
        if not 1 <= self.dedup_window <= 255:
            raise ValueError(f"dedup_window must be in 1..255, got {self.dedup_window}")
        if self.cleanup_policy not in CLEANUP_POLICIES:
            raise ValueError(
                f"cleanup_policy must be one of {', '.join(CLEANUP_POLICIES)}, got {self.cleanup_policy!r}"
            )
        if self.min_compaction_lag_ms < 0:
            raise ValueError(f"min_compaction_lag_ms must be >= 0, got {self.min_compaction_lag_ms}")
        if self.delete_retention_ms < 0:
            raise ValueError(f"delete_retention_ms must be >= 0, got {self.delete_retention_ms}")
        if self.max_compaction_lag_ms is not None and self.max_compaction_lag_ms < self.min_compaction_lag_ms:
            raise ValueError(
                f"max_compaction_lag_ms ({self.max_compaction_lag_ms}) must be >= min_compaction_lag_ms "
                f"({self.min_compaction_lag_ms}) or None"
            )
        if not 1 <= self.compaction_map_entries < 2**32:
            raise ValueError(
                f"compaction_map_entries must be in 1..2**32-1, got {self.compaction_map_entries}"
            )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Snapshot ``data`` of the state after applying entries ``<= index``."""

    index: int
    data: bytes


class PartitionStateMachine:
    """One partition's applied state (see the module docstring)."""

    __slots__ = (
        "_applied_index",
        "_batches",
        "_bytes_since_checkpoint",
        "_checkpoints",
        "_clock_ms",
        "_compaction",
        "_log_start_offset",
        "_producers",
        "config",
    )

    def __init__(self, config: PartitionConfig) -> None:
        config.validate()
        self.config = config
        self._applied_index = 0
        self._log_start_offset = 0
        self._clock_ms = 0
        self._batches = BatchIndex(0)
        self._producers = ProducerTable(config.dedup_window, config.producer_expiry_ms)
        self._checkpoints: deque[Checkpoint] = deque()
        self._bytes_since_checkpoint = 0
        self._compaction: CompactionTarget | None = None

    @classmethod
    def restore(cls, config: PartitionConfig, snapshot_index: int, data: bytes) -> PartitionStateMachine:
        """The state in a Raft snapshot at ``snapshot_index``; empty ``data``
        is a fresh partition whose log starts after ``snapshot_index``.
        Raises ``CorruptSnapshot``."""
        sm = cls(config)
        sm._applied_index = snapshot_index
        if not data:
            return sm
        image = decode_image(data, snapshot_index)
        sm._log_start_offset = image.log_start_offset
        sm._clock_ms = image.clock_ms
        sm._batches = BatchIndex(image.next_offset)
        sm._producers = ProducerTable(config.dedup_window, config.producer_expiry_ms, image.producers)
        sm._compaction = image.compaction
        return sm

    # --- state --------------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        return self._applied_index

    @property
    def high_watermark(self) -> int:
        """The next offset to assign: every offset below it is committed."""
        return self._batches.end_offset

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def last_append_ms(self) -> int:
        """The clock: the largest append time applied so far (0 before any)."""
        return self._clock_ms

    @property
    def retained_batches(self) -> int:
        return len(self._batches)

    @property
    def retained_bytes(self) -> int:
        return self._batches.retained_bytes

    @property
    def checkpoints(self) -> tuple[Checkpoint, ...]:
        """The recorded checkpoints after the last compaction, oldest first."""
        return tuple(self._checkpoints)

    @property
    def compaction_target(self) -> CompactionTarget | None:
        """Where every replica compacts its copy to (None: never asked)."""
        return self._compaction

    def index_memory_bytes(self) -> int:
        """Bytes the batch index holds (for capacity figures)."""
        return self._batches.memory_bytes()

    def producer(self, producer_id: int) -> ProducerEntry | None:
        return self._producers.get(producer_id)

    def producers(self) -> tuple[ProducerEntry, ...]:
        return self._producers.entries()

    # --- applying the log ---------------------------------------------------------

    def _advance(self, index: int) -> None:
        if index <= self._applied_index:
            raise ValueError(f"entry {index} applied after entry {self._applied_index}: out of order")
        self._applied_index = index

    def apply_noop(self, index: int) -> None:
        """An entry that is not a command (a leader's empty entry, a
        membership change)."""
        self._advance(index)

    def apply(self, index: int, data: bytes) -> ApplyResult:
        """Apply the command in entry ``index``. Raises ``UnsupportedCommand``
        (before changing anything) for a command from a newer version."""
        try:
            command = decode_command(data)
        except MalformedCommand as exc:
            self._advance(index)
            result: ApplyResult = Rejected(RejectReason.INVALID_COMMAND, f"entry {index}: {exc}")
        else:
            self._advance(index)
            if isinstance(command, CompactCommand):
                result = self._schedule_compaction(index, command)
            else:
                result = self._produce(index, command.batch, command.append_time_ms)
        self._bytes_since_checkpoint += len(data)
        if self._bytes_since_checkpoint >= self.config.checkpoint_interval_bytes:
            self._checkpoints.append(self.checkpoint())
            self._bytes_since_checkpoint = 0
        return result

    def _produce(self, index: int, batch: memoryview, append_time_ms: int) -> ApplyResult:
        try:
            # allow_compacted: after a restart a replica re-applies the
            # batches it rewrote itself (the leader never proposes one).
            header = validate_header(batch, max_batch_bytes=len(batch), allow_compacted=True)
        except InvalidBatch as exc:
            return Rejected(RejectReason.INVALID_BATCH, f"entry {index}: {exc.reason}: {exc.message}")
        if append_time_ms > self._clock_ms:
            self._clock_ms = append_time_ms
        now = self._clock_ms
        producers = self._producers
        producers.expire(now)
        verdict = producers.check(header)
        if verdict is not None:
            return verdict
        batches = self._batches
        base = batches.end_offset
        span = header.last_offset_delta + 1  # not record_count: see the module docstring
        batches.append(index, base, span, len(batch), now, header.max_timestamp)
        last = base + span - 1
        producers.record(header, base, last, now)
        return Appended(base, last, now)

    def _schedule_compaction(self, index: int, command: CompactCommand) -> CompactionScheduled:
        """Merge ``command`` into the target: never past the high watermark,
        never a tombstone floor past this entry."""
        target = CompactionTarget(
            min(command.clean_up_to_offset, self.high_watermark - 1),
            command.now_ms - command.delete_retention_ms,
            min(command.tombstone_floor_index, index),
            command.max_map_entries,
        )
        if self._compaction is not None:
            target = self._compaction.merge(target)
        self._compaction = target
        return CompactionScheduled(target.clean_up_to_offset)

    def check_produce(self, header: BatchHeader) -> Rejected | None:
        """The leader's pre-check of a validated batch before proposing it:
        a fenced producer (an epoch older than its current one) is refused
        here so its batch never enters the log. Sequences are checked at
        apply time only (proposals are pipelined)."""
        return self._producers.check_epoch(header)

    # --- reads --------------------------------------------------------------------

    def locate(self, offset: int, max_bytes: int) -> list[BatchLocation]:
        """The batches to serve a fetch at ``offset``: from the batch holding
        it, in order, as many as fit in ``max_bytes`` but at least one.
        Empty at the high watermark. Raises ``OffsetOutOfRange`` below the
        log start or above the high watermark."""
        hw = self.high_watermark
        if not self._log_start_offset <= offset <= hw:
            raise OffsetOutOfRange(offset, self._log_start_offset, hw)
        if offset == hw:
            return []
        return self._batches.locate(offset, max_bytes)

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """Base offset of the first retained batch whose ``max_timestamp``
        is at or after ``timestamp_ms``; None if there is none."""
        return self._batches.offset_for_timestamp(timestamp_ms)

    # --- snapshots and retention ---------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """The current state as snapshot data at ``applied_index``. Its log
        start is ``high_watermark``: a snapshot is only used once the log is
        compacted to its index, when no batch before it is left."""
        next_offset = self.high_watermark
        image = PartitionImage(
            index=self._applied_index,
            next_offset=next_offset,
            log_start_offset=next_offset,
            clock_ms=self._clock_ms,
            producers=self._producers.entries(),
            compaction=self._compaction,
        )
        return Checkpoint(self._applied_index, encode_image(image))

    def retention_cut(self, now_ms: int) -> Checkpoint | None:
        """The newest checkpoint at which compacting the log deletes only
        batches the retention policy lets go (and at least one), or None.

        A batch may go when it was appended before ``now_ms - retention_ms``,
        or when the batches after it still hold ``retention_bytes``. When
        every retained batch may go, the cut is the current state."""
        config = self.config
        batches = self._batches
        if not len(batches) or config.cleanup_policy == "compact":  # compact alone: no retention
            return None
        rows = 0
        if config.retention_ms is not None:
            rows = batches.rows_appended_before(now_ms - config.retention_ms)
        if config.retention_bytes is not None:
            rows = max(rows, batches.rows_beyond_bytes(config.retention_bytes))
        if rows == 0:
            return None
        first_index = batches.raft_index_at(0)
        if rows == len(batches):
            return self.checkpoint()
        first_kept = batches.raft_index_at(rows)
        cut: Checkpoint | None = None
        for checkpoint in self._checkpoints:
            if checkpoint.index >= first_kept:
                break
            cut = checkpoint
        if cut is None or cut.index < first_index:
            return None
        return cut

    # --- key compaction (the leader's choices and the cleaner's bookkeeping) ------------

    def compactable_end(self, appended_before_ms: int) -> int:
        """The last offset of the newest batch appended at or before
        ``appended_before_ms`` (whole batches), or ``log_start - 1``."""
        batches = self._batches
        rows = batches.rows_appended_before(appended_before_ms + 1)
        return batches.end_of_rows(rows) - 1 if rows else self._log_start_offset - 1

    def dirty_bytes(self) -> tuple[int, int | None]:
        """Batch bytes after the compaction target, and the append time of
        the first such batch (None when there is none)."""
        after = -1 if self._compaction is None else self._compaction.clean_up_to_offset
        batches = self._batches
        row = batches.row_after(after)
        if row >= len(batches):
            return 0, None
        return batches.bytes_after(after), batches.append_time_at(row)

    def resize_batches(self, sizes: dict[int, int]) -> int:
        """Key compaction rewrote the batches in these Raft entries to these
        sizes; returns the bytes removed."""
        return self._batches.resize(sizes)

    def compacted(self, index: int) -> None:
        """The Raft log was compacted through ``index`` (with a snapshot of
        this state machine there): forget the batches and checkpoints at or
        before it and move the log start past them."""
        if index > self._applied_index:
            raise ValueError(f"cannot compact to {index}: only {self._applied_index} is applied")
        batches = self._batches
        batches.drop_through(index)
        while self._checkpoints and self._checkpoints[0].index <= index:
            self._checkpoints.popleft()
        self._log_start_offset = max(self._log_start_offset, batches.first_offset)
