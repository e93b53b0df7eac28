"""``GroupStorage`` on RocksDB behaves exactly like ``raft.storage.MemoryStorage``.

Checked here:
- the same (Raft-shaped, random) sequence of appends with truncation, hard
  states, snapshot installs, local snapshots and compactions leaves both
  storages answering every ``Storage`` method alike, including the errors
  (``Compacted`` / ``Unavailable``), and across restarts of the database;
- closing and reopening the store rebuilds the identical cached state;
- groups never see each other's data, even next to each other in key order;
- the two-phase write: caches move only on ``apply_prepared``, writes are
  applied in order (``StaleWrite``), prefix-dropping writes raise the read
  floor at once, an in-flight snapshot is ``SnapshotTemporarilyUnavailable``;
- broken input (gaps, holes, decreasing terms) and broken disks are refused.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitions import codec
from partitions.keys import MAX_ID, ColumnFamily, log_key
from partitions.node_store import NodeStore
from partitions.raft_storage import RANGE_DELETE_MIN, GroupStorage, bootstrap_ready
from partitions.storage_errors import StaleWrite, StoreCorrupted
from partitions.write_set import WriteSet
from raft.errors import Compacted, SnapshotTemporarilyUnavailable, Unavailable
from raft.ready import Ready
from raft.storage import MemoryStorage
from raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMetadata
from tests.partitions.storage_checks import assert_same, persist
from tests.partitions.workload import GroupWorkload

CONF = ConfState(voters=frozenset({1, 2, 3}))


def append_ready(first: int, count: int, term: int, data: bytes = b"x", **kinds: EntryKind) -> Ready:
    entries = tuple(
        Entry(term=term, index=i, kind=kinds.get(f"i{i}", EntryKind.NORMAL), data=data + str(i).encode())
        for i in range(first, first + count)
    )
    return Ready(entries=entries, hard_state=HardState(term, 1, 0), must_sync=True)


def bootstrapped(store: NodeStore, group: int) -> GroupStorage:
    storage = GroupStorage(store, group)
    persist(store, storage, storage.prepare(bootstrap_ready([1, 2, 3])))
    return storage


# --- the model comparison ------------------------------------------------------------


class Reopenable:
    """One store shared by many hypothesis examples (each uses a fresh group)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = NodeStore(path)
        self.groups = itertools.count(1)

    def reopen(self) -> None:
        self.store.close()
        self.store = NodeStore(self.path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reopenable]:
    holder = Reopenable(tmp_path_factory.mktemp("shared") / "store")
    yield holder
    holder.store.close()


def run_against_model(holder: Reopenable, seed: int, steps: int, reopen_every: int) -> None:
    """``steps`` writes of a seeded workload into a fresh group, comparing with
    the model after each one and reopening the store every ``reopen_every``."""
    group = next(holder.groups)
    rng = random.Random(seed)
    workload = GroupWorkload(random.Random(rng.random()))
    storage = GroupStorage(holder.store, group)
    for n in range(1, steps + 1):
        step = workload.next_step()
        # No sync: durability is not the point here, and close() flushes.
        persist(holder.store, storage, step.prepare(storage), sync=False)
        if n % reopen_every == 0:
            state = storage.state
            holder.reopen()
            storage = GroupStorage(holder.store, group)
            assert storage.state == state
        assert_same(storage, workload.model, rng)
    storage.verify()
    assert_same(storage, workload.model)


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 60), reopen_every=st.integers(5, 100))
def test_matches_memory_storage(shared: Reopenable, seed: int, steps: int, reopen_every: int) -> None:
    run_against_model(shared, seed, steps, reopen_every)


@pytest.mark.parametrize("seed", range(3))
def test_matches_memory_storage_long_run(shared: Reopenable, seed: int) -> None:
    run_against_model(shared, seed, 300, reopen_every=97)


# --- restart and isolation -----------------------------------------------------------


def test_restart_returns_identical_state(store_path: Path) -> None:
    store = NodeStore(store_path)
    workloads = {group: GroupWorkload(random.Random(group)) for group in (1, 2, 3)}
    storages = {group: GroupStorage(store, group) for group in workloads}
    for _ in range(150):
        for group, workload in workloads.items():
            step = workload.next_step()
            persist(store, storages[group], step.prepare(storages[group]))
    states = {group: storage.state for group, storage in storages.items()}
    store.close()

    with NodeStore(store_path) as reopened:
        for group, workload in workloads.items():
            storage = GroupStorage(reopened, group)
            assert storage.state == states[group]
            storage.verify()
            assert_same(storage, workload.model)


