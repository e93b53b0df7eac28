"""OpenTelemetry traces (cluster/telemetry/tracing.py, client/trace_context.py,
harness/otlp_receiver.py).

- Which ``OTEL_*`` settings turn tracing on (``otlp_wanted``), and that with
  none a node installs nothing: no provider, no interceptor, no headers
  (checked in a fresh interpreter: a provider is once per process).
- The partition child spans made from ``ProposalTiming`` marks: nested in
  ``raft.propose``, ordered, and absent for a step not reached.
- The SDK carries the caller's span on its calls and in a producer batch,
  and its background tasks do not inherit it.
- On real processes: a produce sent inside a client span to a node that is
  not the partition's leader yields one trace across two nodes, exported
  over OTLP to a fake receiver: client span -> entry node's server span ->
  leader's server span (-> the partition spans, when the replica fills marks).
  The SDK may try more than once (the entry node may not know the leader yet):
  every attempt is an entry-node span under the client span, every span on
  the leader a forward from one of them, and the chain checked is the one
  that wrote (the parent of ``raft.propose``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased

from client import auth
from client.batches import PartitionQueue
from client.metadata import TopicPartition
from client.producer import Producer
from client.trace_context import call_in, current_trace_context, trace_headers, untraced
from cluster.telemetry import tracing
from harness.local_cluster import LocalCluster, TopicSpec
from harness.otlp_receiver import OtlpReceiver, ReceivedSpan
from partitions.proposal_timing import ProposalTiming
from raftlog.v1 import log_pb2, log_pb2_grpc, otel_env
from raftlog.v1.record_batch import Record
from tests.client.test_producer import FakeCluster, _FakeNode

REPO = Path(__file__).resolve().parents[2]
SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind


def sampled(traceparent: str) -> bool:
    """The W3C sampled flag (the low bit of the last field)."""
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)


# --- which settings turn it on -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_TRACES_SAMPLER": "always_on"}, False),  # a sampler alone exports nowhere
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, True),
        # OTel's boolean: only "true" (any case) disables; "1" is false, as the SDK reads it.
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": " True "}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "1"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, True),
    ],
)
def test_only_an_otlp_exporter_or_endpoint_turns_tracing_on(env: dict[str, str], wanted: bool) -> None:
    assert tracing.otlp_wanted(env) is wanted


def test_an_unusual_sdk_disabled_spelling_is_named() -> None:
    assert otel_env.sdk_disabled_warning({"OTEL_SDK_DISABLED": "yes"}) is not None
    assert "'yes'" in (otel_env.sdk_disabled_warning({"OTEL_SDK_DISABLED": "yes"}) or "")
    for fine in ({}, {"OTEL_SDK_DISABLED": "TRUE"}, {"OTEL_SDK_DISABLED": "false"}):
        assert otel_env.sdk_disabled_warning(fine) is None


def test_the_node_and_the_flag_server_share_the_decision() -> None:
    from flags import telemetry as flag_telemetry

    assert tracing.otlp_wanted is otel_env.otlp_wanted is flag_telemetry.otlp_wanted


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "edge"}, True),
        ({"OTEL_SERVICE_NAME": "  "}, False),
        ({"OTEL_RESOURCE_ATTRIBUTES": "team=a, service.name=edge"}, True),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.namespace=x"}, False),
    ],
)
def test_the_environment_names_the_service(env: dict[str, str], named: bool) -> None:
    assert otel_env.service_name_from_env(env) is named


def test_a_protocol_other_than_grpc_is_refused_with_what_to_set() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc"):
        tracing.otlp_wanted(env)


PROBE = """
import json, sys
from opentelemetry import trace
from cluster.telemetry import tracing
on = tracing.configure_tracing("raftlog-node", 7)
provider = trace.get_tracer_provider()
resource = dict(getattr(provider, "resource", None).attributes) if on else {}
sampler = provider.sampler.get_description() if on else ""
print(json.dumps({
    "on": on,
    "again": tracing.configure_tracing("raftlog-node", 7),
    "provider": type(provider).__name__,
    "interceptors": [type(i).__name__ for i in tracing.server_interceptors()],
    "headers": list(tracing.trace_headers()),
    "timing": tracing.proposal_timing() is not None,
    "resource": {k: v for k, v in resource.items() if k in ("service.name", "raftlog.node_id")},
    "sdk_loaded": "opentelemetry.sdk.trace" in sys.modules,
    "sampler": sampler,
}))
"""


def probe(**env: str) -> dict[str, Any]:
    """``configure_tracing`` in a fresh interpreter with only ``env`` of the
    ``OTEL_*`` variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_without_otel_settings_nothing_is_installed_and_no_interceptor_runs() -> None:
    found = probe()
    assert found["on"] is False and found["again"] is False
    assert found["provider"] == "ProxyTracerProvider"  # the API's no-op default: nothing exports
    assert found["interceptors"] == [] and found["headers"] == [] and found["timing"] is False
    assert found["sdk_loaded"] is False


