"""``WriteSet``: the RocksDB operations one replica wants written atomically.

A replica never writes to RocksDB itself: it describes its write as a
``WriteSet`` and hands it to the node's group-commit writer, which copies many
write sets into one ``WriteBatch``.

Invariants:

- Operations are applied in the order they were added (RocksDB applies a
  batch in order), so "delete range, then put" leaves the put.
- A write set is plain data (no RocksDB handles): it can be built on the
  event loop and consumed on the writer thread, and it can be inspected in
  tests.
- ``nbytes`` is the sum of the key and value lengths of every operation, a
  cheap measure of what the write costs (for stats and batch limits).
- ``frees_space`` is true for a write set that only deletes, or whose
  builder marked it (``mark_freeing``) because it lets go of at least as
  many stored bytes as it adds (a retention cut, a compaction's rewrite).
  The group-commit writer lets such writes through the disk's floor
  (partitions/disk_space.py): they are how a full disk gets space back.
- Once handed to the writer, a write set must not change.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

from partitions.keys import ColumnFamily


class OpKind(enum.IntEnum):
    PUT = 0
    DELETE = 1
    DELETE_RANGE = 2


Op = tuple[OpKind, ColumnFamily, bytes, bytes]
"""``(kind, cf, key, value)``; for DELETE_RANGE the value is the exclusive end
key, for DELETE it is ``b""``."""


class WriteSet:
    __slots__ = ("_marked_freeing", "nbytes", "ops")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.nbytes = 0
        self._marked_freeing = False

    def mark_freeing(self) -> None:
        """Declare that this write lets go of at least as many stored bytes
        as it adds (module docstring); only its builder can know that."""
        self._marked_freeing = True

    @property
    def frees_space(self) -> bool:
        """Marked freeing, or only deletes (at least one operation)."""
        if self._marked_freeing:
            return True
        return bool(self.ops) and all(op[0] != OpKind.PUT for op in self.ops)

    def put(self, cf: ColumnFamily, key: bytes, value: bytes) -> None:
        self.ops.append((OpKind.PUT, cf, key, value))
        self.nbytes += len(key) + len(value)

    def delete(self, cf: ColumnFamily, key: bytes) -> None:
        self.ops.append((OpKind.DELETE, cf, key, b""))
        self.nbytes += len(key)

    def delete_range(self, cf: ColumnFamily, begin: bytes, end: bytes) -> None:
        """Delete every key in ``[begin, end)``."""
        if begin >= end:
            return
        self.ops.append((OpKind.DELETE_RANGE, cf, begin, end))
        self.nbytes += len(begin) + len(end)

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __repr__(self) -> str:
        return f"WriteSet({len(self.ops)} ops, {self.nbytes} bytes)"
