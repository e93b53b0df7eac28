"""The simulator's state machine: a hash chain over the applied log.

Invariants:
- The state after applying entries ``1..i`` is ``(i, h_i)`` with
  ``h_i = blake2b(h_{i-1} || term || kind || data)``; ``h_0 = EMPTY``.
- The same function hashes a log prefix, so "the state machine at index i"
  and "the log prefix up to i" have the same hash whenever they hold the
  same entries. The checker relies on this to compare logs, applied state
  and snapshots with one number.
- A snapshot's data is ``encode_state(index, h_index)``; an empty snapshot
  (index 0) is the empty chain and the bootstrap snapshot (index 1, no data,
  see ``MemoryStorage.bootstrap``) is ``GENESIS``.
"""

from __future__ import annotations

import struct
from hashlib import blake2b

from raft.types import Entry, EntryKind, Snapshot

HASH_SIZE = 16
EMPTY = bytes(HASH_SIZE)
_TERM_KIND = struct.Struct(">QB")
_STATE = struct.Struct(f">Q{HASH_SIZE}s")


def chain(prev: bytes, term: int, kind: int, data: bytes) -> bytes:
    """The prefix hash after appending one entry to a prefix hashed ``prev``."""
    return blake2b(prev + _TERM_KIND.pack(term, kind) + data, digest_size=HASH_SIZE).digest()


def chain_entry(prev: bytes, entry: Entry) -> bytes:
    return chain(prev, entry.term, entry.kind, entry.data)


# The bootstrap snapshot stands for one empty entry of term 1 at index 1.
GENESIS = chain(EMPTY, 1, EntryKind.NORMAL, b"")


def encode_state(index: int, digest: bytes) -> bytes:
    return _STATE.pack(index, digest)


class BadSnapshotData(ValueError):
    """A snapshot whose data is not a state this simulator wrote."""


def snapshot_state(snapshot: Snapshot) -> tuple[int, bytes]:
    """``(index, chain hash)`` of the state machine image in ``snapshot``."""
    index = snapshot.metadata.index
    if not snapshot.data:
        if index == 0:
            return 0, EMPTY
        if index == 1:
            return 1, GENESIS
        raise BadSnapshotData(f"snapshot at {index} carries no state")
    if len(snapshot.data) != _STATE.size:
        raise BadSnapshotData(f"snapshot at {index}: {len(snapshot.data)} bytes of data")
    data_index, digest = _STATE.unpack(snapshot.data)
    if data_index != index:
        raise BadSnapshotData(f"snapshot at {index} holds the state at {data_index}")
    return index, digest
