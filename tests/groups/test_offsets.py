"""The offset-commit record round-trips and refuses what it never writes; the
table keeps the last write in log order whatever the order of application,
so replaying the log gives the table that live applies built."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.groups import TopicPartition
from cluster.groups.membership import GroupSnapshot, MemberSnapshot
from cluster.groups.offsets import (
    RECORD_VERSION,
    CommittedOffset,
    CommittedOffsets,
    CoordinatorStarted,
    GroupMetadataDeleted,
    GroupMetadataRecord,
    OffsetCommitRecord,
    OffsetRecordError,
    decode_record,
    entry_of,
    stored_form,
)

names = st.text(st.characters(codec="utf-8"), max_size=30)
records = st.builds(
    OffsetCommitRecord,
    tenant=names,
    group=names,
    topic=names,
    partition=st.integers(0, 2**32 - 1),
    offset=st.integers(0, 2**64 - 1),
    commit_timestamp_ms=st.integers(-(2**63), 2**63 - 1),
    metadata=st.text(max_size=100),
)


@given(records)
def test_a_record_round_trips(record: OffsetCommitRecord) -> None:
    data = record.encode()
    assert data[0] == RECORD_VERSION
    assert OffsetCommitRecord.decode(data) == record


def test_the_layout_is_the_documented_one() -> None:
    data = OffsetCommitRecord("t", "g", "x", 7, 42, 1000, "m").encode()
    assert data == (
        b"\x02\x01"
        + b"\x00\x01t"
        + b"\x00\x01g"
        + b"\x00\x01x"
        + (7).to_bytes(4, "big")
        + (42).to_bytes(8, "big")
        + (1000).to_bytes(8, "big")
        + b"\x00\x01m"
    )


@given(records, st.data())
def test_truncated_or_extended_bytes_are_refused(record: OffsetCommitRecord, data: st.DataObject) -> None:
    encoded = record.encode()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(OffsetRecordError):
        OffsetCommitRecord.decode(encoded[:cut])
    with pytest.raises(OffsetRecordError):
        OffsetCommitRecord.decode(encoded + b"\x00")


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1))
def test_a_coordinator_started_record_round_trips(term: int, session: int) -> None:
    record = CoordinatorStarted(term, session)
    data = record.encode()
    assert data == b"\x02\x02" + term.to_bytes(8, "big") + session.to_bytes(4, "big") + b"\x00"
    assert decode_record(data) == record
    # Version 1 (older nodes): the same fields, and its coordinator recorded no group.
    legacy = b"\x01\x02" + term.to_bytes(8, "big") + session.to_bytes(4, "big")
    assert decode_record(legacy) == CoordinatorStarted(term, session, unrecorded_holders=True)
    with pytest.raises(OffsetRecordError, match="not an offset commit"):
        OffsetCommitRecord.decode(data)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(OffsetRecordError, match="kind 3"):
        decode_record(b"\x01\x03")  # group metadata is of version 2 only
    with pytest.raises(OffsetRecordError, match="kind 5"):
        decode_record(b"\x02\x05")


def test_the_table_ignores_coordinator_records() -> None:
    log = [
        CoordinatorStarted(1, 60_000).encode(),
        OffsetCommitRecord("t", "g", "a", 0, 5, 0).encode(),
        CoordinatorStarted(2, 60_000).encode(),
    ]
    assert list(CommittedOffsets.replay(enumerate(log)).snapshot().values()) == [CommittedOffset(5, "", 0, 1)]


@pytest.mark.parametrize("version", [0, 3, 255])
def test_another_version_is_refused_not_skipped(version: int) -> None:
    encoded = bytearray(OffsetCommitRecord("t", "g", "x", 0, 1, 0).encode())
    encoded[0] = version
    with pytest.raises(OffsetRecordError, match="version"):
        OffsetCommitRecord.decode(bytes(encoded))
    with pytest.raises(OffsetRecordError, match="log offset 9"):
        CommittedOffsets.replay([(9, bytes(encoded))])


def test_a_version_1_commit_still_reads() -> None:
    legacy = b"\x01" + OffsetCommitRecord("t", "g", "x", 7, 42, 1000, "m").encode()[1:]
    assert decode_record(legacy) == OffsetCommitRecord("t", "g", "x", 7, 42, 1000, "m")
    assert stored_form(legacy) == (None, legacy), "stored as it was: without a key"


def test_keys_make_the_last_record_per_key_the_state() -> None:
    """Compaction keeps the last record per key: a commit's key names its
    group and partition, a group's metadata key its group, every
    coordinator-started record shares one key; a deletion is a tombstone."""
    commit = OffsetCommitRecord("t", "g", "x", 7, 42, 1000)
    assert stored_form(commit.encode())[0] == stored_form(replace(commit, offset=43).encode())[0]
    others = [
        replace(commit, tenant="u"),
        replace(commit, group="h"),
        replace(commit, topic="y"),
        replace(commit, partition=8),
    ]
    keys = {stored_form(r.encode())[0] for r in [commit, *others]}
    assert len(keys) == 5
    assert (
        stored_form(CoordinatorStarted(1, 0).encode())[0]
        == stored_form(CoordinatorStarted(9, 5, True).encode())[0]
    )
    snapshot = GroupSnapshot(1, 1, {}, {}, ())
    metadata = GroupMetadataRecord("t", "g", snapshot).encode()
    key, value = stored_form(metadata)
    assert value == metadata and key not in keys
    assert stored_form(GroupMetadataDeleted("t", "g").encode()) == (key, None), "a tombstone"
    assert decode_record(entry_of(key, None)) == GroupMetadataDeleted("t", "g")
    assert stored_form(GroupMetadataRecord("t", "h", snapshot).encode())[0] != key


def test_group_metadata_round_trips() -> None:
    tp = TopicPartition
    member = MemberSnapshot(
        "m1", "c", frozenset({"a", "b"}), 6_000, 9_000, 5, 8, 6, {tp("a", 0): 6}, {tp("b", 1): 5}, False
    )
    fenced = MemberSnapshot("m2", "", frozenset({"a"}), 7_000, 8_000, 2, 3, -1, {}, {tp("a", 2): 3}, True)
    snapshot = GroupSnapshot(
        9, 7, {"a": 3, "b": 2}, {"m1": frozenset({tp("a", 0), tp("a", 1)})}, (member, fenced)
    )
    record = GroupMetadataRecord("t", "g", snapshot)
    decoded = decode_record(record.encode())
    assert isinstance(decoded, GroupMetadataRecord)
    assert decoded.encode() == record.encode()
    got = decoded.snapshot
    assert (got.epoch, got.assignment_epoch, dict(got.metadata), dict(got.target)) == (
        9,
        7,
        {"a": 3, "b": 2},
        dict(snapshot.target),
    )
    assert [dict(m.assigned) for m in got.members] == [{tp("a", 0): 6}, {}]
    assert [dict(m.revoking) for m in got.members] == [{tp("b", 1): 5}, {tp("a", 2): 3}]
    assert [(m.fenced, m.previous_epoch, m.topics) for m in got.members] == [
        (False, 6, member.topics),
        (True, -1, fenced.topics),
    ]


def test_fields_too_wide_are_refused_when_encoding() -> None:
    with pytest.raises(ValueError):
        OffsetCommitRecord("t", "g", "x", 2**32, 0, 0).encode()
    with pytest.raises(ValueError):
        OffsetCommitRecord("t", "g", "x", 0, -1, 0).encode()
    with pytest.raises(ValueError):
        OffsetCommitRecord("t", "g", "x", 0, 0, 0, "m" * 70_000).encode()


small_records = st.builds(
    OffsetCommitRecord,
    tenant=st.sampled_from(["acme", "zeta"]),
    group=st.sampled_from(["g1", "g2"]),
    topic=st.sampled_from(["a", "b"]),
    partition=st.integers(0, 2),
    offset=st.integers(0, 1000),
    commit_timestamp_ms=st.integers(0, 10**6),
    metadata=st.sampled_from(["", "x"]),
)


def last_writes(log: list[OffsetCommitRecord]) -> dict[tuple[str, str, TopicPartition], CommittedOffset]:
    """The table a log should give, computed the obvious way."""
    expected: dict[tuple[str, str, TopicPartition], CommittedOffset] = {}
    for log_offset, r in enumerate(log):
        expected[(r.tenant, r.group, r.topic_partition)] = CommittedOffset(
            r.offset, r.metadata, r.commit_timestamp_ms, log_offset
        )
    return expected


@given(st.lists(small_records, max_size=40), st.randoms(use_true_random=False))
def test_any_application_order_gives_the_replayed_table(
    log: list[OffsetCommitRecord], rng: random.Random
) -> None:
    replayed = CommittedOffsets.replay((i, r.encode()) for i, r in enumerate(log))
    assert dict(replayed.snapshot()) == last_writes(log)

    # Appends may complete out of order, and some twice (a retried apply).
    live = CommittedOffsets()
    applications = list(enumerate(log)) + rng.sample(list(enumerate(log)), k=len(log) // 3)
    rng.shuffle(applications)
    for log_offset, record in applications:
        live.apply(log_offset, record)
    assert live.snapshot() == replayed.snapshot()


def test_fetch_lists_only_committed_partitions_sorted() -> None:
    table = CommittedOffsets()
    table.apply(0, OffsetCommitRecord("acme", "g", "b", 1, 10, 5))
    table.apply(1, OffsetCommitRecord("acme", "g", "a", 2, 20, 6, "meta"))
    table.apply(2, OffsetCommitRecord("zeta", "g", "a", 2, 99, 7))  # another tenant's group of that name
    assert list(table.fetch("acme", "g")) == [TopicPartition("a", 2), TopicPartition("b", 1)]
    assert table.fetch("acme", "g", [TopicPartition("a", 2), TopicPartition("a", 3)]) == {
        TopicPartition("a", 2): CommittedOffset(20, "meta", 6, 1)
    }
    assert table.fetch("acme", "nope") == {}
    assert table.groups("acme") == ["g"] and table.groups("other") == []
    assert table.has_group("zeta", "g") and not table.has_group("zeta", "h")


def test_an_older_log_offset_never_overwrites_a_newer_one() -> None:
    table = CommittedOffsets()
    assert table.apply(5, OffsetCommitRecord("t", "g", "a", 0, 50, 0))
    assert not table.apply(4, OffsetCommitRecord("t", "g", "a", 0, 40, 0))
    assert not table.apply(5, OffsetCommitRecord("t", "g", "a", 0, 50, 0))
    assert table.fetch("t", "g")[TopicPartition("a", 0)].offset == 50