def test_an_endpoint_installs_the_provider_with_the_node_resource_and_the_env_sampler() -> None:
    found = probe(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_TRACES_SAMPLER="traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.01",
    )
    assert found["on"] is True and found["again"] is True
    assert found["provider"] == "TracerProvider"
    assert found["interceptors"] == ["OpenTelemetryAioServerInterceptor"]
    assert found["resource"] == {"service.name": "raftlog-node", "raftlog.node_id": 7}
    assert found["sampler"].startswith("TraceIdRatioBased{0.01")
    # No span current (an unsampled call): a forward says "not sampled".
    [[key, traceparent]] = found["headers"]
    assert key == "traceparent" and not sampled(traceparent) and found["timing"] is False
    named = probe(OTEL_TRACES_EXPORTER="otlp", OTEL_SERVICE_NAME="edge-logs")
    assert named["resource"]["service.name"] == "edge-logs"  # the operator's name wins
    assert named["sampler"].startswith("ParentBased{root:AlwaysOnSampler,")  # the SDK default
    assert (
        probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://x:4318", OTEL_EXPORTER_OTLP_PROTOCOL="http/json")["on"]
        is False
    )


def test_only_public_raftlog_calls_are_traced() -> None:
    class Details:
        def __init__(self, method: str) -> None:
            self.method = method

    assert tracing._public_call(Details("/raftlog.v1.LogService/Produce"))
    assert tracing._public_call(Details("/raftlog.v1.AdminService/CreateTopic"))
    for internal in (
        "/raftlog.internal.v1.RaftTransport/Stream",
        "/raftlog.internal.v1.NodeAdmin/Stats",
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ):
        assert not tracing._public_call(Details(internal))


# --- the sampling gate, on a real grpc.aio server ---------------------------------------------


