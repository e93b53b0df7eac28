"""OpenTelemetry traces for a node: a server span per public call, the trace
context carried on forwarded calls, and child spans for a produce's way
through the leader's replica (propose -> commit -> apply, and the
group-commit sync that made the leader's copy durable).

Configured by the standard ``OTEL_*`` environment variables and off unless
they ask for an OTLP exporter: ``otlp_wanted`` of
``raftlog.v1.otel_env``, the decision the flag server makes too
(``OTEL_TRACES_EXPORTER`` naming ``otlp``, or an
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
while ``OTEL_TRACES_EXPORTER`` is unset; never with
``OTEL_SDK_DISABLED=true``). The OpenTelemetry SDK reads
the rest itself: the sampler (``OTEL_TRACES_SAMPLER``/``_ARG``, default
``parentbased_always_on``), the exporter's endpoint, headers, TLS and
timeout (``OTEL_EXPORTER_OTLP_*``), the batch processor's delays
(``OTEL_BSP_*``), extra resource attributes (``OTEL_RESOURCE_ATTRIBUTES``)
and the propagators (``OTEL_PROPAGATORS``, default W3C tracecontext and
baggage). Only OTLP over gRPC is shipped: another ``OTEL_EXPORTER_OTLP_*
PROTOCOL`` leaves tracing off with an error in the log (the same
refusal, from the same module, as the flag server's).

Spans (names are the contract the README lists):

- ``/raftlog.v1.<Service>/<Method>`` (SERVER), by opentelemetry-instrumentation-grpc's
  aio interceptor, on public ``raftlog.v1`` services only: the Raft
  transport, the internal services, health and reflection are not traced
  (one span per Raft message would drown the traces and cost the hot path).
- ``raft.propose`` under the leader's ``Produce`` span: the proposal from
  entering the replica to its last step reached; its children
  ``raft.commit`` (proposed -> a quorum has it), ``raft.apply`` (committed
  -> applied) and ``group_commit.sync`` (the leader's synced write batch).
  Made from ``partitions.proposal_timing`` marks after the fact, with
  explicit times; a step not reached (mark 0) has no span.

Sampling is decided before any span work (``_SamplingGate``, the
interceptor's filter): the instrumentation's own path (context extraction,
attributes, a span object, a wrapped servicer context) costs tens of
microseconds a call even for a span that is not recorded, which at 1 %
sampling would be paid by the 99 % of calls that record nothing. The gate
asks the configured sampler itself: for a call without ``traceparent``
with a trace id it draws, which it then hands to the tracer
(``_DecidedTraceIds``) so the span, if made, has that id and the same
decision; for a call with one, with the extracted parent.

Invariants:

- Off (``configure_tracing`` returned False): no provider is installed,
  ``server_interceptors()`` is empty, ``trace_headers()`` is empty and
  ``proposal_timing()`` is None, each after one module-global check: the
  produce path does no tracing work at all.
- On but not sampled: the gate's sampler decision and nothing else: no
  span, no context attached; ``proposal_timing()`` is None, so no marks are
  asked for and no child span is made. A call forwarded from there carries
  an unsampled ``traceparent`` (flags 00), so the leader records no
  fragment of a trace the entry node dropped.
- Sampled: the gate and the tracer agree (same trace id, same parent), so
  the effective rate is the sampler's, not its square.
- A partition span's times lie inside its parent's: children nest in
  ``raft.propose``, and ``raft.commit`` ends where ``raft.apply`` starts.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Final

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from partitions.proposal_timing import ProposalTiming
from raftlog.v1.otel_env import otlp_wanted, sdk_disabled_warning, service_name_from_env

__all__ = [
    "NODE_ID_ATTRIBUTE",
    "PROPOSAL_SPANS",
    "TRACED_PREFIX",
    "TRACEPARENT",
    "assemble",
    "configure_tracing",
    "otlp_wanted",
    "proposal_timing",
    "record_proposal_spans",
    "server_interceptors",
    "trace_headers",
    "tracing_enabled",
]

log = logging.getLogger(__name__)

TRACED_PREFIX: Final = "/raftlog.v1."
"""Full gRPC method names that get a server span (the public services)."""
NODE_ID_ATTRIBUTE: Final = "raftlog.node_id"
"""The resource attribute naming the node that made a span."""
PROPOSAL_SPANS: Final = ("raft.propose", "raft.commit", "raft.apply", "group_commit.sync")
TRACEPARENT: Final = "traceparent"

_W3C = TraceContextTextMapPropagator()
_decided_trace_id: ContextVar[int] = ContextVar("raftlog_decided_trace_id", default=0)
"""The trace id the gate sampled a root call with, for the tracer to use
(set and read in the call's own task: the interceptors and the handler
run in one)."""


class _Tracing:
    """What ``configure_tracing`` installed (one per process)."""

    __slots__ = ("interceptor", "provider", "tracer")

    def __init__(self, provider: Any, interceptor: grpc.aio.ServerInterceptor, tracer: trace.Tracer) -> None:
        self.provider = provider
        self.interceptor = interceptor
        self.tracer = tracer


_installed: _Tracing | None = None


def _method(details: Any) -> str:
    method = details.method
    if isinstance(method, bytes):
        method = method.decode("ascii", "replace")
    return method if isinstance(method, str) else ""


def _public_call(details: Any) -> bool:
    """Only public ``raftlog.v1`` calls get a span."""
    return _method(details).startswith(TRACED_PREFIX)


class _SamplingGate:
    """The server interceptor's filter: True lets the instrumentation make
    the call's span; False leaves the call untouched (module docstring)."""

    __slots__ = ("_new_trace_id", "_sampler")

    def __init__(self, sampler: Any, new_trace_id: Callable[[], int]) -> None:
        self._sampler = sampler
        self._new_trace_id = new_trace_id

    def __call__(self, details: Any) -> bool:
        method = _method(details)
        if not method.startswith(TRACED_PREFIX):
            return False
        traceparent = None
        for item in details.invocation_metadata or ():
            if item[0] == TRACEPARENT:
                traceparent = item[1]
                break
        if traceparent is None:  # a root: decide with a trace id the tracer will then use
            trace_id = self._new_trace_id()
            if not self._sampler.should_sample(None, trace_id, method, SpanKind.SERVER).decision.is_sampled():
                return False
            _decided_trace_id.set(trace_id)
            return True
        parent = _W3C.extract({TRACEPARENT: traceparent})
        parent_id = trace.get_current_span(parent).get_span_context().trace_id or self._new_trace_id()
        return bool(
            self._sampler.should_sample(parent, parent_id, method, SpanKind.SERVER).decision.is_sampled()
        )


