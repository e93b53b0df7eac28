"""OpenTelemetry traces for a node (placeholder: filled in by the tracing work).

Off unless the standard ``OTEL_*`` variables ask for an exporter.
"""

from __future__ import annotations

import grpc


def configure_tracing(service_name: str, node_id: int | None) -> bool:
    """Install the process's tracer provider from ``OTEL_*``; False: tracing is off."""
    return False


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The interceptors that open a server span per public call (none while off)."""
    return []