class Recorder(log_pb2_grpc.LogServiceServicer):
    """A Produce that records what tracing gives a handler."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, str]] = []  # (marks asked for, the forward's traceparent)

    async def Produce(self, request: Any, context: Any) -> log_pb2.ProduceResponse:
        headers = dict(tracing.trace_headers())
        self.seen.append((tracing.proposal_timing() is not None, headers.get(tracing.TRACEPARENT, "")))
        return log_pb2.ProduceResponse()


async def test_the_gate_decides_once_and_an_unsampled_call_gets_no_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    installed = tracing.assemble(
        SimpleSpanProcessor(exporter), {}, sampler=ParentBased(TraceIdRatioBased(0.5))
    )
    monkeypatch.setattr(tracing, "_installed", installed)
    interceptor: Any = installed.interceptor
    gate = interceptor._filter
    decided: list[int] = []  # the trace id of each root call the gate let through

    def recording_gate(details: Any) -> bool:
        passed = bool(gate(details))
        if passed and tracing._decided_trace_id.get():
            decided.append(tracing._decided_trace_id.get())
        return passed

    interceptor._filter = recording_gate
    recorder = Recorder()
    server = grpc.aio.server(interceptors=[interceptor])
    log_pb2_grpc.add_LogServiceServicer_to_server(recorder, server)

    async def internal(request: bytes, context: Any) -> bytes:
        return request

    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "raftlog.internal.v1.Probe", {"Call": grpc.unary_unary_rpc_method_handler(internal)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = log_pb2_grpc.LogServiceStub(channel)
            for _ in range(40):
                await stub.Produce(log_pb2.ProduceRequest())
            roots = len(recorder.seen)
            parent = "00-" + "ab" * 16 + "-" + "cd" * 8
            await stub.Produce(log_pb2.ProduceRequest(), metadata=((tracing.TRACEPARENT, parent + "-01"),))
            await stub.Produce(log_pb2.ProduceRequest(), metadata=((tracing.TRACEPARENT, parent + "-00"),))
            probe_call = channel.unary_unary("/raftlog.internal.v1.Probe/Call")
            assert await probe_call(b"x") == b"x"
    finally:
        await server.stop(None)
        installed.provider.shutdown()
    spans = exporter.get_finished_spans()
    root_spans = [s for s in spans if s.parent is None]
    # Each root the gate passed is one span with the gate's trace id: one decision, not two.
    assert 0 < len(decided) < roots == 40
    assert sorted(s.context.trace_id for s in root_spans) == sorted(decided)
    for marks, forwarded in recorder.seen[:roots]:
        # Sampled: marks asked for and the span's context forwarded; not: neither, and the
        # forward says "not sampled" (flags 00) so the leader does not sample on its own.
        assert sampled(forwarded) is marks
    assert sum(marks for marks, _ in recorder.seen[:roots]) == len(decided)
    # A sampled remote parent is followed, an unsampled one is not; internal calls never get a span.
    child = [s for s in spans if s.parent is not None]
    assert len(child) == 1 and child[0].context.trace_id == int("ab" * 16, 16)
    assert recorder.seen[roots][0] is True and recorder.seen[roots][1].startswith("00-" + "ab" * 16)
    assert recorder.seen[roots + 1][0] is False and not sampled(recorder.seen[roots + 1][1])
    assert all(s.name == "/raftlog.v1.LogService/Produce" for s in spans)


# --- the partition spans -----------------------------------------------------------------------


@pytest.fixture
def in_memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[InMemorySpanExporter, trace.Tracer]]:
    """Tracing "on" in this process without touching the global provider:
    the module's tracer writes to memory."""
    exporter = InMemorySpanExporter()
    installed = tracing.assemble(SimpleSpanProcessor(exporter), {}, sampler=ALWAYS_ON)
    monkeypatch.setattr(tracing, "_installed", installed)
    yield exporter, installed.provider.get_tracer("test")
    installed.provider.shutdown()


def by_name(spans: Any) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def test_reached_steps_become_nested_ordered_child_spans(
    in_memory: tuple[InMemorySpanExporter, trace.Tracer],
) -> None:
    exporter, tracer = in_memory
    with tracer.start_as_current_span("/raftlog.v1.LogService/Produce") as server:
        timing = tracing.proposal_timing()
        assert timing is not None
        base = 1_000_000_000
        timing.proposed_ns, timing.index = base, 42
        timing.sync_started_ns, timing.sync_ended_ns = base + 100_000, base + 900_000
        timing.committed_ns, timing.applied_ns = base + 1_200_000, base + 1_300_000
        tracing.record_proposal_spans(timing, group=5)
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {server.name, *tracing.PROPOSAL_SPANS}  # type: ignore[attr-defined]
    propose = spans["raft.propose"]
    assert propose.parent is not None and propose.parent.span_id == server.get_span_context().span_id
    assert dict(propose.attributes or {}) == {"raftlog.group": 5, "raft.index": 42}
    for name in ("raft.commit", "raft.apply", "group_commit.sync"):
        child = spans[name]
        assert child.parent is not None and child.parent.span_id == propose.context.span_id
        assert propose.start_time <= child.start_time <= child.end_time <= propose.end_time  # type: ignore[operator]
    commit, apply, sync = spans["raft.commit"], spans["raft.apply"], spans["group_commit.sync"]
    assert commit.end_time == apply.start_time
    # Durations are the marks' differences, exactly (one clock offset for all).
    assert commit.end_time - commit.start_time == 1_200_000  # type: ignore[operator]
    assert apply.end_time - apply.start_time == 100_000  # type: ignore[operator]
    assert sync.end_time - sync.start_time == 800_000  # type: ignore[operator]
    assert propose.end_time - propose.start_time == 1_300_000  # type: ignore[operator]


