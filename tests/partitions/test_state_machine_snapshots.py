"""The partition state machine: snapshots.

A snapshot restores deduplication state, its bytes are deterministic and
canonical (equal states give equal bytes), corrupt bytes raise only
``CorruptSnapshot``; and the big equivalence: restoring any checkpoint and
replaying the rest of the log equals applying everything (property test).
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitions.commands import encode_produce
from partitions.partition_snapshot import PartitionImage, decode_image, encode_image
from partitions.producer_state import ProducerBatch, ProducerEntry
from partitions.state_machine import (
    Appended,
    Checkpoint,
    CorruptSnapshot,
    Duplicate,
    PartitionConfig,
    PartitionStateMachine,
)
from tests.partitions.state_machine_feed import (
    NO_RETENTION,
    WRAP,
    Feed,
    appended,
    batch,
    feed,
    pbatch,
    replay,
)

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
