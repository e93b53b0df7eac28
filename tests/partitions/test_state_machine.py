"""The partition state machine: offsets, idempotent producers, expiry, reads,
retention, snapshots; and the command and snapshot encodings it relies on."""

from __future__ import annotations

import dataclasses
import random
import struct
import zlib
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitions.commands import (
    PRODUCE_VERSION,
    CommandKind,
    MalformedCommand,
    ProduceCommand,
    UnsupportedCommand,
    decode_command,
    encode_produce,
)
from partitions.offset_index import BatchIndex
from partitions.partition_snapshot import PartitionImage, decode_image, encode_image
from partitions.producer_state import ProducerBatch, ProducerEntry
from partitions.state_machine import (
    Appended,
    ApplyResult,
    BatchLocation,
    Checkpoint,
    CorruptSnapshot,
    Duplicate,
    OffsetOutOfRange,
    PartitionConfig,
    PartitionStateMachine,
    Rejected,
    RejectReason,
)
from raftlog.v1.record_batch import Record, encode_batch, parse_header

WRAP = 2**31
NO_RETENTION = PartitionConfig(retention_ms=None, retention_bytes=None)


def batch(
    n: int = 1, *, pid: int = -1, epoch: int = -1, seq: int = -1, ts: int = 1_000, size: int = 10
) -> bytes:
    records = [Record(b"v" * size, timestamp_ms=ts) for _ in range(n)]
    return encode_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def pbatch(pid: int, seq: int, n: int = 1, epoch: int = 0, **kwargs: int) -> bytes:
    return batch(n, pid=pid, epoch=epoch, seq=seq, **kwargs)


@dataclass
class Feed:
    """Drives a state machine like the replica driver does, keeping the log
    (to replay it elsewhere) and every result."""

    sm: PartitionStateMachine
    log: list[tuple[int, bytes | None]] = field(default_factory=list)
    results: dict[int, ApplyResult] = field(default_factory=dict)
    now: int = 1_000

    @property
    def index(self) -> int:
        return self.sm.applied_index

    def produce(self, data: bytes, at: int | None = None) -> ApplyResult:
        if at is not None:
            self.now = at
        return self.command(encode_produce(data, self.now))

    def command(self, data: bytes) -> ApplyResult:
        index = self.index + 1
        self.log.append((index, data))
        result = self.sm.apply(index, data)
        self.results[index] = result
        return result

    def noop(self) -> None:
        index = self.index + 1
        self.log.append((index, None))
        self.sm.apply_noop(index)


def feed(config: PartitionConfig = NO_RETENTION) -> Feed:
    return Feed(PartitionStateMachine(config))


def replay(sm: PartitionStateMachine, log: list[tuple[int, bytes | None]]) -> dict[int, ApplyResult]:
    """Apply the entries after ``sm.applied_index``; their results."""
    results: dict[int, ApplyResult] = {}
    for index, data in log:
        if index <= sm.applied_index:
            continue
        if data is None:
            sm.apply_noop(index)
        else:
            results[index] = sm.apply(index, data)
    return results


def state_of(sm: PartitionStateMachine) -> PartitionImage:
    """Everything a snapshot holds but the index (to say "nothing changed")."""
    snapshot = sm.checkpoint()
    return dataclasses.replace(decode_image(snapshot.data, snapshot.index), index=0)


def appended(result: ApplyResult) -> Appended:
    assert isinstance(result, Appended), result
    return result


def rejected(result: ApplyResult, reason: RejectReason) -> Rejected:
    assert isinstance(result, Rejected), result
    assert result.reason == reason, result
    assert result.message
    return result


# --- offsets ------------------------------------------------------------------------------


def test_offsets_are_assigned_in_log_order() -> None:
    f = feed()
    assert f.sm.high_watermark == 0
    assert f.produce(batch(3), at=5) == Appended(0, 2, 5)
    f.noop()
    assert f.produce(batch(1), at=6) == Appended(3, 3, 6)
    assert f.produce(batch(4), at=7) == Appended(4, 7, 7)
    assert f.sm.high_watermark == 8
    assert f.sm.applied_index == 4
    assert f.sm.log_start_offset == 0
    assert f.sm.retained_batches == 3


def test_append_times_never_go_backwards() -> None:
    f = feed()
    assert appended(f.produce(batch(), at=10_000)).append_time_ms == 10_000
    # a new leader whose wall clock is behind
    assert appended(f.produce(batch(), at=9_000)).append_time_ms == 10_000
    assert f.sm.last_append_ms == 10_000