def test_unreached_steps_have_no_span_and_no_marks_no_spans_at_all(
    in_memory: tuple[InMemorySpanExporter, trace.Tracer],
) -> None:
    exporter, tracer = in_memory
    with tracer.start_as_current_span("produce"):
        tracing.record_proposal_spans(ProposalTiming(), group=1)  # marks not filled: nothing
    assert [s.name for s in exporter.get_finished_spans()] == ["produce"]
    exporter.clear()
    with tracer.start_as_current_span("produce"):
        # Proposed, synced locally, then the leadership was lost: no commit, no apply.
        timing = ProposalTiming(proposed_ns=10_000, sync_started_ns=11_000, sync_ended_ns=12_000)
        tracing.record_proposal_spans(timing, group=1, error=RuntimeError("lost"), now_ns=50_000)
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"produce", "raft.propose", "group_commit.sync"}
    assert spans["raft.propose"].end_time - spans["raft.propose"].start_time == 40_000  # type: ignore[operator]
    assert spans["raft.propose"].status.status_code is trace.StatusCode.ERROR


def test_an_unsampled_call_asks_for_no_marks(in_memory: tuple[InMemorySpanExporter, trace.Tracer]) -> None:
    exporter, _ = in_memory
    off = TracerProvider(sampler=ALWAYS_OFF).get_tracer("off")
    with off.start_as_current_span("produce"):
        assert tracing.proposal_timing() is None
        tracing.record_proposal_spans(ProposalTiming(proposed_ns=1, committed_ns=2, applied_ns=3), group=1)
    assert exporter.get_finished_spans() == ()


# --- the SDK -----------------------------------------------------------------------------------


def test_the_sdk_adds_the_current_span_to_its_calls_and_nothing_without_one() -> None:
    tracer = TracerProvider().get_tracer("app")
    seen: list[Any] = []

    async def continuation(details: Any, request: Any) -> None:
        seen.append(dict(details.metadata))

    async def run() -> str:
        interceptor = auth.credentials_interceptors(auth.call_metadata("rlk_x_y", None))[0]  # type: ignore[index]
        details = grpc.aio.ClientCallDetails("/raftlog.v1.LogService/Produce", 1.0, None, None, None)
        await interceptor.intercept_unary_unary(continuation, details, object())
        with tracer.start_as_current_span("app.send") as span:
            await interceptor.intercept_unary_unary(continuation, details, object())
            return f"{span.get_span_context().trace_id:032x}-{span.get_span_context().span_id:016x}"

    ids = asyncio.run(run())
    assert "traceparent" not in seen[0] and seen[0]["authorization"] == "Bearer rlk_x_y"
    traceparent = seen[1]["traceparent"]  # version-trace id-span id-flags
    assert traceparent[:-3] == f"00-{ids}" and sampled(traceparent)
    assert trace_headers() == ()


async def test_a_batch_keeps_the_span_of_its_first_traced_record_and_tasks_start_untraced() -> None:
    tracer = TracerProvider().get_tracer("app")
    q = PartitionQueue(TopicPartition("t", 0))
    loop = asyncio.get_running_loop()
    q.add(Record(value=b"a"), 10, loop.create_future(), 1 << 20, current_trace_context())
    assert q.last is not None and q.last.trace_context is None
    with tracer.start_as_current_span("first") as first:
        q.add(Record(value=b"b"), 10, loop.create_future(), 1 << 20, current_trace_context())
        with tracer.start_as_current_span("second"):
            q.add(Record(value=b"c"), 10, loop.create_future(), 1 << 20, current_trace_context())

        async def inner() -> bool:
            return trace.get_current_span().get_span_context().is_valid

        assert await asyncio.create_task(inner(), context=untraced()) is False
        assert await asyncio.create_task(inner()) is True  # what untraced() prevents
    assert trace.get_current_span() is trace.INVALID_SPAN
    made_in = call_in(q.last.trace_context, trace.get_current_span)
    assert made_in.get_span_context().span_id == first.get_span_context().span_id
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached again


