"""Direct I/O for flush and compaction: the probe, and the store with and
without it (partitions/direct_io.py, partitions/node_store.py)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import partitions.direct_io as direct_io
import partitions.node_store as node_store
from partitions.keys import ColumnFamily
from partitions.node_store import NodeStore, StoreOptions
from partitions.write_set import WriteSet

MiB = 1024 * 1024


def _options_file_text(store_dir: Path) -> str:
    """RocksDB's newest OPTIONS file: what the database really runs with."""
    newest = sorted(store_dir.glob("OPTIONS-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    return newest.read_text()


def _fill(store: NodeStore, entries: int, size: int) -> dict[bytes, bytes]:
    """Synced batches of ``size``-byte values, enough to flush several
    small memtables; returns what was written."""
    written: dict[bytes, bytes] = {}
    for i in range(entries):
        ws = WriteSet()
        key, value = i.to_bytes(8, "big"), os.urandom(8) * (size // 8)
        ws.put(ColumnFamily.RAFT_LOG, key, value)
        written[key] = value
        store.write([ws], sync=True)
    return written


def test_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    assert isinstance(direct_io.supports_direct_io(tmp_path), bool)
    assert list(tmp_path.iterdir()) == []


def test_a_filesystem_that_refuses_o_direct_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refusing_open(path: object, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)  # type: ignore[arg-type]

    monkeypatch.setattr("partitions.direct_io.os.open", refusing_open)
    assert direct_io.supports_direct_io(tmp_path) is False
    assert list(tmp_path.iterdir()) == []


def test_a_refused_write_is_reported_and_the_probe_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refusing_write(fd: int, data: object) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr("partitions.direct_io.os.write", refusing_write)
    assert direct_io.supports_direct_io(tmp_path) is False
    assert list(tmp_path.iterdir()) == []


def test_store_flushes_with_direct_io_where_the_filesystem_takes_it(tmp_path: Path) -> None:
    if not direct_io.supports_direct_io(tmp_path):
        pytest.skip(f"{tmp_path}'s filesystem refuses O_DIRECT")
    options = StoreOptions(log_write_buffer_bytes=1 * MiB, min_blob_bytes=1024)
    path = tmp_path / "store"
    with NodeStore(path, options) as store:
        assert store.direct_io
        written = _fill(store, 300, 32 * 1024)  # ~9 MiB: several flushes
        store.flush()
        store.compact_range(ColumnFamily.RAFT_LOG, None, None)
    text = _options_file_text(path)
    assert "use_direct_io_for_flush_and_compaction=true" in text
    with NodeStore(path, options) as reopened:
        assert all(reopened.get(ColumnFamily.RAFT_LOG, k) == v for k, v in written.items())


def test_store_without_direct_io_writes_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_store, "supports_direct_io", lambda directory: False)
    path = tmp_path / "store"
    options = StoreOptions(log_write_buffer_bytes=1 * MiB, min_blob_bytes=1024)
    with NodeStore(path, options) as store:
        assert not store.direct_io
        written = _fill(store, 100, 32 * 1024)
        store.flush()
    assert "use_direct_io_for_flush_and_compaction=false" in _options_file_text(path)
    with NodeStore(path, options) as reopened:
        assert all(reopened.get(ColumnFamily.RAFT_LOG, k) == v for k, v in written.items())


def test_direct_io_can_be_turned_off(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with NodeStore(path, StoreOptions(direct_flush_io=False)) as store:
        assert not store.direct_io
    assert "use_direct_io_for_flush_and_compaction=false" in _options_file_text(path)


def test_memtables_are_small_by_default(tmp_path: Path) -> None:
    """One flush is a short burst for the disk (node_store's docstring)."""
    path = tmp_path / "store"
    with NodeStore(path):
        pass
    assert f"write_buffer_size={16 * MiB}" in _options_file_text(path)