def configure_tracing(service_name: str, node_id: int | None) -> bool:
    """Install the process's tracer provider from ``OTEL_*``; False: tracing is off.

    Resource: ``service.name`` from ``OTEL_SERVICE_NAME``, else
    ``service_name``; ``raftlog.node_id`` when ``node_id`` is given. Calling
    it again returns what the first call decided."""
    global _installed
    if _installed is not None:
        return True
    warning = sdk_disabled_warning(os.environ)
    if warning is not None:
        log.warning("%s", warning)
    try:
        if not otlp_wanted(os.environ):
            return False
    except ValueError as exc:
        log.error("tracing stays off: %s", exc)
        return False
    # Imported here: a node with tracing off never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, str | int] = {}
    if not service_name_from_env(os.environ):  # the environment's name wins
        attributes[SERVICE_NAME] = service_name
    if node_id is not None:
        attributes[NODE_ID_ATTRIBUTE] = node_id
    # The exporter reads its endpoint, headers, TLS and timeout from OTEL_EXPORTER_OTLP_*.
    _installed = assemble(BatchSpanProcessor(OTLPSpanExporter()), attributes)
    trace.set_tracer_provider(_installed.provider)
    log.info(
        "tracing on: OTLP export of sampled spans (service %s)", attributes.get(SERVICE_NAME, "from env")
    )
    return True


