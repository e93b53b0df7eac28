"""The flag server's log lines: ``--log-format text|json`` (``RAFTLOG_LOG_FORMAT``).

``json``: one JSON object a line (python-json-logger) with ``ts``, ``level``,
``logger``, ``message``, ``service`` (``raftlog-flags``), ``trace_id`` and
``span_id`` while a span is current (a traced gRPC call), and the exception
text when there is one. ``text``: the server's classic
``time level logger: message`` lines.

Invariant: no key reaches a log line in either format. The flag server
handles three kinds of secret: cluster API keys (``rlk_<id>_<secret>``), SDK
server and client keys (``rlf_``/``rlc_<id>_<secret>``), and ``Bearer``
tokens. A handler filter (``_RedactSecrets``) applies
``raftlog.v1.secret_redaction`` to every record before it is formatted: the
node's logs use the same module, so both hide the same shapes (a key keeps
its prefix and public id, its secret goes; a Bearer token goes whole), in
the formatted message, the arguments, ``extra=`` fields of any shape
(strings, dicts, lists, tuples) and the exception and stack text. Records
are redacted, not formatted lines: a line-level pass could cut a JSON
string's escape (``\\"``) and break the line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from raftlog.v1.secret_redaction import REDACTED, redact, redact_record

__all__ = ["LOG_FORMATS", "REDACTED", "SERVICE_NAME", "configure_logging", "redact"]

SERVICE_NAME = "raftlog-flags"
"""``service`` of the JSON lines and ``service.name`` of the spans (flags/telemetry.py)."""

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _TraceContext(logging.Filter):
    """Adds ``trace_id``/``span_id`` (hex) to records made while a valid span is current."""

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


class _RedactSecrets(logging.Filter):
    """``redact_record`` on each record the handler is given (module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


class _RedactingJson(JsonFormatter):
    def formatException(self, ei: Any) -> str:  # logging's name
        # python-json-logger formats exc_info itself rather than using the
        # filter's redacted exc_text: redact what it makes.
        return redact(str(super().formatException(ei)))


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
    formatter = json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(_TraceContext())
    handler.addFilter(_RedactSecrets())  # after the context: what it adds is redacted too
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
