"""Idempotent producers: per-producer epoch, recent batches, and expiry.

A producer (``producer_id`` >= 0) numbers its records with a sequence that
starts at 0 for each epoch and wraps from ``2**31 - 1`` to 0. The table keeps,
per producer, its current epoch and its last ``dedup_window`` appended
batches, which is enough to answer a retry of any of them with its original
offsets after a failover. Batches without a producer (``producer_id`` -1)
never touch the table.

The rules, for a batch of producer ``p`` with epoch ``e`` and sequences
``s .. t`` (in this order):

1. no state for ``p``: ``s`` must be 0 (else ``UNKNOWN_PRODUCER_ID``);
2. ``e`` older than ``p``'s epoch: ``INVALID_PRODUCER_EPOCH``;
3. ``e`` newer: ``s`` must be 0 (else ``OUT_OF_ORDER_SEQUENCE``); the new
   epoch starts with no recent batches;
4. same epoch and ``s .. t`` equal to a recent batch: ``Duplicate`` with
   that batch's offsets;
5. ``s`` is the successor of ``p``'s last sequence: append;
6. ``s`` ahead of it (a gap): ``OUT_OF_ORDER_SEQUENCE``;
7. ``s .. t`` entirely before the oldest recent batch: ``DUPLICATE_SEQUENCE``
   (a retry older than the window); otherwise (it overlaps the recent
   batches without matching one) ``OUT_OF_ORDER_SEQUENCE``.

"Ahead" and "before" compare sequences on the wrapping circle: ``a`` is
ahead of ``b`` when ``(a - b) mod 2**31`` is below ``2**30``.

Invariants:

- ``check`` never changes the table; ``record`` is called only for a batch
  that ``check`` accepted (returned None for) and was appended.
- Time is the state machine's clock (the entries' append times made
  monotonic), never a wall clock: a producer expires when
  ``clock - last_append_ms >= expiry_ms``, so every replica expires the same
  producers at the same entry.
- Only an appended batch refreshes a producer's ``last_append_ms``; a
  duplicate or rejected one does not keep it alive.
- Producers are kept in order of last activity (non-decreasing
  ``last_append_ms``): expiry only ever looks at the front.
- Every ``ProducerEntry`` holds 1 to ``dedup_window`` batches, oldest first,
  with consecutive sequences.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from partitions.results import Duplicate, Rejected, RejectReason
from raftlog.v1.record_batch import BatchHeader

__all__ = ["SEQUENCE_MODULUS", "ProducerBatch", "ProducerEntry", "ProducerTable"]

SEQUENCE_MODULUS = 2**31
_HALF = SEQUENCE_MODULUS // 2


@dataclass(frozen=True, slots=True)
class ProducerBatch:
    """One recently appended batch of a producer."""

    first_sequence: int
    last_sequence: int
    base_offset: int
    last_offset: int
    append_time_ms: int


@dataclass(frozen=True, slots=True)
class ProducerEntry:
    """What the partition knows about one producer."""

    producer_id: int
    epoch: int
    last_append_ms: int
    batches: tuple[ProducerBatch, ...]

    @property
    def last_sequence(self) -> int:
        return self.batches[-1].last_sequence

    @property
    def next_sequence(self) -> int:
        return (self.batches[-1].last_sequence + 1) % SEQUENCE_MODULUS


class ProducerTable:
    """The producers of one partition. See the module docstring for rules."""

    __slots__ = ("_entries", "dedup_window", "expiry_ms")

    def __init__(self, dedup_window: int, expiry_ms: int, entries: Iterable[ProducerEntry] = ()) -> None:
        self.dedup_window = dedup_window
        self.expiry_ms = expiry_ms
        # Insertion order is activity order: an update re-inserts at the end.
        self._entries: dict[int, ProducerEntry] = {}
        for entry in sorted(entries, key=lambda e: (e.last_append_ms, e.producer_id)):
            if entry.batches[-dedup_window:] != entry.batches:
                entry = ProducerEntry(
                    entry.producer_id, entry.epoch, entry.last_append_ms, entry.batches[-dedup_window:]
                )
            self._entries[entry.producer_id] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, producer_id: int) -> ProducerEntry | None:
        return self._entries.get(producer_id)

    def entries(self) -> tuple[ProducerEntry, ...]:
        """Every entry in canonical order: by last activity, then id."""
        return tuple(sorted(self._entries.values(), key=lambda e: (e.last_append_ms, e.producer_id)))

    def expire(self, now_ms: int) -> int:
        """Forget producers idle for ``expiry_ms`` or more; returns how many."""
        entries = self._entries
        expired = 0
        deadline = now_ms - self.expiry_ms
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.last_append_ms > deadline:
                break
            del entries[oldest.producer_id]
            expired += 1
        return expired

    def check_epoch(self, header: BatchHeader) -> Rejected | None:
        """Only rule 2 (the leader's pre-check before proposing)."""
        if header.producer_id < 0:
            return None
        entry = self._entries.get(header.producer_id)
        if entry is not None and header.producer_epoch < entry.epoch:
            return _fenced(header, entry)
        return None

    def check(self, header: BatchHeader) -> Duplicate | Rejected | None:
        """None if the batch may be appended, else what to answer instead."""
        pid = header.producer_id
        if pid < 0:
            return None
        seq = header.base_sequence
        entry = self._entries.get(pid)
        if entry is None:
            if seq == 0:
                return None
            return Rejected(
                RejectReason.UNKNOWN_PRODUCER_ID,
                f"producer {pid} has no state on this partition (new, or expired after "
                f"{self.expiry_ms} ms without a write) and its batch starts at sequence {seq}, "
                "not 0; start a new epoch (or get a new producer id) and begin at sequence 0",
            )
        epoch = header.producer_epoch
        if epoch < entry.epoch:
            return _fenced(header, entry)
        if epoch > entry.epoch:
            if seq == 0:
                return None
            return Rejected(
                RejectReason.OUT_OF_ORDER_SEQUENCE,
                f"producer {pid} epoch {epoch} is new here and must start at sequence 0, "
                f"got {seq}; reset the sequence when the epoch changes",
            )
        last = header.last_sequence
        for batch in entry.batches:
            if batch.first_sequence == seq and batch.last_sequence == last:
                return Duplicate(batch.base_offset, batch.last_offset, batch.append_time_ms)
        expected = entry.next_sequence
        if seq == expected:
            return None
        ahead = (seq - expected) % SEQUENCE_MODULUS
        if ahead < _HALF:
            return Rejected(
                RejectReason.OUT_OF_ORDER_SEQUENCE,
                f"producer {pid} epoch {epoch}: expected sequence {expected}, got {seq} "
                f"({ahead} records missing before it); resend from sequence {expected}",
            )
        last_behind = (expected - last) % SEQUENCE_MODULUS
        oldest_behind = (expected - entry.batches[0].first_sequence) % SEQUENCE_MODULUS
        if 0 < last_behind <= _HALF and last_behind > oldest_behind:
            return Rejected(
                RejectReason.DUPLICATE_SEQUENCE,
                f"producer {pid} epoch {epoch}: sequences {seq}..{last} were written before the last "
                f"{len(entry.batches)} batches this partition remembers; the batch is already in the "
                "log, do not resend it",
            )
        return Rejected(
            RejectReason.OUT_OF_ORDER_SEQUENCE,
            f"producer {pid} epoch {epoch}: sequences {seq}..{last} overlap recent batches without "
            f"matching one (next expected is {expected}); retry batches exactly as first sent",
        )

    def record(self, header: BatchHeader, base_offset: int, last_offset: int, append_time_ms: int) -> None:
        """Remember an appended batch (one ``check`` accepted)."""
        pid = header.producer_id
        if pid < 0:
            return
        batch = ProducerBatch(
            header.base_sequence, header.last_sequence, base_offset, last_offset, append_time_ms
        )
        entry = self._entries.pop(pid, None)
        if entry is None or entry.epoch != header.producer_epoch:
            batches: tuple[ProducerBatch, ...] = (batch,)
        else:
            batches = (*entry.batches[1 - self.dedup_window :], batch) if self.dedup_window > 1 else (batch,)
        self._entries[pid] = ProducerEntry(pid, header.producer_epoch, append_time_ms, batches)


def _fenced(header: BatchHeader, entry: ProducerEntry) -> Rejected:
    return Rejected(
        RejectReason.INVALID_PRODUCER_EPOCH,
        f"producer {header.producer_id} epoch {header.producer_epoch} is older than its current epoch "
        f"{entry.epoch}: a newer instance of this producer fenced it; stop this instance",
    )
