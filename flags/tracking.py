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

Errors are JSON ``{"errorCode": C, "errorDetails": text}`` (OFREP's shape):
400 ``PARSE_ERROR`` (not JSON, NaN/Infinity, too deep) or ``INVALID_EVENT``
/ ``INVALID_EXPOSURE`` (the path of the first bad field and the rule), 401
``UNAUTHENTICATED`` (no key, unknown or revoked), 403 ``PERMISSION_DENIED``
(a client key on ``/exposures``), 413 ``PAYLOAD_TOO_LARGE``, 415
``UNSUPPORTED_MEDIA_TYPE`` (not ``application/json``), 503 ``UNAVAILABLE``.

Invariants:

- A batch is validated in full before anything is written: a 4xx wrote
  nothing.
- A 202 from ``/track`` means every event of the batch is durable.
- Keys are never logged nor echoed in a body.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from flags.exposures import MAX_FIELD_CHARS, EventLogError, ExposureSink, TrackingEvent
from flags.live import LiveFlags, Scope

__all__ = [
    "EXPOSURES_PATH",
    "MAX_BODY_BYTES",
    "MAX_EVENTS",
    "TRACK_PATH",
    "HttpKeys",
    "InvalidBody",
    "add_tracking_routes",
    "error_response",
    "parse_events",
    "parse_exposures",
    "request_key",
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
CLIENT = "client"
SERVER = "server"

Authenticator = Callable[[str], "tuple[Scope, str] | None"]
"""Clear key -> (scope, "client" | "server"), or None (unknown, revoked, environment gone)."""


class InvalidBody(ValueError):
    """A request body the rules refuse; ``code`` is the ``errorCode``."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def error_response(
    status: int, code: str, details: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"errorCode": code, "errorDetails": details}, status=status, headers=headers)


def request_key(request: web.Request, *, query: bool = False) -> str:
    """The key a request carries: ``Authorization: Bearer``, ``X-API-Key``,
    or (``query``: for EventSource, which cannot send headers) ``?key=``."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    header = request.headers.get("X-API-Key", "").strip()
    if header:
        return header
    return request.query.get("key", "").strip() if query else ""


class HttpKeys:
    """Client and server keys for HTTP, cached per ``LiveFlags.key_epoch``
    (like flags/sdk_auth.py's ``KeyCache``): a known key costs a dict lookup.

    Uses ``live.authenticate_ofrep`` (both kinds) when LiveFlags has it,
    else ``live.authenticate`` (server keys only)."""

    def __init__(
        self, live: LiveFlags, authenticate: Authenticator | None = None, max_keys: int = 10_000
    ) -> None:
        self.live = live
        self._authenticate = authenticate or _live_authenticator(live)
        self._max_keys = max_keys
        self._entries: dict[str, tuple[tuple[Scope, str], int]] = {}

    def scope(self, clear_key: str) -> tuple[Scope, str] | None:
        if not clear_key:
            return None
        epoch = self.live.key_epoch
        found = self._entries.get(clear_key)
        if found is not None:
            if found[1] == epoch:
                return found[0]
            del self._entries[clear_key]
        answer = self._authenticate(clear_key)
        if answer is not None:
            if len(self._entries) >= self._max_keys:
                del self._entries[next(iter(self._entries))]
            self._entries[clear_key] = (answer, epoch)
        return answer


def _live_authenticator(live: LiveFlags) -> Authenticator:
    both = getattr(live, "authenticate_ofrep", None)
    if both is not None:

        def authenticate(key: str) -> tuple[Scope, str] | None:
            answer = both(key)
            if answer is None:
                return None
            scope, kind = answer
            return scope, str(getattr(kind, "value", kind)).lower()

        return authenticate

    def server_only(key: str) -> tuple[Scope, str] | None:
        scope = live.authenticate(key)
        return None if scope is None else (scope, SERVER)

    return server_only


UNAUTHENTICATED_DETAILS = (
    "send a client (rlc_…) or server (rlf_…) key of the environment as Authorization: Bearer <key> "
    "or X-API-Key; this one is missing, unknown or revoked"
)


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


def _batch(body: Any, field: str, limit: int, code: str) -> list[Any]:
    if not isinstance(body, dict) or set(body) != {field}:
        raise InvalidBody(code, f'the body must be an object with one field, "{field}": a list')
    items = body[field]
    if not isinstance(items, list) or not items:
        raise InvalidBody(code, f"{field} must be a non-empty list")
    if len(items) > limit:
        raise InvalidBody(code, f"{field} holds {len(items)} entries; at most {limit} per request")
    return items


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
    for index, item in enumerate(_batch(body, "events", MAX_EVENTS, code)):
        where = f"events[{index}]"
        if not isinstance(item, dict):
            raise InvalidBody(code, f"{where} must be an object")
        unknown = set(item) - EVENT_FIELDS
        if unknown:
            raise InvalidBody(
                code, f"{where} has unknown field(s) {sorted(unknown)}; allowed: {sorted(EVENT_FIELDS)}"
            )
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


def parse_exposures(body: Any) -> list[tuple[str, str, str, str]]:
    """Validate a whole ``/exposures`` body: ``(flag, variant, reason, targeting key)`` each."""
    code = "INVALID_EXPOSURE"
    found = []
    for index, item in enumerate(_batch(body, "exposures", MAX_EXPOSURES, code)):
        where = f"exposures[{index}]"
        if not isinstance(item, dict):
            raise InvalidBody(code, f"{where} must be an object")
        unknown = set(item) - EXPOSURE_FIELDS
        if unknown:
            raise InvalidBody(
                code, f"{where} has unknown field(s) {sorted(unknown)}; allowed: {sorted(EXPOSURE_FIELDS)}"
            )
        flag = _text(item, "flag", where, code, MAX_FIELD_CHARS)
        variant = _text(item, "variant", where, code, MAX_FIELD_CHARS)
        reason = item.get("reason", "UNKNOWN")
        reason = _text({"reason": reason}, "reason", where, code, 64)
        targeting_key = _text(item, "targetingKey", where, code, MAX_TARGETING_KEY_CHARS)
        found.append((flag, variant, reason, targeting_key))
    return found


_STATUS = {
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "PAYLOAD_TOO_LARGE": 413,
}


def add_tracking_routes(
    app: web.Application,
    live: LiveFlags,
    sink: ExposureSink,
    *,
    keys: HttpKeys | None = None,
    track_timeout_s: float = 10.0,
) -> None:
    """Add ``POST /raftlog/v1/track`` and ``POST /raftlog/v1/exposures`` (module docstring)."""
    key_cache = keys or HttpKeys(live)

    def caller(request: web.Request) -> tuple[Scope, str] | web.Response:
        answer = key_cache.scope(request_key(request))
        if answer is None:
            return error_response(401, "UNAUTHENTICATED", UNAUTHENTICATED_DETAILS)
        return answer

    async def track(request: web.Request) -> web.Response:
        who = caller(request)
        if isinstance(who, web.Response):
            return who
        scope, _ = who
        try:
            events = parse_events(await read_json(request))
        except InvalidBody as error:
            return error_response(_STATUS.get(error.code, 400), error.code, error.details)
        try:
            await sink.track(scope, events, timeout_s=track_timeout_s)
        except EventLogError as error:
            return error_response(
                503,
                "UNAVAILABLE",
                f"the events could not be made durable; retry: {error}",
                {"Retry-After": "1"},
            )
        return web.json_response({"accepted": len(events)}, status=202)

    async def exposures(request: web.Request) -> web.Response:
        who = caller(request)
        if isinstance(who, web.Response):
            return who
        scope, kind = who
        if kind != SERVER:
            return error_response(
                403, "PERMISSION_DENIED", "exposures are reported with a server key (rlf_…), not a client key"
            )
        try:
            found = parse_exposures(await read_json(request))
        except InvalidBody as error:
            return error_response(_STATUS.get(error.code, 400), error.code, error.details)
        store = live.store
        for flag, variant, reason, targeting_key in found:
            version = store.flag_version(scope.tenant, scope.env, flag)  # as this server knows it now
            sink.record(scope, flag, variant, reason, targeting_key, version, "hook")
        return web.json_response({"recorded": len(found)}, status=202)

    app.router.add_post(TRACK_PATH, track)
    app.router.add_post(EXPOSURES_PATH, exposures)
