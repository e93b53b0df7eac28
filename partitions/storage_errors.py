"""Errors of the RocksDB raft storage and its group-commit writer.

The read-side errors the Raft core understands (``raft.errors.Compacted``,
``Unavailable``, ``SnapshotTemporarilyUnavailable``) are raised as they are;
the ones here are for the replica driver and the node:

- ``StoreCorrupted``: what is on disk breaks an invariant of the layout (a
  hole in a log, an unknown encoding version). Never retried: the replica
  (or the node) must stop.
- ``StaleWrite``: a prepared write was applied to a group whose cached state
  moved on since it was prepared (two writes in flight for one group): a
  driver bug.
- ``WriteFailed``: the group-commit write (or its sync) failed. Nothing in
  that batch is acknowledged, and the writer stays failed: after a failed
  sync the disk may hold less than RocksDB's memory, so no later write may be
  acknowledged either (the node must restart and recover from the WAL).
- ``NoSpaceForWrite``: the writer refused a batch before RocksDB saw it,
  because it would leave the data disk below its floor
  (partitions/disk_space.py). Nothing was written and the writer stays
  healthy: the same write may be submitted again once there is room.
- ``WriterClosed``: a write was submitted after ``close()``.
- ``StoreClosed``: the node store was used after ``close()``.
"""

from __future__ import annotations


class StorageFailure(Exception):
    """Base of the errors in this module."""


class StoreCorrupted(StorageFailure):
    """The on-disk data breaks the layout's invariants."""


class StaleWrite(StorageFailure):
    """A prepared write no longer matches the group's cached state."""


class WriteFailed(StorageFailure):
    """A group-commit write failed; nothing in its batch is durable for sure.

    ``disk_full`` is true when RocksDB reported that the device has no space
    left, the one cause an operator can fix without suspecting the disk.
    """

    def __init__(self, message: str, *, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


class NoSpaceForWrite(WriteFailed):
    """Refused before writing: the disk is below its floor. Retry later."""

    def __init__(self, message: str, *, disk_full: bool = True) -> None:
        super().__init__(message, disk_full=disk_full)


class WriterClosed(WriteFailed):
    """The writer was closed before this write was submitted."""


class StoreClosed(StorageFailure):
    """The node store was used after ``close()``."""
