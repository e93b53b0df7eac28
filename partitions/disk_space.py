"""``DiskSpace``: how much room the node's data disk has left, checked cheaply.

A node whose data disk fills must refuse new client data with a clear
error, keep serving reads, lose nothing it acknowledged, and carry on by
itself once space returns. How a full disk surfaces without a guard
(measured on a 16 MiB tmpfs with rocksdict 0.3.29): the WAL append fails
with ``IO error: No space left on device``; nothing of that batch is
readable, but RocksDB then refuses every later write with the same error,
even after space is freed (no automatic resume for a failed WAL write, and
rocksdict has no ``Resume()``), and ``close()`` itself fails with ``Writer
has previous error``. Only closing every handle and reopening recovers it.
So the design keeps RocksDB from ever seeing the full disk rather than
recovering it afterwards:

- Two thresholds on the free bytes of the data directory's filesystem
  (``statvfs``: ``f_bavail * f_frsize``, what an unprivileged writer may
  use). The *reserve* (``min_free_bytes``, a cluster file setting): below it
  the disk is ``low``, and the node takes no new client data: a partition
  leader refuses produce (and so consumer-group commits, which are produces
  to the offsets topic) with ``DISK_FULL`` before proposing, so nothing is
  half-written, and a partition follower drops appends that carry entries
  (Raft tolerates the loss; the leader commits with the other replicas and
  resends once this node has room). Reads, metadata, the controller's own
  small writes, retention and compaction go on: they are what the reserve is
  for (and retention is what frees space). The *floor* (a quarter of the
  reserve): the group-commit writer refuses any batch that would leave less
  than this, before RocksDB sees it (``NoSpaceForWrite``); the writer stays
  healthy and the replica driver retries the same write until it fits
  (partitions/raft_replica.py), so an entry is acknowledged only once it is
  durable and the node never needs a restart. Writes that give space back
  (``WriteSet.frees_space``: only deletes, such as a removed replica's
  deletion, or marked by their builder because they let go of at least what
  they add: a retention cut, a compaction's rewrite) go through the floor
  down to the *freeing floor* (half the floor): otherwise nothing could
  ever free a disk below the floor. They are small (a range delete is a
  few dozen bytes), and the other half of the floor stays for the memtable
  flush and compaction by which RocksDB actually returns the space. Only a write racing another
  process that fills the disk between the check and the write (less than
  one refresh apart, more than the floor in size) still reaches RocksDB's
  ENOSPC; that stops the node as any failed write does (group_commit.py),
  and it recovers from its WAL when restarted with room.
- Cheap: ``statvfs`` is a system call of about a microsecond, but the
  produce path asks on every call, so the answer is cached and refreshed
  every ``refresh_s`` (0.2 s) or as soon as the writer has written
  ``refresh_bytes`` since (an eighth of the reserve: the estimate never
  drifts by more than that between refreshes). Between refreshes the
  writer's own bytes are subtracted from the last reading.
- The reserve's default (``DEFAULT_MIN_FREE_BYTES``, 256 MiB) covers what
  RocksDB writes by itself: flushing the memtables (4 x 64 MiB at most,
  partitions/node_store.py) writes their SST files while the WAL still
  holds the same bytes. A percentage would suit big disks badly (1% of 4 TB
  is 40 GB held back), so the setting is in bytes.

Invariants:

- ``low`` is true exactly when the cached estimate is below the reserve;
  ``room_for(n)`` is true exactly when writing ``n`` more bytes leaves at
  least the floor; ``room_to_free(n)`` exactly when it leaves at least the
  freeing floor (half the floor). A probe that fails (the directory vanished) reads as 0
  free bytes: refuse rather than write blind.
- Thread-safe: the event loop asks ``low``, the writer thread asks
  ``room_for`` and reports ``wrote``; one lock guards the cache.
- Time is passed in (``clock``) and the probe is injectable, so tests can
  fill a "disk" without a filesystem.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

MiB = 1024 * 1024

DEFAULT_MIN_FREE_BYTES = 256 * MiB
"""The default reserve (module docstring: one full memtable flush)."""

DEFAULT_REFRESH_S = 0.2
"""How old a cached reading may get before the next question re-reads it."""

FreeSpaceProbe = Callable[[Path], int]
"""``probe(data_dir)`` -> free bytes on the filesystem holding ``data_dir``."""


def statvfs_free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on ``path``'s filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def describe_bytes(n: int) -> str:
    """``n`` bytes for a message: MiB with one decimal, or bytes when small."""
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n} bytes"


class DiskSpace:
    """The free-space guard of one node's data directory (module docstring)."""

    def __init__(
        self,
        path: Path,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        *,
        probe: FreeSpaceProbe = statvfs_free_bytes,
        refresh_s: float = DEFAULT_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_free_bytes < 0:
            raise ValueError(f"min_free_bytes must be >= 0, got {min_free_bytes}")
        self.path = path
        self.min_free_bytes = min_free_bytes
        self.floor_bytes = min_free_bytes // 4
        self.freeing_floor_bytes = self.floor_bytes // 2
        self._refresh_bytes = max(min_free_bytes // 8, MiB)
        self._probe = probe
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._reading = 0
        self._written_since = 0
        self.refusals = 0
        """Writes refused for lack of room (the writer's and the produce path's)."""

    def _read(self) -> int:
        try:
            return self._probe(self.path)
        except OSError:
            return 0

    def free_bytes(self) -> int:
        """The cached estimate of the free bytes, re-read when stale."""
        with self._lock:
            now = self._clock()
            if (
                self._read_at is None
                or now - self._read_at >= self._refresh_s
                or self._written_since >= self._refresh_bytes
            ):
                self._reading = self._read()
                self._read_at = now
                self._written_since = 0
            return max(0, self._reading - self._written_since)

    @property
    def low(self) -> bool:
        """Below the reserve: take no new client data."""
        return self.free_bytes() < self.min_free_bytes

    def room_for(self, nbytes: int) -> bool:
        """Whether writing ``nbytes`` more leaves at least the floor."""
        return self.free_bytes() - nbytes >= self.floor_bytes

    def room_to_free(self, nbytes: int) -> bool:
        """Whether a write of ``nbytes`` that frees space (module docstring)
        leaves at least the freeing floor."""
        return self.free_bytes() - nbytes >= self.freeing_floor_bytes

    def wrote(self, nbytes: int) -> None:
        """The writer wrote ``nbytes``: count them against the cached reading."""
        with self._lock:
            self._written_since += nbytes

    def refused(self) -> None:
        with self._lock:
            self.refusals += 1

    def refusal(self, node_id: int) -> str:
        """What a refused client is told: what is wrong, what still works,
        what fixes it."""
        return (
            f"node {node_id}'s data disk has {describe_bytes(self.free_bytes())} free, below its reserve "
            f"of {describe_bytes(self.min_free_bytes)} (min_free_bytes): it refuses writes until space is "
            "freed (reads still work); free space on that disk (or lower retention), "
            "or move the partition's leadership to another node"
        )
