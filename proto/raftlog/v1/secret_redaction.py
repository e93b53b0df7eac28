"""Secret redaction: what a log line may never show, for every process of
the project (the node, cluster/telemetry/logs.py; the flag server,
flags/telemetry_logs.py). Hand-written and stdlib-only, like
``raftlog.v1.headers``: both import this one definition, so what one
process's logs hide, the other's hide too.

The secrets, every format the project's generators make:

=========== ================================ =========================================
prefix      made by                          what
=========== ================================ =========================================
``rlk_``    cluster/controller/api_keys.py   cluster API keys (operator and tenant keys;
            harness/local_cluster.py         the harness makes them in the same shape)
``rlf_``    flags/sdk_keys.py (server kind)  SDK server keys (flagd providers, OFREP)
``rlc_``    flags/sdk_keys.py (client kind)  SDK client keys (OFREP from apps)
=========== ================================ =========================================

A clear key is ``<prefix><16 lowercase hex key id>_<43 base64url secret>``.
The key id is public (it names the key in listings, audits and
revocations), so it stays; the secret is replaced by ``REDACTED``:
``rlf_0123456789abcdef_[redacted]``. Any run of base64url characters after a
prefix is taken as a secret, whatever its length and whether or not an id
precedes it, so a truncated, altered or id-less key does not slip by
(``rlk_[redacted]``). A ``Bearer`` token (any letter case, after spaces or
a percent-encoded space) is replaced whole, key or not: nothing of it is
kept. Bearer tokens are redacted first, so a key sent as a token loses its
id too.

Not covered, on purpose: the cluster secret (64 hex digits,
``raftlog.internal.node_proof``) has no shape that tells it from a digest,
so it is kept out of logs by the code that reads it, not here.

Invariants:

- ``redact`` is idempotent, never raises, and leaves a text without a
  secret unchanged.
- ``redact_value`` returns a value of the same shape: ``str`` redacted,
  mappings, lists, tuples, sets walked (keys too); ``None``, numbers and
  booleans as they are; any other object as it is unless its ``str``
  holds a secret, in which case the redacted ``str`` (a logger would have
  written that ``str``).
- ``redact_record`` redacts a ``logging.LogRecord`` in place (formatted
  message, arguments, ``extra=`` fields, traceback and stack text) once,
  and never raises or drops the record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "KEY_PREFIXES",
    "REDACTED",
    "redact",
    "redact_record",
    "redact_value",
]

REDACTED: Final = "[redacted]"
KEY_PREFIXES: Final = ("rlk_", "rlf_", "rlc_")
"""Cluster API keys, SDK server keys, SDK client keys (module docstring)."""

# RFC 6750 tokens contain no quote, comma or semicolon: stopping there keeps
# the repr of a header tuple (and a JSON line) intact around the marker.
_BEARER = re.compile(r"(?i)\b(bearer)(?:\s|%20)+[^\s'\",;]+")
# The lookahead keeps a key already redacted (``rlk_<id>_[redacted]``) as it
# is, rather than taking its id for a secret.
_KEY = re.compile(r"(rl[kfc]_)(?:([0-9a-f]{16})_)?(?![0-9a-f]{16}_\[)[A-Za-z0-9_-]+")
_PLAIN = (int, float, bool, type(None))
_REDACTED_MARK = "_raftlog_redacted"
# What every record has before any extra= field (those are not extras).
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_TRACEBACKS = logging.Formatter()


def _key(match: re.Match[str]) -> str:
    prefix, key_id = match.group(1), match.group(2)
    return f"{prefix}{key_id}_{REDACTED}" if key_id else f"{prefix}{REDACTED}"


def redact(text: str) -> str:
    """``text`` with every Bearer token and every key secret replaced."""
    return _KEY.sub(_key, _BEARER.sub(rf"\1 {REDACTED}", text))


def redact_value(value: Any) -> Any:
    """``value`` with every secret in it replaced (module docstring: which shapes)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_value(v) for v in value)
    if isinstance(value, set | frozenset):
        return type(value)(redact_value(v) for v in value)
    try:
        text = str(value)
    except Exception:  # a broken __str__: the formatter will fail on it too
        return value
    cleaned = redact(text)
    return value if cleaned == text else cleaned


def redact_record(record: logging.LogRecord) -> None:
    """Redact ``record`` in place (module docstring); a second call does nothing."""
    if getattr(record, _REDACTED_MARK, False):
        return
    if isinstance(record.msg, Mapping) and not record.args:
        record.msg = redact_value(record.msg)  # python-json-logger's dict message
    else:
        try:
            message = record.getMessage()
        except Exception:
            # The handler will fail to format it and logging prints msg and
            # args to stderr: those must be clean too.
            record.msg = redact(str(record.msg))
            if record.args:
                args = record.args.values() if isinstance(record.args, Mapping) else record.args
                record.args = tuple(redact(repr(arg)) for arg in args)
        else:
            # Formatted once, here: a secret in any argument, whatever its
            # type's str or repr, is in this text.
            record.msg, record.args = redact(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = _TRACEBACKS.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    fields = record.__dict__
    for name in [n for n in fields if n not in _RECORD_ATTRS]:
        fields[name] = redact_value(fields[name])
    setattr(record, _REDACTED_MARK, True)
