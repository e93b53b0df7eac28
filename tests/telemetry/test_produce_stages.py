"""The produce stages: ``observe_stages``
(partitions/proposal_timing.py) on hand-made marks (order, clamping,
missing marks); the LogService (cluster/frontend/log_service.py) with a
fake replica, observing them only when the node's metrics are on and
asking for no marks when off; and a real 3-node cluster whose leaders'
``raftlog_produce_stage_seconds`` counts every produce call once, with
every stage, and whose ``raftlog_event_loop_lag_seconds`` is sampled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from client import Producer
from cluster.controller import Assignment, Principal
from cluster.frontend.auth import Caller
from cluster.frontend.front_door import acting_as
from cluster.frontend.log_service import LogService
from cluster.telemetry.node_metrics import NodeMetrics
from harness.local_cluster import LocalCluster, TopicSpec
from partitions.proposal_timing import (
    STAGES,
    ProposalTiming,
    next_proposal_timing,
    observe_stages,
)
from partitions.replica import ProduceResult, Replica
from raftlog.v1 import log_pb2
from tests.telemetry.test_metrics_cluster import samples, scrape, total  # one way to read a page

pytestmark = pytest.mark.timeout(90)

MS = 1_000_000  # ns


def full_timing() -> ProposalTiming:
    """Every mark set, each stage a different length (ms): propose 1,
    append 2, sync 3, replicate 4, apply 5, then reply 6 to ``resumed`` 121."""
    return ProposalTiming(
        received_ns=100 * MS,
        proposed_ns=101 * MS,
        index=7,
        sync_started_ns=103 * MS,
        sync_ended_ns=106 * MS,
        committed_ns=110 * MS,
        applied_ns=115 * MS,
    )


# --- the computation -----------------------------------------------------------------


def stage_seconds(timing: ProposalTiming, resumed_ns: int) -> list[tuple[str, float]]:
    """``(stage, seconds)`` for each stage ``observe_stages`` observes, in
    ``STAGES`` order."""
    found: list[tuple[str, float]] = []

    def keep(stage: str) -> Callable[[float], None]:
        return lambda seconds: found.append((stage, seconds))

    observe_stages(timing, resumed_ns, [keep(stage) for stage in STAGES])
    return found


def test_every_stage_in_path_order_and_they_add_up_to_thetotal() -> None:
    got = stage_seconds(full_timing(), 121 * MS)
    assert [stage for stage, _ in got] == list(STAGES)
    assert dict(got) == pytest.approx(
        {
            "propose": 0.001,
            "append": 0.002,
            "sync": 0.003,
            "replicate": 0.004,
            "apply": 0.005,
            "reply": 0.006,
            "total": 0.021,
        }
    )
    assert sum(s for stage, s in got if stage != "total") == pytest.approx(dict(got)["total"])


def test_a_quorum_before_the_leaders_own_sync_ends_is_a_zero_replicate() -> None:
    timing = full_timing()
    timing.committed_ns = 105 * MS  # the followers had it before our sync ended (106)
    timing.applied_ns = 108 * MS
    got = dict(stage_seconds(timing, 109 * MS))
    assert got["replicate"] == 0.0
    assert got["apply"] == pytest.approx(0.003)
    assert all(seconds >= 0 for seconds in got.values())


def test_a_stage_with_a_missing_mark_is_not_observed() -> None:
    # No sync waited for: append, sync and replicate have a missing end or start.
    timing = full_timing()
    timing.sync_started_ns = timing.sync_ended_ns = 0
    assert [stage for stage, _ in stage_seconds(timing, 121 * MS)] == ["propose", "apply", "reply", "total"]
    # Not timed by the handler (a traced-only call): no propose, no total.
    timing = full_timing()
    timing.received_ns = 0
    assert "propose" not in dict(stage_seconds(timing, 121 * MS))
    assert "total" not in dict(stage_seconds(timing, 121 * MS))
    # Not resumed known: no reply, no total.
    assert [stage for stage, _ in stage_seconds(full_timing(), 0)] == list(STAGES[:-2])
    # Refused before it was proposed: only the total.
    assert stage_seconds(ProposalTiming(received_ns=100 * MS), 130 * MS) == [("total", pytest.approx(0.03))]
    assert stage_seconds(ProposalTiming(), 0) == []


def test_observe_stages_calls_each_stages_own_observer() -> None:
    seen: dict[str, list[float]] = {stage: [] for stage in STAGES}
    observe_stages(full_timing(), 121 * MS, [seen[stage].append for stage in STAGES])
    assert {stage: len(values) for stage, values in seen.items()} == dict.fromkeys(STAGES, 1)
    assert seen["sync"] == [pytest.approx(0.003)]
    with pytest.raises(ValueError):  # one observer per stage, no fewer
        observe_stages(full_timing(), 121 * MS, [seen["sync"].append])


# --- the LogService, in process --------------------------------------------------------


class TimedReplica:
    """A led partition whose produce fills the marks a real replica would
    (of the timing the caller set), and keeps whether one was set."""

    group = 5
    is_leader = True
    leader = 0

    def __init__(self) -> None:
        self.timings: list[ProposalTiming | None] = []

    async def produce(self, batch: bytes) -> ProduceResult:
        timing = next_proposal_timing.get()
        self.timings.append(timing)
        if timing is not None:
            base = timing.received_ns or 1
            timing.proposed_ns = base + 1
            timing.sync_started_ns = base + 2
            timing.sync_ended_ns = base + 3
            timing.committed_ns = base + 4
            timing.applied_ns = base + 5
        await asyncio.sleep(0)
        return ProduceResult(0, 0, 1)


def _locate(tenant: str, topic: str, partition: int) -> Assignment | None:
    return Assignment(TimedReplica.group, tenant, topic, 1, partition, (1,), (), 1)


async def _produce_through(service: LogService, calls: int) -> None:
    context = cast(grpc.aio.ServicerContext, object())
    with acting_as(Caller(Principal("k-op", None), "acme")):
        for _ in range(calls):
            await service.Produce(log_pb2.ProduceRequest(topic="t", partition=0, batch=b"x"), context)


def _counts(metrics: NodeMetrics) -> dict[str, float]:
    page = generate_latest(metrics.registry).decode()
    return {
        s.labels["stage"]: s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.name == "raftlog_produce_stage_seconds_count"
    }


async def test_the_log_service_observes_every_stage_once_per_call_when_metrics_are_on() -> None:
    replica = TimedReplica()
    metrics = NodeMetrics(1, "127.0.0.1", 0)  # never served: only its registry is read
    service = LogService(_locate, lambda group: cast(Replica, replica), lambda g: 0, str, metrics=metrics)
    await _produce_through(service, 3)
    assert _counts(metrics) == dict.fromkeys(STAGES, 3.0)
    assert all(t is not None and t.received_ns > 0 for t in replica.timings)


async def test_with_metrics_off_a_produce_asks_for_no_marks() -> None:
    replica = TimedReplica()
    service = LogService(_locate, lambda group: cast(Replica, replica), lambda g: 0, str)
    await _produce_through(service, 2)
    assert replica.timings == [None, None]


# --- a real cluster ----------------------------------------------------------------------

CALLS = 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(Path(tmp_path_factory.mktemp("stages")), topics=[TopicSpec("t")], metrics=True)
    c.start_all()
    yield c
    c.close()


async def test_the_leader_counts_each_produce_call_once_with_every_stage(cluster: LocalCluster) -> None:
    bootstrap = [cluster.addresses[n] for n in cluster.node_ids]
    options: dict[str, Any] = {"api_key": cluster.api_key}
    async with Producer(bootstrap, linger_ms=0, **options) as producer:
        for i in range(CALLS):  # one record, acknowledged, at a time: one Produce call each
            await (await producer.send("t", b"v%d" % i, partition=0))
        retries = producer.stats.retries
    pages = [
        samples(page)
        for page in await asyncio.gather(*(scrape(cluster.metrics_address(n)) for n in cluster.node_ids))
    ]
    counted = total(pages, "raftlog_produce_stage_seconds_count", stage="total")
    # A retried call whose first try the leader answered is counted twice.
    assert CALLS <= counted <= CALLS + retries
    for stage in STAGES:
        assert total(pages, "raftlog_produce_stage_seconds_count", stage=stage) >= CALLS, stage
        if stage != "replicate":  # may be 0 every time (module docstring of proposal_timing)
            assert total(pages, "raftlog_produce_stage_seconds_sum", stage=stage) > 0, stage
    # The stages are consecutive: together about the total (clamping aside).
    parts = sum(total(pages, "raftlog_produce_stage_seconds_sum", stage=s) for s in STAGES[:-1])
    whole = total(pages, "raftlog_produce_stage_seconds_sum", stage="total")
    assert parts == pytest.approx(whole, rel=0.05)
    for page in pages:
        assert total([page], "raftlog_event_loop_lag_seconds_count") > 0
