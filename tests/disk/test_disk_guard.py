"""The free-space guard and the writer's refusal (partitions/disk_space.py).

Rules checked here, with a fake probe and a fake clock:
- the reading is cached: re-read only after ``refresh_s`` or once the
  writer has written an eighth of the reserve; the writer's bytes count
  against the cached reading meanwhile;
- ``low`` below the reserve, ``room_for`` keeps the floor (a quarter of the
  reserve), a probe that fails reads as a full disk;
- the group-commit writer refuses a batch that would pass the floor with
  ``NoSpaceForWrite`` before the store sees it, and stays healthy: the same
  write goes through once there is room.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from partitions.disk_space import DiskSpace, MiB
from partitions.group_commit import GroupCommitWriter
from partitions.keys import ColumnFamily, log_key
from partitions.node_store import NodeStore
from partitions.storage_errors import NoSpaceForWrite
from partitions.write_set import WriteSet

pytestmark = pytest.mark.timeout(30)


class FakeDisk:
    """A probe with a settable answer that counts its reads, and a clock."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.reads = 0
        self.now = 0.0
        self.fail = False

    def probe(self, path: Path) -> int:
        self.reads += 1
        if self.fail:
            raise FileNotFoundError(path)
        return self.free

    def clock(self) -> float:
        return self.now


def guard(disk: FakeDisk, reserve: int = 64 * MiB) -> DiskSpace:
    return DiskSpace(Path("/data"), reserve, probe=disk.probe, refresh_s=0.2, clock=disk.clock)


def test_the_reading_is_cached_and_refreshed_by_time() -> None:
    disk = FakeDisk(100 * MiB)
    space = guard(disk)
    assert not space.low and disk.reads == 1
    disk.free = 10 * MiB
    for _ in range(100):
        assert not space.low  # cached: the probe is not asked again
    assert disk.reads == 1
    disk.now = 0.25
    assert space.low and disk.reads == 2


def test_the_writers_bytes_count_until_the_next_reading() -> None:
    disk = FakeDisk(70 * MiB)
    space = guard(disk)
    assert not space.low
    space.wrote(4 * MiB)  # less than the refresh step (8 MiB): estimated
    assert space.free_bytes() == 66 * MiB and disk.reads == 1
    space.wrote(3 * MiB)
    assert space.low  # 63 MiB left by the estimate, below the 64 MiB reserve
    assert disk.reads == 1
    space.wrote(2 * MiB)  # 9 MiB since the reading: re-read
    disk.free = 61 * MiB
    assert space.free_bytes() == 61 * MiB and disk.reads == 2


def test_room_keeps_the_floor_and_a_failed_probe_is_a_full_disk() -> None:
    disk = FakeDisk(20 * MiB)
    space = guard(disk)
    assert space.floor_bytes == 16 * MiB
    assert space.low
    assert space.room_for(4 * MiB) and not space.room_for(4 * MiB + 1)
    disk.fail = True
    disk.now = 1.0
    assert space.free_bytes() == 0 and not space.room_for(0)
    assert "below its reserve of 64.0 MiB (min_free_bytes)" in space.refusal(3)
    assert "reads still work" in space.refusal(3)
    with pytest.raises(ValueError):
        DiskSpace(Path("/data"), -1)


def one_entry(group: int, size: int) -> WriteSet:
    ws = WriteSet()
    ws.put(ColumnFamily.RAFT_LOG, log_key(group, 1), b"x" * size)
    return ws


async def test_the_writer_refuses_below_the_floor_and_stays_healthy(tmp_path: Path) -> None:
    disk = FakeDisk(100 * MiB)
    space = DiskSpace(tmp_path, 64 * MiB, probe=disk.probe, refresh_s=0.0)
    store = NodeStore(tmp_path / "store")
    writer = GroupCommitWriter(store, disk=space)
    try:
        await writer.write(one_entry(1, 1000))
        disk.free = 16 * MiB + 500  # a 1000-byte write would pass the 16 MiB floor
        results: Sequence[object] = await asyncio.gather(
            *(writer.write(one_entry(g, 1000)) for g in (2, 3)), return_exceptions=True
        )
        assert all(isinstance(r, NoSpaceForWrite) and r.disk_full for r in results), results
        assert "floor of 16.0 MiB" in str(results[0])
        assert store.get(ColumnFamily.RAFT_LOG, log_key(2, 1)) is None  # nothing reached the store
        assert writer.failure is None and space.refusals >= 1
        disk.free = 100 * MiB  # space returns: the same write goes through
        await writer.write(one_entry(2, 1000))
        assert store.get(ColumnFamily.RAFT_LOG, log_key(2, 1)) == b"x" * 1000
        assert writer.stats().failed_writes == 2
    finally:
        writer.close()
        store.close()


def deletion(group: int) -> WriteSet:
    ws = WriteSet()
    ws.delete_range(ColumnFamily.RAFT_LOG, log_key(group, 0), log_key(group, 1 << 40))
    return ws


async def test_writes_that_free_space_pass_the_floor_down_to_the_freeing_floor(tmp_path: Path) -> None:
    """Below the floor nothing could free space if deletions were refused
    too: a deletion (or a write its builder marked freeing) is written while
    an addition in the same batch is refused; below half the floor, both
    are refused."""
    disk = FakeDisk(100 * MiB)
    space = DiskSpace(tmp_path, 64 * MiB, probe=disk.probe, refresh_s=0.0)
    assert space.freeing_floor_bytes == 8 * MiB
    store = NodeStore(tmp_path / "store")
    writer = GroupCommitWriter(store, disk=space)
    try:
        for group in (1, 2, 3):
            await writer.write(one_entry(group, 1000))
        disk.free = 12 * MiB  # below the 16 MiB floor, above the 8 MiB freeing floor
        marked = one_entry(3, 10)  # a smaller rewrite of group 3's entry
        marked.mark_freeing()
        results = await asyncio.gather(
            writer.write(one_entry(4, 1000)),
            writer.write(deletion(1)),
            writer.write(marked),
            return_exceptions=True,
        )
        assert isinstance(results[0], NoSpaceForWrite) and results[1:] == [None, None], results
        assert store.get(ColumnFamily.RAFT_LOG, log_key(4, 1)) is None  # the addition: nothing written
        assert store.get(ColumnFamily.RAFT_LOG, log_key(1, 1)) is None  # the deletion: written
        assert store.get(ColumnFamily.RAFT_LOG, log_key(3, 1)) == b"x" * 10
        disk.free = 8 * MiB  # at the freeing floor: even a deletion is refused
        with pytest.raises(NoSpaceForWrite):
            await writer.write(deletion(2))
        assert store.get(ColumnFamily.RAFT_LOG, log_key(2, 1)) == b"x" * 1000
        assert writer.failure is None
    finally:
        writer.close()
        store.close()


def test_only_deletions_or_marked_writes_free_space() -> None:
    assert deletion(1).frees_space and not one_entry(1, 10).frees_space and not WriteSet().frees_space
    mixed = deletion(1)
    mixed.put(ColumnFamily.RAFT_LOG, log_key(2, 1), b"x" * 10)  # one put: no longer only deletes
    assert not mixed.frees_space
    marked = one_entry(1, 10)
    marked.mark_freeing()
    marked.delete_range(ColumnFamily.RAFT_LOG, log_key(2, 0), log_key(2, 1 << 40))
    assert marked.frees_space