class TraceRecordingCluster(FakeCluster):
    """The producer tests' scripted nodes, noting each Produce's ``traceparent``."""

    def __init__(self) -> None:
        super().__init__({"t": 1})
        self.traceparents: list[str] = []

    def make_node(self, index: int) -> _FakeNode:
        return _TraceRecordingNode(self, index)


class _TraceRecordingNode(_FakeNode):
    async def Produce(self, request: log_pb2.ProduceRequest, context: grpc.aio.ServicerContext) -> Any:
        cluster = self.fake
        assert isinstance(cluster, TraceRecordingCluster)
        cluster.traceparents.append(dict(context.invocation_metadata() or ()).get("traceparent", ""))
        return await super().Produce(request, context)


async def test_a_batch_carries_its_senders_span_and_a_later_untraced_batch_none() -> None:
    fake = TraceRecordingCluster()
    await fake.start()
    tracer = TracerProvider().get_tracer("app")
    try:
        async with Producer(fake.addresses, api_key="rlk_x_y", linger_ms=0) as producer:
            with tracer.start_as_current_span("first") as span:
                await (await producer.send("t", b"a", partition=0))  # starts the partition's sender task
            await (await producer.send("t", b"b", partition=0))
    finally:
        await fake.stop()
    first, second = fake.traceparents
    assert first.split("-")[1] == f"{span.get_span_context().trace_id:032x}"
    assert second == ""  # the sender task did not keep the span it was started in


# --- real processes ----------------------------------------------------------------------------


def node_of(span: ReceivedSpan) -> Any:
    return span.resource.get(tracing.NODE_ID_ATTRIBUTE)


async def leader_of(producer: Producer, topic: str, partition: int, timeout: float = 15.0) -> str:
    """The partition leader's address once some node knows it."""
    async with asyncio.timeout(timeout):
        while True:
            await producer.metadata.refresh([topic])
            address = await producer.metadata.leader(topic, partition)
            if address:
                return address
            await asyncio.sleep(0.1)


PRODUCE = "/raftlog.v1.LogService/Produce"


def forwarded_chain(
    spans: list[ReceivedSpan], entry: int, leader: int
) -> tuple[ReceivedSpan, ReceivedSpan, ReceivedSpan] | None:
    """(client span, entry node's Produce span, leader's Produce span) for the
    produce that wrote: the leader's Produce span is the parent of
    ``raft.propose``; None until all three (and every parent of a Produce span
    on the leader) have been received. A span is exported when it ends, and
    the entry node's span ends after the leader's, which it waits for."""
    by_id = {s.span_id: s for s in spans}
    propose = next((s for s in spans if s.name == "raft.propose"), None)
    client = next((s for s in spans if s.name == "app.produce"), None)
    if propose is None or client is None:
        return None
    leader_span = by_id.get(propose.parent_span_id)
    if leader_span is None or leader_span.name != PRODUCE or node_of(leader_span) != leader:
        return None
    on_leader = [s for s in spans if s.name == PRODUCE and node_of(s) == leader]
    if not all(s.parent_span_id in by_id for s in on_leader):
        return None
    entry_span = by_id[leader_span.parent_span_id]
    if entry_span.name != PRODUCE or node_of(entry_span) != entry:
        return None
    return client, entry_span, leader_span


def names_ready(spans: list[ReceivedSpan]) -> bool:
    return {s.name for s in spans} >= {"app.produce", PRODUCE, *tracing.PROPOSAL_SPANS}


