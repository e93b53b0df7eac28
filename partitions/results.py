"""What applying one command to a partition's state machine returns.

Invariants:

- Exactly one result per applied command entry, computed from the log alone,
  so every replica returns the same result for the same entry.
- ``Appended`` is the only result that consumed offsets. ``Duplicate`` and
  ``Rejected`` leave the partition's offsets unchanged and their batch is
  never returned by a read (it stays in the Raft log until compaction, as
  dead bytes).
- ``Rejected.reason`` is a ``RejectReason``: stable, machine-readable, sent
  to the producer; ``message`` says what is wrong and what to do.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Appended", "ApplyResult", "CompactionScheduled", "Duplicate", "RejectReason", "Rejected"]


class RejectReason(enum.StrEnum):
    OUT_OF_ORDER_SEQUENCE = "OUT_OF_ORDER_SEQUENCE"
    """The batch's sequence leaves a gap after the producer's last one (or a
    new epoch does not start at 0, or a retry overlaps recent batches
    without matching one)."""
    INVALID_PRODUCER_EPOCH = "INVALID_PRODUCER_EPOCH"
    """An epoch older than the producer's current one: a fenced instance."""
    UNKNOWN_PRODUCER_ID = "UNKNOWN_PRODUCER_ID"
    """No state for this producer (new, or expired) and its sequence is not 0."""
    DUPLICATE_SEQUENCE = "DUPLICATE_SEQUENCE"
    """A retry of a batch older than the dedup window: it is in the log, but
    its offsets are no longer known."""
    INVALID_BATCH = "INVALID_BATCH"
    """The entry's batch header is invalid (only a leader that skipped
    ``validate_batch`` can propose one)."""
    INVALID_COMMAND = "INVALID_COMMAND"
    """The entry data is not a well-formed command."""


@dataclass(frozen=True, slots=True)
class Appended:
    """The batch now holds offsets ``base_offset .. last_offset``."""

    base_offset: int
    last_offset: int
    append_time_ms: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A retry of a batch already in the log: its original offsets and
    append time. Nothing was appended."""

    base_offset: int
    last_offset: int
    append_time_ms: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """Nothing was appended; ``reason`` says why."""

    reason: RejectReason
    message: str


@dataclass(frozen=True, slots=True)
class CompactionScheduled:
    """A compact command applied: the partition's cleaning target is now
    ``clean_up_to_offset`` (the merge of every compact command so far)."""

    clean_up_to_offset: int


ApplyResult = Appended | Duplicate | Rejected | CompactionScheduled
