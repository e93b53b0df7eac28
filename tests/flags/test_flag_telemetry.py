"""The flag server's telemetry (flags/telemetry.py, flags/telemetry_logs.py).

On a real flag server process (``--metrics-port``) on a 3-node cluster:
``/metrics`` moves with flagd gRPC evaluations, an OFREP evaluation and a
flag change pushed to connected streams (the streams gauge counts them, the
propagation histogram gets a sample); ``promtool check metrics`` is clean;
the OFREP route label is the route's pattern, never the flag key.

In process: the gRPC interceptor's status codes, OTel server spans and the
trace id on JSON log lines, when tracing is on, the JSON log line's fields
and key redaction, and the options.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2, evaluation_pb2_grpc
from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2, sync_pb2_grpc
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client.parser import text_string_to_metric_families

from flags import telemetry
from flags.server_options import UsageError, add_serve_arguments, options_from_args
from flags.telemetry import FlagMetrics
from flags.telemetry_logs import configure_logging, redact
from harness.flag_server import FlagServerProcess
from harness.local_cluster import LocalCluster
from raftlog.v1 import otel_env
from tests.flags.acceptance_fixtures import Stack, until
from tests.tools import promtool

pytestmark = pytest.mark.timeout(180)

SDK_KEY = "rlf_0123456789abcdef_" + "S" * 43


class _NullExporter(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- the process on a real cluster -------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = Path(tmp_path_factory.mktemp("flag-telemetry"))
    cluster = LocalCluster(root / "cluster", topics=())
    server = FlagServerProcess(root / "flag-server", [], cluster.api_key, metrics_port=0)
    running = Stack(cluster, server, root)
    try:
        cluster.start_all()
        server.bootstrap = ",".join(running.bootstrap)
        running.start_server()
        yield running
    finally:
        running.close()


def _scrape(server: FlagServerProcess, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(server.metrics_url + "/metrics", headers={"Accept": accept or "*/*"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return answer.read().decode(), answer.headers["Content-Type"]


def _samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _ofrep_evaluate(server: FlagServerProcess, key: str, flag: str) -> int:
    request = urllib.request.Request(
        f"{server.ofrep_url}/ofrep/v1/evaluate/flags/{flag}",
        data=json.dumps({"context": {"targetingKey": "user-1"}}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_metrics_move_with_calls_streams_and_a_pushed_change(stack: Stack) -> None:
    server = stack.server
    tenant, key = stack.tenant_with_flags("metrics")
    before = _samples(_scrape(server)[0])
    selector = (("flagd-selector", key),)
    with grpc.insecure_channel(server.eval_address) as channel:
        stub = evaluation_pb2_grpc.ServiceStub(channel)
        for _ in range(3):
            stub.ResolveBoolean(evaluation_pb2.ResolveBooleanRequest(flag_key="bool-flag"), metadata=selector)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ResolveBoolean(
                evaluation_pb2.ResolveBooleanRequest(flag_key="bool-flag"),
                metadata=(("flagd-selector", SDK_KEY),),
            )
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert _ofrep_evaluate(server, key, "bool-flag") == 200

    with grpc.insecure_channel(server.sync_address) as channel:
        stream = sync_pb2_grpc.FlagSyncServiceStub(channel).SyncFlags(
            sync_pb2.SyncFlagsRequest(), metadata=selector
        )
        first = next(stream)  # connected: its watcher is registered
        events = urllib.request.urlopen(f"{server.ofrep_url}/ofrep/v1/events?key={key}", timeout=10)
        try:
            until(
                lambda: _value(_samples(_scrape(server)[0]), "raftlog_flags_streams") == 2, what="2 streams"
            )
            tenant.set_enabled("bool-flag", False)
            pushed = next(stream)  # the change reached the stream
            assert pushed.flag_configuration != first.flag_configuration
            text, content_type = _scrape(server)
        finally:
            events.close()
            stream.cancel()

    assert content_type.startswith("text/plain; version=0.0.4")
    after = _samples(text)
    evaluation = {"service": "flagd.evaluation.v1.Service", "method": "ResolveBoolean"}
    handled = "raftlog_rpc_server_handled_total"
    assert (
        _value(after, handled, **evaluation, code="OK") - _value(before, handled, **evaluation, code="OK")
        == 3
    )
    assert _value(after, handled, **evaluation, code="UNAUTHENTICATED") >= 1
    assert _value(after, "raftlog_rpc_server_handling_seconds_count", **evaluation) >= 4
    flag_route = {"route": "/ofrep/v1/evaluate/flags/{key}"}
    http = "raftlog_flags_http_requests_total"
    assert _value(after, http, **flag_route, code="200") - _value(before, http, **flag_route, code="200") == 1
    assert _value(after, "raftlog_flags_http_request_seconds_count", **flag_route) >= 1
    changes = "raftlog_flags_changes_total"
    assert _value(after, changes) - _value(before, changes) >= 1
    propagation = "raftlog_flags_change_propagation_seconds"
    assert _value(after, propagation + "_count") - _value(before, propagation + "_count") >= 1
    assert 0 <= _value(after, propagation + "_sum") - _value(before, propagation + "_sum") < 30
    assert _value(after, "process_resident_memory_bytes") > 0
    # Both streams gone: the gauge comes back down. The flagd stream's end is
    # seen at once; a change-ping client that left, at the next write to it.
    until(
        lambda: _value(_samples(_scrape(server)[0]), "raftlog_flags_streams") <= 1, what="flagd stream gone"
    )
    tenant.set_enabled("bool-flag", True)
    until(lambda: _value(_samples(_scrape(server)[0]), "raftlog_flags_streams") == 0, what="no streams")

    checked = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == "", checked.stdout + checked.stderr


def test_the_ofrep_route_label_is_the_pattern_never_the_flag_key(stack: Stack) -> None:
    server = stack.server
    _, key = stack.tenant_with_flags("routes")
    assert _ofrep_evaluate(server, key, "no-such-flag-q7") == 404
    assert _ofrep_evaluate(server, key, "string-flag") == 200
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{server.ofrep_url}/not/a/route-z9", timeout=5)
    samples = _samples(_scrape(server)[0])
    routes = {
        dict(labels)["route"] for (name, labels) in samples if name == "raftlog_flags_http_requests_total"
    }
    assert "/ofrep/v1/evaluate/flags/{key}" in routes
    assert "unmatched" in routes
    assert not any("no-such-flag" in r or "string-flag" in r or "route-z9" in r for r in routes), routes
    flag_route = {"route": "/ofrep/v1/evaluate/flags/{key}"}
    assert _value(samples, "raftlog_flags_http_requests_total", **flag_route, code="404") >= 1


def test_metrics_port_names_its_path_and_speaks_openmetrics(stack: Stack) -> None:
    with urllib.request.urlopen(stack.server.metrics_url + "/", timeout=5) as answer:
        assert "/metrics" in answer.read().decode()
    text, content_type = _scrape(stack.server, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")


# --- in process: gRPC codes, spans, logs, options ---------------------------------------


async def _ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    logging.getLogger("flags.test").warning("answering with key %s", SDK_KEY)
    return b"ok"


async def _refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
    raise AssertionError("unreachable")


async def _crash(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise ValueError("boom")


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"1"
    yield b"2"


def _probe_handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "test.v1.Probe",
        {
            "Ok": grpc.unary_unary_rpc_method_handler(_ok),
            "Refuse": grpc.unary_unary_rpc_method_handler(_refuse),
            "Crash": grpc.unary_unary_rpc_method_handler(_crash),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        },
    )


async def _call_probe(interceptors: list[grpc.aio.ServerInterceptor]) -> None:
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers((_probe_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await channel.unary_unary("/test.v1.Probe/Ok")(b"") == b"ok"
            assert await channel.unary_unary("/test.v1.Probe/Ok")(b"") == b"ok"
            for method, code in (
                ("Refuse", grpc.StatusCode.PERMISSION_DENIED),
                ("Crash", grpc.StatusCode.UNKNOWN),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await channel.unary_unary(f"/test.v1.Probe/{method}")(b"")
                assert failed.value.code() is code
            assert [m async for m in channel.unary_stream("/test.v1.Probe/Stream")(b"")] == [b"1", b"2"]
            with pytest.raises(grpc.aio.AioRpcError):
                await channel.unary_unary("/test.v1.Probe/Nope")(b"")
    finally:
        await server.stop(None)


async def test_the_interceptor_counts_each_status_by_method() -> None:
    metrics = FlagMetrics()
    await _call_probe([metrics.rpc_interceptor()])
    samples = _samples(metrics.exposition(None)[0].decode())
    handled = "raftlog_rpc_server_handled_total"
    probe = {"service": "test.v1.Probe"}
    assert _value(samples, handled, **probe, method="Ok", code="OK") == 2
    assert _value(samples, handled, **probe, method="Refuse", code="PERMISSION_DENIED") == 1
    assert _value(samples, handled, **probe, method="Crash", code="UNKNOWN") == 1
    assert _value(samples, handled, **probe, method="Stream", code="OK") == 1
    assert _value(samples, "raftlog_rpc_server_handling_seconds_count", **probe, method="Ok") == 2
    assert not any(dict(labels).get("method") == "Nope" for _, labels in samples)  # the caller's name


async def test_tracing_gives_server_spans_and_json_logs_carry_their_trace_id() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    assert telemetry.server_interceptors() == []  # off: not a single interceptor
    exporter = InMemorySpanExporter()
    assert telemetry.configure_tracing({"OTEL_TRACES_EXPORTER": "otlp"}, exporter=exporter)
    lines = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("json", stream=lines)
        interceptors = telemetry.server_interceptors()
        assert len(interceptors) == 1
        await _call_probe(interceptors)
    finally:
        telemetry.shutdown_tracing()
        root.handlers[:], root.level = saved[0], saved[1]
    assert telemetry.server_interceptors() == []
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert "/test.v1.Probe/Ok" in spans and "/test.v1.Probe/Refuse" in spans
    assert spans["/test.v1.Probe/Ok"].resource.attributes["service.name"] == "raftlog-flags"
    logged = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert logged, "the handler logged nothing"
    line = logged[0]
    ok_traces = {
        format(s.context.trace_id, "032x") for s in exporter.get_finished_spans() if s.name.endswith("/Ok")
    }
    assert line["trace_id"] in ok_traces
    assert {"ts", "level", "logger", "message", "service"} <= line.keys()
    assert (line["level"], line["logger"], line["service"]) == ("WARNING", "flags.test", "raftlog-flags")
    assert SDK_KEY not in lines.getvalue() and "rlf_0123456789abcdef_[redacted]" in line["message"]


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "otlp"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
        {"OTEL_SDK_DISABLED": " TRUE ", "OTEL_TRACES_EXPORTER": "otlp"},
        {"OTEL_SDK_DISABLED": "1", "OTEL_TRACES_EXPORTER": "otlp"},  # not a true value in OTel
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
    ],
)
def test_tracing_is_on_exactly_when_the_nodes_rule_says(env: dict[str, str]) -> None:
    """The flag server turns tracing on for the same environments as a node
    (the one decision, raftlog.v1.otel_env), and a refused protocol leaves it off."""
    try:
        wanted = otel_env.otlp_wanted(env)
    except ValueError:
        wanted = False
    try:
        assert telemetry.configure_tracing(env, exporter=_NullExporter()) is wanted
        assert bool(telemetry.server_interceptors()) is wanted
    finally:
        telemetry.shutdown_tracing()


def test_a_refused_otlp_protocol_is_logged_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    with caplog.at_level(logging.ERROR, logger="flags.telemetry"):
        assert not telemetry.configure_tracing(env, exporter=_NullExporter())
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in caplog.text


def test_text_logs_redact_keys_and_bearer_tokens() -> None:
    api_key = "rlk_fedcba9876543210_" + "a" * 43
    assert redact(f"key {api_key} and {SDK_KEY}") == (
        "key rlk_fedcba9876543210_[redacted] and rlf_0123456789abcdef_[redacted]"
    )
    assert redact("authorization: Bearer abc.def-ghi") == "authorization: Bearer [redacted]"
    lines = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("text", stream=lines)
        try:
            raise RuntimeError(f"refused {api_key}")
        except RuntimeError:
            logging.getLogger("flags.test").exception("call failed for Bearer %s", SDK_KEY)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    assert api_key not in lines.getvalue() and SDK_KEY not in lines.getvalue()
    assert "RuntimeError: refused rlk_fedcba9876543210_[redacted]" in lines.getvalue()


async def test_the_http_route_label_is_the_pattern_in_process() -> None:
    metrics = FlagMetrics()

    async def one(request: web.Request) -> web.Response:
        return web.Response(status=200 if request.match_info["key"] == "a" else 404)

    app = web.Application()
    app.router.add_post("/things/{key}", one)
    metrics.instrument_app(app)
    async with TestClient(TestServer(app)) as client:
        for key in ("a", "b-secret-ish", "c"):
            await client.post(f"/things/{key}")
        await client.get("/elsewhere/x")
        await client.options("/things/a")
    samples = _samples(metrics.exposition(None)[0].decode())
    http = "raftlog_flags_http_requests_total"
    assert _value(samples, http, route="/things/{key}", code="200") == 1
    assert _value(samples, http, route="/things/{key}", code="404") == 2
    assert _value(samples, http, route="unmatched", code="404") == 1
    assert _value(samples, http, route="preflight", code="405") == 1
    assert not any("b-secret-ish" in str(labels) for _, labels in samples)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_options_metrics_port_and_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAFTLOG_API_KEY", "rlk_fedcba9876543210_" + "a" * 43)
    monkeypatch.delenv("RAFTLOG_LOG_FORMAT", raising=False)
    options = options_from_args(_parse([]))
    assert (options.metrics_port, options.log_format) == (0, "text")
    assert options_from_args(_parse(["--metrics-port", "9104", "--log-format", "json"])).metrics_port == 9104
    monkeypatch.setenv("RAFTLOG_LOG_FORMAT", "json")
    assert options_from_args(_parse([])).log_format == "json"
    assert options_from_args(_parse(["--log-format", "text"])).log_format == "text"
    monkeypatch.setenv("RAFTLOG_LOG_FORMAT", "yaml")
    with pytest.raises(UsageError, match="RAFTLOG_LOG_FORMAT='yaml'"):
        options_from_args(_parse([]))
    monkeypatch.delenv("RAFTLOG_LOG_FORMAT")
    with pytest.raises(UsageError, match="--metrics-port 70000"):
        options_from_args(_parse(["--metrics-port", "70000"]))
