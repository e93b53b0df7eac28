"""Key compaction: the pure rewrite (bounded map, codecs, empty batches,
CRC, the compacted bit) and three replicas compacting through the log
(identical bytes after a leader change, a member added later, producer
dedup, keyless refusal, disk space returned)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from partitions import replica as replica_module
from partitions.commands import decode_produce
from partitions.compaction import CompactionTarget, OffsetMap, StoredBatch, rewrite_batch
from partitions.replica import Replica, ReplicaConfig
from partitions.replica_errors import ProduceRejected
from partitions.replica_host import HostConfig
from partitions.state_machine import PartitionConfig
from raft.types import ConfChange, ConfChangeType
from raftlog.v1.record_batch import (
    COMPACTED_ATTRIBUTE,
    Codec,
    InvalidBatch,
    Record,
    decode_records,
    encode_batch,
    parse_header,
    validate_batch,
)
from tests.partitions.replica_cluster import InProcessCluster

TARGET = CompactionTarget(10**9, 0, 10**9, 100)


def _stored(
    records: list[tuple[bytes | None, bytes | None]], base: int = 0, codec: Codec = Codec.NONE
) -> StoredBatch:
    batch = encode_batch([Record(value=v, key=k, timestamp_ms=5) for k, v in records], codec=codec)
    return StoredBatch(raft_index=base + 1, base_offset=base, append_time_ms=5, batch=batch)


def _compact(batches: list[StoredBatch], target: CompactionTarget = TARGET) -> list[bytes | None]:
    offsets = OffsetMap(target.max_map_entries, 0)
    for b in batches:
        offsets.add(b, target.clean_up_to_offset)
    return [rewrite_batch(b, offsets, target) for b in batches]


@pytest.mark.parametrize("codec", [Codec.NONE, Codec.GZIP])
def test_rewrite_keeps_the_latest_per_key_with_offsets_and_a_valid_crc(codec: Codec) -> None:
    first = _stored([(b"a", b"1"), (b"b", b"1"), (None, b"keyless"), (b"a", b"2")], codec=codec)
    second = _stored([(b"b", b"2")], base=4, codec=codec)
    new_first, new_second = _compact([first, second])
    assert new_second is None  # nothing removed: untouched
    assert new_first is not None
    header = validate_batch(new_first, max_batch_bytes=1 << 20, allow_compacted=True)  # CRC checked
    assert header.attributes & COMPACTED_ATTRIBUTE and header.codec == codec
    assert (header.record_count, header.last_offset_delta) == (2, 3)
    assert [(r.offset, r.key, r.value) for r in decode_records(new_first)] == [
        (2, None, b"keyless"),
        (3, b"a", b"2"),
    ]
    # Idempotent: compacting the output again changes nothing.
    assert _compact([StoredBatch(1, 0, 5, new_first), second]) == [None, None]


def test_a_fully_removed_batch_becomes_header_only_and_producers_cannot_send_the_bit() -> None:
    batches = [_stored([(b"a", b"1"), (b"a", b"2")], codec=Codec.GZIP), _stored([(b"a", b"3")], base=2)]
    empty = _compact(batches)[0]
    assert empty is not None
    header = parse_header(empty)
    assert (header.record_count, header.last_offset_delta, header.codec) == (0, 1, Codec.NONE)
    assert decode_records(empty) == []
    with pytest.raises(InvalidBatch) as refused:
        validate_batch(empty, max_batch_bytes=1 << 20)
    assert refused.value.reason == "UNSUPPORTED_ATTRIBUTES"


def test_tombstones_go_only_past_the_horizon_and_the_floor() -> None:
    batch = _stored([(b"a", None)])
    assert _compact([batch]) == [None]  # horizon 0: append time 5 is younger
    assert _compact([batch], CompactionTarget(10, 6, 0, 100)) == [None]  # entry 1 above floor 0
    gone = _compact([batch], CompactionTarget(10, 6, 1, 100))[0]
    assert gone is not None and parse_header(gone).record_count == 0


def test_a_full_offset_map_cleans_only_what_it_covered() -> None:
    batch = _stored([(b"a", b"1"), (b"a", b"2"), (b"b", b"1"), (b"b", b"2")])
    offsets = OffsetMap(1, 0)
    assert not offsets.add(batch, 100)
    assert offsets.covered_to == 1 and offsets.full
    new = rewrite_batch(batch, offsets, TARGET)
    assert new is not None
    assert [r.offset for r in decode_records(new)] == [1, 2, 3]


# --- three replicas -------------------------------------------------------------------

_COMPACT = PartitionConfig(cleanup_policy="compact", retention_ms=None, checkpoint_interval_bytes=64 * 1024)


def _keyed(items: list[tuple[bytes, bytes | None]], **producer: int) -> bytes:
    return encode_batch([Record(value=v, key=k, timestamp_ms=1) for k, v in items], **producer)  # type: ignore[arg-type]


def _stored_range(replica: Replica, last_offset: int) -> list[bytes]:
    locations = replica._sm.locate(replica._sm.log_start_offset, 1 << 30)
    out = []
    for loc in locations:
        if loc.base_offset <= last_offset:
            entry = replica._storage.entries(loc.raft_index, loc.raft_index + 1)[0]
            out.append(bytes(decode_produce(entry.data).batch))
    return out


def _view(replica: Replica) -> list[tuple[int, bytes | None, bytes | None]]:
    result = replica.read(0, 1 << 30) if replica.is_leader else None
    assert result is not None
    return [(r.offset, r.key, r.value) for b in result.batches for r in decode_records(b)]


async def _all_cleaned(c: InProcessCluster, target: int) -> None:
    await c.wait_until(
        lambda: all(r.status().cleaned_offset >= target for r in c.replicas()), what="every replica cleaned"
    )


@pytest.mark.timeout(120)
async def test_replicas_compact_to_identical_bytes_across_a_leader_change_and_a_new_member(
    tmp_path: Path,
) -> None:
    config = HostConfig(tick_interval_s=0.01, replica=ReplicaConfig(partition=_COMPACT, hibernate=False))
    c = InProcessCluster(tmp_path, config=config)
    await c.start()
    try:
        leader = await c.leader()
        with pytest.raises(ProduceRejected) as refused:
            await leader.produce(encode_batch([Record(value=b"no key")]))
        assert refused.value.reason == "KEY_REQUIRED"
        assert leader.high_watermark == 0
        retried = _keyed([(b"k0", b"first")], producer_id=7, producer_epoch=0, base_sequence=0)
        assert (await leader.produce(retried)).base_offset == 0
        for i in range(1, 60):
            await leader.produce(_keyed([(b"k%d" % (i % 5), b"v%d" % i), (b"k%d" % (i % 7), b"w%d" % i)]))
        await leader.produce(_keyed([(b"k1", None)]))  # a tombstone, kept (24 h retention)
        target = await leader.compact_now()
        assert target == leader.high_watermark - 1
        await _all_cleaned(c, target)
        assert all(r.status().compacted_bytes > 0 for r in c.replicas())
        # The retry of a batch whose record was compacted away is a duplicate.
        again = await leader.produce(retried)
        assert again.duplicate and again.base_offset == 0
        reference = _stored_range(leader, target)
        assert all(_stored_range(r, target) == reference for r in c.replicas())
        view = _view(leader)
        offsets = [o for o, _, _ in view]
        assert offsets == sorted(set(offsets)) and len(view) < 120
        latest = {k: v for _, k, v in view}
        assert latest[b"k1"] is None and latest[b"k0"] == b"w56"
        # Leader change, more writes, compact again.
        old = leader
        follower = next(r for r in c.replicas() if not r.is_leader)
        old.transfer_leadership(follower.node_id)
        await c.wait_until(lambda: follower.is_leader and follower.serves_its_term, what="the new leader")
        leader = follower
        for i in range(20):
            await leader.produce(_keyed([(b"k%d" % (i % 3), b"x%d" % i)]))
        target = await leader.compact_now()
        await _all_cleaned(c, target)
        reference = _stored_range(leader, target)
        assert all(_stored_range(r, target) == reference for r in c.replicas())
        # A member added later gets the same view.
        host = await c.start_host(4, groups=())
        joined = await host.join_group(1)
        await leader.change_membership(ConfChange(ConfChangeType.ADD_LEARNER, 4))
        await c.wait_until(lambda: joined.high_watermark == leader.high_watermark, what="the new member")
        await c.wait_until(lambda: joined.status().cleaned_offset >= target, what="the new member cleaned")
        assert _stored_range(joined, target) == reference
    finally:
        await c.close()


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.mark.timeout(180)
async def test_compaction_returns_disk_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10,000 updates over 100 keys on one replica: the data dir shrinks
    (automatic compaction off, so "before" is uncompacted)."""
    monkeypatch.setattr(replica_module, "AUTO_COMPACT_MIN_DIRTY_BYTES", 1 << 60)
    config = HostConfig(tick_interval_s=0.01, replica=ReplicaConfig(partition=_COMPACT, hibernate=False))
    c = InProcessCluster(tmp_path, node_ids=[1], config=config)
    await c.start()
    try:
        leader = await c.leader()
        for i in range(0, 10_000, 10):
            await leader.produce(_keyed([(b"key-%d" % ((i + j) % 100), os.urandom(200)) for j in range(10)]))
        store = leader._storage.store
        await asyncio.to_thread(store.flush)
        before = _dir_bytes(tmp_path)
        target = await leader.compact_now()
        await _all_cleaned(c, target)
        await asyncio.to_thread(store.flush)
        after = _dir_bytes(tmp_path)
        print(f"data dir: {before} bytes before, {after} after; removed {leader.status().compacted_bytes}")
        assert len(_view(leader)) == 100
        assert after < before * 0.5
    finally:
        await c.close()


@pytest.mark.timeout(120)
async def test_the_leader_compacts_on_its_own_once_enough_is_dirty(tmp_path: Path) -> None:
    config = HostConfig(tick_interval_s=0.01, replica=ReplicaConfig(partition=_COMPACT, hibernate=False))
    c = InProcessCluster(tmp_path, node_ids=[1], config=config)
    await c.start()
    try:
        leader = await c.leader()
        for i in range(0, 8_000, 10):
            await leader.produce(_keyed([(b"key-%d" % ((i + j) % 50), os.urandom(200)) for j in range(10)]))
        await c.wait_until(lambda: leader.status().compacted_bytes > 0, what="automatic compaction")
    finally:
        await c.close()
