"""Tracking and reported exposures over HTTP, on the OFREP port (8016).

``add_tracking_routes(app, live, sink)`` adds:

``POST /raftlog/v1/track``
    ``{"events": [{"name": N, "targetingKey": K, "value": 1.0, "attributes": {...}}]}``,
    authorised by a client (``rlc_``) or server (``rlf_``) key of the
    environment, as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
    ``202 {"accepted": n}`` once every event is acknowledged by the log
    (``ExposureSink.track``); ``503`` (``Retry-After``) when the log could
    not take them in time (some may be written: tracking is at least once).

``POST /raftlog/v1/exposures``
    ``{"exposures": [{"flag": F, "variant": V, "reason": R, "targetingKey": K}]}``
    from the in-process hook (flags/openfeature_hook.py); server keys only
    (in-process evaluation needs one anyway, and client keys are public).
    Exposures are best effort like every other: ``202 {"recorded": n}`` means
    handed to ``ExposureSink.record`` (deduplicated, maybe dropped), with
    the flag's current version here as ``version`` and ``"hook"`` as source.

Both routes admit requests through the OFREP app's gate (``OFREP_GATE``,
flags/ofrep.py), like every route of the port: the same key check (cached
per key epoch), readiness, rate limits per key and per (key, address), and
the same refusals: 401 (no key, unknown or revoked; ``WWW-Authenticate``),
403 (a client key on ``/exposures``, a selector naming another
environment), 429 (``Retry-After``), 503 while the server reads the flag
log. Errors are OFREP bodies ``{"errorCode": C, "errorDetails": text}``;
the ones of these routes: 400 ``PARSE_ERROR`` (not JSON, NaN/Infinity, too
deep) or ``INVALID_EVENT`` / ``INVALID_EXPOSURE`` (the path of the first bad
field and the rule), 413 ``PAYLOAD_TOO_LARGE``, 415
``UNSUPPORTED_MEDIA_TYPE`` (not ``application/json``), 503 ``UNAVAILABLE``
(the log did not take the events).

Invariants:

- A batch is validated in full before anything is written: a 4xx (a 429
  too) wrote nothing.
- A 202 from ``/track`` means every event of the batch is durable.
- Keys are never logged nor echoed in a body.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from aiohttp import web

from flags.exposures import MAX_FIELD_CHARS, EventLogError, ExposureSink, TrackingEvent
from flags.live import LiveFlags
from flags.ofrep import OFREP_GATE, OfrepGate, OfrepHttpError, OfrepLimits

__all__ = [
    "EXPOSURES_PATH",
    "MAX_BODY_BYTES",
    "MAX_EVENTS",
    "TRACK_PATH",
    "InvalidBody",
    "add_tracking_routes",
    "answering_refusals",
    "parse_events",
    "parse_exposures",
    "route_gate",
]

TRACK_PATH = "/raftlog/v1/track"
EXPOSURES_PATH = "/raftlog/v1/exposures"
MAX_BODY_BYTES = 256 * 1024
MAX_EVENTS = 100
MAX_EXPOSURES = 1000
MAX_NAME_CHARS = 128
MAX_TARGETING_KEY_CHARS = 256
MAX_ATTRIBUTES_BYTES = 4096
MAX_DEPTH = 8
EVENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*")
EVENT_NAME_RULE = (
    f"1-{MAX_NAME_CHARS} characters: letters, digits and _ . : / -, starting with a letter or digit"
)


class InvalidBody(ValueError):
    """A request body the rules refuse; ``code`` is the ``errorCode``."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


