"""This machine's own limits, measured in the same run as the cluster figures.

- ``fsync_per_s``: append 4 KiB to a file and ``os.fsync`` it, in a loop, on
  the data disk (the directory the benchmark clusters write to).
- ``rocksdb_sync_mb_s``: a RocksDB (``rocksdict``) in that directory taking
  synced WriteBatches (``WriteOptions.sync``) of ``batch_values`` values of
  ``value_bytes`` each (1 MiB per batch by default: about what one node's
  group commit syncs at a time under heavy load), one after another.
- ``grpc_echo_rpc_s`` / ``grpc_echo_mb_s``: loopback gRPC between two Python
  processes (``bench.grpc_echo``).

Every replica of a 3-node cluster on one machine writes to the same disk,
so the produce ceiling the disk allows is about a third of
``rocksdb_sync_mb_s``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import rocksdict

from bench import grpc_echo

KiB = 1024


def fsync_per_s(directory: Path, seconds: float = 2.0, size: int = 4 * KiB) -> dict[str, Any]:
    block = os.urandom(size)
    fd, name = tempfile.mkstemp(prefix="fsync-", dir=directory)
    try:
        count = 0
        start = time.perf_counter()
        stop_at = start + seconds
        while True:
            os.write(fd, block)
            os.fsync(fd)
            count += 1
            if time.perf_counter() >= stop_at:
                break
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(name)
    return {"fsync_per_s": round(count / elapsed), "write_bytes": size, "seconds": round(elapsed, 2)}


def rocksdb_sync_mb_s(
    directory: Path, seconds: float = 2.0, batch_values: int = 16, value_bytes: int = 64 * KiB
) -> dict[str, Any]:
    path = Path(tempfile.mkdtemp(prefix="rocksdb-", dir=directory))
    try:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        db = rocksdict.Rdict(str(path), options)
        synced = rocksdict.WriteOptions()
        synced.sync = True
        values = [os.urandom(value_bytes) for _ in range(batch_values)]
        key = 0
        batches = 0
        start = time.perf_counter()
        stop_at = start + seconds
        try:
            while True:
                batch = rocksdict.WriteBatch(raw_mode=True)
                for value in values:
                    batch.put(key.to_bytes(8, "big"), value)
                    key += 1
                db.write(batch, synced)
                batches += 1
                if time.perf_counter() >= stop_at:
                    break
            elapsed = time.perf_counter() - start
        finally:
            db.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return {
        "rocksdb_sync_mb_s": round(batches * batch_values * value_bytes / elapsed / 1e6, 1),
        "rocksdb_sync_batches_s": round(batches / elapsed, 1),
        "batch_bytes": batch_values * value_bytes,
        "seconds": round(elapsed, 2),
    }


def measure(directory: Path, seconds: float = 2.0) -> dict[str, Any]:
    """Every reference, ``seconds`` each; the flat figures the report needs
    plus the details."""
    fsync = fsync_per_s(directory, seconds)
    rocksdb = rocksdb_sync_mb_s(directory, seconds)
    echo = grpc_echo.measure(seconds * 1.5)
    return {
        "fsync_per_s": fsync["fsync_per_s"],
        "rocksdb_sync_mb_s": rocksdb["rocksdb_sync_mb_s"],
        "grpc_echo_rpc_s": echo["rpc_s"],
        "grpc_echo_mb_s": echo["mb_s"],
        "grpc_echo_p50_ms": echo["sequential_p50_ms"],
        "details": {"fsync": fsync, "rocksdb": rocksdb, "grpc_echo": echo, "data_dir": str(directory)},
    }
