"""The group-commit writer: many replicas' writes, few syncs, nothing lost.

Rules checked here:
- concurrent writers share syncs (writes per sync > 1) and every write is
  readable after the store is closed and reopened;
- replica drivers (prepare → write → apply) running concurrently through one
  writer end up exactly where the reference storage says;
- a batch syncs only if one of its writes asked for it;
- a failed batch fails every waiter in it with ``WriteFailed`` (``disk_full``
  recognised), nothing in it is written, and the writer stays failed;
- ``close()`` writes everything pending first; later writes raise
  ``WriterClosed``;
- the event loop keeps running while the thread writes and syncs, and a
  cancelled waiter's write still happens.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from partitions import codec
from partitions.group_commit import GroupCommitWriter
from partitions.keys import ColumnFamily, log_key
from partitions.node_store import NodeStore
from partitions.raft_storage import GroupStorage
from partitions.storage_errors import WriteFailed, WriterClosed
from partitions.write_set import WriteSet
from raft.types import Entry
from tests.partitions.storage_checks import assert_same
from tests.partitions.workload import GroupWorkload


def entry_write(group: int, first: int, count: int, size: int = 100) -> WriteSet:
    ws = WriteSet()
    for index in range(first, first + count):
        entry = Entry(term=1, index=index, data=f"{group}:{index}:".encode().ljust(size, b"."))
        ws.put(ColumnFamily.RAFT_LOG, log_key(group, index), codec.encode_entry(entry))
    return ws


class GatedTarget:
    """Wraps a store: holds the first write until ``release`` (so later
    submissions pile up into one batch), and fails writes on demand."""

    def __init__(self, store: NodeStore, *, hold_first: bool = True) -> None:
        self.store = store
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail_with: Exception | None = None
        self.batches: list[int] = []

    def write(self, write_sets: Sequence[WriteSet], *, sync: bool) -> int:
        self.entered.set()
        self.release.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(len(write_sets))
        return self.store.write(write_sets, sync=sync)


@pytest.mark.asyncio
async def test_hundred_concurrent_writers_share_syncs(store_path: Path) -> None:
    store = NodeStore(store_path)
    writer = GroupCommitWriter(store)
    groups, writers_per_group, rounds, per_write = 20, 5, 3, 4

    async def one_writer(group: int, slot: int) -> None:
        # Writer ``slot`` owns indexes slot*rounds*per_write + 1 ... of its group.
        for r in range(rounds):
            first = (slot * rounds + r) * per_write + 1
            await writer.write(entry_write(group, first, per_write), sync=True)

    async with asyncio.TaskGroup() as tg:
        for n in range(groups * writers_per_group):
            tg.create_task(one_writer(n % groups, n // groups))
    stats = writer.stats()
    writer.close()
    store.close()

    total = groups * writers_per_group * rounds
    assert stats.writes == total
    assert stats.syncs < total
    assert stats.writes_per_sync > 1
    assert stats.max_writes_per_sync > 1
    assert stats.synced_writes == total and stats.failed_writes == 0

    last = writers_per_group * rounds * per_write
    with NodeStore(store_path) as reopened:
        for group in range(groups):
            storage = GroupStorage(reopened, group)
            assert (storage.first_index(), storage.last_index()) == (1, last)
            entries = storage.entries(1, last + 1)
            assert [e.data[: len(f"{group}:{e.index}:")] for e in entries] == [
                f"{group}:{e.index}:".encode() for e in entries
            ]
            storage.verify()


@pytest.mark.asyncio
async def test_replica_drivers_share_one_writer(store_path: Path) -> None:
    store = NodeStore(store_path)
    writer = GroupCommitWriter(store)
    workloads = {group: GroupWorkload(random.Random(group)) for group in range(1, 21)}

    async def driver(group: int) -> None:
        storage = GroupStorage(store, group)
        for _ in range(40):
            step = workloads[group].next_step()
            prepared = step.prepare(storage)
            await writer.write(prepared.write_set, sync=prepared.sync)
            storage.apply_prepared(prepared)

    async with asyncio.TaskGroup() as tg:
        for group in workloads:
            tg.create_task(driver(group))
    assert writer.stats().writes_per_sync > 1
    writer.close()
    store.close()
    with NodeStore(store_path) as reopened:
        for group, workload in workloads.items():
            storage = GroupStorage(reopened, group)
            storage.verify()
            assert_same(storage, workload.model)


@pytest.mark.asyncio
async def test_a_batch_syncs_only_if_a_write_asks(store: NodeStore) -> None:
    with GroupCommitWriter(store) as writer:
        for n in range(5):
            await writer.write(entry_write(1, n + 1, 1), sync=False)
        assert writer.stats().syncs == 0
        await writer.write(WriteSet(), sync=False)  # nothing to do: returns at once
        assert writer.stats().batches == 5
        await writer.write(entry_write(1, 6, 1), sync=True)
        stats = writer.stats()
    assert (stats.syncs, stats.batches, stats.writes) == (1, 6, 6)
    assert stats.bytes_written > 0 and stats.max_bytes_per_sync > 0


@pytest.mark.asyncio
async def test_a_failed_write_fails_every_waiter(store: NodeStore) -> None:
    target = GatedTarget(store)
    writer = GroupCommitWriter(target)
    first = asyncio.create_task(writer.write(entry_write(1, 1, 1)))
    await asyncio.to_thread(target.entered.wait, 5)  # the thread holds write 1
    target.fail_with = OSError("IO error: No space left on device: While appending to file: 000004.log")
    rest = [asyncio.create_task(writer.write(entry_write(g, 1, 3))) for g in range(2, 12)]
    await asyncio.sleep(0.05)  # let every task submit
    target.release.set()

    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert all(isinstance(r, WriteFailed) for r in results), results
    errors = [r for r in results if isinstance(r, WriteFailed)]
    assert all(e.disk_full and "No space left" in str(e) for e in errors)
    assert len({id(e) for e in errors}) == len(errors)  # one exception object per waiter
    assert isinstance(errors[0].__cause__, OSError)
    for group in range(1, 12):  # nothing of the failed batches reached the store
        assert store.get(ColumnFamily.RAFT_LOG, log_key(group, 1)) is None

    # The writer stays failed: no later write can be acknowledged.
    with pytest.raises(WriteFailed):
        await writer.write(entry_write(20, 1, 1))
    assert writer.failure is not None
    assert writer.stats().failed_writes == 11
    writer.close()


def test_blocking_writes_fail_too(store: NodeStore) -> None:
    target = GatedTarget(store, hold_first=False)
    target.fail_with = RuntimeError("IO error: disk went away")
    with GroupCommitWriter(target) as writer, pytest.raises(WriteFailed) as caught:
        writer.write_blocking(entry_write(1, 1, 1))
    assert not caught.value.disk_full


@pytest.mark.asyncio
async def test_close_writes_everything_pending(store: NodeStore) -> None:
    target = GatedTarget(store)
    writer = GroupCommitWriter(target)
    tasks = [asyncio.create_task(writer.write(entry_write(g, 1, 2))) for g in range(1, 31)]
    await asyncio.to_thread(target.entered.wait, 5)
    closing = asyncio.create_task(asyncio.to_thread(writer.close))
    await asyncio.sleep(0.05)
    with pytest.raises(WriterClosed):
        await writer.write(entry_write(99, 1, 1))
    target.release.set()
    await closing
    await asyncio.gather(*tasks)
    assert sum(target.batches) == 30
    assert all(store.get(ColumnFamily.RAFT_LOG, log_key(g, 2)) for g in range(1, 31))
    writer.close()  # idempotent


@pytest.mark.asyncio
async def test_the_event_loop_runs_while_the_thread_writes(store: NodeStore) -> None:
    class SlowTarget:
        def write(self, write_sets: Sequence[WriteSet], *, sync: bool) -> int:
            time.sleep(0.3)  # stands for a slow fsync (no GIL held)
            return store.write(write_sets, sync=sync)

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    with GroupCommitWriter(SlowTarget()) as writer:
        task = asyncio.create_task(ticker())
        await writer.write(entry_write(1, 1, 1))
        task.cancel()
    assert ticks >= 10


@pytest.mark.asyncio
async def test_a_cancelled_waiter_still_gets_its_write(store: NodeStore) -> None:
    target = GatedTarget(store)
    with GroupCommitWriter(target) as writer:
        blocker = asyncio.create_task(writer.write(entry_write(1, 1, 1)))
        await asyncio.to_thread(target.entered.wait, 5)
        victim = asyncio.create_task(writer.write(entry_write(2, 1, 1)))
        await asyncio.sleep(0.01)
        victim.cancel()
        target.release.set()
        await blocker
        await writer.write(entry_write(3, 1, 1))  # written after the victim's
    assert victim.cancelled()
    assert store.get(ColumnFamily.RAFT_LOG, log_key(2, 1)) is not None
