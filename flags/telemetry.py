"""The flag server's telemetry: Prometheus metrics on ``--metrics-port`` and
OpenTelemetry server spans for its gRPC when ``OTEL_*`` asks for them.

Metrics (the names are a contract: the chart's alerts, the dashboard and the
README use them; see /tmp/work/plan19.md), in a ``CollectorRegistry`` of the
server's own, served as ``GET /metrics`` by ``metrics_app``:

- ``raftlog_rpc_server_handled_total{service,method,code}`` and
  ``raftlog_rpc_server_handling_seconds{service,method}``: every gRPC call the
  server answers (flagd evaluation and sync, admin, events, health), counted
  by ``rpc_interceptor`` when it ends; ``code`` is the gRPC status name.
  A stream is observed when it ends (its handling time is its life).
- ``raftlog_flags_http_requests_total{route,code}`` and
  ``raftlog_flags_http_request_seconds{route}``: the OFREP port's requests
  (``http_middleware``). ``route`` is the aiohttp resource's canonical
  pattern (``/ofrep/v1/evaluate/flags/{key}``), never the raw path;
  ``preflight`` for CORS preflights and ``unmatched`` for what no route
  matched, so the label's values stay a short fixed set.
- ``raftlog_flags_streams``: connected streams (flagd EventStream and
  SyncFlags, OFREP change pings), read from the stream owners' own counters
  at scrape time (``count_streams``): nothing per message.
- ``raftlog_flags_changes_total``: accepted ``__flags`` records that changed
  a flag (``on_change``; a restart replays the log, so it counts again).
- ``raftlog_flags_change_propagation_seconds``: for each such change that
  woke connected streams, from the record's log timestamp to the moment the
  streams were woken (their writes follow on the same loop turn).
- ``process_*``: ``ProcessCollector``.

Invariants: with metrics off (``--metrics-port 0``) nothing here is built
and the servers get no interceptor or middleware; with them on, a call costs
a dictionary lookup, a clock read and one counter and one histogram update
on label children resolved once per method/route (and code).

Status codes: what the handler set or aborted with; a call ended under its
handler (``CancelledError``, a stream's ``GeneratorExit``) is
``DEADLINE_EXCEEDED`` when it ended within ``DEADLINE_SLACK_S`` of its
deadline (gRPC cancels the handler when the deadline passes; the client sees
DEADLINE_EXCEEDED) and ``CANCELLED`` otherwise; ``UNKNOWN`` for an
unexpected exception. The node's front door (``_final_code``) counts the
same way, so one dashboard reads both.

Tracing (``configure_tracing``): on only when ``raftlog.v1.otel_env.otlp_wanted``
says so (the node's decision too: ``OTEL_TRACES_EXPORTER=otlp`` or an OTLP
(traces) endpoint, not ``OTEL_SDK_DISABLED=true``; a protocol other than
gRPC leaves tracing off with an error in the log); then a ``TracerProvider``
of the server's own (not the process-global one) with a
``BatchSpanProcessor(OTLPSpanExporter())`` (everything else, sampler
included, from the standard variables) and ``server_interceptors()``
returns OpenTelemetry's grpc.aio server interceptor on it, behind
``_SamplingGate``. Off, it returns no interceptor at all.
``shutdown_tracing`` flushes the batch at exit.

The gate (the interceptor's filter) decides before any span work, as the
node's does: health and reflection calls get no span; for any other call it
asks the provider's sampler, with a trace id of its own drawing for a call
without ``traceparent`` (handed to the tracer by ``_DecidedTraceIds``, so
the span, if made, has that id and the same decision) or with the
extracted parent. An unsampled call then costs one sampler decision, not
the instrumentation's context extraction, span object and wrapped context.
Why a second gate and not the node's: the node's lives in
cluster/telemetry/tracing.py, which the flag server may not import
(layout), and it needs OpenTelemetry, which the stdlib-only contract
modules under proto/ may not; the two differ only in which methods they
trace (the node: public ``raftlog.v1`` calls; here: all but health and
reflection), and tests/flags/test_flag_telemetry.py pins this one's behaviour.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler

from flags.telemetry_logs import SERVICE_NAME
from raftlog.v1.otel_env import otlp_wanted, sdk_disabled_warning, service_name_from_env

__all__ = [
    "SERVICE_NAME",
    "FlagMetrics",
    "configure_tracing",
    "metrics_app",
    "server_interceptors",
    "shutdown_tracing",
]

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"

# flagd evaluations answer in well under a millisecond; streams live for hours.
RPC_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
HTTP_BUCKETS_S = RPC_BUCKETS_S
PROPAGATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

DEADLINE_SLACK_S = 0.05
"""A call ended under its handler this close to its deadline (or past it)
counts as DEADLINE_EXCEEDED: cluster/frontend/front_door.py's rule."""
UNTRACED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Methods the sampling gate never traces (probes every few seconds, tooling)."""
TRACEPARENT = "traceparent"

PREFLIGHT_ROUTE = "preflight"
UNMATCHED_ROUTE = "unmatched"

_Behaviour = Callable[..., Any]


class FlagMetrics:
    """Every metric of one flag server (module docstring), in ``registry``."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._clock = clock
        self.rpc_handled = Counter(
            "raftlog_rpc_server_handled_total",
            "gRPC calls answered, by service, method and status code",
            ("service", "method", "code"),
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "raftlog_rpc_server_handling_seconds",
            "Time from a gRPC call's start to its end (a stream's whole life)",
            ("service", "method"),
            buckets=RPC_BUCKETS_S,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "raftlog_flags_http_requests_total",
            "OFREP-port HTTP requests answered, by route pattern and status code",
            ("route", "code"),
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "raftlog_flags_http_request_seconds",
            "OFREP-port HTTP request time (a change-ping stream's whole life), by route pattern",
            ("route",),
            buckets=HTTP_BUCKETS_S,
            registry=self.registry,
        )
        self.streams = Gauge(
            "raftlog_flags_streams",
            "Connected flag streams (flagd EventStream and SyncFlags, OFREP change pings)",
            registry=self.registry,
        )
        self._stream_sources: list[Callable[[], int]] = []
        self.streams.set_function(self._count_streams)
        self.changes = Counter(
            "raftlog_flags_changes_total",
            "Accepted __flags records that changed a flag (replayed ones too)",
            registry=self.registry,
        )
        self.propagation = Histogram(
            "raftlog_flags_change_propagation_seconds",
            "From a flag change's log timestamp to its connected streams being woken",
            buckets=PROPAGATION_BUCKETS_S,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        self._rpc_wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._http_children: dict[tuple[str, int], tuple[Any, Any]] = {}

    # --- streams and changes -------------------------------------------------------------

    def count_streams(self, *sources: Callable[[], int]) -> None:
        """Add stream counters (each returns how many streams it holds now)."""
        self._stream_sources.extend(sources)

    def _count_streams(self) -> float:
        return float(sum(source() for source in self._stream_sources))

    def on_change(self, timestamp_ms: int | None, pushed: bool) -> None:
        """``LiveFlags.on_change``: one accepted change; ``pushed``: it woke streams."""
        self.changes.inc()
        if pushed and timestamp_ms is not None:
            # The writer's clock (usually this very process): never below zero.
            self.propagation.observe(max(0.0, self._clock() - timestamp_ms / 1000))

    # --- gRPC ----------------------------------------------------------------------------

    def rpc_interceptor(self) -> grpc.aio.ServerInterceptor:
        return _RpcInterceptor(self)

    def _wrap_rpc(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` with every call counted; built once per method."""
        cached = self._rpc_wrapped.get(full_method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        service, _, method = full_method.lstrip("/").rpartition("/")
        seconds = self.rpc_seconds.labels(service, method)
        codes: dict[str, Any] = {}

        def handled(code: str) -> Any:
            child = codes.get(code)
            if child is None:
                child = codes[code] = self.rpc_handled.labels(service, method, code)
            return child

        kind = _handler_kind(handler)
        behaviour = getattr(handler, kind)
        wrapped = handler._replace(**{kind: _counted(behaviour, seconds, handled)})
        self._rpc_wrapped[full_method] = (handler, wrapped)
        return wrapped

    # --- HTTP ----------------------------------------------------------------------------

    @web.middleware
    async def http_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Count and time every request of the app it is the first middleware of."""
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            counter, seconds = self._http_child(request, status)
            counter.inc()
            seconds.observe(time.perf_counter() - start)

    def _http_child(self, request: web.Request, status: int) -> tuple[Any, Any]:
        resource = request.match_info.route.resource
        if resource is not None:
            route = resource.canonical
        else:
            route = PREFLIGHT_ROUTE if request.method == "OPTIONS" else UNMATCHED_ROUTE
        children = self._http_children.get((route, status))
        if children is None:
            children = self._http_children[(route, status)] = (
                self.http_requests.labels(route, str(status)),
                self.http_seconds.labels(route),
            )
        return children

    def instrument_app(self, app: web.Application) -> None:
        """Make ``http_middleware`` the outermost middleware of ``app`` (not yet
        started): it sees the status the app's own middlewares answer with."""
        app.middlewares.insert(0, self.http_middleware)

    # --- exposition ----------------------------------------------------------------------

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format ``accept`` asks for (OpenMetrics or text 0.0.4)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _RpcInterceptor(grpc.aio.ServerInterceptor):
    """Hands out each method's counted handler (``FlagMetrics._wrap_rpc``).
    Unknown methods (no handler) are not counted: their names are the caller's."""

    def __init__(self, metrics: FlagMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._metrics._wrap_rpc(handler_call_details.method, handler)


def _handler_kind(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "stream_stream" if handler.response_streaming else "stream_unary"
    return "unary_stream" if handler.response_streaming else "unary_unary"


def _code_name(error: BaseException | None, context: grpc.aio.ServicerContext) -> str:
    """The status a call ended with (module docstring: status codes)."""
    code = context.code()
    if code is None and isinstance(error, (asyncio.CancelledError, GeneratorExit)):  # ended under it
        remaining = context.time_remaining()
        if remaining is not None and remaining <= DEADLINE_SLACK_S:
            return "DEADLINE_EXCEEDED"
        return "CANCELLED"
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):  # some versions hand out the raw number
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return str(status.name)
    return "OK" if error is None else "UNKNOWN"


def _counted(behaviour: _Behaviour, seconds: Any, handled: Callable[[str], Any]) -> _Behaviour:
    """``behaviour`` (any of gRPC's four kinds, coroutine or async generator)
    that observes its time and status when it ends."""
    answered = handled("OK")  # the usual end, resolved once

    def ended(error: BaseException | None, context: grpc.aio.ServicerContext, start: float) -> None:
        code = None if error is not None else context.code()
        if error is None and (code is None or code is grpc.StatusCode.OK):
            answered.inc()
        else:
            handled(_code_name(error, context)).inc()
        seconds.observe(time.perf_counter() - start)

    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start = time.perf_counter()
            try:
                async for message in behaviour(request, context):
                    yield message
            except BaseException as error:
                ended(error, context, start)
                raise
            ended(None, context, start)

        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        try:
            response = await behaviour(request, context)
        except BaseException as error:
            ended(error, context, start)
            raise
        ended(None, context, start)
        return response

    return call


def metrics_app(metrics: FlagMetrics) -> web.Application:
    """``GET /metrics`` (text 0.0.4, or OpenMetrics when ``Accept`` asks) and
    ``GET /`` (names the path)."""

    async def scrape(request: web.Request) -> web.Response:
        body, content_type = metrics.exposition(request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type  # carries its own version and charset
        return response

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=f"raftlog flag server metrics: GET {METRICS_PATH}\n")

    app = web.Application()
    app.router.add_get(METRICS_PATH, scrape)
    app.router.add_get("/", index)
    return app


# --- tracing -----------------------------------------------------------------------------

_provider: Any = None
"""The ``TracerProvider`` ``configure_tracing`` installed (None: tracing off)."""
_decided_trace_id: ContextVar[int] = ContextVar("raftlog_flags_decided_trace_id", default=0)
"""The trace id the gate sampled a root call with, for the tracer to use
(the interceptor's filter and its span start run in the call's one task)."""


def _method(details: Any) -> str:
    method = details.method
    if isinstance(method, bytes):
        method = method.decode("ascii", "replace")
    return method if isinstance(method, str) else ""


class _SamplingGate:
    """The server interceptor's filter: True lets the instrumentation make
    the call's span; False leaves the call untouched (module docstring)."""

    __slots__ = ("_extract", "_kind", "_new_trace_id", "_parent_trace_id", "_sampler")

    def __init__(self, sampler: Any, new_trace_id: Callable[[], int]) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._sampler = sampler
        self._new_trace_id = new_trace_id
        self._extract = TraceContextTextMapPropagator().extract
        self._kind = trace.SpanKind.SERVER
        self._parent_trace_id = lambda context: trace.get_current_span(context).get_span_context().trace_id

    def __call__(self, details: Any) -> bool:
        method = _method(details)
        if method.startswith(UNTRACED_PREFIXES):
            return False
        traceparent = None
        for item in details.invocation_metadata or ():
            if item[0] == TRACEPARENT:
                traceparent = item[1]
                break
        if traceparent is None:  # a root: decide with a trace id the tracer will then use
            trace_id = self._new_trace_id()
            if not self._sampler.should_sample(None, trace_id, method, self._kind).decision.is_sampled():
                return False
            _decided_trace_id.set(trace_id)
            return True
        parent = self._extract({TRACEPARENT: traceparent})
        parent_id = self._parent_trace_id(parent) or self._new_trace_id()
        return bool(self._sampler.should_sample(parent, parent_id, method, self._kind).decision.is_sampled())


def configure_tracing(
    environ: Mapping[str, str] = os.environ,
    exporter: SpanExporter | None = None,
    sampler: Sampler | None = None,
) -> bool:
    """Make the tracer provider the server's interceptor uses, when
    ``otlp_wanted(environ)``; True if tracing is on. ``exporter``: instead of
    ``OTLPSpanExporter()``, ``sampler``: instead of the one ``OTEL_TRACES_SAMPLER``
    names (tests). The provider is the server's own, not the process-global
    one: only the server spans use it, and nothing else in the process is
    changed by turning tracing on."""
    global _provider
    if _provider is not None:
        return True
    warning = sdk_disabled_warning(environ)
    if warning is not None:
        log.warning("%s", warning)
    try:
        if not otlp_wanted(environ):
            return False
    except ValueError as exc:
        log.error("tracing stays off: %s", exc)
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class _DecidedTraceIds(RandomIdGenerator):
        """A root span's trace id: the one the gate sampled the call with."""

        def generate_trace_id(self) -> int:
            decided = _decided_trace_id.get()
            if decided:
                _decided_trace_id.set(0)
                return decided
            return super().generate_trace_id()

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, TLS: the OTEL_EXPORTER_OTLP_* variables
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over our default name.
    resource = Resource.create({} if service_name_from_env(environ) else {"service.name": SERVICE_NAME})
    # sampler None: OTEL_TRACES_SAMPLER(_ARG)
    provider = TracerProvider(resource=resource, sampler=sampler, id_generator=_DecidedTraceIds())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider
    return True


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """OpenTelemetry's server-span interceptor, gated, while tracing is on; else none."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    gate = _SamplingGate(_provider.sampler, RandomIdGenerator().generate_trace_id)
    return [aio_server_interceptor(tracer_provider=_provider, filter_=gate)]


def shutdown_tracing() -> None:
    """Export the spans still batched (at exit); tracing is off afterwards."""
    global _provider
    provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()
