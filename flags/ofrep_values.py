"""OFREP response bodies from ``FlagdEvaluator`` results (pure).

Shapes, as the OFREP openapi (``service/openapi.yaml``, v0.3.0) has them:

- success: ``{"key", "reason", "variant", "value", "metadata"}``. ``value``
  has the flag's own type (a float flag's value is a JSON float, ``1.0``
  not ``1``); ``metadata`` (the flag's over the flag set's) is left out when
  empty. When flagd answers with the caller's default (a ``DISABLED`` flag,
  or ``DEFAULT`` with no default variant) there is no ``value`` (OFREP's
  "code default": the SDK uses the application's default) and ``variant`` is
  ``null``: always present, because the Python OFREP provider reads
  ``data["variant"]`` unconditionally.
- a flag that failed: ``{"key", "errorCode", "errorDetails"}`` with flagd's
  code (``PARSE_ERROR`` for a rule using an unknown operation, ``GENERAL``
  for a rule that failed or named no variant).
- bulk: ``{"flags": [...by key], "metadata": {flag set metadata},
  "eventStreams": [...]}`` (``metadata`` left out when empty).
- a refused request: ``{"errorCode", "errorDetails"}`` (plus ``key`` on the
  single-flag endpoint).

Every body is canonical JSON (sorted keys, no spaces, UTF-8), so equal
content gives equal bytes and a strong ETag can be the digest of the body.

``BulkPlan`` is built once per environment version: per flag, its result type,
the neutral default of that type and its version (for exposures), and whether
any rule reads ``$flagd.timestamp`` (``time_dependent``: then the body may
change without a change to the flags, and the ETag memo must not be used).

Invariants: shaping is total for whatever the evaluator returns or raises
(``OpenFeatureError``); nothing here reads a clock or mutates its inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import OpenFeatureError
from openfeature.flag_evaluation import FlagResolutionDetails

from flags.evaluator import BOOLEAN, FLOAT, INTEGER, OBJECT, STRING, FlagdEvaluator
from flags.live import LiveFlags, Serving
from flags.model import VariantType

__all__ = [
    "BulkPlan",
    "FlagOutcome",
    "PlannedFlag",
    "canonical_json",
    "error_body",
    "etag_matches",
    "etag_of",
    "evaluate_one",
]

KIND_OF_TYPE: Mapping[VariantType, int] = {
    VariantType.BOOLEAN: BOOLEAN,
    VariantType.STRING: STRING,
    VariantType.INTEGER: INTEGER,
    VariantType.FLOAT: FLOAT,
    VariantType.OBJECT: OBJECT,
}
NEUTRAL_DEFAULTS: tuple[Any, ...] = (False, "", 0, 0.0, {})
"""Per result type: what flagd's ``evaluate`` gets as the caller's default
(never sent: a code-default answer carries no value)."""
_RESOLVERS = (
    "resolve_boolean_value",
    "resolve_string_value",
    "resolve_integer_value",
    "resolve_float_value",
    "resolve_object_value",
)
"""Per result type (indexed by BOOLEAN ... OBJECT): the evaluator method, whose
fast path answers context-free flags with one lookup."""

_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> bytes:
    """``value`` as canonical JSON bytes (module docstring)."""
    return _encoder.encode(value).encode("utf-8")


def etag_of(body: bytes) -> str:
    """A strong ETag for ``body``: 128 bits of its BLAKE2b digest, quoted."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison,
    as RFC 9110 asks of If-None-Match; ``*`` matches any)."""
    if if_none_match == etag:
        return True
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == etag or candidate == "*":
            return True
    return False


def error_body(code: str, details: str, key: str | None = None) -> bytes:
    body: dict[str, Any] = {"errorCode": code, "errorDetails": details}
    if key is not None:
        body["key"] = key
    return canonical_json(body)


@dataclass(frozen=True, slots=True)
class FlagOutcome:
    """One flag's answer: ``entry`` is its OFREP object; ``variant`` and
    ``reason`` are set for a success with a variant (what an exposure needs)."""

    entry: dict[str, Any]
    variant: str | None
    reason: str
    error_code: str | None


def _reason(details: FlagResolutionDetails[Any]) -> str:
    reason = details.reason
    return str(getattr(reason, "value", reason) or "UNKNOWN")


def evaluate_one(
    evaluator: FlagdEvaluator, key: str, kind: int, context: EvaluationContext | None
) -> FlagOutcome:
    """``key`` resolved as its own type ``kind``, shaped (module docstring)."""
    try:
        details = getattr(evaluator, _RESOLVERS[kind])(key, NEUTRAL_DEFAULTS[kind], context)
    except OpenFeatureError as error:
        code = str(getattr(error.error_code, "value", error.error_code))
        details_text = error.error_message or code
        return FlagOutcome({"key": key, "errorCode": code, "errorDetails": details_text}, None, "ERROR", code)
    reason = _reason(details)
    entry: dict[str, Any] = {"key": key, "reason": reason, "variant": details.variant}
    if details.variant is not None:
        value = details.value
        if kind == FLOAT and type(value) is int:  # a float flag is a JSON float
            value = float(value)
        entry["value"] = value
    metadata = details.flag_metadata
    if metadata:
        entry["metadata"] = metadata  # read-only, shared: encoded, never changed
    return FlagOutcome(entry, details.variant, reason, None)


@dataclass(frozen=True, slots=True)
class PlannedFlag:
    key: str
    kind: int
    version: int


@dataclass(frozen=True, slots=True)
class BulkPlan:
    """What a bulk evaluation of one environment version does (module docstring)."""

    serving: Serving
    flags: tuple[PlannedFlag, ...]
    by_key: Mapping[str, PlannedFlag]
    metadata: Mapping[str, Any]
    time_dependent: bool

    @staticmethod
    def build(live: LiveFlags, serving: Serving) -> BulkPlan:
        scope = serving.scope
        flag_set = live.store.flag_set(scope.tenant, scope.env)
        planned: list[PlannedFlag] = []
        if flag_set is not None:
            for key in sorted(flag_set.flags):
                view = live.store.flag(scope.tenant, scope.env, key)
                version = 0 if view is None else view.version
                planned.append(PlannedFlag(key, KIND_OF_TYPE[flag_set.flags[key].variant_type], version))
        metadata = dict(flag_set.metadata) if flag_set is not None else {}
        flags = tuple(planned)
        return BulkPlan(serving, flags, {f.key: f for f in flags}, metadata, serving.evaluator.uses_clock())

    def evaluate_all(
        self,
        context: EvaluationContext | None,
        on_outcome: Callable[[PlannedFlag, FlagOutcome], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Every flag's entry, by key."""
        evaluator = self.serving.evaluator
        entries = []
        for flag in self.flags:
            outcome = evaluate_one(evaluator, flag.key, flag.kind, context)
            entries.append(outcome.entry)
            if on_outcome is not None:
                on_outcome(flag, outcome)
        return entries

    def bulk_body(self, entries: list[dict[str, Any]], event_streams: list[dict[str, Any]]) -> bytes:
        body: dict[str, Any] = {"flags": entries}
        if self.metadata:
            body["metadata"] = self.metadata
        if event_streams:
            body["eventStreams"] = event_streams
        return canonical_json(body)