def test_indexes_must_increase() -> None:
    f = feed()
    f.produce(batch())
    with pytest.raises(ValueError, match="out of order"):
        f.sm.apply(1, encode_produce(batch(), 1))
    with pytest.raises(ValueError, match="out of order"):
        f.sm.apply_noop(1)
    assert f.sm.high_watermark == 1
    f.sm.apply(5, encode_produce(batch(), 1))  # gaps are fine (conf changes elsewhere)
    assert f.sm.applied_index == 5


def test_malformed_command_is_rejected_and_consumes_no_offset() -> None:
    f = feed()
    rejected(f.command(b"\x01\x01"), RejectReason.INVALID_COMMAND)
    rejected(f.command(encode_produce(batch()[:-1], 1)), RejectReason.INVALID_BATCH)
    assert f.sm.applied_index == 2
    assert f.sm.high_watermark == 0
    assert f.produce(batch()) == Appended(0, 0, 1_000)


def test_unsupported_command_stops_without_changing_anything() -> None:
    f = feed()
    f.produce(batch())
    before = f.sm.checkpoint()
    with pytest.raises(UnsupportedCommand):
        f.sm.apply(2, b"\x09" + bytes(20))
    future = bytearray(encode_produce(batch(), 1))
    future[1] = PRODUCE_VERSION + 1
    with pytest.raises(UnsupportedCommand):
        f.sm.apply(2, bytes(future))
    assert f.sm.checkpoint() == before
    assert f.sm.applied_index == 1


# --- idempotent producers -------------------------------------------------------------------


def test_retry_returns_the_original_offsets() -> None:
    f = feed()
    first = appended(f.produce(pbatch(7, 0, 2), at=100))
    f.produce(batch(5), at=200)  # another writer in between
    second = appended(f.produce(pbatch(7, 2, 3), at=300))
    hw = f.sm.high_watermark
    assert f.produce(pbatch(7, 0, 2), at=400) == Duplicate(first.base_offset, first.last_offset, 100)
    assert f.produce(pbatch(7, 2, 3), at=400) == Duplicate(second.base_offset, second.last_offset, 300)
    assert f.sm.high_watermark == hw
    assert f.sm.retained_batches == 3
    entry = f.sm.producer(7)
    assert entry is not None and entry.next_sequence == 5 and entry.last_append_ms == 300


def test_dedup_window_holds_the_last_five_batches() -> None:
    f = feed()
    results = [appended(f.produce(pbatch(1, seq))) for seq in range(7)]
    for seq in range(2, 7):
        assert f.produce(pbatch(1, seq)) == Duplicate(
            results[seq].base_offset, results[seq].last_offset, 1_000
        )
    for seq in (0, 1):
        rejected(f.produce(pbatch(1, seq)), RejectReason.DUPLICATE_SEQUENCE)
    assert f.sm.high_watermark == 7


def test_gap_is_out_of_order_and_changes_nothing() -> None:
    f = feed()
    f.produce(pbatch(1, 0, 3))
    before = state_of(f.sm)
    result = rejected(f.produce(pbatch(1, 4)), RejectReason.OUT_OF_ORDER_SEQUENCE)
    assert "expected sequence 3" in result.message
    assert state_of(f.sm) == before
    assert f.produce(pbatch(1, 3)) == Appended(3, 3, 1_000)


def test_overlapping_retry_that_matches_no_batch_is_out_of_order() -> None:
    f = feed()
    f.produce(pbatch(1, 0, 3))
    f.produce(pbatch(1, 3, 3))
    rejected(f.produce(pbatch(1, 1, 2)), RejectReason.OUT_OF_ORDER_SEQUENCE)
    rejected(f.produce(pbatch(1, 4, 4)), RejectReason.OUT_OF_ORDER_SEQUENCE)  # runs past the end
    assert f.sm.high_watermark == 6


def test_unknown_producer_must_start_at_zero() -> None:
    f = feed()
    rejected(f.produce(pbatch(3, 1)), RejectReason.UNKNOWN_PRODUCER_ID)
    assert f.sm.producer(3) is None and f.sm.high_watermark == 0
    appended(f.produce(pbatch(3, 0, epoch=4)))


