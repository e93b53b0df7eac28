"""``GroupCommitWriter``: one writer thread per node, one synced batch per cycle.

Every replica of the node submits its write sets here (``await
writer.write(write_set, sync=...)``). The writer thread takes everything
pending, writes it as ONE RocksDB batch, syncs it once if any of those writes
asked for a sync, and then completes every waiter. Under load, many replicas'
writes share one fsync, which is the whole point: the fsync, not the bytes,
is what bounds a log's write rate.

Invariants:

- A future completes successfully only after its write set is in the
  database, and durable if it (or anything else in its batch) asked for
  ``sync``. Writes are taken in submission order and a batch is one WAL
  record, so a write is never durable without every write submitted before
  it.
- The event loop never blocks on the disk: the thread completes asyncio
  futures through ``loop.call_soon_threadsafe`` (once per loop per batch),
  and the sync itself runs without the GIL (see ``NodeStore.write``).
- If a batch fails, every waiter in it gets a ``WriteFailed`` (``disk_full``
  set when the device is full) and the writer stays failed: every later and
  every queued write fails too, without touching the disk. After a failed
  write or sync, RocksDB's memory may be ahead of the disk; acknowledging
  anything afterwards could acknowledge data that a restart loses.
- With a ``DiskSpace`` guard (partitions/disk_space.py), a batch that would
  leave the disk below the guard's floor is refused before RocksDB sees it:
  every waiter in it gets ``NoSpaceForWrite``, and the writer does *not*
  fail (nothing was attempted, so RocksDB's memory is not ahead of the
  disk); later writes are taken as usual. Writes that free space
  (``WriteSet.frees_space``) are exempt down to the guard's freeing floor:
  in a batch without room they are written and only the others refused. RocksDB's own ENOSPC cannot be
  undone in place (disk_space.py says why), so the guard keeps it away.
- ``close()`` writes what is pending, then stops and joins the thread;
  writes submitted after it raise ``WriterClosed``.
- Cancelling a waiting task does not cancel its write: once submitted, a
  write set is written (it may already be on its way to the disk).
- Telemetry costs the writer thread three histogram records per synced
  batch (``sync_seconds``, ``batch_writes``, ``batch_bytes``:
  partitions/latency_buckets.py), read by the node's metrics at scrape
  time. A caller that sets ``sync_marks`` to a two-slot list around a
  write learns when the batch that carried it was written: the thread
  stores ``time.monotonic_ns()`` before and after ``BatchTarget.write``
  in it before completing the write (a refused write leaves it as it
  was). Nothing else reads the marks; they change no write's outcome.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Protocol

from partitions.disk_space import DiskSpace, describe_bytes
from partitions.latency_buckets import BATCH_BYTES_BOUNDS, BATCH_WRITES_BOUNDS, LATENCY_BOUNDS_S, Buckets
from partitions.storage_errors import NoSpaceForWrite, WriteFailed, WriterClosed
from partitions.write_set import WriteSet

DEFAULT_MAX_BATCH_BYTES = 64 * 1024 * 1024
"""A cycle stops taking writes past this many bytes (at least one write is
always taken), so one burst cannot build an unbounded batch in memory."""

sync_marks: ContextVar[list[int] | None] = ContextVar("sync_marks", default=None)
"""Set to ``[0, 0]`` around a write to learn when its batch was written
(module docstring); read by ``submit`` in the caller's context."""