@pytest.mark.timeout(90)
async def test_a_produce_through_a_non_leader_is_one_trace_across_two_nodes(tmp_path: Path) -> None:
    with OtlpReceiver() as receiver:
        # The nodes take OTEL_* from node_env only (never inherited: harness/local_cluster.py).
        otel = {**receiver.env(), "OTEL_TRACES_SAMPLER": "always_on", "OTEL_BSP_SCHEDULE_DELAY": "50"}
        # No leader balancing during the test: the leader found below stays it.
        cluster = LocalCluster(
            tmp_path, topics=[TopicSpec("t", partitions=1)], leader_balance_ms=600_000, node_env=otel
        )
        # The test's own spans go to the same receiver, through its own provider.
        provider = TracerProvider(resource=Resource.create({"service.name": "tracing-test"}))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True))
        )
        tracer = provider.get_tracer("test")
        try:
            cluster.start_all()
            bootstrap = list(cluster.addresses.values())
            async with Producer(bootstrap, api_key=cluster.api_key) as finder:
                leader_address = await leader_of(finder, "t", 0)
            leader = next(n for n, a in cluster.addresses.items() if a == leader_address)
            entry = next(n for n in cluster.node_ids if n != leader)
            receiver.clear()  # only the traced produce below
            # The SDK believes it dials the leader; the entry node takes the call and forwards it.
            redirected = {leader_address: cluster.addresses[entry]}
            async with Producer(bootstrap, api_key=cluster.api_key, address_map=redirected) as producer:
                assert await leader_of(producer, "t", 0) == leader_address
                with tracer.start_as_current_span("app.produce") as client_span:
                    sent = await producer.send("t", b"traced", partition=0)
                await producer.flush()
                assert (await sent).offset >= 0
            trace_id = f"{client_span.get_span_context().trace_id:032x}"

            def complete(spans: list[ReceivedSpan]) -> bool:
                traced = [s for s in spans if s.trace_id == trace_id]
                return forwarded_chain(traced, entry, leader) is not None and names_ready(traced)

            spans = [s for s in receiver.wait_for(complete, timeout=15) if s.trace_id == trace_id]
        finally:
            provider.shutdown()
            cluster.close()

    by_id = {s.span_id: s for s in spans}
    chain = forwarded_chain(spans, entry, leader)
    assert chain is not None
    client, entry_span, leader_span = chain
    assert client.parent_span_id == ""  # the trace starts in the application
    servers = [s for s in spans if s.name == PRODUCE]
    assert {node_of(s) for s in servers} == {entry, leader}  # nobody else took part
    # The SDK may have tried more than once (under load the entry node may not
    # know the leader yet: NOT_LEADER without an address, retried): every
    # attempt is a server span of the entry node under the client span, and
    # every span on the leader is a forward from one of them.
    for server in servers:
        assert server.kind == SERVER
        if node_of(server) == entry:
            assert server.parent_span_id == client.span_id
        else:
            assert node_of(by_id[server.parent_span_id]) == entry
            assert by_id[server.parent_span_id].parent_span_id == client.span_id
    # client span -> entry node's server span -> leader's server span (the one that wrote)
    assert entry_span.parent_span_id == client.span_id
    assert leader_span.parent_span_id == entry_span.span_id
    assert entry_span.resource["service.name"] == leader_span.resource["service.name"] == "raftlog-node"
    assert entry_span.start_ns <= leader_span.start_ns <= leader_span.end_ns <= entry_span.end_ns
    # Only public calls are traced: nothing of the Raft transport, internal services or health.
    assert all(
        s.name == "app.produce" or s.name.startswith("/raftlog.v1.") or s.name in tracing.PROPOSAL_SPANS
        for s in spans
    )
    # always_on: the leader's replica filled every mark, so every partition
    # span is there, once, on the leader, under its Produce span.
    partition = {s.name: s for s in spans if s.name in tracing.PROPOSAL_SPANS}
    assert sorted(partition) == sorted(tracing.PROPOSAL_SPANS)
    assert sum(s.name in tracing.PROPOSAL_SPANS for s in spans) == len(tracing.PROPOSAL_SPANS)
    assert all(node_of(s) == leader for s in partition.values())
    propose, commit, apply, sync = (partition[name] for name in tracing.PROPOSAL_SPANS)
    assert propose.parent_span_id == leader_span.span_id
    assert leader_span.start_ns <= propose.start_ns <= propose.end_ns <= leader_span.end_ns
    for child in (commit, apply, sync):
        assert by_id[child.parent_span_id] is propose
        assert propose.start_ns <= child.start_ns <= child.end_ns <= propose.end_ns
    # The order of the way: proposed -> committed -> applied, and the sync
    # of the leader's copy after the proposal.
    assert commit.start_ns == propose.start_ns
    assert commit.end_ns == apply.start_ns <= apply.end_ns
    assert propose.start_ns <= sync.start_ns <= sync.end_ns
