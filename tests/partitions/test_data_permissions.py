"""A node's data is owner-only whatever the umask (issue 14): every directory
0700, every file 0600, RocksDB's own files included."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from partitions.keys import ColumnFamily
from partitions.node_store import NodeStore, StoreOptions
from partitions.owner_only import make_owner_only_dir, restrict_umask
from partitions.write_set import WriteSet
from tests.partitions.replica_cluster import InProcessCluster, batch

pytestmark = pytest.mark.timeout(60)


def _current_umask() -> int:
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual default umask (files 0644, directories 0755), restored after."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    """Mode of ``root`` and of every entry under it, by path relative to it."""
    found = {".": stat.S_IMODE(root.lstat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def _assert_owner_only(root: Path) -> None:
    modes = _modes(root)
    directories = {p for p in modes if (root / p).is_dir()}
    assert directories and len(modes) > len(directories), modes  # something of both kinds was checked
    wrong = {p: oct(mode) for p, mode in modes.items() if mode != (0o700 if p in directories else 0o600)}
    assert not wrong, f"not owner-only: {wrong}"


def _fill(store: NodeStore) -> None:
    """Writes that make RocksDB create its files: WAL, then SST and blob
    files on flush (a value over ``min_blob_bytes`` goes to a blob file)."""
    ws = WriteSet()
    for i in range(20):
        ws.put(ColumnFamily.RAFT_LOG, i.to_bytes(8, "big"), bytes([i]) * 40_000)
    store.write([ws], sync=True)
    store.flush()


def test_a_store_opened_under_umask_022_is_owner_only(tmp_path: Path, umask_022: None) -> None:
    root = tmp_path / "data"
    with NodeStore(root / "node1" / "store", StoreOptions(min_blob_bytes=1024)) as store:
        _fill(store)
        assert _current_umask() & 0o077 == 0o077
    assert any(p.suffix == ".sst" for p in root.rglob("*"))
    assert any(p.suffix == ".blob" for p in root.rglob("*"))
    _assert_owner_only(root)


def test_a_store_left_loose_by_an_older_build_is_tightened_on_open(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "store"
    with NodeStore(path) as store:
        _fill(store)
    for entry in [path, *path.rglob("*")]:
        entry.chmod(0o755 if entry.is_dir() else 0o644)
    os.umask(0o022)
    NodeStore(path).close()
    _assert_owner_only(path)


async def test_a_replica_hosts_data_directory_is_owner_only(tmp_path: Path, umask_022: None) -> None:
    cluster = InProcessCluster(tmp_path / "nodes")
    await cluster.start()
    try:
        leader = await cluster.leader()
        await leader.produce(batch([b"x" * 100_000]))
        await cluster.wait_until(lambda: all(r.high_watermark == 1 for r in cluster.replicas()), what="all")
    finally:
        await cluster.close()
    for node in cluster.node_ids:
        _assert_owner_only(tmp_path / "nodes" / f"node{node}")


def test_a_stricter_umask_is_kept(tmp_path: Path) -> None:
    previous = os.umask(0o277)
    try:
        assert restrict_umask() == 0o277
        assert _current_umask() == 0o277
        os.umask(0o002)
        assert restrict_umask() == 0o002
        assert _current_umask() == 0o077
    finally:
        os.umask(previous)


def test_owner_only_dirs_leave_existing_parents_alone(tmp_path: Path, umask_022: None) -> None:
    tmp_path.chmod(0o755)
    (tmp_path / "existing").mkdir(mode=0o755)
    make_owner_only_dir(tmp_path / "new" / "data")
    make_owner_only_dir(tmp_path / "existing")
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new" / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "existing").stat().st_mode) == 0o700
