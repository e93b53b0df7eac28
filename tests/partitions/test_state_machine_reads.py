"""The partition state machine: reads and retention.

Reads locate the batches holding an offset (at least one batch, within
max_bytes), range-check offsets and find the offset for a timestamp;
retention by time or by bytes cuts only at a checkpoint, drops whole
batches and keeps the index memory per batch small.
"""

from __future__ import annotations

import pytest

from partitions.commands import encode_produce
from partitions.state_machine import Appended, BatchLocation, Checkpoint, OffsetOutOfRange, PartitionConfig
from tests.partitions.state_machine_feed import NO_RETENTION, Feed, batch, feed

# --- reads ------------------------------------------------------------------------------------


def _sized_log(sizes_and_counts: list[tuple[int, int]]) -> Feed:
    f = feed()
    for size, count in sizes_and_counts:
        f.produce(batch(count, size=size))
        f.noop()
    return f


def test_locate_starts_at_the_batch_holding_the_offset() -> None:
    f = _sized_log([(10, 3), (10, 2), (10, 4)])
    sizes = [len(batch(3, size=10)), len(batch(2, size=10)), len(batch(4, size=10))]
    assert f.sm.locate(0, 10**6) == [
        BatchLocation(1, 0, 2, sizes[0]),
        BatchLocation(3, 3, 4, sizes[1]),
        BatchLocation(5, 5, 8, sizes[2]),
    ]
    assert [loc.raft_index for loc in f.sm.locate(4, 10**6)] == [3, 5]
    assert [loc.raft_index for loc in f.sm.locate(8, 10**6)] == [5]


def test_locate_respects_max_bytes_but_returns_at_least_one_batch() -> None:
    f = _sized_log([(100, 1), (100, 1), (100, 1)])
    size = len(batch(1, size=100))
    assert len(f.sm.locate(0, 1)) == 1
    assert len(f.sm.locate(0, size)) == 1
    assert len(f.sm.locate(0, 2 * size - 1)) == 1
    assert len(f.sm.locate(0, 2 * size)) == 2
    assert len(f.sm.locate(1, 10 * size)) == 2


def test_locate_range_checks() -> None:
    f = _sized_log([(10, 3)])
    assert f.sm.locate(3, 100) == []
    with pytest.raises(OffsetOutOfRange) as info:
        f.sm.locate(4, 100)
    assert (info.value.offset, info.value.log_start_offset, info.value.high_watermark) == (4, 0, 3)
    with pytest.raises(OffsetOutOfRange):
        f.sm.locate(-1, 100)
    assert feed().sm.locate(0, 100) == []


def test_offset_for_timestamp() -> None:
    f = feed()
    for ts in (100, 300, 200, 500, 400):
        f.produce(batch(2, ts=ts))
    assert f.sm.offset_for_timestamp(0) == 0
    assert f.sm.offset_for_timestamp(100) == 0
    assert f.sm.offset_for_timestamp(101) == 2
    assert f.sm.offset_for_timestamp(250) == 2  # the batch at 200 comes after the one at 300
    assert f.sm.offset_for_timestamp(301) == 6
    assert f.sm.offset_for_timestamp(450) == 6
    assert f.sm.offset_for_timestamp(501) is None


def test_offset_for_timestamp_after_retention() -> None:
    config = PartitionConfig(retention_ms=None, retention_bytes=0, checkpoint_interval_bytes=1)
    f = feed(config)
    for ts in (900, 100, 200):
        f.produce(batch(ts=ts))
    f.sm.compacted(1)  # drops the batch whose max_timestamp was 900
    assert f.sm.offset_for_timestamp(150) == 2
    assert f.sm.offset_for_timestamp(50) == 1


# --- retention ------------------------------------------------------------------------------------


