"""The tenant figures (cluster/quotas/tenant_metrics.py) where the quotas
count them: produce bytes admitted on the leader, fetch bytes answered
there, and the calls the quotas delayed, held or refused with the time it
cost — on the quota stage's in-process rig (a real ``FrontDoor`` and
``MeteredLogService``, a fake view, the test's clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from cluster.controller import Assignment
from cluster.frontend.front_door import FrontDoor
from cluster.quotas.fair_scheduler import FairScheduler
from cluster.quotas.quota_service import MAX_RETRY_AFTER_S, QuotaService
from cluster.quotas.quota_stage import MeteredLogService, QuotaStage
from cluster.quotas.tenant_metrics import TenantMetrics
from raftlog.v1 import log_pb2, log_pb2_grpc
from tests.quotas.test_quota_stage import (
    AUTH,
    GROUP,
    TENANT,
    Clock,
    FakeReplica,
    FakeView,
    batch,
    identify,
    refused,
)

pytestmark = pytest.mark.timeout(60)


class Rig:
    def __init__(
        self, stub: log_pb2_grpc.LogServiceStub, view: FakeView, clock: Clock, registry: CollectorRegistry
    ) -> None:
        self.stub, self.view, self.clock, self.registry = stub, view, clock, registry

    def value(self, name: str, tenant: str = TENANT) -> float:
        return self.registry.get_sample_value(name, {"tenant": tenant}) or 0.0

    async def produce(self, size: int, auth: object = AUTH) -> None:
        await self.stub.Produce(
            log_pb2.ProduceRequest(topic="t", partition=0, batch=batch(size)), metadata=auth
        )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    registry = CollectorRegistry()
    view, clock, replica = FakeView(), Clock(), FakeReplica()
    service = QuotaService(1, view, clock=clock, metrics=TenantMetrics(registry))

    async def sleep(seconds: float) -> None:
        clock.now += seconds  # time passes while the stage waits

    stage = QuotaStage(service, view, FairScheduler(4), sleep=sleep)
    logs = MeteredLogService(
        service,
        view,
        lambda tenant, topic, p: _assignment(tenant) if (topic, p) == ("t", 0) else None,
        lambda g: replica if g == GROUP else None,
        lambda _g: 1,
        str,
        sleep=sleep,
    )
    server = grpc.aio.server(interceptors=[FrontDoor(identify, lambda _n: "", stages=[stage])])
    log_pb2_grpc.add_LogServiceServicer_to_server(logs, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Rig(log_pb2_grpc.LogServiceStub(channel), view, clock, registry)
    await server.stop(None)


def _assignment(tenant: str) -> Assignment:
    return Assignment(GROUP, tenant, "t", 1, 0, (1,), (), 1)


async def test_produce_and_fetch_bytes_are_counted_for_the_callers_tenant(rig: Rig) -> None:
    await rig.produce(1_000)
    await rig.produce(2_000)
    produced = len(batch(1_000)) + len(batch(2_000))
    assert rig.value("raftlog_tenant_produce_bytes_total") == produced
    answer = await rig.stub.Fetch(log_pb2.FetchRequest(topic="t", partition=0, offset=0), metadata=AUTH)
    assert rig.value("raftlog_tenant_fetch_bytes_total") == sum(len(b) for b in answer.batches) == produced
    assert rig.value("raftlog_tenant_produce_bytes_total", "other") == 0
    assert rig.value("raftlog_tenant_throttled_requests_total") == 0


async def test_a_node_that_does_not_lead_the_partition_counts_no_bytes(rig: Rig) -> None:
    rig.view.leading = set()  # a forwarded produce: the leader counts it
    await rig.produce(1_000)
    assert rig.value("raftlog_tenant_produce_bytes_total") == 0


async def test_a_delayed_call_is_counted_with_its_delay(rig: Rig) -> None:
    rig.view.set(produce_bytes_s=10_000)  # burst 5,000 bytes
    await rig.produce(6_000 - len(batch(0)))  # 1,000 owed: the next one waits 0.1 s
    assert rig.value("raftlog_tenant_throttled_requests_total") == 0
    await rig.produce(10)  # delayed 0.1 s (MAX_DELAY_S), then served
    assert rig.value("raftlog_tenant_throttled_requests_total") == 1
    assert rig.value("raftlog_tenant_throttle_seconds_total") == pytest.approx(0.1, abs=0.002)


async def test_a_refusal_at_once_is_counted_with_its_retry_after(rig: Rig) -> None:
    rig.view.set(produce_bytes_s=0)  # refused at once, retry-after 0 (waiting does not help)
    await refused(rig.produce(10))
    assert rig.value("raftlog_tenant_throttled_requests_total") == 1
    assert rig.value("raftlog_tenant_throttle_seconds_total") == 0


async def test_a_held_then_refused_call_counts_once_with_its_hold_and_retry_after(rig: Rig) -> None:
    rig.view.set(produce_bytes_s=1_000)
    await rig.produce(50_000)  # no debt before it: served, and ~49 s owed now
    _reason, retry_after_ms, _message = await refused(rig.produce(10))
    # Held MAX_RETRY_AFTER_S (the test's clock moved), admitted once more,
    # refused again with a retry-after: one throttled call, both times counted.
    assert retry_after_ms == MAX_RETRY_AFTER_S * 1000
    assert rig.value("raftlog_tenant_throttled_requests_total") == 1
    assert rig.value("raftlog_tenant_throttle_seconds_total") == pytest.approx(2 * MAX_RETRY_AFTER_S)
