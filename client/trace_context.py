"""The caller's OpenTelemetry trace context, carried on the SDK's calls.

An application that traces with OpenTelemetry and calls the SDK inside a
span gets the node's spans in the same trace: every call on an SDK channel
carries the current context as W3C metadata (``traceparent``, and
``tracestate``/``baggage`` as the configured propagators write them;
client/auth.py adds them with the identity headers). A producer's records
are sent later, in batches, by a sender task: ``send`` captures the context
it was called in for the batch the record lands in (the first traced record
of a batch gives the batch its context) and the sender makes the call in it.
The SDK's own background tasks (a producer's sender, a consumer's fetch
loops, a group membership) start ``untraced()``: they outlive the span
they were started in and must not make every later call part of it.

The SDK makes no spans and installs no provider: it only passes on what
the application has. Invariants:

- Without ``opentelemetry-api`` importable, or with no valid span current,
  nothing is added and nothing is captured (one context lookup per call).
- A context is captured only for a valid span context (sampled or not: an
  unsampled decision travels too, so the nodes agree with it).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["call_in", "current_trace_context", "trace_headers", "untraced"]

T = TypeVar("T")

try:
    from opentelemetry import context as _otel_context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the SDK works without OpenTelemetry
    _otel_context = None  # type: ignore[assignment]


def current_trace_context() -> Any | None:
    """The current OpenTelemetry context when a valid span is current, else None."""
    if _otel_context is None:
        return None
    if not _trace.get_current_span().get_span_context().is_valid:
        return None
    return _otel_context.get_current()


def trace_headers() -> tuple[tuple[str, str], ...]:
    """The current span's context as call metadata; empty without one."""
    if _otel_context is None or not _trace.get_current_span().get_span_context().is_valid:
        return ()
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return tuple(carrier.items())


def call_in(trace_context: Any | None, make_call: Callable[[], T]) -> T:
    """``make_call()`` with ``trace_context`` (from ``current_trace_context``)
    current: a ``grpc.aio`` call started there carries it. None: as is."""
    if trace_context is None or _otel_context is None:
        return make_call()
    token = _otel_context.attach(trace_context)
    try:
        return make_call()
    finally:
        _otel_context.detach(token)


def untraced() -> contextvars.Context:
    """A copy of the current ``contextvars`` context without the trace
    context, for a background task (``create_task(..., context=untraced())``)."""
    copied = contextvars.copy_context()
    if _otel_context is not None:
        copied.run(_otel_context.attach, _otel_context.Context())  # the copy's own: no detach
    return copied
