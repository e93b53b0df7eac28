"""Key compaction against a reference model: random keyed produces (with
tombstones and repeated keys), compaction commands with random targets and
clocks, and retention, on a partition without Raft
(``compaction_harness``). Reading from the log start must always equal the
model, offsets strictly increase, and re-running compaction changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partitions.cleaner import LogCleaner
from partitions.state_machine import PartitionConfig
from tests.partitions.compaction_harness import MemoryPartition


@dataclass(frozen=True)
class _Rec:
    offset: int
    key: bytes
    value: bytes | None
    append_ms: int
    raft_index: int


_records = st.lists(
    st.tuples(st.integers(0, 7), st.one_of(st.none(), st.binary(min_size=0, max_size=8))),
    min_size=1,
    max_size=6,
)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("produce"), _records),
        st.tuples(st.just("tick"), st.integers(1, 500)),
        st.tuples(st.just("compact"), st.tuples(st.integers(-1, 60), st.integers(0, 400), st.integers(1, 5))),
        st.tuples(st.just("retain"), st.integers(0, 2000)),
    ),
    max_size=40,
)


def _expected(
    model: list[_Rec], target_x: int, horizon: int, floor: int, log_start: int
) -> list[tuple[int, bytes, bytes | None]]:
    latest: dict[bytes, int] = {}
    for r in model:
        if r.offset <= target_x:
            latest[r.key] = r.offset
    out = []
    for r in model:
        if r.offset < log_start:
            continue
        if r.offset <= target_x:
            if latest[r.key] != r.offset:
                continue
            if r.value is None and r.append_ms < horizon and r.raft_index <= floor:
                continue
        out.append((r.offset, r.key, r.value))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops, step_bytes=st.sampled_from([1, 200, 1 << 20]))
def test_reads_always_equal_the_model(ops: list[tuple[str, object]], step_bytes: int) -> None:
    config = PartitionConfig(
        cleanup_policy="compact,delete", retention_ms=1500, checkpoint_interval_bytes=300
    )
    p = MemoryPartition(config, step_bytes=step_bytes)
    model: list[_Rec] = []
    now = 1000
    x, horizon, floor = -1, -(2**62), 0
    for op, arg in ops:
        if op == "produce":
            records: list[tuple[bytes, bytes | None]] = [(b"k%d" % k, v) for k, v in arg]  # type: ignore[attr-defined]
            result = p.produce(records, now)
            base = result.base_offset  # type: ignore[attr-defined]
            model += [_Rec(base + i, k, v, now, p.index) for i, (k, v) in enumerate(records)]
        elif op == "tick":
            now += arg  # type: ignore[operator]
        elif op == "compact":
            up_to, retention, map_entries = cast(tuple[int, int, int], arg)
            p.compact(up_to, now, retention, map_entries)
            x = max(x, min(up_to, p.sm.high_watermark - 1))
            horizon = max(horizon, now - retention)
            floor = p.index
            p.clean()
            assert p.cleaner.cleaned_offset >= x
        else:
            p.retain(now + arg)  # type: ignore[operator]
        p.clean()
        got = [(r.offset, r.key, r.value) for r in p.read_all()]
        offsets = [o for o, _, _ in got]
        assert offsets == sorted(set(offsets))
        assert got == _expected(model, x, horizon, floor, p.sm.log_start_offset)
    # Idempotent: a fresh cleaner (a restarted replica) over the compacted
    # copy rewrites nothing.
    before = dict(p.log)
    assert p.clean(LogCleaner()) == 0
    assert p.log == before


@settings(max_examples=60, deadline=None)
@given(ops=_ops)
def test_replaying_compacted_entries_gives_the_same_offsets(ops: list[tuple[str, object]]) -> None:
    """A replica that restarts re-applies its own rewritten entries: offsets
    and producer state come from spans, so they are the same."""
    config = PartitionConfig(cleanup_policy="compact")
    p = MemoryPartition(config)
    now = 1000
    for op, arg in ops:
        if op == "produce":
            p.produce([(b"k%d" % k, v) for k, v in arg], now)  # type: ignore[attr-defined]
        elif op == "compact":
            up_to, retention, entries = cast(tuple[int, int, int], arg)
            p.compact(up_to, now, retention, entries)
            p.clean()
        elif op == "tick":
            now += arg  # type: ignore[operator]
    replay = MemoryPartition(config)
    for index in sorted(p.log):
        replay.index = index - 1
        replay.append(p.log[index])
    assert replay.sm.high_watermark == p.sm.high_watermark
    assert replay.read_all() == p.read_all()
    assert replay.sm.checkpoint().data == p.sm.checkpoint().data