async def read_json(request: web.Request) -> Any:
    """The JSON body, or ``InvalidBody`` with the status-defining code."""
    if request.content_type != "application/json":
        raise InvalidBody("UNSUPPORTED_MEDIA_TYPE", "send the body as Content-Type: application/json")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise InvalidBody("PAYLOAD_TOO_LARGE", f"the body may be at most {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidBody("PAYLOAD_TOO_LARGE", f"the body may be at most {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        raise InvalidBody("PARSE_ERROR", f"the body is not valid JSON: {error}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: Any, limit: int) -> int:
    if limit < 0:
        return 0
    if isinstance(value, dict):
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


def _batch(
    body: Any, field: str, limit: int, code: str, allowed: frozenset[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, item)`` of each entry of ``body[field]``: a non-empty list of
    at most ``limit`` objects with no field outside ``allowed``."""
    if not isinstance(body, dict) or set(body) != {field}:
        raise InvalidBody(code, f'the body must be an object with one field, "{field}": a list')
    items = body[field]
    if not isinstance(items, list) or not items:
        raise InvalidBody(code, f"{field} must be a non-empty list")
    if len(items) > limit:
        raise InvalidBody(code, f"{field} holds {len(items)} entries; at most {limit} per request")
    for index, item in enumerate(items):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise InvalidBody(code, f"{where} must be an object")
        unknown = set(item) - allowed
        if unknown:
            raise InvalidBody(
                code, f"{where} has unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        yield where, item


def _text(item: Mapping[str, Any], name: str, where: str, code: str, limit: int) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidBody(code, f"{where}.{name} must be a non-empty string of at most {limit} characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidBody(code, f"{where}.{name} is not valid Unicode text") from None
    return value


EVENT_FIELDS = frozenset({"name", "targetingKey", "value", "attributes"})


def parse_events(body: Any) -> list[TrackingEvent]:
    """Validate a whole ``/track`` body; ``InvalidBody`` names the first problem."""
    code = "INVALID_EVENT"
    events = []
    for where, item in _batch(body, "events", MAX_EVENTS, code, EVENT_FIELDS):
        name = _text(item, "name", where, code, MAX_NAME_CHARS)
        if not EVENT_NAME.fullmatch(name):
            raise InvalidBody(code, f"{where}.name {name!r} is not an event name: {EVENT_NAME_RULE}")
        targeting_key = _text(item, "targetingKey", where, code, MAX_TARGETING_KEY_CHARS)
        value = item.get("value")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidBody(code, f"{where}.value must be a finite number, or absent")
            if isinstance(value, int) and abs(value) > 2**53:
                raise InvalidBody(code, f"{where}.value is too large to be exact as a float")
            value = float(value)
        attributes = item.get("attributes", {})
        if attributes is None:
            attributes = {}
        if not isinstance(attributes, dict):
            raise InvalidBody(code, f"{where}.attributes must be an object")
        if _depth(attributes, MAX_DEPTH + 1) > MAX_DEPTH:
            raise InvalidBody(code, f"{where}.attributes nests deeper than {MAX_DEPTH} levels")
        try:
            size = len(json.dumps(attributes, ensure_ascii=False, separators=(",", ":")).encode())
        except UnicodeEncodeError:
            raise InvalidBody(code, f"{where}.attributes holds text that is not valid Unicode") from None
        if size > MAX_ATTRIBUTES_BYTES:
            raise InvalidBody(
                code, f"{where}.attributes is {size} bytes as JSON; at most {MAX_ATTRIBUTES_BYTES}"
            )
        events.append(TrackingEvent(name, targeting_key, value, attributes))
    return events


EXPOSURE_FIELDS = frozenset({"flag", "variant", "reason", "targetingKey"})
MAX_REASON_CHARS = 64


def parse_exposures(body: Any) -> list[tuple[str, str, str, str]]:
    """Validate a whole ``/exposures`` body: ``(flag, variant, reason, targeting key)`` each.

    Batches come by the thousand (the hook's), so a flat pass takes what is
    plainly valid; anything it does not take goes through the field-by-field
    rules (``_parse_exposures_in_full``), which accept the same bodies and
    name the first problem."""
    found = _plainly_valid_exposures(body)
    return found if found is not None else _parse_exposures_in_full(body)


def _plainly_valid_exposures(body: Any) -> list[tuple[str, str, str, str]] | None:
    """The exposures of ``body`` when every one is plainly valid (exact
    ``dict``/``str`` types as ``json.loads`` makes them, fields within
    their limits, text encodable); None when any is not, or may not be."""
    if type(body) is not dict or len(body) != 1:
        return None
    items = body.get("exposures")
    if type(items) is not list or not 0 < len(items) <= MAX_EXPOSURES:
        return None
    allowed = EXPOSURE_FIELDS
    found = []
    texts: list[str] = []
    for item in items:
        if type(item) is not dict or not item.keys() <= allowed:
            return None
        flag = item.get("flag")
        variant = item.get("variant")
        reason = item.get("reason", "UNKNOWN")
        targeting_key = item.get("targetingKey")
        if (
            type(flag) is not str
            or type(variant) is not str
            or type(reason) is not str
            or type(targeting_key) is not str
            or not 0 < len(flag) <= MAX_FIELD_CHARS
            or not 0 < len(variant) <= MAX_FIELD_CHARS
            or not 0 < len(reason) <= MAX_REASON_CHARS
            or not 0 < len(targeting_key) <= MAX_TARGETING_KEY_CHARS
        ):
            return None
        found.append((flag, variant, reason, targeting_key))
        texts += (flag, variant, reason, targeting_key)
    try:
        # UTF-8 refuses every surrogate code point, paired or not, so the
        # whole is encodable exactly when each piece is.
        "".join(texts).encode()
    except UnicodeEncodeError:
        return None
    return found


def _parse_exposures_in_full(body: Any) -> list[tuple[str, str, str, str]]:
    code = "INVALID_EXPOSURE"
    found = []
    for where, item in _batch(body, "exposures", MAX_EXPOSURES, code, EXPOSURE_FIELDS):
        flag = _text(item, "flag", where, code, MAX_FIELD_CHARS)
        variant = _text(item, "variant", where, code, MAX_FIELD_CHARS)
        reason = item.get("reason", "UNKNOWN")
        reason = _text({"reason": reason}, "reason", where, code, MAX_REASON_CHARS)
        targeting_key = _text(item, "targetingKey", where, code, MAX_TARGETING_KEY_CHARS)
        found.append((flag, variant, reason, targeting_key))
    return found


_STATUS = {
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "PAYLOAD_TOO_LARGE": 413,
}


def _refusal(error: InvalidBody) -> OfrepHttpError:
    return OfrepHttpError(_STATUS.get(error.code, 400), error.code, error.details)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answering_refusals(handler: Handler) -> Handler:
    """``handler`` with its ``OfrepHttpError`` answered as the OFREP app's
    middleware answers it: the same body even on an app without that
    middleware (a test's bare app)."""

    async def answered(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except OfrepHttpError as error:
            return error.response()

    return answered


def route_gate(app: web.Application, live: LiveFlags) -> OfrepGate:
    """The OFREP app's gate (``OFREP_GATE``: keys, readiness, rate limits),
    which every route of the OFREP port admits requests through. An app not
    built by ``ofrep_app`` gets one with the default limits, always ready."""
    gate = app.get(OFREP_GATE)
    if gate is None:
        gate = app[OFREP_GATE] = OfrepGate(live, OfrepLimits(), lambda: True)
    return gate


def add_tracking_routes(
    app: web.Application,
    live: LiveFlags,
    sink: ExposureSink,
    *,
    track_timeout_s: float = 10.0,
) -> None:
    """Add ``POST /raftlog/v1/track`` and ``POST /raftlog/v1/exposures`` (module docstring)."""
    gate = route_gate(app, live)

    async def track(request: web.Request) -> web.Response:
        scope = gate.admit(request).scope
        try:
            events = parse_events(await read_json(request))
        except InvalidBody as error:
            raise _refusal(error) from None
        try:
            await sink.track(scope, events, timeout_s=track_timeout_s)
        except EventLogError as error:
            raise OfrepHttpError(
                503,
                "UNAVAILABLE",
                f"the events could not be made durable; retry: {error}",
                headers={"Retry-After": "1"},
            ) from None
        return web.json_response({"accepted": len(events)}, status=202)

    async def exposures(request: web.Request) -> web.Response:
        # Server keys only: client keys are public, and in-process evaluation needs a server key anyway.
        scope = gate.admit(request, allow_client=False).scope
        try:
            found = parse_exposures(await read_json(request))
        except InvalidBody as error:
            raise _refusal(error) from None
        # Each flag's version as this server knows it now (asked once per flag).
        store = live.store
        flags = {flag for flag, *_ in found}
        versions = {flag: store.flag_version(scope.tenant, scope.env, flag) for flag in flags}
        sink.record_many(
            scope,
            [(flag, variant, reason, key, versions[flag]) for flag, variant, reason, key in found],
            "hook",
        )
        return web.json_response({"recorded": len(found)}, status=202)

    app.router.add_post(TRACK_PATH, answering_refusals(track))
    app.router.add_post(EXPOSURES_PATH, answering_refusals(exposures))
