"""The record formats of the flag service's event topics, written once:
``__exposures`` (what a flag server or the in-process hook served) and
``__tracking`` (what users did). Written by flags/exposures.py, read by the
experiments' analysis (flags/experiments/analyzer.py) and by any consumer of
the tenant's topics.

Record values are canonical JSON (sorted keys, no spaces, UTF-8); the record
key is the targeting key and the record timestamp is ``ts``::

    __exposures  {"env":E,"flag":F,"format":1,"reason":R,"source":"rpc"|"ofrep"|"hook",
                  "targetingKey":K,"ts":ms,"variant":V,"version":flagVersion}
    __tracking   {"attributes":{...},"env":E,"format":1,"name":N,"targetingKey":K,
                  "ts":ms,"value":float|null}

Invariants: ``encode_exposure`` and ``ExposureEncoder.encode`` give the same
bytes as ``json.dumps(doc, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` of the documented object; ``encode_tracking`` refuses a
non-finite value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ENCODER_CACHE",
    "EXPOSURES_TOPIC",
    "FORMAT_VERSION",
    "MAX_FIELD_CHARS",
    "SOURCES",
    "TRACKING_TOPIC",
    "ExposureEncoder",
    "TrackingEvent",
    "encode_exposure",
    "encode_tracking",
]

EXPOSURES_TOPIC = "__exposures"
TRACKING_TOPIC = "__tracking"
FORMAT_VERSION = 1
SOURCES = frozenset({"rpc", "ofrep", "hook"})
MAX_FIELD_CHARS = 1024
ENCODER_CACHE = 4096
"""Templates an ``ExposureEncoder`` keeps of each kind before it starts over."""

_quote: Callable[[str], str] = json.encoder.encode_basestring
"""JSON string literal exactly as ``json.dumps(..., ensure_ascii=False)`` writes it (C-accelerated)."""


@dataclass(frozen=True, slots=True)
class TrackingEvent:
    """One validated tracking event (flags/tracking.py validates)."""

    name: str
    targeting_key: str
    value: float | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


def encode_exposure(
    env: str,
    flag: str,
    variant: str,
    reason: str,
    targeting_key: str,
    version: int,
    source: str,
    ts_ms: int,
) -> bytes:
    """The ``__exposures`` record value (module docstring), byte-identical to
    ``json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
    but built directly: it runs for every exposure. Raises ``UnicodeEncodeError``
    for strings that are not valid Unicode text (lone surrogates)."""
    q = _quote
    return (
        f'{{"env":{q(env)},"flag":{q(flag)},"format":{FORMAT_VERSION},"reason":{q(reason)},'
        f'"source":{q(source)},"targetingKey":{q(targeting_key)},"ts":{int(ts_ms)},'
        f'"variant":{q(variant)},"version":{int(version)}}}'
    ).encode()


class ExposureEncoder:
    """``encode_exposure``, byte for byte, at about two thirds of its cost:
    the fields that repeat from one exposure to the next (environment,
    flag, reason, source; variant, version) are encoded once into a
    template. Each cache holds at most ``ENCODER_CACHE`` templates and
    starts over when full (flag keys and variants come from requests)."""

    __slots__ = ("_heads", "_tails")

    def __init__(self) -> None:
        self._heads: dict[tuple[str, str, str, str], bytes] = {}
        self._tails: dict[tuple[str, int], bytes] = {}

    def encode(
        self,
        env: str,
        flag: str,
        variant: str,
        reason: str,
        targeting_key: str,
        version: int,
        source: str,
        ts_ms: int,
    ) -> bytes:
        """As ``encode_exposure`` (also ``UnicodeEncodeError``)."""
        heads = self._heads
        head = heads.get((env, flag, reason, source))
        if head is None:
            if len(heads) >= ENCODER_CACHE:
                heads.clear()
            q = _quote
            # The keys sorted: targetingKey, ts, variant, version come last.
            head = heads[(env, flag, reason, source)] = (
                f'{{"env":{q(env)},"flag":{q(flag)},"format":{FORMAT_VERSION},"reason":{q(reason)},'
                f'"source":{q(source)},"targetingKey":'
            ).encode()
        tails = self._tails
        tail = tails.get((variant, version))
        if tail is None:
            if len(tails) >= ENCODER_CACHE:
                tails.clear()
            tail = tails[(variant, version)] = (
                f',"variant":{_quote(variant)},"version":{int(version)}}}'.encode()
            )
        return b'%s%s,"ts":%d%s' % (head, _quote(targeting_key).encode(), ts_ms, tail)


def encode_tracking(env: str, event: TrackingEvent, ts_ms: int) -> bytes:
    """The ``__tracking`` record value (module docstring). ``value`` must be
    finite or None (``ValueError`` otherwise)."""
    value = event.value
    if value is not None:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError("a tracking value must be a finite number")
    doc = {
        "attributes": dict(event.attributes),
        "env": env,
        "format": FORMAT_VERSION,
        "name": event.name,
        "targetingKey": event.targeting_key,
        "ts": int(ts_ms),
        "value": value,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")
