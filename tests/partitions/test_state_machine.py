"""The partition state machine: offsets and idempotent producers.

Offsets are assigned in log order, append times never go backwards, indexes
must increase, and a bad command consumes no offset; producers are
deduplicated over a window of batches, fenced by epoch, checked for sequence
gaps (including across the 2**31 wrap) and expire after inactivity, the
same way on every replica. Reads and retention are in
test_state_machine_reads.py, snapshots in test_state_machine_snapshots.py,
the command encoding and config checks in test_state_machine_encodings.py;
the shared helpers in state_machine_feed.py.
"""

from __future__ import annotations

import pytest

from partitions.commands import PRODUCE_VERSION, UnsupportedCommand, encode_produce
from partitions.partition_snapshot import PartitionImage, encode_image
from partitions.producer_state import ProducerBatch, ProducerEntry
from partitions.state_machine import Appended, Duplicate, PartitionConfig, PartitionStateMachine, RejectReason
from raftlog.v1.record_batch import parse_header
from tests.partitions.state_machine_feed import (
    NO_RETENTION,
    WRAP,
    Feed,
    appended,
    batch,
    feed,
    pbatch,
    rejected,
    replay,
    state_of,
)

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