def test_retention_by_time_drops_whole_batches() -> None:
    config = PartitionConfig(retention_ms=10_000, checkpoint_interval_bytes=1)
    f = feed(config)
    for i in range(10):
        f.produce(batch(2), at=i * 1_000)  # index i+1, offsets 2i, 2i+1
    assert f.sm.retention_cut(9_999) is None  # nothing older than -1
    cut = f.sm.retention_cut(15_500)  # appended before 5,500: indexes 1-6
    assert cut is not None and cut.index == 6
    assert cut == Checkpoint(6, cut.data)
    f.sm.compacted(cut.index)
    assert f.sm.log_start_offset == 12
    assert f.sm.retained_batches == 4
    assert [c.index for c in f.sm.checkpoints] == [7, 8, 9, 10]
    with pytest.raises(OffsetOutOfRange):
        f.sm.locate(11, 100)
    assert f.sm.locate(12, 1)[0] == BatchLocation(7, 12, 13, len(batch(2)))
    assert f.sm.retention_cut(15_500) is None
    everything = f.sm.retention_cut(10**9)
    assert everything is not None and everything.index == 10
    assert everything == f.sm.checkpoint()
    f.sm.compacted(everything.index)
    assert f.sm.log_start_offset == f.sm.high_watermark == 20
    assert f.sm.locate(20, 100) == []
    with pytest.raises(OffsetOutOfRange):
        f.sm.locate(19, 100)
    assert f.produce(batch()) == Appended(20, 20, 9_000)


def test_retention_cut_falls_on_a_checkpoint_before_the_first_kept_batch() -> None:
    one = len(encode_produce(batch(), 0))
    config = PartitionConfig(retention_ms=10_000, checkpoint_interval_bytes=3 * one)
    f = feed(config)
    for i in range(10):
        f.produce(batch(), at=i * 1_000)
    assert [c.index for c in f.sm.checkpoints] == [3, 6, 9]
    cut = f.sm.retention_cut(15_500)  # batches at indexes 1-6 may go
    assert cut is not None and cut.index == 6
    cut = f.sm.retention_cut(14_500)  # 1-5 may go: the cut falls back to 3
    assert cut is not None and cut.index == 3
    cut = f.sm.retention_cut(12_500)  # 1-3 may go
    assert cut is not None and cut.index == 3
    assert f.sm.retention_cut(12_000) is None  # 1-2 may go, but no checkpoint lies within them


def test_retention_by_bytes_keeps_at_least_retention_bytes() -> None:
    size = len(batch())
    config = PartitionConfig(retention_ms=None, retention_bytes=3 * size + 1, checkpoint_interval_bytes=1)
    f = feed(config)
    for _ in range(10):
        f.produce(batch())
        f.noop()
    cut = f.sm.retention_cut(0)
    assert cut is not None
    assert cut.index == 11  # the 6th batch (a noop follows each): 4 batches stay
    f.sm.compacted(cut.index)
    assert f.sm.retained_batches == 4
    assert f.sm.retained_bytes == 4 * size >= 3 * size + 1
    assert f.sm.log_start_offset == 6
    assert f.sm.retention_cut(0) is None


def test_either_policy_can_cut() -> None:
    size = len(batch())
    config = PartitionConfig(retention_ms=5_000, retention_bytes=8 * size, checkpoint_interval_bytes=1)
    f = feed(config)
    for i in range(10):
        f.produce(batch(), at=i * 1_000)
    by_bytes = f.sm.retention_cut(0)
    assert by_bytes is not None and by_bytes.index == 2
    by_time = f.sm.retention_cut(9_500)  # appended before 4,500: 5 batches
    assert by_time is not None and by_time.index == 5


def test_no_retention_no_cut() -> None:
    f = feed(NO_RETENTION)
    for i in range(5):
        f.produce(batch(), at=i)
    assert f.sm.retention_cut(10**12) is None
    assert feed(PartitionConfig(retention_ms=1)).sm.retention_cut(10**12) is None  # empty


def test_compacted_validates_its_index() -> None:
    f = feed()
    f.produce(batch())
    with pytest.raises(ValueError):
        f.sm.compacted(2)


def test_index_memory_per_batch_is_small() -> None:
    f = feed()
    small = batch()
    for _ in range(10_000):
        f.produce(small)
    per_batch = f.sm.index_memory_bytes() / 10_000
    assert 48 <= per_batch <= 64, per_batch
