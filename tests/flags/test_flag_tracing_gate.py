"""The flag server's gRPC telemetry in process (flags/telemetry.py): the
sampling gate in front of OpenTelemetry's server interceptor, and the
counting interceptor's DEADLINE_EXCEEDED rule.

- The gate decides before any span work: an unsampled call reaches its
  handler with gRPC's own servicer context (the instrumentation's wrapper
  is never built) and makes no span; a sampled root call's span has the
  trace id the gate sampled with (the sampler is asked twice with the same
  id, so the effective rate is the sampler's); a parent's decision is
  followed both ways; health and reflection calls get no span and no
  sampler decision at all.
- A call cancelled because its deadline passed counts as
  DEADLINE_EXCEEDED (the node's front door's rule); one the client
  cancelled early counts as CANCELLED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
)
from prometheus_client.parser import text_string_to_metric_families

from flags import telemetry
from flags.telemetry import FlagMetrics

pytestmark = pytest.mark.timeout(30)

OTLP_ON = {"OTEL_TRACES_EXPORTER": "otlp"}
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SAMPLED_PARENT = f"00-{TRACE_ID:032x}-b7ad6b7169203331-01"
UNSAMPLED_PARENT = f"00-{TRACE_ID:032x}-b7ad6b7169203331-00"


class SpySampler(Sampler):
    """``inner``'s decisions, with every question asked recorded."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner
        self.asked: list[tuple[str, int]] = []

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, *args: Any, **kw: Any
    ) -> SamplingResult:
        self.asked.append((name, trace_id))
        return self.inner.should_sample(parent_context, trace_id, name, *args, **kw)

    def get_description(self) -> str:
        return f"Spy({self.inner.get_description()})"


contexts_seen: list[str] = []


async def _ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    contexts_seen.append(type(context).__name__)
    return b"ok"


async def _slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(10)
    return b"late"


def _probe() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "test.v1.Probe",
        {
            "Ok": grpc.unary_unary_rpc_method_handler(_ok),
            "Slow": grpc.unary_unary_rpc_method_handler(_slow),
        },
    )


async def _serve(interceptors: Sequence[grpc.aio.ServerInterceptor]) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers((_probe(),))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
def traced() -> Iterator[tuple[InMemorySpanExporter, list[SpySampler]]]:
    """Sets up tracing with the sampler a test gives (``start(inner)``)."""
    exporter = InMemorySpanExporter()
    spies: list[SpySampler] = []
    yield exporter, spies
    telemetry.shutdown_tracing()


def _start(exporter: InMemorySpanExporter, spies: list[SpySampler], inner: Sampler) -> SpySampler:
    spy = SpySampler(inner)
    spies.append(spy)
    assert telemetry.configure_tracing(OTLP_ON, exporter=exporter, sampler=spy)
    return spy


async def _calls(metadata: tuple[tuple[str, str], ...] = (), health_calls: int = 0) -> None:
    server, address = await _serve(telemetry.server_interceptors())
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            assert await channel.unary_unary("/test.v1.Probe/Ok")(b"", metadata=metadata) == b"ok"
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(health_calls):
                answer = await stub.Check(health_pb2.HealthCheckRequest(), metadata=metadata)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)
    telemetry._provider.force_flush()


async def test_an_unsampled_call_gets_no_span_and_no_span_work(traced: Any) -> None:
    exporter, spies = traced
    spy = _start(exporter, spies, ALWAYS_OFF)
    contexts_seen.clear()
    await _calls()
    assert exporter.get_finished_spans() == ()
    assert len(spy.asked) == 1  # the gate's decision and nothing else
    # gRPC's own context: the instrumentation never wrapped the call.
    assert contexts_seen and "OpenTelemetry" not in contexts_seen[0]


async def test_a_sampled_root_span_has_the_trace_id_the_gate_drew(traced: Any) -> None:
    exporter, spies = traced
    spy = _start(exporter, spies, ALWAYS_ON)
    contexts_seen.clear()
    await _calls()
    (span,) = exporter.get_finished_spans()
    assert span.name == "/test.v1.Probe/Ok"
    assert span.resource.attributes["service.name"] == "raftlog-flags"
    # Asked by the gate, then by the tracer, about the same trace id: one decision.
    assert [trace_id for _, trace_id in spy.asked] == [span.context.trace_id] * 2
    assert "OpenTelemetry" in contexts_seen[0]


@pytest.mark.parametrize(("traceparent", "spans"), [(SAMPLED_PARENT, 1), (UNSAMPLED_PARENT, 0)])
async def test_the_callers_decision_is_followed(traced: Any, traceparent: str, spans: int) -> None:
    exporter, spies = traced
    # Roots would go the other way than the parent says, both times.
    _start(exporter, spies, ParentBased(ALWAYS_OFF if spans else ALWAYS_ON))
    await _calls(metadata=(("traceparent", traceparent),))
    finished = exporter.get_finished_spans()
    assert len(finished) == spans
    if spans:
        assert finished[0].context.trace_id == TRACE_ID
        assert finished[0].parent is not None and finished[0].parent.span_id == 0xB7AD6B7169203331


async def test_health_checks_get_no_span_and_no_decision(traced: Any) -> None:
    exporter, spies = traced
    spy = _start(exporter, spies, ALWAYS_ON)
    await _calls(health_calls=3)
    assert [span.name for span in exporter.get_finished_spans()] == ["/test.v1.Probe/Ok"]
    assert all(name == "/test.v1.Probe/Ok" for name, _ in spy.asked)
    gate = telemetry._SamplingGate(spy, lambda: TRACE_ID)
    for method in (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        b"/grpc.health.v1.Health/Watch",
    ):
        assert gate(_Details(method)) is False
    assert all(name == "/test.v1.Probe/Ok" for name, _ in spy.asked)


class _Details:
    def __init__(self, method: str | bytes) -> None:
        self.method = method
        self.invocation_metadata = ()


# --- DEADLINE_EXCEEDED ---------------------------------------------------------------------


def _handled(metrics: FlagMetrics, method: str) -> dict[str, float]:
    text = metrics.exposition(None)[0].decode()
    return {
        sample.labels["code"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "raftlog_rpc_server_handled_total"
        and sample.labels["method"] == method
        and sample.value
    }


async def test_a_call_cut_by_its_deadline_counts_deadline_exceeded() -> None:
    metrics = FlagMetrics()
    server, address = await _serve([metrics.rpc_interceptor()])
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            slow = channel.unary_unary("/test.v1.Probe/Slow")
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await slow(b"", timeout=0.3)
            assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            call = slow(b"")  # no deadline: the client leaves after a while
            await asyncio.sleep(0.2)
            call.cancel()
            async with asyncio.timeout(5):
                while sum(_handled(metrics, "Slow").values()) < 2:  # counted as the handler unwinds
                    await asyncio.sleep(0.02)
    finally:
        await server.stop(None)
    assert _handled(metrics, "Slow") == {"DEADLINE_EXCEEDED": 1.0, "CANCELLED": 1.0}
