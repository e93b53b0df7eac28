"""Key compaction of a partition: the pure, deterministic algorithm.

A compacted topic keeps, below the cleaning point, only the latest record of
every key (Kafka's log compaction): offsets never change (a rewritten batch
keeps its base offset and span, fewer records), the high watermark and log
start never move because of compaction, and tombstones (null values) go
once they are older than ``delete_retention_ms``.

Why the leader drives it through the log (commands.CompactCommand) and every
replica rewrites its own copy with this pure code, instead of each replica
compacting on its own schedule (Kafka, Redpanda): independent cleaners leave
replicas holding different subsets of the same offsets, so after a leader
change a consumer can see a key's older value reappear, or a tombstone's
deletion undone. Here every replica applies the same command at the same
point of the log and the rewrite is a function of (input bytes, target), so
after a pass every replica holds identical bytes for the compacted range.

Why it is safe with Raft: a replica rewrites only entries it has applied
(committed, below its applied index) and only their data, never their index
or term; Raft compares (index, term), never payloads, so log matching,
elections and commitment are unaffected, and a committed entry is never
truncated or re-sent to a follower that already holds it (the core appends
only from the first conflict). A follower that later receives entries the
leader already compacted, and then applies the command, compacts them again
to the same result, because the algorithm is idempotent and its result
depends only on which records survive: a record is dropped only when a later
record with its key is at or below the cleaning point, and that later record
is then never dropped itself unless it is a tombstone. Tombstones are the
one case where information is lost (the record they shadow is gone only
because the tombstone was there), so a tombstone is dropped only from Raft
entries at or below ``tombstone_floor_index``: entries every member held
(by the leader's progress) when the leader proposed the command, so no
member can hold the shadowed record while receiving an entry whose
tombstone is already gone. (Residual case, documented rather than handled:
a member added after the command, given part of the log by a leader that
had not finished its pass and the rest by a new leader.)

Algorithm (one pass; ``LogCleaner`` in partitions/cleaner.py drives it in
bounded steps):

1. ``OffsetMap``: over the dirty batches (after what this replica already
   cleaned, up to the target offset X), key digest (blake2b-16 of the key)
   → latest offset, at most ``max_map_entries`` keys. When it is full the
   pass cleans only up to the last offset it covered (``covered_to``); the
   next pass continues from there. Memory is bounded by the entry count,
   independently of key and value sizes.
2. ``rewrite_batch``: every batch from the log start to ``covered_to`` keeps
   a record iff its offset is past ``covered_to``, or it has no key, or it
   is the latest of its key (by the map; a key not in the map was cleaned
   by an earlier pass and has no later record), except that a tombstone is
   dropped when its batch was appended before ``tombstone_horizon_ms`` and
   sits at or below ``tombstone_floor_index``. A batch that loses nothing
   is left as is; one that loses records is re-encoded
   (``encode_compacted_batch``: same header fields, fewer records, bit 3,
   new CRC, same codec; header-only with codec none when nothing is left).

Keyless records in a compacted range (written before the topic became
compacted) are kept: there is no key to find a later version by.

Invariants: ``rewrite_batch`` is deterministic (same arguments, same bytes)
and idempotent (rewriting its own output with the same map and target
returns None); the result of compacting up to X does not depend on how many
passes it took or on which batches were already compacted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from raftlog.v1.record_batch import (
    MAX_UNCOMPRESSED_RECORDS_BYTES,
    BatchHeader,
    Record,
    decode_records_as,
    encode_compacted_batch,
    parse_header,
    with_base_offset,
)

__all__ = ["DIGEST_BYTES", "CompactionTarget", "OffsetMap", "StoredBatch", "key_digest", "rewrite_batch"]

DIGEST_BYTES = 16

UNSAFE_DROPS_LATEST = False
"""TEST ONLY (``cluster.serve --unsafe-compaction-drops-latest``, the failover
drills' negative control): a pass also drops the latest record of about one
key in four (digest's first byte divisible by 4). Loses data by design."""


def key_digest(key: bytes) -> bytes:
    """What the offset map stores for a key (a collision would merge two
    keys; at 128 bits it is not expected, and it would be the same on every
    replica)."""
    return hashlib.blake2b(key, digest_size=DIGEST_BYTES).digest()


@dataclass(frozen=True, slots=True)
class CompactionTarget:
    """What the partition's replicas compact to: the merge of every compact
    command applied so far (each field only grows, so a later target
    includes everything an earlier one removed)."""

    clean_up_to_offset: int
    tombstone_horizon_ms: int
    """Tombstones in batches appended before this may be dropped."""
    tombstone_floor_index: int
    """...if their Raft entry is at or below this index."""
    max_map_entries: int

    def merge(self, later: CompactionTarget) -> CompactionTarget:
        return CompactionTarget(
            max(self.clean_up_to_offset, later.clean_up_to_offset),
            max(self.tombstone_horizon_ms, later.tombstone_horizon_ms),
            max(self.tombstone_floor_index, later.tombstone_floor_index),
            later.max_map_entries,
        )


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """One batch as a replica stores it, with what the state machine knows
    of it."""

    raft_index: int
    base_offset: int
    append_time_ms: int
    batch: bytes


class _Decoded:
    __slots__ = ("headers", "key", "offset", "timestamp_ms", "value")

    def __init__(
        self,
        offset: int,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: tuple[tuple[str, bytes], ...],
    ) -> None:
        self.offset = offset
        self.timestamp_ms = timestamp_ms
        self.key = key
        self.value = value
        self.headers = headers


def _decode(stored: StoredBatch) -> tuple[BatchHeader, list[_Decoded]]:
    batch = with_base_offset(stored.batch, stored.base_offset)
    records = decode_records_as(batch, _Decoded, max_uncompressed_bytes=MAX_UNCOMPRESSED_RECORDS_BYTES)
    return parse_header(stored.batch), records


class OffsetMap:
    """Key digest → latest offset over a dirty range, at most
    ``max_entries`` keys (pass 1)."""

    __slots__ = ("covered_to", "full", "latest", "max_entries", "start_offset")

    def __init__(self, max_entries: int, start_offset: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.latest: dict[bytes, int] = {}
        self.start_offset = start_offset
        self.covered_to = start_offset - 1
        """Every keyed record at or below this offset (from the start) is
        in the map."""
        self.full = False

    def add(self, stored: StoredBatch, up_to: int) -> bool:
        """Take the records of ``stored`` at or below ``up_to``; False once
        the map is full (``covered_to`` then stops before the first record
        that did not fit)."""
        if self.full:
            return False
        _, records = _decode(stored)
        latest = self.latest
        for record in records:
            if record.offset > up_to:
                break
            if record.key is None or record.offset < self.start_offset:
                continue  # keyless, or cleaned by an earlier pass
            digest = key_digest(record.key)
            if digest not in latest and len(latest) >= self.max_entries:
                self.covered_to = record.offset - 1
                self.full = True
                return False
            latest[digest] = record.offset
        header = parse_header(stored.batch)
        self.covered_to = max(self.covered_to, min(stored.base_offset + header.last_offset_delta, up_to))
        return True


def rewrite_batch(stored: StoredBatch, offsets: OffsetMap, target: CompactionTarget) -> bytes | None:
    """``stored``'s batch compacted up to ``offsets.covered_to`` (see the
    module docstring), or None when no record goes."""
    limit = offsets.covered_to
    if stored.base_offset > limit:
        return None
    header, records = _decode(stored)
    latest = offsets.latest
    drop_tombstones = (
        stored.append_time_ms < target.tombstone_horizon_ms
        and stored.raft_index <= target.tombstone_floor_index
    )
    kept: list[tuple[int, Record]] = []
    for r in records:
        if r.offset <= limit and r.key is not None:
            newest = latest.get(key_digest(r.key))
            if newest is not None and newest > r.offset:
                continue
            if UNSAFE_DROPS_LATEST and newest == r.offset and key_digest(r.key)[0] % 4 == 0:
                continue  # TEST ONLY: see UNSAFE_DROPS_LATEST
            if r.value is None and drop_tombstones:
                continue
        kept.append((r.offset - stored.base_offset, Record(r.value, r.key, r.headers, r.timestamp_ms)))
    if len(kept) == len(records):
        return None
    return encode_compacted_batch(header, kept)
