"""A node's log lines: text (today's look plus the node id) or JSON lines,
with the node id, the Raft group, the tenant and the trace id, and never
an API key.

``configure_logging(fmt, level, static_fields)`` puts one handler on the
root logger (standard error) that every logger of the process reaches:

- ``json``: one object per line (python-json-logger) with ``ts`` (RFC 3339,
  UTC, milliseconds, ``Z``), ``level``, ``logger``, ``message``, the
  ``static_fields`` (``node_id``), then, when known, ``tenant``, ``group``,
  ``trace_id``, ``span_id``, any ``extra=`` fields, and ``exc_info`` (a
  traceback as one string);
- ``text``: ``2026-05-09 07:35:25,123 WARNING node_id=2 cluster.reconciler:
  message [tenant=acme group=7 trace_id=...]`` (the bracket only when a
  context field is known).

Where the context fields come from, first found wins:

- ``tenant``: ``extra={"tenant": ...}``, else the caller the front door
  admitted for the call being handled (``front_door.current_caller()``;
  outside a call there is none, and the filter does not raise);
- ``group``: ``extra={"group": g}``, else ``log_group`` (a ``ContextVar``
  that code starting a task for one group sets, e.g. with
  ``group_context(g)`` as the task's ``context=``), else the name of the
  asyncio task logging: a replica's owner task is named
  ``raftlog-replica-<group>`` (partitions/replica_host.py; partitions may
  not import cluster, so the name is the seam; tests/telemetry/test_logs.py
  fails when that name changes);
- ``trace_id`` / ``span_id``: the current OpenTelemetry span, when valid
  (32 and 16 lowercase hex digits, as OTLP and the W3C header spell them).

Invariants:

- No key reaches the output: ``RedactSecrets`` (a handler filter, so it
  sees records of every logger, ours, gRPC's and asyncio's) applies
  ``raftlog.v1.secret_redaction`` (the one redaction the flag server's logs
  use too): the secret of anything shaped like a cluster API key or an SDK
  server or client key (``rlk_``/``rlf_``/``rlc_<key id>_<secret>``; the
  public key id is kept, so a line still says which key) and the token
  after ``Bearer`` go, in the formatted message (whatever argument carried
  it, ``%s`` or ``%r`` of an object), in ``extra=`` fields of any shape
  (strings, dicts, lists, tuples, walked), in the traceback text (an
  exception message may quote a header) and in ``stack_info``.
- The filters never raise and never drop a record: a missing caller, no
  running loop, no tracing, a message whose arguments do not match its
  format, all log the record without the field (or, for the last, with
  its parts redacted for ``logging``'s own error report).
- Cheap to import and to call before anything else: no third-party import
  at import time. python-json-logger is imported only for ``json``; the
  front door and OpenTelemetry are looked up in ``sys.modules`` (if they
  were never imported, there is no caller and no span to report).
- ``configure_logging`` checks ``fmt`` before changing anything (a bad one
  is a ``ValueError`` naming the choices) and replaces the handler an
  earlier call installed, so calling it twice leaves one handler.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from raftlog.v1.secret_redaction import REDACTED, redact, redact_record

__all__ = [
    "LOG_FORMATS",
    "REDACTED",
    "REPLICA_TASK_PREFIX",
    "ContextFields",
    "RedactSecrets",
    "configure_logging",
    "group_context",
    "log_group",
    "redact",
]

LOG_FORMATS = ("text", "json")
"""The choices of ``--log-format`` / ``RAFTLOG_LOG_FORMAT``."""

REPLICA_TASK_PREFIX = "raftlog-replica-"
"""How partitions/replica_host.py names a replica's owner task (+ group id)."""

log_group: contextvars.ContextVar[int | None] = contextvars.ContextVar("raftlog_log_group", default=None)
"""The Raft group the code running now works for (None: none in particular)."""

CONTEXT_FIELDS = ("tenant", "group", "trace_id", "span_id")

_HANDLER_MARK = "_raftlog_log_handler"
_FRONT_DOOR = "cluster.frontend.front_door"
_OTEL_TRACE = "opentelemetry.trace"


def group_context(group: int) -> contextvars.Context:
    """A copy of the current context with ``log_group`` set to ``group``: pass
    it as ``context=`` to ``create_task`` so every line the task logs names it."""
    context = contextvars.copy_context()
    context.run(log_group.set, group)
    return context


