"""``MemoryStorage`` (raft/storage.py): the reference implementation of the
``Storage`` read contract plus the write side a driver uses."""

from __future__ import annotations

import random

import pytest

from raft.config import RaftConfig
from raft.errors import Compacted, Unavailable
from raft.membership import encode_conf_change
from raft.node import RaftNode
from raft.storage import MemoryStorage, limit_size
from raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMetadata,
)

CONF = ConfState(voters=frozenset({1, 2, 3}))


def filled(last: int) -> MemoryStorage:
    """Bootstrap snapshot at index 1 (term 1), then entries 2..last of term 2."""
    storage = MemoryStorage.bootstrap([1, 2, 3])
    storage.append([Entry(term=2, index=i, data=b"x" * i) for i in range(2, last + 1)])
    return storage


def test_bootstrap_is_a_snapshot_of_the_initial_membership() -> None:
    storage = MemoryStorage.bootstrap([1, 2, 3], learners=[4])
    hard_state, conf = storage.initial_state()
    assert hard_state == HardState(term=1, vote=0, commit=1)
    assert conf == ConfState(voters=frozenset({1, 2, 3}), learners=frozenset({4}))
    assert (storage.first_index(), storage.last_index()) == (2, 1)
    assert storage.term(1) == 1
    assert storage.snapshot().metadata.index == 1


def test_term_and_entries_range_checks() -> None:
    """``term`` answers from the snapshot's index to the last; ``entries``
    from the first index. Below raises Compacted, above Unavailable."""
    storage = filled(5)
    assert [storage.term(i) for i in range(1, 6)] == [1, 2, 2, 2, 2]
    with pytest.raises(Compacted):
        storage.term(0)
    with pytest.raises(Unavailable):
        storage.term(6)
    with pytest.raises(Compacted):
        storage.entries(1, 3)
    with pytest.raises(Unavailable):
        storage.entries(2, 7)
    assert [e.index for e in storage.entries(2, 6)] == [2, 3, 4, 5]


def test_entries_size_limit_returns_at_least_one() -> None:
    storage = filled(5)
    assert [e.index for e in storage.entries(2, 6, max_bytes=1)] == [2]
    two = Entry(term=2, index=2, data=b"xx").size() + Entry(term=2, index=3, data=b"xxx").size()
    assert [e.index for e in storage.entries(2, 6, max_bytes=two)] == [2, 3]
    assert limit_size([], 0) == []


def test_append_replaces_the_suffix_and_refuses_gaps() -> None:
    storage = filled(5)
    storage.append([Entry(term=3, index=4)])
    assert storage.last_index() == 4
    assert storage.term(4) == 3
    with pytest.raises(Unavailable):
        storage.append([Entry(term=3, index=6)])


def test_append_skips_entries_covered_by_the_snapshot() -> None:
    storage = filled(5)
    storage.create_snapshot(3, CONF, b"s")
    storage.compact(3)
    storage.append([Entry(term=2, index=i) for i in range(2, 7)])
    assert (storage.first_index(), storage.last_index()) == (4, 6)


def test_create_snapshot_then_compact() -> None:
    """A snapshot records index, term and membership; compaction drops the
    entries it covers while ``term(snapshot index)`` stays readable."""
    storage = filled(6)
    snapshot = storage.create_snapshot(4, CONF, b"state")
    assert snapshot.metadata == SnapshotMetadata(index=4, term=2, conf_state=CONF)
    assert storage.snapshot() == snapshot
    assert storage.first_index() == 2, "creating a snapshot does not compact"

    storage.compact(4)
    assert (storage.first_index(), storage.last_index()) == (5, 6)
    assert storage.term(4) == 2
    with pytest.raises(Compacted):
        storage.entries(4, 6)
    storage.compact(3)  # already compacted: no-op
    assert storage.first_index() == 5


def test_compact_beyond_the_snapshot_or_snapshot_beyond_the_log_raises() -> None:
    storage = filled(6)
    with pytest.raises(Unavailable):
        storage.compact(3)  # the snapshot is still the bootstrap one at 1
    with pytest.raises(Unavailable):
        storage.create_snapshot(9, CONF, b"")


def test_older_snapshots_are_ignored() -> None:
    storage = filled(6)
    newer = storage.create_snapshot(5, CONF, b"new")
    assert storage.create_snapshot(3, CONF, b"old") == newer
    storage.apply_snapshot(Snapshot(SnapshotMetadata(index=4, term=2, conf_state=CONF)))
    assert storage.snapshot() == newer
    assert storage.last_index() == 6


def test_apply_snapshot_replaces_the_log() -> None:
    storage = filled(6)
    conf = ConfState(voters=frozenset({1, 2}))
    storage.apply_snapshot(Snapshot(SnapshotMetadata(index=20, term=7, conf_state=conf), b"s"))
    assert (storage.first_index(), storage.last_index()) == (21, 20)
    assert storage.term(20) == 7
    assert storage.initial_state()[1] == conf


def test_conf_entries_lists_membership_changes_from_an_index() -> None:
    storage = filled(3)
    change = encode_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    conf_entries = [
        Entry(term=2, index=4, kind=EntryKind.CONF_CHANGE, data=change),
        Entry(term=2, index=5),
        Entry(term=2, index=6, kind=EntryKind.CONF_CHANGE, data=change),
    ]
    storage.append(conf_entries)
    assert [e.index for e in storage.conf_entries(1)] == [4, 6]
    assert [e.index for e in storage.conf_entries(5)] == [6]
    storage.create_snapshot(4, CONF, b"")
    storage.compact(4)
    assert [e.index for e in storage.conf_entries(1)] == [6]


def test_copy_is_independent() -> None:
    storage = filled(3)
    other = storage.copy()
    other.append([Entry(term=3, index=3)])
    other.set_hard_state(HardState(term=3))
    assert storage.term(3) == 2
    assert storage.hard_state.term == 1


def test_restart_with_snapshot_ahead_of_compaction_and_a_lost_commit() -> None:
    """Found by the simulator: a snapshot at 20 with the log compacted only
    to 16, and a commit index of 18 on disk (the commit-only write after it
    was lost in a crash). The node restarts with commit and applied at the
    snapshot, since a snapshot only covers committed entries."""
    storage = MemoryStorage.bootstrap([1])
    storage.append([Entry(term=1, index=i, data=b"x") for i in range(2, 25)])
    storage.create_snapshot(20, ConfState(voters=frozenset({1})), b"image")
    storage.compact(16)
    storage.set_hard_state(HardState(term=1, vote=1, commit=18))

    node = RaftNode(RaftConfig(id=1), storage, random.Random(1))

    assert node.commit_index == 20 and node.applied_index == 20
