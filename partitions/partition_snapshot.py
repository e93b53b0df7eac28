"""The partition state machine's snapshot: the small state that survives log
compaction.

A snapshot at Raft index ``I`` is the state after applying entries ``<= I``
once those entries are gone: the retained batches themselves are not in it
(the entries after ``I`` are re-applied on top of it), only the counters and
the producer table.

Layout, version 2, all integers big-endian (version 1, still read, is the
same without the compaction target):

==================== ================================================
field                meaning
==================== ================================================
version u8           2
index u64            the Raft index the snapshot is at
next_offset i64      the next offset to assign
log_start_offset i64 the first readable offset once the log is compacted
                     to ``index``
clock_ms i64         the largest append time applied so far
producer_count u32
producers            ``producer_count`` times: producer_id i64, epoch i16,
                     last_append_ms i64, batch_count u8, then
                     ``batch_count`` times: first_sequence i32,
                     last_sequence i32, base_offset i64, last_offset i64,
                     append_time_ms i64 (oldest batch first)
has_target u8        0 or 1; then, when 1: clean_up_to_offset i64,
                     tombstone_horizon_ms i64, tombstone_floor_index
                     u64, max_map_entries u32 (the key-compaction
                     target, partitions/compaction.py)
crc u32              zlib CRC-32 of every byte before it
==================== ================================================

Invariants:

- Deterministic: producers are written in canonical order (by
  ``last_append_ms``, then ``producer_id``), so equal states encode to equal
  bytes, whichever replica encodes them and whatever order they were
  updated in.
- ``decode_image`` accepts exactly what ``encode_image`` writes: anything
  else (a flipped bit, a truncated value, producers out of canonical order,
  a count or sequence out of range) raises ``CorruptSnapshot``, never a bare
  ``struct.error``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from partitions.compaction import CompactionTarget
from partitions.producer_state import SEQUENCE_MODULUS, ProducerBatch, ProducerEntry

__all__ = ["SNAPSHOT_VERSION", "CorruptSnapshot", "PartitionImage", "decode_image", "encode_image"]

SNAPSHOT_VERSION = 2
_READABLE_VERSIONS = (1, 2)

_HEAD = struct.Struct(">BQqqqI")
_PRODUCER = struct.Struct(">qhqB")
_BATCH = struct.Struct(">iiqqq")
_CRC = struct.Struct(">I")
_TARGET = struct.Struct(">qqQI")
_MAX_BATCHES = 255


class CorruptSnapshot(ValueError):
    """Snapshot data that this code did not write (or that was damaged)."""


@dataclass(frozen=True, slots=True)
class PartitionImage:
    """The state a snapshot carries (see the module docstring)."""

    index: int
    next_offset: int
    log_start_offset: int
    clock_ms: int
    producers: tuple[ProducerEntry, ...]
    compaction: CompactionTarget | None = None


def _canonical_key(entry: ProducerEntry) -> tuple[int, int]:
    return entry.last_append_ms, entry.producer_id


def encode_image(image: PartitionImage) -> bytes:
    producers = sorted(image.producers, key=_canonical_key)
    parts = [
        _HEAD.pack(
            SNAPSHOT_VERSION,
            image.index,
            image.next_offset,
            image.log_start_offset,
            image.clock_ms,
            len(producers),
        )
    ]
    for entry in producers:
        if not 1 <= len(entry.batches) <= _MAX_BATCHES:
            raise ValueError(f"producer {entry.producer_id} has {len(entry.batches)} batches")
        parts.append(_PRODUCER.pack(entry.producer_id, entry.epoch, entry.last_append_ms, len(entry.batches)))
        parts.extend(
            _BATCH.pack(b.first_sequence, b.last_sequence, b.base_offset, b.last_offset, b.append_time_ms)
            for b in entry.batches
        )
    target = image.compaction
    if target is None:
        parts.append(b"\x00")
    else:
        parts.append(b"\x01")
        parts.append(
            _TARGET.pack(
                target.clean_up_to_offset,
                target.tombstone_horizon_ms,
                target.tombstone_floor_index,
                target.max_map_entries,
            )
        )
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def decode_image(data: bytes, index: int) -> PartitionImage:
    """The image in ``data``, which must be a snapshot at Raft ``index``."""
    if len(data) < _HEAD.size + _CRC.size:
        raise CorruptSnapshot(f"partition snapshot at {index}: {len(data)} bytes is shorter than its header")
    version = data[0]
    if version not in _READABLE_VERSIONS:
        raise CorruptSnapshot(
            f"partition snapshot at {index}: unknown version {version} (this code reads {SNAPSHOT_VERSION})"
        )
    body = memoryview(data)[: -_CRC.size]
    (stored_crc,) = _CRC.unpack_from(data, len(body))
    if zlib.crc32(body) != stored_crc:
        raise CorruptSnapshot(f"partition snapshot at {index}: CRC mismatch, the snapshot is damaged")
    _, at, next_offset, log_start, clock_ms, count = _HEAD.unpack_from(body)
    if at != index:
        raise CorruptSnapshot(f"partition snapshot says it is at index {at}, but was stored at {index}")
    if not 0 <= log_start <= next_offset:
        raise CorruptSnapshot(
            f"partition snapshot at {index}: log start {log_start} and next offset {next_offset} disagree"
        )
    pos = _HEAD.size
    producers: list[ProducerEntry] = []
    try:
        for _ in range(count):
            pid, epoch, last_append, n = _PRODUCER.unpack_from(body, pos)
            pos += _PRODUCER.size
            batches = []
            for _ in range(n):
                batches.append(ProducerBatch(*_BATCH.unpack_from(body, pos)))
                pos += _BATCH.size
            producers.append(ProducerEntry(pid, epoch, last_append, tuple(batches)))
    except struct.error:
        raise CorruptSnapshot(f"partition snapshot at {index}: producer table runs past the end") from None
    compaction: CompactionTarget | None = None
    if version >= 2:
        if pos >= len(body) or body[pos] not in (0, 1):
            raise CorruptSnapshot(f"partition snapshot at {index}: no valid compaction flag")
        pos += 1
        if body[pos - 1]:
            try:
                upto, horizon, floor, entries = _TARGET.unpack_from(body, pos)
            except struct.error:
                raise CorruptSnapshot(f"partition snapshot at {index}: compaction target is cut") from None
            pos += _TARGET.size
            if not -1 <= upto < next_offset or floor > index or entries < 1:
                raise CorruptSnapshot(f"partition snapshot at {index}: compaction target out of range")
            compaction = CompactionTarget(upto, horizon, floor, entries)
    if pos != len(body):
        raise CorruptSnapshot(f"partition snapshot at {index}: {len(body) - pos} unexpected trailing bytes")
    for entry in producers:
        _check_entry(index, entry, next_offset, clock_ms)
    keys = [_canonical_key(e) for e in producers]
    if keys != sorted(keys) or len({e.producer_id for e in producers}) != len(producers):
        raise CorruptSnapshot(f"partition snapshot at {index}: producers are not in canonical order")
    return PartitionImage(index, next_offset, log_start, clock_ms, tuple(producers), compaction)


def _check_entry(index: int, entry: ProducerEntry, next_offset: int, clock_ms: int) -> None:
    def bad(what: str) -> CorruptSnapshot:
        return CorruptSnapshot(f"partition snapshot at {index}: producer {entry.producer_id}: {what}")

    if entry.producer_id < 0 or entry.epoch < 0 or not entry.batches:
        raise bad("negative id or epoch, or no batches")
    if entry.last_append_ms > clock_ms:
        raise bad(f"last append {entry.last_append_ms} is after the clock {clock_ms}")
    for b in entry.batches:
        if not (0 <= b.first_sequence < SEQUENCE_MODULUS and 0 <= b.last_sequence < SEQUENCE_MODULUS):
            raise bad(f"sequence {b.first_sequence}..{b.last_sequence} out of range")
        if not 0 <= b.base_offset <= b.last_offset < next_offset:
            raise bad(f"offsets {b.base_offset}..{b.last_offset} out of range")