def test_old_epoch_is_fenced_by_check_produce_and_apply() -> None:
    f = feed()
    f.produce(pbatch(1, 0, epoch=0))
    f.produce(pbatch(1, 0, epoch=1))
    f.produce(pbatch(1, 1, epoch=1))
    before_entry = f.sm.producer(1)
    before = state_of(f.sm)
    stale = pbatch(1, 1, epoch=0)
    check = f.sm.check_produce(parse_header(stale))
    assert check is not None and check.reason == RejectReason.INVALID_PRODUCER_EPOCH
    rejected(f.produce(stale), RejectReason.INVALID_PRODUCER_EPOCH)
    rejected(f.produce(pbatch(1, 0, epoch=0)), RejectReason.INVALID_PRODUCER_EPOCH)  # even a "retry"
    assert f.sm.producer(1) == before_entry
    assert f.sm.high_watermark == 3
    assert state_of(f.sm) == before
    assert f.sm.check_produce(parse_header(pbatch(1, 2, epoch=1))) is None
    assert f.sm.check_produce(parse_header(pbatch(1, 9, epoch=2))) is None  # sequences: at apply
    assert f.sm.check_produce(parse_header(pbatch(99, 5))) is None
    assert f.sm.check_produce(parse_header(batch())) is None


def test_new_epoch_must_start_at_zero_and_forgets_the_old_batches() -> None:
    f = feed()
    old = appended(f.produce(pbatch(1, 0, epoch=0)))
    f.produce(pbatch(1, 1, epoch=0))
    rejected(f.produce(pbatch(1, 2, epoch=1)), RejectReason.OUT_OF_ORDER_SEQUENCE)
    entry = f.sm.producer(1)
    assert entry is not None and entry.epoch == 0
    new = appended(f.produce(pbatch(1, 0, epoch=1)))
    assert new.base_offset != old.base_offset
    assert f.produce(pbatch(1, 0, epoch=1)) == Duplicate(new.base_offset, new.last_offset, 1_000)
    entry = f.sm.producer(1)
    assert entry is not None and entry.epoch == 1 and len(entry.batches) == 1


def test_batches_without_a_producer_skip_dedup() -> None:
    f = feed()
    assert f.produce(batch(2)) == Appended(0, 1, 1_000)
    assert f.produce(batch(2)) == Appended(2, 3, 1_000)
    assert f.sm.producers() == ()


def _at_sequence(pid: int, last_sequence: int, *, time: int = 1_000) -> PartitionStateMachine:
    """A state machine whose producer ``pid`` last wrote ``last_sequence``
    (built through a snapshot: reaching 2**31 by appending is too slow)."""
    entry = ProducerEntry(pid, 0, time, (ProducerBatch(last_sequence, last_sequence, 9, 9, time),))
    image = PartitionImage(5, 10, 10, time, (entry,))
    return PartitionStateMachine.restore(NO_RETENTION, 5, encode_image(image))


def test_sequences_wrap_to_zero() -> None:
    f = Feed(_at_sequence(1, WRAP - 3))
    spanning = appended(f.produce(pbatch(1, WRAP - 2, 4)))  # WRAP-2, WRAP-1, 0, 1
    assert spanning == Appended(10, 13, 1_000)
    entry = f.sm.producer(1)
    assert entry is not None and entry.last_sequence == 1 and entry.next_sequence == 2
    assert f.produce(pbatch(1, WRAP - 2, 4)) == Duplicate(10, 13, 1_000)
    rejected(f.produce(pbatch(1, 3)), RejectReason.OUT_OF_ORDER_SEQUENCE)  # gap across the wrap
    assert appended(f.produce(pbatch(1, 2))).base_offset == 14
    for seq in range(3, 8):
        appended(f.produce(pbatch(1, seq)))
    # the wrapping batch left the window: a retry of it is an old duplicate
    rejected(f.produce(pbatch(1, WRAP - 2, 4)), RejectReason.DUPLICATE_SEQUENCE)


def test_last_sequence_before_the_wrap() -> None:
    f = Feed(_at_sequence(1, WRAP - 2))
    appended(f.produce(pbatch(1, WRAP - 1)))
    appended(f.produce(pbatch(1, 0)))
    rejected(f.produce(pbatch(1, WRAP - 5)), RejectReason.DUPLICATE_SEQUENCE)