@pytest.mark.parametrize("groups", [(5, 6), (0, 1), (MAX_ID - 1, MAX_ID)])
def test_groups_never_see_each_other(store: NodeStore, groups: tuple[int, int]) -> None:
    a, b = (bootstrapped(store, g) for g in groups)
    persist(store, a, a.prepare(append_ready(2, 30, 2, b"a", i5=EntryKind.CONF_CHANGE)))
    persist(store, b, b.prepare(append_ready(2, 10, 3, b"b", i7=EntryKind.CONF_CHANGE)))
    assert [e.data for e in a.entries(2, 32)] == [b"a%d" % i for i in range(2, 32)]
    assert [e.data for e in b.entries(2, 12)] == [b"b%d" % i for i in range(2, 12)]
    assert [e.index for e in a.conf_entries(0)] == [5]
    assert [e.index for e in b.conf_entries(0)] == [7]

    # Dropping data in one group (truncation, snapshot install, compaction,
    # destroy) leaves the other one byte for byte as it was.
    before = b.entries(2, 12), b.state
    persist(store, a, a.prepare(append_ready(4, 1, 4, b"a")))
    persist(store, a, a.create_snapshot(4, CONF, b"sm"))
    persist(store, a, a.compact(3))
    snapshot = Snapshot(SnapshotMetadata(index=40, term=5, conf_state=CONF))
    persist(store, a, a.prepare(Ready(snapshot=snapshot, must_sync=True)))
    persist(store, a, a.destroy())
    assert (b.entries(2, 12), b.state) == before
    assert GroupStorage(store, groups[1]).state == b.state
    assert GroupStorage(store, groups[0]).state == a.state
    for storage in (a, b):
        storage.verify()


def test_empty_and_bootstrapped_groups_match_memory_storage(store: NodeStore) -> None:
    storage = GroupStorage(store, 9)
    assert_same(storage, MemoryStorage())
    persist(store, storage, storage.prepare(bootstrap_ready([1, 2, 3], [4])))
    assert_same(storage, MemoryStorage.bootstrap([1, 2, 3], [4]))


def test_destroyed_group_reads_as_new_after_restart(store_path: Path) -> None:
    with NodeStore(store_path) as store:
        storage = bootstrapped(store, 3)
        persist(store, storage, storage.prepare(append_ready(2, 5, 1)))
        persist(store, storage, storage.destroy())
        assert_same(storage, MemoryStorage())
    with NodeStore(store_path) as store:
        assert_same(GroupStorage(store, 3), MemoryStorage())


# --- truncation, compaction and the delete strategies --------------------------------


@pytest.mark.parametrize("tail", [3, RANGE_DELETE_MIN + 10])
def test_truncation_deletes_the_stale_tail_and_its_conf_keys(store_path: Path, tail: int) -> None:
    store = NodeStore(store_path)
    storage = bootstrapped(store, 1)
    n = tail + 5
    persist(
        store,
        storage,
        storage.prepare(append_ready(2, n, 2, i8=EntryKind.CONF_CHANGE, i4=EntryKind.CONF_CHANGE)),
    )
    persist(store, storage, storage.prepare(append_ready(6, 2, 3, b"new")))
    assert storage.last_index() == 7
    assert [e.index for e in storage.conf_entries(0)] == [4]
    assert [(e.term, e.data) for e in storage.entries(5, 8)] == [(2, b"x5"), (3, b"new6"), (3, b"new7")]
    storage.verify()
    store.close()
    with NodeStore(store_path) as reopened:
        again = GroupStorage(reopened, 1)
        assert again.state == storage.state
        again.verify()


@pytest.mark.parametrize("count", [5, 3 * RANGE_DELETE_MIN])
def test_compaction_keeps_the_suffix(store: NodeStore, count: int) -> None:
    storage = bootstrapped(store, 1)
    persist(store, storage, storage.prepare(append_ready(2, count + 5, 2, i3=EntryKind.CONF_CHANGE)))
    persist(store, storage, storage.create_snapshot(count + 1, CONF, b"state"))
    persist(store, storage, storage.compact(count))
    assert storage.first_index() == count + 1
    assert storage.term(count) == 2
    with pytest.raises(Compacted):
        storage.term(count - 1)
    with pytest.raises(Compacted):
        storage.entries(count, count + 2)
    assert [e.index for e in storage.entries(count + 1, count + 7)] == list(range(count + 1, count + 7))
    assert storage.conf_entries(0) == []
    storage.verify()


# --- the two-phase write -------------------------------------------------------------


def test_caches_move_only_when_applied(store: NodeStore) -> None:
    storage = bootstrapped(store, 1)
    prepared = storage.prepare(append_ready(2, 3, 2))
    store.write([prepared.write_set], sync=True)
    assert storage.last_index() == 1
    with pytest.raises(Unavailable):
        storage.term(2)
    storage.apply_prepared(prepared)
    assert storage.last_index() == 4
    assert storage.term(4) == 2


