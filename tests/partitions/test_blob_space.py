"""Blob files without blob GC (partitions/node_store.py, ``StoreOptions``):
a log's entries deleted by retention give their space back once
compaction drops them, with no relocation of live blobs."""

from __future__ import annotations

import os
from pathlib import Path

from partitions.keys import ColumnFamily, log_key
from partitions.node_store import NodeStore, StoreOptions
from partitions.write_set import WriteSet

MiB = 1024 * 1024
ENTRY = 64 * 1024


def _append(store: NodeStore, groups: tuple[int, ...], entries: int) -> None:
    """``entries`` entries per group, interleaved as a node writes them."""
    for index in range(1, entries + 1):
        ws = WriteSet()
        for group in groups:
            ws.put(ColumnFamily.RAFT_LOG, log_key(group, index), os.urandom(ENTRY))
        store.write([ws], sync=False)


def _blob_files(path: Path) -> int:
    return len(list(path.glob("*.blob")))


def test_deleted_log_prefixes_free_their_blob_files(tmp_path: Path) -> None:
    options = StoreOptions(log_write_buffer_bytes=2 * MiB)
    path = tmp_path / "store"
    with NodeStore(path, options) as store:
        _append(store, (1, 2), 160)  # 20 MiB over many small memtables
        store.flush()
        full = store.stats().live_data_bytes
        files = _blob_files(path)
        assert full >= 18 * MiB and files >= 4
        # Retention: both groups drop their first 120 entries (3/4 of the data).
        ws = WriteSet()
        for group in (1, 2):
            ws.delete_range(ColumnFamily.RAFT_LOG, log_key(group, 1), log_key(group, 121))
        store.write([ws], sync=True)
        store.flush()
        store.compact_range(ColumnFamily.RAFT_LOG, None, None)
        after = store.stats().live_data_bytes
        assert after <= full // 3, (full, after)
        assert _blob_files(path) < files
        # What is left still reads back.
        assert store.get(ColumnFamily.RAFT_LOG, log_key(1, 160)) is not None
        assert store.get(ColumnFamily.RAFT_LOG, log_key(2, 121)) is not None
        assert store.get(ColumnFamily.RAFT_LOG, log_key(2, 120)) is None


def test_live_blobs_are_not_relocated(tmp_path: Path) -> None:
    """Blob GC is off: compaction never rewrites live record batches into
    new blob files (what cost 15 % of flat-out produce and quadrupled the
    half-load tail after a flat-out run)."""
    path = tmp_path / "store"
    with NodeStore(path):
        pass
    newest = sorted(path.glob("OPTIONS-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    text = newest.read_text()
    assert "enable_blob_files=true" in text
    assert "enable_blob_garbage_collection=true" not in text
    assert "enable_blob_garbage_collection=false" in text
