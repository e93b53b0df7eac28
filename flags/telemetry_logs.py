"""The flag server's log lines: ``--log-format text|json`` (``RAFTLOG_LOG_FORMAT``).

``json``: one JSON object a line (python-json-logger) with ``ts``, ``level``,
``logger``, ``message``, ``service`` (``raftlog-flags``), ``trace_id`` and
``span_id`` while a span is current (a traced gRPC call), and the exception
text when there is one. ``text``: the server's classic
``time level logger: message`` lines.

Invariant: no key reaches a log line in either format. The flag server
handles three kinds of secret: operator/API keys (``rlk_<id>_<secret>``) and
SDK keys (``rlf_``/``rlc_<id>_<secret>``), and ``Bearer`` tokens. Every
formatted line (exception text included) passes ``redact``, which keeps a
key's prefix and id (they name the key in listings and audits) and replaces
its secret, and replaces any Bearer token whole.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

__all__ = ["LOG_FORMATS", "SERVICE_NAME", "configure_logging", "redact"]

SERVICE_NAME = "raftlog-flags"
"""``service`` of the JSON lines and ``service.name`` of the spans (flags/telemetry.py)."""

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "<redacted>"

# A key: prefix, 16 hex id, "_", then the secret (43 base64url characters;
# any length is redacted, so a truncated or altered key does not slip by).
_KEY = re.compile(r"\b(rl[kfc]_[0-9a-f]{16}_)[A-Za-z0-9_-]+")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")


def redact(text: str) -> str:
    """``text`` with every key's secret and every Bearer token replaced."""
    if "rl" not in text and "earer" not in text:  # the usual line: no regex work
        return text
    return _BEARER.sub(rf"\g<1>{REDACTED}", _KEY.sub(rf"\g<1>{REDACTED}", text))


class _TraceContext(logging.Filter):
    """Adds ``trace_id``/``span_id`` (hex) to records made while a valid span is current."""

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


class _RedactingJson(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _RedactingText(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def json_formatter() -> logging.Formatter:
    return _RedactingJson(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
        static_fields={"service": SERVICE_NAME},
    )


def configure_logging(fmt: str, level: int = logging.WARNING, stream: TextIO | None = None) -> None:
    """Send the root logger's lines to ``stream`` (stderr) in ``fmt``
    (one of ``LOG_FORMATS``); replaces the root's handlers."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter: Any = json_formatter() if fmt == "json" else _RedactingText(TEXT_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(_TraceContext())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
