"""A fake OTLP/gRPC trace receiver on loopback, for tests and benchmarks.

``OtlpReceiver`` serves ``opentelemetry.proto.collector.trace.v1.TraceService``
(the stubs from ``opentelemetry-proto``) on ``127.0.0.1``: point a process
at it with ``OTEL_EXPORTER_OTLP_ENDPOINT=<receiver.endpoint>`` and
``OTEL_EXPORTER_OTLP_INSECURE=true``. Every span it receives is kept as a
``ReceivedSpan`` (ids as lowercase hex, the resource's and the span's
attributes as plain Python values), in arrival order.

Invariants:

- It accepts every export (an empty ``ExportTraceServiceResponse``: no
  partial rejection), so an exporter never retries and a span arrives once.
- ``spans()`` is a snapshot; ``wait_for`` blocks until a predicate over the
  snapshot holds or a timeout passes. Safe from any thread (the server runs
  on its own thread pool), so sync tests, async tests and the bench can use
  it alike.
- The port is chosen at ``start`` (a free one unless given) and kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

__all__ = ["OtlpReceiver", "ReceivedSpan"]

AttributeValue = str | bool | int | float | bytes | tuple[Any, ...] | dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    """"" for a root span."""
    name: str
    kind: int
    """``opentelemetry.proto.trace.v1.Span.SpanKind`` (2 = SERVER, 3 = CLIENT)."""
    start_ns: int
    end_ns: int
    status_code: int
    """0 unset, 1 ok, 2 error."""
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    resource: Mapping[str, AttributeValue] = field(default_factory=dict)
    scope: str = ""


def _value(value: common_pb2.AnyValue) -> AttributeValue:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    plain: AttributeValue = getattr(value, kind)
    return plain


def _attributes(pairs: Any) -> dict[str, AttributeValue]:
    return {pair.key: _value(pair.value) for pair in pairs}


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            status_code=span.status.code,
                            attributes=_attributes(span.attributes),
                            resource=resource,
                            scope=scope_spans.scope.name,
                        )
                    )
        self._receiver._add(received)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """Start with ``start()`` (or ``with OtlpReceiver() as receiver:``)."""

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._server: grpc.Server | None = None
        self._spans: list[ReceivedSpan] = []
        self._changed = threading.Condition()
        self.exports = 0
        """Export requests received (also empty ones)."""

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        return self._port

    @property
    def endpoint(self) -> str:
        """What ``OTEL_EXPORTER_OTLP_ENDPOINT`` should say."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The ``OTEL_*`` variables that send a process's spans here."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"}

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the receiver is already started")
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="otlp-receiver"))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
        port = server.add_insecure_port(f"127.0.0.1:{self._port}")
        if port == 0:
            raise OSError(f"cannot listen on 127.0.0.1:{self._port}")
        server.start()
        self._port = port
        self._server = server
        return self

    def stop(self, grace: float = 0.5) -> None:
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._changed:
            self.exports += 1
            self._spans.extend(spans)
            self._changed.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._changed:
            return list(self._spans)

    def clear(self) -> None:
        with self._changed:
            self._spans.clear()

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """The spans once ``predicate(spans)`` holds; raises ``TimeoutError``
        (with what arrived) when it does not within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._spans)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = [(s.name, s.resource.get("raftlog.node_id")) for s in self._spans]
                    raise TimeoutError(f"spans not as expected after {timeout}s; received {names}")
                self._changed.wait(remaining)
            return list(self._spans)
