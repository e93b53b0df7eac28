"""Measurements behind the storage defaults (run by hand; not collected by pytest).

    .venv/bin/python tests/partitions/measure_storage.py all --dir /tmp/raftlog-measure

Subcommands:

- ``writer``: the group-commit writer under 64 KiB entries from N groups, each
  group a task writing one entry and its hard state per synced write (a
  replica's Ready), as fast as the writer acknowledges. Reports syncs/s, MB/s,
  writes per sync and the event loop's lag (a 1 ms ticker), for the sync
  through ``flush_wal`` (what ``NodeStore`` does) and through
  ``WriteOptions.sync`` (what it avoids), with 1 and 16 groups.
- ``compaction``: compacting 10k entries with one ``delete_range`` or 10k
  point deletes: the cost of the write, and of the reads that must step over
  the tombstones afterwards (seeking the group's first remaining entry,
  finding the last key, reopening the group).
- ``blob``: write MB/s of 64 KiB entries from 16 groups with blob files off
  and on, appending only and with the log compacted as it grows.

Invariant: each measurement uses a fresh store under ``--dir`` and removes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import rocksdict

from partitions import codec
from partitions.group_commit import GroupCommitWriter
from partitions.keys import ColumnFamily, group_end, group_prefix, hard_state_key, log_key, truncated_key
from partitions.node_store import NodeStore, StoreOptions
from partitions.raft_storage import GroupStorage
from partitions.write_set import WriteSet
from raft.types import Entry, HardState

MiB = 1024 * 1024


class WriteSyncStore(NodeStore):
    """The alternative: one ``write`` with ``WriteOptions.sync`` (GIL held)."""

    def _write_batch(self, batch: rocksdict.WriteBatch, sync: bool) -> None:
        options = rocksdict.WriteOptions()
        options.sync = sync
        self._database().write(batch, options)


def fresh(root: Path, name: str) -> Path:
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    return path


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def entry_write(group: int, index: int, payload: bytes, term: int = 1) -> WriteSet:
    ws = WriteSet()
    ws.put(ColumnFamily.RAFT_LOG, log_key(group, index), codec.encode_entry(Entry(term, index, data=payload)))
    ws.put(ColumnFamily.RAFT_STATE, hard_state_key(group), codec.encode_hard_state(HardState(term, 1, index)))
    return ws


async def writer_load(
    store: NodeStore,
    groups: int,
    entry_bytes: int,
    *,
    seconds: float | None = None,
    total_bytes: int | None = None,
    keep_entries: int | None = None,
) -> dict[str, float]:
    """Every group writes one entry per synced write until the time or byte
    budget is spent. With ``keep_entries``, a group compacts its log to its
    last ``keep_entries`` entries every ``keep_entries`` writes (delete_range)."""
    writer = GroupCommitWriter(store)
    payload = os.urandom(entry_bytes)
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    written = 0
    done = False
    started = loop.time()

    async def ticker() -> None:
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t - 0.001)

    def budget_left() -> bool:
        if seconds is not None and loop.time() - started >= seconds:
            return False
        return total_bytes is None or written < total_bytes

    async def group_task(group: int) -> None:
        nonlocal written
        index = 1
        while budget_left():
            ws = entry_write(group, index, payload)
            if keep_entries and index % keep_entries == 0 and index > keep_entries:
                ws.delete_range(
                    ColumnFamily.RAFT_LOG, group_prefix(group), log_key(group, index - keep_entries)
                )
            await writer.write(ws, sync=True)
            written += entry_bytes
            index += 1

    tick = asyncio.create_task(ticker())
    async with asyncio.TaskGroup() as tg:
        for group in range(1, groups + 1):
            tg.create_task(group_task(group))
    elapsed = loop.time() - started
    done = True
    await tick
    stats = writer.stats()
    writer.close()
    lags.sort()
    return {
        "seconds": elapsed,
        "syncs_per_s": stats.syncs / elapsed,
        "mb_per_s": stats.synced_bytes / elapsed / MiB,
        "writes_per_sync": stats.writes_per_sync,
        "max_writes_per_sync": stats.max_writes_per_sync,
        "kib_per_sync": stats.bytes_per_sync / 1024,
        "ms_per_sync": 1000 * stats.busy_seconds / max(stats.batches, 1),
        "lag_p50_ms": 1000 * lags[len(lags) // 2],
        "lag_p99_ms": 1000 * lags[int(len(lags) * 0.99)],
        "lag_max_ms": 1000 * lags[-1],
    }


def show(title: str, result: dict[str, float]) -> None:
    print(f"{title:44s} " + "  ".join(f"{k}={v:.2f}" for k, v in result.items()), flush=True)


def measure_writer(root: Path, seconds: float) -> None:
    print("== group-commit writer: 64 KiB entries, one entry + hard state per synced write")
    for store_class, how in ((NodeStore, "flush_wal (default)"), (WriteSyncStore, "WriteOptions.sync")):
        for groups in (1, 16):
            path = fresh(root, "writer")
            store = store_class(path)
            result = asyncio.run(writer_load(store, groups, 64 * 1024, seconds=seconds))
            store.close()
            shutil.rmtree(path)
            show(f"{how}, {groups} groups", result)


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def read_costs(store: NodeStore) -> tuple[float, float, float]:
    """After compacting group 1: microseconds to read its first remaining
    entry and to find its last key, milliseconds to load the group."""

    def seek_first() -> None:
        store.scan_within(ColumnFamily.RAFT_LOG, group_prefix(1), group_end(1), 1)

    def last_key() -> None:
        store.last_key(ColumnFamily.RAFT_LOG, group_prefix(1), group_end(1))

    def open_group() -> None:
        GroupStorage(store, 1)

    return 1e6 * best_of(200, seek_first), 1e6 * best_of(200, last_key), 1000 * best_of(20, open_group)


def measure_compaction(root: Path, entries: int, entry_bytes: int) -> None:
    print(f"== compaction of {entries} entries of {entry_bytes} B (group 1; group 2 is its neighbour)")
    payload = os.urandom(entry_bytes)
    for method in ("delete_range", "point deletes"):
        for flushed in (False, True):
            path = fresh(root, "compaction")
            store = NodeStore(path)
            for group in (1, 2):
                for lo in range(1, entries + 101, 1000):
                    ws = WriteSet()
                    for index in range(lo, min(lo + 1000, entries + 101)):
                        ws.put(
                            ColumnFamily.RAFT_LOG,
                            log_key(group, index),
                            codec.encode_entry(Entry(1, index, data=payload)),
                        )
                    store.write([ws], sync=False)
            store.write([], sync=True)  # so the timed sync below syncs only the compaction
            if flushed:
                store.flush()  # the compacted prefix is in SST files, as it would be
            ws = WriteSet()
            ws.put(ColumnFamily.RAFT_STATE, truncated_key(1), codec.encode_truncated(entries, 1))
            if method == "delete_range":
                ws.delete_range(ColumnFamily.RAFT_LOG, log_key(1, 1), log_key(1, entries + 1))
            else:
                for index in range(1, entries + 1):
                    ws.delete(ColumnFamily.RAFT_LOG, log_key(1, index))
            build = time.perf_counter()
            batch_bytes = store.write([ws], sync=True)
            write_ms = 1000 * (time.perf_counter() - build)
            seek_us, last_us, open_ms = read_costs(store)
            print(
                f"{method:14s} memtable flushed={flushed!s:5s}  write+sync={write_ms:7.2f} ms  "
                f"batch={batch_bytes / 1024:7.1f} KiB  seek-first={seek_us:8.1f} us  "
                f"last-key={last_us:6.1f} us  open-group={open_ms:6.2f} ms",
                flush=True,
            )
            store.close()
            shutil.rmtree(path)


def measure_blob(root: Path, total_mib: int, repeat: int) -> None:
    """Blob files off and on, ``repeat`` times, alternating which goes first
    (a shared disk drifts; the median of interleaved runs is what counts)."""
    print(f"== blob files: {total_mib} MiB of 64 KiB entries from 16 groups, synced writes, x{repeat}")
    results: dict[tuple[bool, int | None], list[float]] = {}
    for rep in range(repeat):
        for keep in (None, 512):
            for blob in (True, False) if rep % 2 == 0 else (False, True):
                path = fresh(root, "blob")
                store = NodeStore(path, StoreOptions(blob_files=blob))
                result = asyncio.run(
                    writer_load(store, 16, 64 * 1024, total_bytes=total_mib * MiB, keep_entries=keep)
                )
                t = time.perf_counter()
                store.flush()
                flush_s = time.perf_counter() - t
                size = du(path) / MiB
                store.close()
                shutil.rmtree(path)
                results.setdefault((blob, keep), []).append(result["mb_per_s"])
                label = "append only" if keep is None else f"compacted to last {keep}/group"
                show(f"blob={blob!s:5s} {label}", {**result, "final_flush_s": flush_s, "disk_mib": size})
    for (blob, keep), speeds in sorted(results.items(), key=str):
        label = "append only" if keep is None else f"compacted to last {keep}/group"
        runs = ", ".join(f"{v:.1f}" for v in speeds)
        print(f"blob={blob!s:5s} {label:32s} median {statistics.median(speeds):6.1f} MB/s  runs: {runs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["writer", "compaction", "blob", "all"])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/raftlog-measure"))
    parser.add_argument("--seconds", type=float, default=5.0, help="per writer run")
    parser.add_argument("--blob-mib", type=int, default=2048, help="written per blob run")
    parser.add_argument("--repeat", type=int, default=3, help="blob runs per setting")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.what in ("writer", "all"):
        measure_writer(args.dir, args.seconds)
    if args.what in ("compaction", "all"):
        measure_compaction(args.dir, 10_000, 1024)
        measure_compaction(args.dir, 10_000, 64 * 1024)
    if args.what in ("blob", "all"):
        measure_blob(args.dir, args.blob_mib, args.repeat)


if __name__ == "__main__":
    main()