def test_writes_apply_in_order_only(store: NodeStore) -> None:
    storage = bootstrapped(store, 1)
    first = storage.prepare(append_ready(2, 1, 2))
    second = storage.prepare(append_ready(2, 2, 2))  # prepared against the same base
    persist(store, storage, first)
    with pytest.raises(StaleWrite):
        storage.apply_prepared(second)
    other = bootstrapped(store, 2)
    with pytest.raises(StaleWrite):
        other.apply_prepared(storage.prepare(append_ready(3, 1, 2)))


def test_compaction_hides_the_prefix_from_readers_at_once(store: NodeStore) -> None:
    storage = bootstrapped(store, 1)
    persist(store, storage, storage.prepare(append_ready(2, 10, 2)))
    persist(store, storage, storage.create_snapshot(8, CONF, b""))
    prepared = storage.compact(6)
    with pytest.raises(Compacted):
        storage.entries(5, 8)
    store.write([prepared.write_set], sync=True)
    with pytest.raises(Compacted):
        storage.entries(2, 3)
    assert storage.first_index() == 2  # the cache waits for apply_prepared
    assert [e.index for e in storage.entries(7, 9)] == [7, 8]
    storage.apply_prepared(prepared)
    assert storage.first_index() == 7


def test_snapshot_in_flight_is_temporarily_unavailable(store: NodeStore) -> None:
    storage = bootstrapped(store, 1)
    snapshot = Snapshot(SnapshotMetadata(index=50, term=3, conf_state=CONF), b"image")
    prepared = storage.prepare(Ready(snapshot=snapshot, must_sync=True))
    store.write([prepared.write_set], sync=True)
    with pytest.raises(SnapshotTemporarilyUnavailable):
        storage.snapshot()
    with pytest.raises(Compacted):
        storage.entries(1, 2)
    storage.apply_prepared(prepared)
    assert storage.snapshot() == snapshot
    assert (storage.first_index(), storage.last_index(), storage.term(50)) == (51, 50, 3)


def test_noop_writes_are_empty(store: NodeStore) -> None:
    storage = bootstrapped(store, 1)
    for prepared in (storage.create_snapshot(1, CONF, b""), storage.compact(0), storage.prepare(Ready())):
        assert prepared.empty
        storage.apply_prepared(prepared)


# --- refusing bad input and bad disks ------------------------------------------------


def test_prepare_refuses_what_raft_never_writes(store: NodeStore) -> None:
    storage = bootstrapped(store, 1)
    persist(store, storage, storage.prepare(append_ready(2, 3, 5)))
    with pytest.raises(Unavailable):
        storage.prepare(append_ready(6, 1, 5))  # a gap
    with pytest.raises(ValueError, match="below"):
        storage.prepare(append_ready(4, 1, 4))  # the term goes down
    with pytest.raises(ValueError, match="contiguous"):
        storage.prepare(Ready(entries=(Entry(5, 5), Entry(5, 7))))
    with pytest.raises(Unavailable):
        storage.create_snapshot(9, CONF, b"")
    with pytest.raises(Unavailable):
        storage.compact(3)  # beyond the snapshot


def test_a_hole_in_the_log_is_corruption(store_path: Path) -> None:
    store = NodeStore(store_path)
    storage = bootstrapped(store, 1)
    persist(store, storage, storage.prepare(append_ready(2, 10, 2)))
    hole = WriteSet()
    hole.delete(ColumnFamily.RAFT_LOG, log_key(1, 6))
    store.write([hole], sync=True)
    cold = GroupStorage(store, 1)  # reads the disk, not the entries it wrote itself
    with pytest.raises(StoreCorrupted, match="entry 6"):
        cold.entries(2, 10)
    with pytest.raises(StoreCorrupted):
        storage.verify()
    store.close()
    with NodeStore(store_path) as reopened, pytest.raises(StoreCorrupted):
        GroupStorage(reopened, 1).verify()


def test_unknown_format_version_is_refused(store_path: Path) -> None:
    with NodeStore(store_path) as store:
        ws = WriteSet()
        ws.put(ColumnFamily.META, b"format_version", (99).to_bytes(4, "big"))
        store.write([ws], sync=True)
    with pytest.raises(StoreCorrupted, match="format 99"):
        NodeStore(store_path)


def test_undecodable_values_are_corruption(store: NodeStore) -> None:
    storage = bootstrapped(store, 1)
    ws = WriteSet()
    ws.put(ColumnFamily.RAFT_STATE, (1).to_bytes(8, "big"), b"\x07" + bytes(24))
    store.write([ws], sync=True)
    with pytest.raises(StoreCorrupted, match="version 7"):
        GroupStorage(store, 1)
    with pytest.raises(StoreCorrupted):
        codec.decode_entry(3, b"\x00" * 8 + b"\x05")
    assert storage.state.first_index == 2
