"""``NodeStore``: the one RocksDB of a node, shared by all its partition replicas.

It opens (creating if needed) the database with the column families of
``partitions.keys``, owns every handle into it, offers the few reads the raft
storage needs, and turns write sets into one RocksDB ``WriteBatch``.

Invariants:

- Exactly one ``NodeStore`` per directory per process (RocksDB's LOCK file
  enforces it across processes). Reads may come from any thread; ``write``
  is called by one thread at a time (the group-commit writer's).
- ``write(write_sets, sync=True)`` returns only once every operation of every
  write set is durable: the whole batch is one WAL record, so after a crash
  either all of it is recovered or none of it, and a later batch is never
  recovered without the earlier ones (WAL recovery stops at the first bad
  record, ``point_in_time``).
- The store holds only raw bytes (rocksdict raw mode): no pickling, and the
  files are readable from any RocksDB binding.
- ``close()`` drops every handle, so the same path can be reopened in this
  process.
- Owner-only (partitions/owner_only.py): opening a store sets the process
  umask to keep group and others out (RocksDB creates files for as long as
  the store is open, and only the umask covers them), creates the directory
  0700 and strips group and other bits from whatever it already holds. So
  every directory of a store is 0700 and every file 0600, whatever umask
  the process started with and whichever build created the files.

How the sync is done (measured; see ``tests/partitions/measure_storage.py``):
rocksdict's ``Rdict.write`` keeps the GIL for the whole call, so a
``WriteOptions.sync = True`` write freezes the event loop for the length of
the fsync. ``flush_wal(sync=True)`` releases the GIL and issues the same
``fdatasync`` on the WAL (checked with strace). So a batch is written with
``sync=False`` (memtable insert and WAL ``write()``, GIL held, ~1 ms for 1 MiB)
and then made durable by ``flush_wal(True)`` (GIL released). The data is in
the OS page cache as soon as ``write`` returns, so a killed *process* loses
nothing even before the sync; the sync is for power loss and kernel crashes.
Measured with 16 groups writing 64 KiB entries (``measure_storage.py
writer``, two runs): event loop lag p50 0.2-0.5 ms / p99 10-16 ms this way,
against 3.2-3.7 ms / 35-39 ms with ``WriteOptions.sync``, for 10-20% less
peak throughput (102-105 vs 111-128 MB/s). A Raft node's timers matter more.

How flushes are kept from stalling that sync (issue 20; measured with three
stores writing 200 KB synced batches at 20 MB/s each, and with the cluster
at half its maximum produce rate): the RocksDB inside rocksdict is built
without ``sync_file_range`` (strace shows no call), so ``bytes_per_sync``
does nothing, a memtable flush leaves its whole output dirty in the page
cache, and the flush's closing ``fsync`` writes all of it at once: every
WAL ``fdatasync`` on the disk waits behind it, 40-100 ms (2 ms otherwise).
Three nodes on one disk fill their memtables together, so at half load
produce p99 went from ~20 ms to 150-780 ms every few seconds. So:

- flush and compaction write with ``O_DIRECT`` where the data directory's
  filesystem takes it (partitions/direct_io.py): their data goes to the
  disk as it is written, in 1 MiB writes, and nothing is left for the
  closing sync (store probe: sync max 41 -> 11 ms);
- memtables of 16 MiB, not 64, so each flush is a quarter of the burst.

No rate limiter for flushes and compactions. Measured:
RocksDB's auto-tuned limiter drops to a twentieth of its rate while writes
are few and climbs back by about 5% a tuning period, so after a quiet
minute a load stalled writes for 2-7 s (memtables waiting for a throttled
flush); a fixed 40 MB/s limit stalled flat-out produce (33 MB/s, 37
elections); a fixed 64 MB/s one measured the same as none at half load
(p99 60-68 against 61-88 ms, two runs each) while capping what a node can
take in. Direct writes already leave at most one 1 MiB write per flush
queued ahead of a WAL sync.

Together, at half load (20,000 records/s of 1 KiB, 3 nodes, 2 cores):
produce p99 158-180 ms -> 61-88 ms, flat-out produce unchanged (43-45 MB/s).
The cost: data a flush wrote is not in the page cache, so a read of it
(a consumer far behind, a follower catching up past the Raft entry cache)
goes to the disk once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import rocksdict

from partitions.direct_io import supports_direct_io
from partitions.keys import FORMAT_VERSION, FORMAT_VERSION_KEY, ColumnFamily
from partitions.owner_only import make_owner_only_dir, restrict_umask, tighten_tree
from partitions.storage_errors import StoreClosed, StoreCorrupted
from partitions.write_set import OpKind, WriteSet

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """RocksDB tuning, defaults for a node serving a log-shaped workload.

    - ``log_write_buffer_bytes``: memtable size of ``raft_log``. Small
      enough that one flush is a short burst for the disk (module
      docstring: 16 MiB, a flush every ~0.4 s at 40 MB/s); a larger one
      would serve more reads from memory and make fewer L0 files.
    - ``max_write_buffers``: memtables of ``raft_log`` that may exist while
      older ones flush; 6 rather than RocksDB's 2 so a burst of entries
      does not stall writes behind a flush (96 MiB in all, less than the
      4 x 64 MiB before).
    - ``direct_flush_io``: flush and compaction write with ``O_DIRECT``
      when the store's directory takes it (module docstring).
    - ``blob_files`` / ``min_blob_bytes``: values of at least that size go to
      blob files at flush, so LSM compaction rewrites only keys and pointers,
      not record batches. On by default, measured (``measure_storage.py
      blob``, 2 GiB of 64 KiB entries from 16 groups, synced writes, 5
      interleaved runs per setting on a shared VM disk): blob files won 8 of
      10 pairings; medians 134 vs 102 MB/s appending only, 111 vs 103 MB/s
      with the log compacted as it grows; same disk use. The 16 KiB
      threshold is not measured: small entries (a few records) stay inline,
      where a point read needs no second file.
      Blob GC is off (issue 20, measured): with it, compactions after a
      flat-out run kept relocating the oldest quarter of the blob files,
      live record batches rewritten for nothing (a log deletes oldest
      first), and a half-load run after a 10 s flat-out run measured produce
      p99 258-354 ms, syncs 3.7-4.4 ms and the nodes' CPU 132-136 %; without
      it 71-78 ms, 2.35-2.49 ms and 116-118 %, and that flat-out run went
      from 42-43 to 48-51 MB/s. Space still comes back: a blob file whose
      every batch is deleted (retention, a cleaned segment) goes when the
      compaction that drops the keys runs (tests/partitions/
      test_blob_space.py). The cost: a file holding one batch still wanted
      (an idle partition's last one, say) stays whole, up to one flush's
      worth (16 MiB) per such batch.
    - ``max_total_wal_bytes``: all column families share the WAL; a rarely
      written one (``conf_index``, ``meta``) would otherwise keep every old WAL
      file alive. Past this size RocksDB flushes the column families holding
      the oldest WAL.
    - ``background_jobs``: flushes and compactions in parallel.
    """

    log_write_buffer_bytes: int = 16 * MiB
    max_write_buffers: int = 6
    direct_flush_io: bool = True
    blob_files: bool = True
    min_blob_bytes: int = 16 * 1024
    max_total_wal_bytes: int = 512 * MiB
    background_jobs: int = 4


@dataclass(frozen=True, slots=True)
class StoreStats:
    """RocksDB's own figures, for the node's metrics (read at scrape time)."""

    live_data_bytes: int
    """SST and blob bytes RocksDB estimates hold live data, every column
    family (``rocksdb.estimate-live-data-size`` + ``rocksdb.live-blob-file-size``)."""
    pending_compaction_bytes: int
    """Bytes compaction must rewrite to bring every level under its target
    (``rocksdb.estimate-pending-compaction-bytes``, summed)."""
    write_stalled: bool
    """Writes are stopped (``rocksdb.is-write-stopped``) or slowed
    (``rocksdb.actual-delayed-write-rate`` > 0) right now."""
    stall_seconds: float | None
    """Time writes spent stalled since the store opened (the "Cumulative
    stall" of ``rocksdb.dbstats``); None if RocksDB did not say."""


_CUMULATIVE_STALL = re.compile(r"Cumulative stall: (\d+):(\d+):(\d+(?:\.\d+)?) H:M:S")


def parse_stall_seconds(dbstats: str) -> float | None:
    """The cumulative stall of a ``rocksdb.dbstats`` text, in seconds."""
    found = _CUMULATIVE_STALL.search(dbstats)
    if found is None:
        return None
    hours, minutes, seconds = found.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _base_options(options: StoreOptions, direct_io: bool) -> rocksdict.Options:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    # The WAL stays on (it is what makes a synced batch durable). After a
    # crash, replay up to the last intact record: a torn tail is a batch
    # that was never acknowledged.
    opts.set_wal_recovery_mode(rocksdict.DBRecoveryMode.point_in_time())
    opts.set_max_total_wal_size(options.max_total_wal_bytes)
    opts.set_max_background_jobs(options.background_jobs)
    # Would smooth writeback through the page cache, but this build has no
    # sync_file_range (module docstring); kept for a build that has one.
    opts.set_bytes_per_sync(1 * MiB)
    opts.set_keep_log_file_num(5)
    if direct_io:
        opts.set_use_direct_io_for_flush_and_compaction(True)
    return opts


def _log_options(options: StoreOptions, direct_io: bool) -> rocksdict.Options:
    opts = _base_options(options, direct_io)
    opts.set_write_buffer_size(options.log_write_buffer_bytes)
    opts.set_max_write_buffer_number(options.max_write_buffers)
    # Record batches are often compressed by the producer already; LZ4 is
    # cheap, and RocksDB stores a block uncompressed when it does not shrink.
    opts.set_compression_type(rocksdict.DBCompressionType.lz4())
    if options.blob_files:
        opts.set_enable_blob_files(True)
        opts.set_min_blob_size(options.min_blob_bytes)
        # No blob GC (class docstring: measured).
        opts.set_enable_blob_gc(False)
    return opts


class NodeStore:
    def __init__(self, path: str | Path, options: StoreOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or StoreOptions()
        restrict_umask()
        make_owner_only_dir(self.path)
        tighten_tree(self.path)
        self.direct_io = self.options.direct_flush_io and supports_direct_io(self.path)
        """Flush and compaction write with ``O_DIRECT`` (the option, and the
        directory's filesystem takes it)."""
        direct = self.direct_io
        cf_options = {cf.value: _base_options(self.options, direct) for cf in ColumnFamily}
        cf_options[ColumnFamily.RAFT_LOG.value] = _log_options(self.options, direct)
        self._db: rocksdict.Rdict | None = rocksdict.Rdict(
            str(self.path), _base_options(self.options, direct), column_families=cf_options
        )
        self._views = {cf: self._db.get_column_family(cf.value) for cf in ColumnFamily}
        self._handles = {cf: self._db.get_column_family_handle(cf.value) for cf in ColumnFamily}
        self._no_sync = rocksdict.WriteOptions()
        self._no_sync.sync = False
        self._check_format()

    def _check_format(self) -> None:
        stored = self.get(ColumnFamily.META, FORMAT_VERSION_KEY)
        if stored is None:
            ws = WriteSet()
            ws.put(ColumnFamily.META, FORMAT_VERSION_KEY, FORMAT_VERSION.to_bytes(4, "big"))
            self.write([ws], sync=True)
        elif int.from_bytes(stored, "big") != FORMAT_VERSION:
            raise StoreCorrupted(
                f"{self.path}: store format {int.from_bytes(stored, 'big')}, this build reads {FORMAT_VERSION}"
            )

    @property
    def closed(self) -> bool:
        return self._db is None

    def _database(self) -> rocksdict.Rdict:
        if self._db is None:
            raise StoreClosed(f"{self.path}: the store is closed")
        return self._db

    def _view(self, cf: ColumnFamily) -> rocksdict.Rdict:
        if self._db is None:
            raise StoreClosed(f"{self.path}: the store is closed")
        return self._views[cf]

    # --- reads ---

    def get(self, cf: ColumnFamily, key: bytes) -> bytes | None:
        return cast(bytes | None, self._view(cf).get(key))

    def scan(self, cf: ColumnFamily, begin: bytes, end: bytes) -> list[tuple[bytes, bytes]]:
        """Items with ``begin <= key < end``, in key order."""
        return self.scan_within(cf, begin, end, None)[0]

    def scan_within(
        self, cf: ColumnFamily, begin: bytes, end: bytes, max_bytes: int | None, value_overhead: int = 0
    ) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Like ``scan``, but stop before the item that would take the sum of
        ``len(value) + value_overhead`` past ``max_bytes``, returning at least
        one item (the rule of ``raft.storage.limit_size``). The flag is true
        when the budget, not the range, ended the scan."""
        read_options = rocksdict.ReadOptions()
        read_options.set_iterate_upper_bound(end)
        it = self._view(cf).iter(read_options)
        items: list[tuple[bytes, bytes]] = []
        total = 0
        stopped = False
        try:
            it.seek(begin)
            while it.valid():
                value = cast(bytes, it.value())
                if max_bytes is not None:
                    total += len(value) + value_overhead
                    if total > max_bytes and items:
                        stopped = True
                        break
                items.append((cast(bytes, it.key()), value))
                it.next()
            it.status()
        finally:
            del it  # an open iterator would keep the database open after close()
        return items, stopped

    def last_key(self, cf: ColumnFamily, begin: bytes, end: bytes) -> bytes | None:
        """The largest key with ``begin <= key < end``, if any."""
        read_options = rocksdict.ReadOptions()
        read_options.set_iterate_upper_bound(end)
        it = self._view(cf).iter(read_options)
        try:
            it.seek_to_last()
            key = cast(bytes, it.key()) if it.valid() else None
            it.status()
        finally:
            del it
        # Checked here: rocksdict's iterate_lower_bound does not stop
        # seek_to_last from landing in the previous group.
        return key if key is not None and key >= begin else None

    # --- writes ---

    def write(self, write_sets: Iterable[WriteSet], *, sync: bool) -> int:
        """Write every operation of ``write_sets`` as one atomic batch, in
        order; durable on return when ``sync``. Returns the batch's size in
        bytes. Raises whatever RocksDB raised (nothing is then known to be
        durable)."""
        batch = self._batch(write_sets)
        size = batch.size_in_bytes()
        self._write_batch(batch, sync)
        return size

    def _batch(self, write_sets: Iterable[WriteSet]) -> rocksdict.WriteBatch:
        self._database()
        batch = rocksdict.WriteBatch(raw_mode=True)
        handles = self._handles
        for write_set in write_sets:
            for kind, cf, key, value in write_set.ops:
                if kind is OpKind.PUT:
                    batch.put(key, value, handles[cf])
                elif kind is OpKind.DELETE:
                    batch.delete(key, handles[cf])
                else:
                    batch.delete_range(key, value, handles[cf])
        return batch

    def _write_batch(self, batch: rocksdict.WriteBatch, sync: bool) -> None:
        """Write without the WAL sync (GIL held, short), then sync the WAL
        with the GIL released (module docstring)."""
        db = self._database()
        db.write(batch, self._no_sync)
        if sync:
            db.flush_wal(True)

    def flush(self) -> None:
        """Flush every memtable to SST files (tests and benchmarks)."""
        for view in self._views.values():
            view.flush(True)

    def compact_range(self, cf: ColumnFamily, begin: bytes | None, end: bytes | None) -> None:
        """A manual compaction of ``[begin, end)`` (tests and benchmarks)."""
        self._view(cf).compact_range(begin, end)

    def property_int(self, cf: ColumnFamily, name: str) -> int | None:
        """A RocksDB integer property of ``cf`` (e.g. ``rocksdb.estimate-num-keys``)."""
        return self._view(cf).property_int_value(name)

    def stats(self) -> StoreStats:
        """RocksDB's figures now (a few property reads; any thread)."""
        db = self._database()
        live = pending = 0
        for view in self._views.values():
            live += (view.property_int_value("rocksdb.estimate-live-data-size") or 0) + (
                view.property_int_value("rocksdb.live-blob-file-size") or 0
            )
            pending += view.property_int_value("rocksdb.estimate-pending-compaction-bytes") or 0
        stopped = db.property_int_value("rocksdb.is-write-stopped") or 0
        delayed = db.property_int_value("rocksdb.actual-delayed-write-rate") or 0
        dbstats = db.property_value("rocksdb.dbstats")
        return StoreStats(
            live_data_bytes=live,
            pending_compaction_bytes=pending,
            write_stalled=bool(stopped or delayed),
            stall_seconds=parse_stall_seconds(dbstats) if dbstats else None,
        )

    def close(self) -> None:
        """Flush and close; idempotent. No read or write may be in progress."""
        db = self._db
        if db is None:
            return
        self._db = None
        for view in self._views.values():
            view.close()
        self._views.clear()
        self._handles.clear()
        db.close()

    def __enter__(self) -> NodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