class RedactSecrets(logging.Filter):
    """Replaces keys and Bearer tokens in a record (see the module's
    invariants); a record is redacted once however many handlers see it."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def _current_tenant() -> str | None:
    front_door = sys.modules.get(_FRONT_DOOR)
    if front_door is None:  # never imported: no call has been admitted
        return None
    try:
        tenant: str = front_door.current_caller().tenant
    except RuntimeError:  # not inside a call the door admitted
        return None
    return tenant


def _current_group() -> int | None:
    group = log_group.get()
    if group is not None:
        return group
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        return None
    name = task.get_name() if task is not None else ""
    if name.startswith(REPLICA_TASK_PREFIX) and name[len(REPLICA_TASK_PREFIX) :].isdigit():
        return int(name[len(REPLICA_TASK_PREFIX) :])
    return None


def _current_span_ids() -> tuple[str, str] | None:
    otel_trace = sys.modules.get(_OTEL_TRACE)
    if otel_trace is None:  # never imported: no span can be current
        return None
    span_context = otel_trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


class ContextFields(logging.Filter):
    """Puts the static fields (``node_id``) and what the context knows
    (``tenant``, ``group``, ``trace_id``, ``span_id``) on each record; a field
    the record already has (``extra=``) is left as it is."""

    def __init__(self, static_fields: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self.static_fields = dict(static_fields or {})

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        for name, value in self.static_fields.items():
            fields.setdefault(name, value)
        try:
            if "tenant" not in fields and (tenant := _current_tenant()) is not None:
                fields["tenant"] = tenant
            if "group" not in fields and (group := _current_group()) is not None:
                fields["group"] = group
            if "trace_id" not in fields and (ids := _current_span_ids()) is not None:
                fields["trace_id"], fields["span_id"] = ids
        except Exception:  # a log line without a field beats a logging call that raises
            pass
        return True


def _rfc3339(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class _TextLines(logging.Formatter):
    """Today's ``asctime level name: message`` with the static fields after
    the level and the known context fields in a bracket after the message."""

    _TEMPLATE = "%(asctime)s %(levelname)s%(raftlog_static)s %(name)s: %(message)s%(raftlog_context)s"

    def __init__(self, static_fields: Mapping[str, object]) -> None:
        super().__init__(self._TEMPLATE)
        self._static = "".join(f" {name}={value}" for name, value in static_fields.items())

    def formatMessage(self, record: logging.LogRecord) -> str:  # logging's name
        # Not attributes of the record: other handlers must not see them.
        fields = record.__dict__
        known = [f"{name}={fields[name]}" for name in CONTEXT_FIELDS if fields.get(name) is not None]
        context = f" [{' '.join(known)}]" if known else ""
        return self._TEMPLATE % {**fields, "raftlog_static": self._static, "raftlog_context": context}


def _json_lines(static_fields: Mapping[str, object]) -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter  # ~25 ms: only when asked for

    class JsonLines(JsonFormatter):
        """ts, level, logger, message first; then static, context and extra
        fields; ``exc_info`` is the filter's redacted traceback text."""

        def add_fields(
            self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
        ) -> None:
            log_data["ts"] = _rfc3339(record.created)
            log_data["level"] = record.levelname
            log_data["logger"] = record.name
            log_data["message"] = record.message
            fields = record.__dict__
            for name in leading:  # placed first; the values merged below are the same
                if fields.get(name) is not None:
                    log_data[name] = fields[name]
            super().add_fields(log_data, record, message_dict)
            if record.exc_text:  # not formatException(exc_info): that text is not redacted
                log_data["exc_info"] = record.exc_text

    leading = (*static_fields, *CONTEXT_FIELDS)
    # No format fields: add_fields above names them, extras follow.
    return JsonLines(fmt="%(message)s")


def configure_logging(
    fmt: str,
    level: int = logging.INFO,
    static_fields: dict[str, object] | None = None,
    *,
    stream: TextIO | None = None,
) -> None:
    """Log every logger's records at ``level`` and above to ``stream``
    (standard error) as ``fmt`` (``text`` or ``json``), each with
    ``static_fields`` (``{"node_id": N}``), the context fields and no secret."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    static = dict(static_fields or {})
    formatter = _json_lines(static) if fmt == "json" else _TextLines(static)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    # Context first, so that what it adds is redacted too.
    handler.addFilter(ContextFields(static))
    handler.addFilter(RedactSecrets())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
