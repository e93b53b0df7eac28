"""How every raftlog process reads the standard ``OTEL_*`` variables to decide
whether it exports traces: the node (cluster/telemetry/tracing.py) and the
flag server (flags/telemetry.py) import this one decision, so one
environment never turns tracing on in one and off in the other.
Hand-written and stdlib-only, like ``raftlog.v1.headers``.

``otlp_wanted(env)``:

- ``OTEL_SDK_DISABLED``: the OpenTelemetry boolean rule — only ``true``
  (any letter case, spaces around ignored) is true and turns everything
  off. ``false`` and empty are false; any other value (``1``, ``yes``) is
  false too, as the specification and the SDK's ``TracerProvider`` read it
  (a process that called it "disabled" while its provider did not would
  disagree with itself); ``sdk_disabled_warning`` names such a value so the
  process can say so in its log.
- ``OTEL_TRACES_EXPORTER`` set (non-blank): tracing is on iff its
  comma-separated list names ``otlp`` (``none``, ``console`` ... do not
  start OTLP export).
- else: on iff ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (non-blank).
- When on, the protocol must be gRPC, the only OTLP exporter raftlog ships:
  ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``
  (the traces-specific one wins), unset or ``grpc``. Another value raises
  ``ValueError`` naming the variable and the fix; the caller leaves tracing
  off and logs it.

``service_name_from_env(env)``: whether the environment names the service
(``OTEL_SERVICE_NAME``, or ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``),
in which case the process's default ``service.name`` must not override it.

Invariants: pure functions of the mapping given (no ``os.environ`` read
here, nothing changed); the variables not named above are left to the
OpenTelemetry SDK, which reads them itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["SUPPORTED_PROTOCOL", "otlp_wanted", "sdk_disabled_warning", "service_name_from_env"]

SUPPORTED_PROTOCOL: Final = "grpc"
_PROTOCOL_VARIABLES: Final = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_ENDPOINT_VARIABLES: Final = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def _sdk_disabled(env: Mapping[str, str]) -> bool:
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def sdk_disabled_warning(env: Mapping[str, str]) -> str | None:
    """A message when ``OTEL_SDK_DISABLED`` holds a value that is neither
    ``true``, ``false`` nor empty (read as false); else None."""
    value = env.get("OTEL_SDK_DISABLED", "").strip()
    if value.lower() in {"", "true", "false"}:
        return None
    return (
        f"OTEL_SDK_DISABLED={value!r} is read as false (only 'true' disables OpenTelemetry); "
        "set it to true or false"
    )


def otlp_wanted(env: Mapping[str, str]) -> bool:
    """Whether ``env`` asks for OTLP trace export (module docstring); raises
    ``ValueError`` naming the variable when it asks for a protocol other
    than gRPC."""
    if _sdk_disabled(env):
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "")
    if exporters.strip():
        wanted = "otlp" in {name.strip().lower() for name in exporters.split(",")}
    else:
        wanted = any(env.get(name, "").strip() for name in _ENDPOINT_VARIABLES)
    if not wanted:
        return False
    for name in _PROTOCOL_VARIABLES:
        protocol = env.get(name, "").strip().lower()
        if protocol:
            if protocol != SUPPORTED_PROTOCOL:
                raise ValueError(
                    f"{name}={protocol!r}: raftlog ships the OTLP exporter over gRPC only; "
                    f"set {name}={SUPPORTED_PROTOCOL} (or unset it) and point the endpoint "
                    "at a gRPC OTLP receiver"
                )
            break  # the traces-specific one wins over the general one
    return True


def service_name_from_env(env: Mapping[str, str]) -> bool:
    """Whether ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` names the service."""
    if env.get("OTEL_SERVICE_NAME", "").strip():
        return True
    for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip() == "service.name" and value.strip():
            return True
    return False
