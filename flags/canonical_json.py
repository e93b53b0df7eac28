"""Canonical JSON: the one dialect of the flag service's record values on
``__flags`` — flag changes (flags/changes.py), SDK keys (flags/sdk_keys.py)
and experiments (flags/experiments/model.py).

A value is one JSON object, UTF-8, keys sorted, no whitespace, no
NaN/Infinity, with an integer ``format`` (the record format's version).
Each record module checks its own fields and refuses bytes that do not
re-encode to themselves, so one record has exactly one encoding.

Invariants:

- ``canonical`` never writes NaN or Infinity (``ValueError``).
- ``load_record`` answers a ``dict`` whose ``format`` is an int in
  ``1..reader_format``, or raises: the record module's own malformed error
  for bytes this dialect never produces (not UTF-8, not JSON, a repeated
  key, NaN/Infinity, not an object, no valid format), ``UnsupportedChange``
  for a newer format (the reader must be upgraded, never skip it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["ChangeError", "UnsupportedChange", "canonical", "load_record"]


class ChangeError(ValueError):
    """A record that cannot be applied (its subclasses say why)."""


class UnsupportedChange(ChangeError):
    """A record from a newer format: the reader must be upgraded; it must not
    apply the log differently from upgraded readers."""


def canonical(value: Any) -> bytes:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


class _Refused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"field {key!r} appears twice")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise _Refused(f"{name} is not JSON")


def load_record(
    key: str, value: bytes, malformed: Callable[[str], Exception], reader_format: int
) -> dict[str, Any]:
    """The object in the record under ``key`` (module invariants); errors
    are ``malformed(message)`` or ``UnsupportedChange``."""
    try:
        doc = json.loads(
            value.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants
        )
    except _Refused as refused:
        raise malformed(refused.message) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise malformed(f"record {key!r} is not UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise malformed(f"record {key!r} is not a JSON object")
    fmt = doc.get("format")
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
        raise malformed(f"record {key!r} has no valid format version")
    if fmt > reader_format:
        raise UnsupportedChange(f"record {key!r} is format {fmt}; this reader knows up to {reader_format}")
    return doc