class BatchTarget(Protocol):
    """Where the writer writes: ``NodeStore`` (tests inject failures here)."""

    def write(self, write_sets: Sequence[WriteSet], *, sync: bool) -> int: ...


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters since the writer started (a consistent snapshot)."""

    writes: int = 0
    """Write sets completed (successfully or not)."""
    batches: int = 0
    """Cycles: RocksDB batches written (synced or not)."""
    syncs: int = 0
    """Batches written with a sync."""
    synced_writes: int = 0
    """Write sets carried by synced batches."""
    synced_bytes: int = 0
    max_writes_per_sync: int = 0
    max_bytes_per_sync: int = 0
    bytes_written: int = 0
    busy_seconds: float = 0.0
    """Time spent inside ``BatchTarget.write`` (writing and syncing)."""
    failed_writes: int = 0

    @property
    def writes_per_sync(self) -> float:
        return self.synced_writes / self.syncs if self.syncs else 0.0

    @property
    def bytes_per_sync(self) -> float:
        return self.synced_bytes / self.syncs if self.syncs else 0.0


class _Waiter:
    """One submitted write set and whoever waits for it: an asyncio future on
    ``loop``, or a ``concurrent.futures.Future`` for blocking callers."""

    __slots__ = ("future", "loop", "marks", "sync", "write_set")

    def __init__(
        self,
        write_set: WriteSet,
        sync: bool,
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[None] | concurrent.futures.Future[None],
    ) -> None:
        self.write_set = write_set
        self.sync = sync
        self.loop = loop
        self.future = future
        self.marks = sync_marks.get()


def _complete_async(futures: list[asyncio.Future[None]], error: WriteFailed | None) -> None:
    """Runs on the event loop: resolve the futures of one batch."""
    for future in futures:
        if future.done():  # the waiting task was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(_copy_error(error))


def _copy_error(error: WriteFailed) -> WriteFailed:
    """One exception object per waiter (a shared one would collect every
    waiter's traceback), all with the same cause."""
    copy = type(error)(str(error), disk_full=error.disk_full)
    copy.__cause__ = error.__cause__
    return copy


def _is_disk_full(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "no space left" in text or "nospace" in text


class GroupCommitWriter:
    def __init__(
        self,
        target: BatchTarget,
        *,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        name: str = "raftlog-group-commit",
        disk: DiskSpace | None = None,
    ) -> None:
        self._target = target
        self._disk = disk
        self._max_batch_bytes = max_batch_bytes
        self._cond = threading.Condition()
        self._pending: list[_Waiter] = []
        self._closing = False
        self._failure: WriteFailed | None = None
        self._stats = WriterStats()
        self.sync_seconds = Buckets(LATENCY_BOUNDS_S)
        """Seconds each synced batch took to write and sync."""
        self.batch_writes = Buckets(BATCH_WRITES_BOUNDS)
        """Write sets carried by each synced batch."""
        self.batch_bytes = Buckets(BATCH_BYTES_BOUNDS)
        """Bytes of each synced batch."""
        # Daemon: a writer nobody closed must not keep the process alive; its
        # unfinished writes were never acknowledged.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- submitting ---

    async def write(self, write_set: WriteSet, *, sync: bool = True) -> None:
        """Write ``write_set`` atomically; return once it is in the database
        (and durable, if ``sync``). Raises ``WriteFailed``."""
        if not write_set.ops and not sync:
            self._check_open()
            return
        await self.submit(write_set, sync=sync)

    def submit(self, write_set: WriteSet, *, sync: bool = True) -> asyncio.Future[None]:
        """Queue ``write_set`` and return the future ``write`` would await,
        for a caller that must not wait (its later writes are still ordered
        after this one). Raises ``WriteFailed`` at once if the writer failed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._submit(_Waiter(write_set, sync, loop, future))
        return future

    def write_blocking(self, write_set: WriteSet, *, sync: bool = True) -> None:
        """``write`` for threads without an event loop (tools, start-up).
        Never call it from the event loop's thread."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._submit(_Waiter(write_set, sync, None, future))
        future.result()

    def _check_open(self) -> None:
        if self._failure is not None:
            raise _copy_error(self._failure)
        if self._closing:
            raise WriterClosed("the group-commit writer is closed")

    def _submit(self, waiter: _Waiter) -> None:
        with self._cond:
            self._check_open()
            self._pending.append(waiter)
            self._cond.notify()

    # --- the writer thread ---

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = self._take()
            self._commit(batch)

    def _take(self) -> list[_Waiter]:
        """Pending writes up to the byte budget (at least one); holds the lock."""
        total = 0
        count = 0
        for waiter in self._pending:
            total += waiter.write_set.nbytes
            if total > self._max_batch_bytes and count:
                break
            count += 1
        batch = self._pending[:count]
        del self._pending[:count]
        return batch

    def _commit(self, batch: list[_Waiter]) -> None:
        error = self._failure
        if error is None:
            batch = self._refuse_without_room(batch)
            if not batch:
                return
        sync = any(w.sync for w in batch)
        size = 0
        started_ns = time.monotonic_ns()
        started = time.perf_counter()
        if error is None:
            try:
                size = self._target.write([w.write_set for w in batch], sync=sync)
            except Exception as exc:
                error = WriteFailed(
                    f"group commit of {len(batch)} writes "
                    f"({sum(w.write_set.nbytes for w in batch)} bytes) failed: {exc}",
                    disk_full=_is_disk_full(exc),
                )
                error.__cause__ = exc
        elapsed = time.perf_counter() - started
        if error is None:
            ended_ns = time.monotonic_ns()
            for waiter in batch:
                if waiter.marks is not None:
                    waiter.marks[0] = started_ns
                    waiter.marks[1] = ended_ns
            if sync:
                self.sync_seconds.observe(elapsed)
                self.batch_writes.observe(len(batch))
                self.batch_bytes.observe(size)
        if self._disk is not None and error is None:
            self._disk.wrote(size)
        with self._cond:
            if error is not None and self._failure is None:
                self._failure = error
            self._count(batch, sync, size, elapsed, failed=error is not None)
        self._complete(batch, error)

    def _refuse_without_room(self, batch: list[_Waiter]) -> list[_Waiter]:
        """Complete with ``NoSpaceForWrite`` the writes of ``batch`` that
        have no room (module docstring) and return the others, in order.

        With room for the whole batch, nothing is refused. Otherwise the
        writes that add space are refused, and those that free it
        (``WriteSet.frees_space``) still go if they keep the freeing floor:
        below the floor they are the only way back. Refusing a write while
        writing a later one breaks no order a caller relies on: nothing of
        the refused write is anywhere, and a replica awaits each of its
        writes but a commit index, which Raft never needs durable."""
        disk = self._disk
        if disk is None:
            return batch
        if disk.room_for(sum(w.write_set.nbytes for w in batch)):
            return batch
        freeing = [w for w in batch if w.write_set.frees_space]
        freeing_bytes = sum(w.write_set.nbytes for w in freeing)
        if freeing and disk.room_to_free(freeing_bytes):
            refused = [w for w in batch if not w.write_set.frees_space]
            kept = freeing
        else:
            refused, kept = batch, []
        if refused:
            nbytes = sum(w.write_set.nbytes for w in refused)
            disk.refused()
            error = NoSpaceForWrite(
                f"group commit of {len(refused)} writes ({nbytes} bytes) refused: the data disk has "
                f"{describe_bytes(disk.free_bytes())} free, and writing would leave less than its floor of "
                f"{describe_bytes(disk.floor_bytes)}; retried once space returns"
            )
            # Refused before writing: the writer stays healthy.
            self._complete(refused, error)
            with self._cond:
                self._count(refused, False, 0, 0.0, failed=True)
        return kept

    def _count(self, batch: list[_Waiter], sync: bool, size: int, elapsed: float, *, failed: bool) -> None:
        s = self._stats
        n = len(batch)
        if failed:
            self._stats = replace(s, writes=s.writes + n, failed_writes=s.failed_writes + n)
            return
        self._stats = replace(
            s,
            writes=s.writes + n,
            batches=s.batches + 1,
            syncs=s.syncs + sync,
            synced_writes=s.synced_writes + (n if sync else 0),
            synced_bytes=s.synced_bytes + (size if sync else 0),
            max_writes_per_sync=max(s.max_writes_per_sync, n if sync else 0),
            max_bytes_per_sync=max(s.max_bytes_per_sync, size if sync else 0),
            bytes_written=s.bytes_written + size,
            busy_seconds=s.busy_seconds + elapsed,
        )

    def _complete(self, batch: list[_Waiter], error: WriteFailed | None) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for waiter in batch:
            future = waiter.future
            if isinstance(future, concurrent.futures.Future):
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(_copy_error(error))
            elif waiter.loop is not None:
                by_loop.setdefault(waiter.loop, []).append(future)
        for loop, futures in by_loop.items():
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_complete_async, futures, error)

    # --- observing and stopping ---

    def stats(self) -> WriterStats:
        with self._cond:
            return self._stats

    @property
    def failure(self) -> WriteFailed | None:
        """The error that failed the writer, if one did."""
        return self._failure

    def close(self) -> None:
        """Write everything pending, then stop the thread. Idempotent. Blocks
        for at most the pending writes' cycle(s); waiters are completed as
        usual."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def __enter__(self) -> GroupCommitWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
