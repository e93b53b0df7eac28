"""Key layout of the node's RocksDB: which column family holds what, under which key.

Column families (``ColumnFamily``):

- ``raft_log``: ``group u64 BE | index u64 BE`` → an encoded entry
  (``partitions.codec.encode_entry``: term u64, kind u8, data).
- ``raft_state``: ``group u64 BE`` → the encoded ``HardState``;
  ``group | b"snap"`` → the snapshot (metadata and data);
  ``group | b"trunc"`` → the truncated state (index and term of the entry just
  before the first one kept, i.e. how far the log has been compacted).
- ``conf_index``: ``group | index`` → ``b""`` for every CONF_CHANGE entry in
  ``raft_log``, so ``conf_entries()`` reads a handful of keys instead of
  scanning the log.
- ``meta``: node-level keys (``FORMAT_VERSION_KEY``).

Invariants:

- Every per-group key starts with the 8-byte big-endian group id, and the
  index is big-endian too, so byte order is (group, index) order: one group's
  log is one contiguous key range, ``[log_key(g, i), log_key(g, j))`` is
  exactly entries ``i..j-1`` of group ``g``, and ``[group_prefix(g),
  group_end(g))`` covers everything a group owns in any column family.
- Group ids and indexes are in ``[0, 2**64 - 1)``: the largest u64 is kept
  free so ``group_end`` (the next group's prefix) always exists.
- The layout is versioned as a whole (``FORMAT_VERSION`` in ``meta``), not per
  key: a store written with another layout version is refused at open.
"""

from __future__ import annotations

import enum
import struct

FORMAT_VERSION = 1
FORMAT_VERSION_KEY = b"format_version"

MAX_ID = 2**64 - 2
"""Largest group id or log index a key can hold (see the module invariants)."""

_U64 = struct.Struct(">Q")
_U64_PAIR = struct.Struct(">QQ")

SNAPSHOT_SUFFIX = b"snap"
TRUNCATED_SUFFIX = b"trunc"


class ColumnFamily(enum.Enum):
    """The column families of the node store; the value is RocksDB's name."""

    RAFT_LOG = "raft_log"
    RAFT_STATE = "raft_state"
    CONF_INDEX = "conf_index"
    META = "meta"


def _check(value: int, what: str) -> None:
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"{what} {value} is outside [0, {MAX_ID}]")


def group_prefix(group: int) -> bytes:
    """The 8 bytes every key of ``group`` starts with."""
    _check(group, "group id")
    return _U64.pack(group)


def group_end(group: int) -> bytes:
    """The first key after everything ``group`` owns (exclusive range end)."""
    _check(group, "group id")
    return _U64.pack(group + 1)


def log_key(group: int, index: int) -> bytes:
    """Key of entry ``index`` of ``group`` (in ``raft_log`` and ``conf_index``)."""
    _check(group, "group id")
    _check(index, "log index")
    return _U64_PAIR.pack(group, index)


def parse_log_key(key: bytes) -> tuple[int, int]:
    """``(group, index)`` of a ``raft_log`` / ``conf_index`` key."""
    if len(key) != _U64_PAIR.size:
        raise ValueError(f"not a log key: {key!r}")
    group, index = _U64_PAIR.unpack(key)
    return group, index


def hard_state_key(group: int) -> bytes:
    return group_prefix(group)


def snapshot_key(group: int) -> bytes:
    return group_prefix(group) + SNAPSHOT_SUFFIX


def truncated_key(group: int) -> bytes:
    return group_prefix(group) + TRUNCATED_SUFFIX
