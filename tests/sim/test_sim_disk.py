"""The simulated disk loses exactly the unsynced writes on a crash."""

from __future__ import annotations

import random

from raft.config import RaftConfig
from raft.node import RaftNode
from raft.sim.disk import Disk
from raft.storage import MemoryStorage
from raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata


def _entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=b"%d" % i) for i in range(first, last + 1)]


def _disk() -> Disk:
    return Disk(MemoryStorage.bootstrap([1, 2, 3]))


def test_writes_are_visible_at_once_but_durable_only_after_sync() -> None:
    disk = _disk()
    disk.append(_entries(2, 4))
    disk.set_hard_state(HardState(term=2, vote=1, commit=1))
    assert disk.last_index() == 4
    assert disk.initial_state()[0] == HardState(term=2, vote=1, commit=1)
    assert disk.durable.last_index() == 1
    assert disk.dirty
    disk.sync()
    assert not disk.dirty
    assert disk.durable.last_index() == 4
    assert disk.durable.hard_state == HardState(term=2, vote=1, commit=1)


def test_crash_loses_unsynced_writes_and_keeps_synced_ones() -> None:
    disk = _disk()
    disk.append(_entries(2, 4))
    disk.set_hard_state(HardState(term=2, vote=1, commit=3))
    disk.sync()
    disk.append(_entries(5, 7))
    disk.set_hard_state(HardState(term=3, vote=2, commit=3))
    disk.crash()
    assert disk.last_index() == 4
    assert disk.entries(2, 5) == _entries(2, 4)
    assert disk.initial_state()[0] == HardState(term=2, vote=1, commit=3)
    assert disk.lost_writes == 2
    assert not disk.dirty


def test_crash_brings_back_a_suffix_overwritten_without_sync() -> None:
    disk = _disk()
    disk.append(_entries(2, 5, term=1))
    disk.sync()
    disk.append(_entries(3, 3, term=2))  # replaces 3..5 in the live copy
    assert disk.last_index() == 3
    assert disk.term(3) == 2
    disk.crash()
    assert disk.last_index() == 5
    assert disk.term(3) == 1


def test_crash_loses_an_unsynced_snapshot() -> None:
    disk = _disk()
    disk.append(_entries(2, 3))
    disk.sync()
    conf = ConfState(voters=frozenset({1, 2, 3}))
    disk.apply_snapshot(Snapshot(SnapshotMetadata(index=10, term=4, conf_state=conf), b"x"))
    assert disk.first_index() == 11
    disk.crash()
    assert disk.snapshot().metadata.index == 1
    assert disk.last_index() == 3


def test_journal_replays_in_order() -> None:
    disk = _disk()
    conf = ConfState(voters=frozenset({1, 2, 3}))
    disk.apply_snapshot(Snapshot(SnapshotMetadata(index=10, term=4, conf_state=conf), b"x"))
    disk.append([Entry(term=4, index=11), Entry(term=4, index=12)])
    disk.append([Entry(term=5, index=12)])
    disk.sync()
    disk.crash()
    assert disk.first_index() == 11
    assert [e.term for e in disk.entries(11, 13)] == [4, 5]


def test_application_snapshot_and_compaction_are_durable_at_once() -> None:
    disk = _disk()
    disk.append(_entries(2, 10))
    disk.sync()
    disk.set_hard_state(HardState(term=1, vote=0, commit=8))  # commit-only, unsynced
    conf = ConfState(voters=frozenset({1, 2, 3}))
    disk.create_snapshot(8, conf, b"state@8")
    disk.compact(6)
    disk.crash()
    assert disk.snapshot().metadata.index == 8
    assert disk.snapshot().data == b"state@8"
    assert disk.first_index() == 7
    # Taking the snapshot synced what came before it (one write-ahead log).
    assert disk.initial_state()[0].commit == 8


def test_a_raft_node_runs_on_a_disk() -> None:
    disk = _disk()
    node = RaftNode(RaftConfig(id=1), disk, random.Random(1))
    assert node.term == 1
    assert node.last_index == 1
    assert node.conf_state.voters == frozenset({1, 2, 3})