def test_producers_expire_after_inactivity_by_append_time() -> None:
    config = PartitionConfig(retention_ms=None, producer_expiry_ms=60_000)
    f = feed(config)
    f.produce(pbatch(1, 0), at=1_000)
    f.produce(pbatch(2, 0), at=30_000)
    f.produce(batch(), at=60_999)  # 59,999 ms after producer 1's write: still known
    assert f.sm.producer(1) is not None
    f.produce(batch(), at=61_000)  # 60,000 ms: expired
    assert f.sm.producer(1) is None
    assert f.sm.producer(2) is not None
    rejected(f.produce(pbatch(1, 1)), RejectReason.UNKNOWN_PRODUCER_ID)
    appended(f.produce(pbatch(1, 0)))
    # a rejected or duplicate batch does not keep a producer alive
    f.produce(pbatch(2, 0), at=80_000)
    f.produce(batch(), at=90_000)
    assert f.sm.producer(2) is None


def test_expiry_is_the_same_after_replay_on_another_replica() -> None:
    config = PartitionConfig(retention_ms=None, producer_expiry_ms=10_000)
    f = feed(config)
    for i in range(20):
        f.produce(pbatch(i % 3, i // 3), at=i * 2_000 + (5_000 if i % 3 == 0 else 0))
    other = PartitionStateMachine(config)
    assert replay(other, f.log) == f.results
    assert other.producers() == f.sm.producers()


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


# --- snapshots ------------------------------------------------------------------------------------


def test_snapshot_restore_replay_keeps_dedup() -> None:
    config = PartitionConfig(retention_ms=None, checkpoint_interval_bytes=1)
    f = feed(config)
    first = appended(f.produce(pbatch(4, 0, 2), at=10))
    second = appended(f.produce(pbatch(4, 2, 2), at=20))
    snapshot = f.sm.checkpoint()
    third = appended(f.produce(pbatch(4, 4, 1), at=30))
    restored = PartitionStateMachine.restore(config, snapshot.index, snapshot.data)
    replay(restored, f.log)
    for sm in (f.sm, restored):
        index = sm.applied_index + 1
        assert sm.apply(index, encode_produce(pbatch(4, 0, 2), 40)) == Duplicate(0, 1, 10)
        assert sm.apply(index + 1, encode_produce(pbatch(4, 2, 2), 40)) == Duplicate(2, 3, 20)
        assert sm.apply(index + 2, encode_produce(pbatch(4, 4, 1), 40)) == Duplicate(4, 4, 30)
        assert sm.apply(index + 3, encode_produce(pbatch(4, 5, 1), 40)) == Appended(5, 5, 40)
    assert (first.base_offset, second.base_offset, third.base_offset) == (0, 2, 4)
    assert restored.checkpoint() == f.sm.checkpoint()


def test_restore_of_empty_data_is_a_fresh_partition_at_that_index() -> None:
    sm = PartitionStateMachine.restore(NO_RETENTION, 7, b"")
    assert (sm.applied_index, sm.high_watermark, sm.log_start_offset) == (7, 0, 0)
    with pytest.raises(ValueError):
        sm.apply_noop(7)
    assert sm.apply(8, encode_produce(batch(), 1)) == Appended(0, 0, 1)


def test_snapshot_bytes_are_deterministic() -> None:
    entries = [
        ProducerEntry(pid, pid % 3, 1_000 + (pid % 4), (ProducerBatch(0, 1, pid * 2, pid * 2 + 1, 500),))
        for pid in range(20)
    ]
    shuffled = entries[:]
    random.Random(1).shuffle(shuffled)
    a = encode_image(PartitionImage(9, 40, 40, 2_000, tuple(entries)))
    b = encode_image(PartitionImage(9, 40, 40, 2_000, tuple(shuffled)))
    assert a == b
    sm = PartitionStateMachine.restore(NO_RETENTION, 9, a)
    assert sm.checkpoint().data == a
    assert decode_image(a, 9) == PartitionImage(9, 40, 40, 2_000, tuple(sm.producers()))


def test_snapshot_of_equal_states_reached_differently_is_equal() -> None:
    """Entries that change nothing (a rejected or duplicate batch at the
    clock's time, a noop) leave the bytes as they were; and a restored copy,
    whose producers sit in canonical rather than activity order in memory,
    keeps encoding to the same bytes as the original as both go on."""
    a, b = feed(), feed()
    for f in (a, b):
        f.produce(pbatch(2, 0), at=500)
        f.produce(pbatch(1, 0), at=500)
    a.produce(pbatch(1, 5), at=500)  # rejected: a gap
    a.produce(pbatch(2, 0), at=400)  # a duplicate (and an older wall clock)
    b.noop()
    b.noop()
    assert a.sm.checkpoint() == b.sm.checkpoint()
    snapshot = a.sm.checkpoint()
    c = Feed(PartitionStateMachine.restore(NO_RETENTION, snapshot.index, snapshot.data))
    for f in (a, c):
        f.produce(pbatch(3, 0), at=600)
        f.produce(pbatch(2, 1), at=600)
    assert a.sm.checkpoint() == c.sm.checkpoint()


def _reseal(data: bytes) -> bytes:
    body = data[:-4]
    return body + struct.pack(">I", zlib.crc32(body))


def test_corrupt_snapshots_raise_corrupt_snapshot() -> None:
    f = feed()
    f.produce(pbatch(1, 0, 2))
    f.produce(pbatch(2, 0, 1))
    good = f.sm.checkpoint()
    PartitionStateMachine.restore(NO_RETENTION, good.index, good.data)
    flipped = bytearray(good.data)
    flipped[20] ^= 1
    bad_version = _reseal(b"\x03" + good.data[1:])
    producers_swapped = bytearray(good.data)
    # layout: a 37-byte head, then per producer 19 bytes + 32 per batch
    first_at, second_at = 37, 37 + 19 + 32
    first_id = producers_swapped[first_at : first_at + 8]
    producers_swapped[first_at : first_at + 8] = producers_swapped[second_at : second_at + 8]
    producers_swapped[second_at : second_at + 8] = first_id
    cases = {
        "CRC": bytes(flipped),
        "shorter": good.data[:10],
        "version": bad_version,
        "trailing": _reseal(good.data[:-4] + b"\0" + good.data[-4:]),
        "canonical order": _reseal(bytes(producers_swapped)),
        "runs past the end": _reseal(good.data[:33] + struct.pack(">I", 3) + good.data[37:]),
    }
    for expected, data in cases.items():
        with pytest.raises(CorruptSnapshot, match=expected):
            PartitionStateMachine.restore(NO_RETENTION, good.index, data)
    with pytest.raises(CorruptSnapshot, match="CRC"):
        PartitionStateMachine.restore(NO_RETENTION, good.index, good.data[:-1])
    with pytest.raises(CorruptSnapshot, match="index"):
        PartitionStateMachine.restore(NO_RETENTION, good.index + 1, good.data)


@given(st.binary(max_size=200), st.integers(0, 10))
def test_arbitrary_snapshot_bytes_raise_only_corrupt_snapshot(data: bytes, index: int) -> None:
    """Anything but CorruptSnapshot fails the test; what is accepted is
    exactly what encode_image writes."""
    for candidate in (data, _reseal(data) if len(data) >= 4 else data):
        try:
            PartitionStateMachine.restore(NO_RETENTION, index, candidate)
        except CorruptSnapshot:
            continue
        if candidate:
            assert encode_image(decode_image(candidate, index)) == candidate


# --- the big equivalence: snapshot + replay == applying everything ------------------------------

op_strategy = st.tuples(
    st.sampled_from(["next", "next", "next", "retry", "gap", "old", "bump", "plain", "noop", "junk"]),
    st.integers(0, 3),  # producer
    st.integers(1, 4),  # records
    st.integers(0, 40_000),  # ms since the last entry
    st.integers(0, 10**6),  # choice (which retry, timestamps)
)


@dataclass
class ClientProducer:
    epoch: int = 0
    next_seq: int = 0
    sent: list[bytes] = field(default_factory=list)


def _workload(ops: list[tuple[str, int, int, int, int]]) -> list[tuple[int, bytes | None]]:
    clients = [ClientProducer() for _ in range(4)]
    log: list[tuple[int, bytes | None]] = []
    now = 1_000_000
    for index, (kind, who, n, dt, choice) in enumerate(ops, start=1):
        now += dt
        c = clients[who]
        ts = choice % 100_000
        data: bytes | None
        if kind == "noop":
            data = None
        elif kind == "junk":
            data = b"\x01\x01\x00"
        elif kind == "plain":
            data = encode_produce(batch(n, ts=ts), now)
        elif kind == "retry" and c.sent:
            data = encode_produce(c.sent[choice % len(c.sent)], now)
        elif kind == "old" and c.epoch > 0:
            data = encode_produce(pbatch(who, c.next_seq, n, epoch=c.epoch - 1, ts=ts), now)
        else:
            if kind == "bump":
                c.epoch += 1
                c.next_seq = 0
            seq = c.next_seq + (1 + choice % 3 if kind == "gap" else 0)
            raw = pbatch(who, seq % WRAP, n, epoch=c.epoch, ts=ts)
            if kind != "gap":
                c.sent.append(raw)
                c.next_seq = (c.next_seq + n) % WRAP
            data = encode_produce(raw, now)
        log.append((index, data))
    return log


def _assert_same_reads(a: PartitionStateMachine, b: PartitionStateMachine) -> None:
    assert (a.high_watermark, a.log_start_offset, a.applied_index) == (
        b.high_watermark,
        b.log_start_offset,
        b.applied_index,
    )
    assert a.retained_bytes == b.retained_bytes and a.retained_batches == b.retained_batches
    for offset in range(a.log_start_offset, a.high_watermark + 1):
        for max_bytes in (1, 150, 10_000):
            assert a.locate(offset, max_bytes) == b.locate(offset, max_bytes)
    for ts in range(0, 100_001, 5_000):
        assert a.offset_for_timestamp(ts) == b.offset_for_timestamp(ts)
    assert a.producers() == b.producers()
    assert a.last_append_ms == b.last_append_ms


@settings(max_examples=60)
@given(st.lists(op_strategy, min_size=1, max_size=50), st.lists(op_strategy, max_size=15))
def test_restore_then_replay_equals_applying_everything(
    ops: list[tuple[str, int, int, int, int]], more: list[tuple[str, int, int, int, int]]
) -> None:
    config = PartitionConfig(retention_ms=None, producer_expiry_ms=60_000, checkpoint_interval_bytes=400)
    log = _workload(ops + more)
    head, tail = log[: len(ops)], log[len(ops) :]
    full = PartitionStateMachine(config)
    results = replay(full, head)
    cuts = [Checkpoint(0, b""), *full.checkpoints, full.checkpoint()]
    tail_results = replay(full, tail)
    for cut in cuts:
        restored = PartitionStateMachine.restore(config, cut.index, cut.data)
        replayed = replay(restored, head)
        assert replayed == {i: r for i, r in results.items() if i > cut.index}
        reference = PartitionStateMachine(config)
        replay(reference, head)
        reference.compacted(cut.index)
        _assert_same_reads(restored, reference)
        assert restored.checkpoint() == reference.checkpoint()
        # and they go on behaving alike: same answers to the same new entries
        assert replay(restored, tail) == tail_results
        replay(reference, tail)
        _assert_same_reads(restored, reference)


# --- the encodings --------------------------------------------------------------------------------


def test_produce_command_round_trip_keeps_the_batch_bytes() -> None:
    raw = batch(3)
    data = encode_produce(raw, 1_234)
    assert data[:2] == bytes([CommandKind.PRODUCE, PRODUCE_VERSION])
    assert data[10:] == raw
    command = decode_command(data)
    assert command == ProduceCommand(1_234, memoryview(raw))
    assert isinstance(command.batch, memoryview) and command.batch.obj is data  # no copy
    assert bytes(command.batch) == raw


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", MalformedCommand),
        (b"\x01\x01\x00", MalformedCommand),
        (b"\x01\x01" + struct.pack(">q", -1) + batch(), MalformedCommand),
        (b"\x00" + bytes(20), UnsupportedCommand),
        (b"\x02" + bytes(20), UnsupportedCommand),
        (b"\x01\x02" + bytes(20), UnsupportedCommand),
    ],
)
def test_bad_commands(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_command(data)


def test_encode_produce_refuses_a_negative_time() -> None:
    with pytest.raises(ValueError):
        encode_produce(batch(), -1)


@pytest.mark.parametrize(
    "config",
    [
        PartitionConfig(retention_ms=0),
        PartitionConfig(retention_bytes=-1),
        PartitionConfig(producer_expiry_ms=0),
        PartitionConfig(checkpoint_interval_bytes=0),
        PartitionConfig(dedup_window=0),
        PartitionConfig(dedup_window=256),
    ],
)
def test_config_validation(config: PartitionConfig) -> None:
    with pytest.raises(ValueError):
        config.validate()
    with pytest.raises(ValueError):
        PartitionStateMachine(config)


def test_default_config_is_valid() -> None:
    PartitionConfig().validate()
    assert PartitionConfig().dedup_window == 5
    assert PartitionConfig().producer_expiry_ms == 86_400_000


def test_batch_index_refuses_holes() -> None:
    index = BatchIndex(10)
    index.append(1, 10, 2, 100, 0, 0)
    with pytest.raises(ValueError):
        index.append(2, 13, 1, 100, 0, 0)
    with pytest.raises(ValueError):
        index.append(1, 12, 1, 100, 0, 0)
