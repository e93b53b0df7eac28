"""Value encodings of the node store (the keys are in ``partitions.keys``).

All integers are big-endian; ids and indexes are u64.

- Entry (``raft_log``): ``term u64 | kind u8 | data``. No per-value version
  byte: this header is on the hot path (one per entry) and the whole layout is
  versioned once, in ``meta`` (``keys.FORMAT_VERSION``).
- HardState (``raft_state``): ``version u8 (=1) | term | vote | commit``.
- Truncated state (``raft_state``): ``version u8 (=1) | index | term``.
- Snapshot (``raft_state``): ``version u8 (=1) | index | term | n_voters u32 |
  n_learners u32 | voters u64 * n | learners u64 * n | data``; ids sorted, so
  equal snapshots encode to equal bytes.

These values are rare (a few per Ready at most) so a version byte costs
nothing and lets a later format add fields without a store-wide migration.

Invariant: ``decode_x(encode_x(v)) == v`` for every value; a value that does
not decode (wrong length, unknown version or entry kind) raises
``StoreCorrupted``, never a bare ``struct.error``.
"""

from __future__ import annotations

import struct

from partitions.storage_errors import StoreCorrupted
from raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMetadata

VALUE_VERSION = 1

_ENTRY_HEADER = struct.Struct(">QB")
_HARD_STATE = struct.Struct(">BQQQ")
_TRUNCATED = struct.Struct(">BQQ")
_SNAPSHOT_HEADER = struct.Struct(">BQQII")
_U64 = struct.Struct(">Q")
_KINDS = {int(kind): kind for kind in EntryKind}

ENTRY_HEADER_SIZE = _ENTRY_HEADER.size


def encode_entry(entry: Entry) -> bytes:
    return _ENTRY_HEADER.pack(entry.term, entry.kind) + entry.data


def decode_entry(index: int, value: bytes) -> Entry:
    """The entry stored at ``index`` (the index lives in the key)."""
    if len(value) < _ENTRY_HEADER.size:
        raise StoreCorrupted(f"entry {index}: {len(value)}-byte value is shorter than its header")
    term, kind = _ENTRY_HEADER.unpack_from(value)
    try:
        entry_kind = _KINDS[kind]
    except KeyError:
        raise StoreCorrupted(f"entry {index}: unknown entry kind {kind}") from None
    return Entry(term=term, index=index, kind=entry_kind, data=value[_ENTRY_HEADER.size :])


def entry_term(index: int, value: bytes) -> int:
    """Only the term of a stored entry (no copy of its data)."""
    if len(value) < _ENTRY_HEADER.size:
        raise StoreCorrupted(f"entry {index}: {len(value)}-byte value is shorter than its header")
    term: int = _U64.unpack_from(value)[0]
    return term


def _check_version(what: str, version: int) -> None:
    if version != VALUE_VERSION:
        raise StoreCorrupted(f"{what}: unknown encoding version {version}")


def encode_hard_state(hs: HardState) -> bytes:
    return _HARD_STATE.pack(VALUE_VERSION, hs.term, hs.vote, hs.commit)


def decode_hard_state(value: bytes) -> HardState:
    if len(value) != _HARD_STATE.size:
        raise StoreCorrupted(f"hard state: {len(value)} bytes, expected {_HARD_STATE.size}")
    version, term, vote, commit = _HARD_STATE.unpack(value)
    _check_version("hard state", version)
    return HardState(term=term, vote=vote, commit=commit)


def encode_truncated(index: int, term: int) -> bytes:
    return _TRUNCATED.pack(VALUE_VERSION, index, term)


def decode_truncated(value: bytes) -> tuple[int, int]:
    """``(index, term)`` of the last compacted entry."""
    if len(value) != _TRUNCATED.size:
        raise StoreCorrupted(f"truncated state: {len(value)} bytes, expected {_TRUNCATED.size}")
    version, index, term = _TRUNCATED.unpack(value)
    _check_version("truncated state", version)
    return index, term


def encode_snapshot(snapshot: Snapshot) -> bytes:
    meta = snapshot.metadata
    voters = sorted(meta.conf_state.voters)
    learners = sorted(meta.conf_state.learners)
    ids = voters + learners
    header = _SNAPSHOT_HEADER.pack(VALUE_VERSION, meta.index, meta.term, len(voters), len(learners))
    return header + struct.pack(f">{len(ids)}Q", *ids) + snapshot.data


def decode_snapshot(value: bytes) -> Snapshot:
    if len(value) < _SNAPSHOT_HEADER.size:
        raise StoreCorrupted(f"snapshot: {len(value)}-byte value is shorter than its header")
    version, index, term, n_voters, n_learners = _SNAPSHOT_HEADER.unpack_from(value)
    _check_version("snapshot", version)
    ids_end = _SNAPSHOT_HEADER.size + 8 * (n_voters + n_learners)
    if len(value) < ids_end:
        raise StoreCorrupted(f"snapshot at {index}: membership list runs past the value")
    ids = struct.unpack_from(f">{n_voters + n_learners}Q", value, _SNAPSHOT_HEADER.size)
    conf = ConfState(voters=frozenset(ids[:n_voters]), learners=frozenset(ids[n_voters:]))
    return Snapshot(SnapshotMetadata(index=index, term=term, conf_state=conf), value[ids_end:])
