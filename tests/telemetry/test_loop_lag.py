"""The event-loop lag sampler (cluster/telemetry/loop_lag.py) and its
histogram on the node's metrics (cluster/telemetry/node_metrics.py): an
idle loop shows small lags, a loop blocked 100 ms one of about 100 ms, the
sampler runs from ``serve`` to ``close`` and no longer."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cluster.telemetry.loop_lag import sample_loop_lag
from cluster.telemetry.node_metrics import NodeMetrics

pytestmark = pytest.mark.timeout(30)


async def _observed(seen: list[float], count: int) -> None:
    while len(seen) < count:
        await asyncio.sleep(0.005)


async def test_a_blocked_loop_shows_as_one_late_timer() -> None:
    seen: list[float] = []
    sampler = asyncio.create_task(sample_loop_lag(seen.append, 0.01))
    try:
        await _observed(seen, 3)
        assert all(lag >= 0 for lag in seen)
        before = len(seen)
        time.sleep(0.1)  # noqa: ASYNC251 - the point: hold the loop 100 ms, the sampler asleep
        await _observed(seen, before + 3)
    finally:
        sampler.cancel()
        await asyncio.wait((sampler,))
    # The wake-up that waited for the block is late by it; the next ones
    # are not (each measures from its own sleep: no drift carried over).
    assert seen[before] >= 0.09
    assert min(seen[before + 1 :]) < 0.05


async def test_an_interval_of_zero_or_less_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        await sample_loop_lag(lambda lag: None, 0)


def _lag_count(metrics: NodeMetrics) -> float:
    page = generate_latest(metrics.registry).decode()
    return next(
        s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.name == "raftlog_event_loop_lag_seconds_count"
    )


async def test_the_node_samples_while_it_serves_metrics_and_stops_with_them() -> None:
    metrics = NodeMetrics(1, "127.0.0.1", 0)
    await asyncio.sleep(0.1)
    assert _lag_count(metrics) == 0  # built, not served: no sampler
    await metrics.serve()
    try:
        await asyncio.sleep(0.15)
        assert _lag_count(metrics) >= 2
    finally:
        await metrics.close()
    stopped_at = _lag_count(metrics)
    await asyncio.sleep(0.1)
    assert _lag_count(metrics) == stopped_at
    assert not [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith("raftlog-loop-lag")]