def assemble(processor: Any, attributes: Mapping[str, str | int], sampler: Any = None) -> _Tracing:
    """The provider (resource from ``attributes`` and ``OTEL_RESOURCE_ATTRIBUTES``;
    ``sampler``, default from ``OTEL_TRACES_SAMPLER``/``_ARG``), exporting
    through ``processor``, and the gated server interceptor; installs
    nothing (``configure_tracing`` does; tests assemble one of their own)."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class _DecidedTraceIds(RandomIdGenerator):
        """A root span's trace id: the one the gate sampled the call with."""

        def generate_trace_id(self) -> int:
            decided = _decided_trace_id.get()
            if decided:
                _decided_trace_id.set(0)
                return decided
            return super().generate_trace_id()

    provider = TracerProvider(
        sampler=sampler, resource=Resource.create(dict(attributes)), id_generator=_DecidedTraceIds()
    )
    provider.add_span_processor(processor)
    gate = _SamplingGate(provider.sampler, RandomIdGenerator().generate_trace_id)
    interceptor = aio_server_interceptor(tracer_provider=provider, filter_=gate)
    return _Tracing(provider, interceptor, provider.get_tracer("raftlog.partitions"))


def tracing_enabled() -> bool:
    return _installed is not None


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The interceptors that open a server span per public call (none while off)."""
    return [] if _installed is None else [_installed.interceptor]


def trace_headers() -> tuple[tuple[str, str], ...]:
    """The trace context for a call this node makes on behalf of the one it
    serves (a forward), as call metadata: the current span's (W3C
    ``traceparent``, ``tracestate``, ``baggage``), or, with no span (the
    gate did not sample the call), an unsampled ``traceparent``, so the
    leader does not sample it on its own. Empty while tracing is off."""
    if _installed is None:
        return ()
    if not trace.get_current_span().get_span_context().is_valid:
        return ((TRACEPARENT, f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-00"),)
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())


def proposal_timing() -> ProposalTiming | None:
    """A fresh ``ProposalTiming`` to fill when the current span is recorded
    (sampled), else None: an unsampled produce asks for no marks."""
    if _installed is None or not trace.get_current_span().is_recording():
        return None
    return ProposalTiming()


def _child(tracer: trace.Tracer, name: str, parent: trace.Span, start: int, end: int) -> None:
    span = tracer.start_span(name, context=trace.set_span_in_context(parent), start_time=start)
    span.end(end_time=end)


def record_proposal_spans(
    timing: ProposalTiming, group: int, error: BaseException | None = None, now_ns: int | None = None
) -> None:
    """Turn ``timing``'s marks (monotonic ns on this node) into child spans
    of the current span, with wall-clock times (module docstring: which
    spans, and none for a step not reached). ``error``: the proposal
    failed (``raft.propose`` then ends at ``now_ns``, default now, with an
    error status)."""
    installed = _installed
    if installed is None or not timing.proposed_ns:
        return
    parent = trace.get_current_span()
    if not parent.is_recording():
        return
    now_mono = time.monotonic_ns() if now_ns is None else now_ns
    to_wall = time.time_ns() - time.monotonic_ns()  # read together: one offset for every mark
    last = max(timing.proposed_ns, timing.committed_ns, timing.applied_ns, timing.sync_ended_ns)
    end = max(last, now_mono) if error is not None else last
    attributes = {"raftlog.group": group}
    if timing.index:
        attributes["raft.index"] = timing.index
    propose = installed.tracer.start_span(
        "raft.propose",
        context=trace.set_span_in_context(parent),
        start_time=timing.proposed_ns + to_wall,
        attributes=attributes,
    )
    tracer = installed.tracer
    if timing.committed_ns:
        _child(tracer, "raft.commit", propose, timing.proposed_ns + to_wall, timing.committed_ns + to_wall)
        if timing.applied_ns:
            _child(tracer, "raft.apply", propose, timing.committed_ns + to_wall, timing.applied_ns + to_wall)
    if timing.sync_started_ns and timing.sync_ended_ns:
        _child(
            tracer,
            "group_commit.sync",
            propose,
            timing.sync_started_ns + to_wall,
            timing.sync_ended_ns + to_wall,
        )
    if error is not None:
        propose.set_status(Status(StatusCode.ERROR, type(error).__name__))
    propose.end(end_time=end + to_wall)
