"""The OFREP port (8016): OpenFeature Remote Evaluation Protocol for mobile and web apps.

One aiohttp application (``ofrep_app``), served by ``raftlog flags serve``
beside the gRPC ports. Routes here:

- ``POST /ofrep/v1/evaluate/flags/{key}``: one flag for a context (what the
  server-side OFREP providers call, e.g. ``openfeature-provider-ofrep``);
- ``POST /ofrep/v1/evaluate/flags``: every flag of the key's environment for
  one context (what mobile and web SDKs call), with a strong ``ETag`` and
  ``If-None-Match`` -> ``304 Not Modified`` when the body the client would
  get is the one it has;
- ``OPTIONS`` on any path: the CORS preflight.

Other helpers add routes (change pings ``GET /ofrep/v1/events``, tracking
``POST /raftlog/v1/track``) through ``extra_routes``; they authenticate with
``request.app[OFREP_GATE].admit(request)`` (raises ``OfrepHttpError``, which
the app turns into an OFREP error response) and so share its keys, rate
limits and CORS.

Authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, a
server (``rlf_``) or client (``rlc_``) SDK key; the key names the tenant and
environment. An optional ``flagd-selector`` header may name the key's own
environment (or be the key), anything else is 403, as on the flagd ports.

Status codes (body ``{"errorCode", "errorDetails"}`` unless said):

===== ===================================================================
400   ``PARSE_ERROR``: the body is not a JSON object; ``INVALID_CONTEXT``:
      ``context`` is not an object or ``targetingKey`` not a string. The
      single-flag endpoint also answers 400 with ``key`` when the flag's rule
      failed (``PARSE_ERROR``/``GENERAL``: flagd's codes); in bulk such a flag
      is an entry with ``errorCode``. ``TARGETING_KEY_MISSING`` is never sent:
      flagd evaluates without one (fractional rules give the default variant).
401   no key, an unknown or revoked key, or a key of a deleted environment
      (``WWW-Authenticate: Bearer``)
403   a client key where only server keys may go, or a selector naming
      another environment
404   ``FLAG_NOT_FOUND`` (with ``key``)
413   the body is over ``max_body_bytes`` (64 KiB by default): not read
415   ``Content-Type`` is not JSON (``application/json`` or ``*/*+json``)
429   over a rate limit; ``Retry-After`` in whole seconds
503   the server is still reading the flag log (``Retry-After: 1``)
===== ===================================================================

Bulk bodies carry ``eventStreams`` when the change-ping route is present:
``{"type": "sse", "endpoint": {"requestUri": "/ofrep/v1/events?key=<key>"},
"inactivityDelaySec": 120}`` (relative, so the provider uses the origin it
was configured with: right behind a proxy), or ``{"type": "sse", "url":
"<public_url>/ofrep/v1/events?key=<key>"}`` when a public URL is configured.
The key is in the URL because ``EventSource`` cannot send headers (the ADR
allows it and asks clients not to log the URL).

ETags: ``etag = "<BLAKE2b-128 of the canonical body>"``. The ETag of each
(key, request body bytes) is remembered with the environment version it was
computed at (at most ``max_memo_entries``, oldest dropped in batches), so a
revalidation whose answer cannot have changed is a 304 without evaluating or
encoding anything. Environments with a rule reading ``$flagd.timestamp`` are
never remembered (their answers change with time): they are evaluated and the
fresh body's ETag compared. Either way a 304 is sent exactly when the body
the client would get has the ETag it sent.

Invariants: nothing here writes to the log (exposures go to the optional
``exposures`` sink, which never blocks); every refusal happens before any
evaluation; memory is bounded (key cache, ETag memo, rate-limit buckets).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiohttp import web
from openfeature.evaluation_context import EvaluationContext

from flags.exposure_api import ExposureRecorder
from flags.live import LiveFlags, Scope
from flags.ofrep_values import (
    BulkPlan,
    FlagOutcome,
    PlannedFlag,
    canonical_json,
    error_body,
    etag_matches,
    etag_of,
    evaluate_one,
)
from flags.rate_limit import Rate, RateLimiter, retry_after_seconds
from flags.sdk_keys import KeyKind

__all__ = [
    "BULK_PATH",
    "DEFAULT_OFREP_PORT",
    "EVENTS_PATH",
    "OFREP_GATE",
    "OFREP_LIVE",
    "Admitted",
    "ExposureRecorder",
    "OfrepGate",
    "OfrepHttpError",
    "OfrepLimits",
    "ofrep_app",
]

DEFAULT_OFREP_PORT = 8016
BULK_PATH = "/ofrep/v1/evaluate/flags"
FLAG_PATH = "/ofrep/v1/evaluate/flags/{key}"
EVENTS_PATH = "/ofrep/v1/events"
SELECTOR_HEADER = "flagd-selector"
JSON_TYPE = "application/json"
MAX_CACHED_KEYS = 10_000
NOT_READY_MESSAGE = "flag server is loading the flag log"
MISSING_KEY_MESSAGE = (
    "missing SDK key: send Authorization: Bearer <key> (or X-API-Key: <key>) with a client key (rlc_…) "
    "or a server key (rlf_…); create one with `raftlog flags key create ENV --kind client`"
)
CORS_ALLOW_HEADERS = "Authorization, Content-Type, If-None-Match, X-API-Key, flagd-selector, Last-Event-ID"
CORS_EXPOSE_HEADERS = "ETag, Retry-After"
CORS_MAX_AGE_S = "86400"


@dataclass(frozen=True, slots=True)
class OfrepLimits:
    per_key: Rate = field(default_factory=lambda: Rate(1000.0, 2000.0))
    """Everything one key may ask of this server."""
    per_address: Rate = field(default_factory=lambda: Rate(50.0, 100.0))
    """What one client address may ask with one key (or without a valid key)."""
    max_body_bytes: int = 64 * 1024
    trust_forwarded_for: bool = False
    """Take the client address from the first ``X-Forwarded-For`` entry
    (only behind a proxy that sets it: clients could otherwise pick any)."""
    max_memo_entries: int = 100_000
    """ETag memo entries (~250 bytes each)."""
    inactivity_delay_s: int = 120


class OfrepHttpError(Exception):
    """A refusal, answered as an OFREP error body (module table)."""

    def __init__(
        self,
        status: int,
        code: str,
        details: str,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {details}")
        self.status = status
        self.code = code
        self.details = details
        self.key = key
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            body=error_body(self.code, self.details, self.key),
            content_type=JSON_TYPE,
            headers=self.headers,
        )


class Admitted(NamedTuple):
    key: str
    """The clear key (keys rate limits and the ETag memo; never logged)."""
    scope: Scope
    kind: KeyKind


class OfrepGate:
    """Readiness, the SDK key, the selector, the key kind and the rate limits
    of a request, in that order (``admit``). Known keys are cached per
    ``LiveFlags.key_epoch``, as flags/sdk_auth.py's ``KeyCache`` does."""

    def __init__(
        self,
        live: LiveFlags,
        limits: OfrepLimits,
        is_ready: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.live = live
        self.limits = limits
        self.is_ready = is_ready
        self.clock = clock
        self.limiter = RateLimiter(limits.per_key, limits.per_address)
        self._keys: dict[str, tuple[Scope, KeyKind, int]] = {}

    def address(self, request: web.Request) -> str:
        if self.limits.trust_forwarded_for:
            forwarded = request.headers.get("X-Forwarded-For")
            if forwarded:
                return forwarded.split(",", 1)[0].strip()
        return request.remote or ""

    def _authenticate(self, key: str) -> tuple[Scope, KeyKind] | None:
        epoch = self.live.key_epoch
        cached = self._keys.get(key)
        if cached is not None:
            if cached[2] == epoch:
                return cached[0], cached[1]
            del self._keys[key]
        found = self.live.authenticate_ofrep(key)
        if found is not None:
            if len(self._keys) >= MAX_CACHED_KEYS:
                del self._keys[next(iter(self._keys))]
            self._keys[key] = (found[0], found[1], epoch)
        return found

    def _limit(self, key: str | None, request: web.Request) -> None:
        wait = self.limiter.check(key, self.address(request), self.clock())
        if wait > 0.0:
            seconds = retry_after_seconds(wait)
            raise OfrepHttpError(
                429,
                "GENERAL",
                f"rate limit exceeded: retry after {seconds} s",
                headers={"Retry-After": str(seconds)},
            )

    def admit(self, request: web.Request, *, allow_client: bool = True, key: str | None = None) -> Admitted:
        """The request's key and scope, or ``OfrepHttpError``. ``key``: taken
        from elsewhere by the caller (e.g. an SSE URL's query)."""
        if not self.is_ready():
            raise OfrepHttpError(503, "GENERAL", NOT_READY_MESSAGE, headers={"Retry-After": "1"})
        headers = request.headers
        if key is None:
            authorization = headers.get("Authorization")
            if authorization is not None:
                scheme, _, key = authorization.partition(" ")
                if scheme.lower() != "bearer":
                    self._limit(None, request)
                    raise _unauthorized(
                        f"Authorization uses scheme {scheme!r}; send Authorization: Bearer <key>"
                    )
                key = key.strip()
            else:
                key = headers.get("X-API-Key", "").strip()
        if not key:
            self._limit(None, request)
            raise _unauthorized(MISSING_KEY_MESSAGE)
        found = self._authenticate(key)
        if found is None:
            self._limit(None, request)
            if key.startswith("rlk_"):
                why = "that is a cluster API key (rlk_…): OFREP takes an SDK key of an environment"
            else:
                why = "unknown or revoked SDK key (or its environment was deleted)"
            raise _unauthorized(why)
        scope, kind = found
        selector = headers.get(SELECTOR_HEADER)
        if selector and selector != key and selector != scope.env:
            raise OfrepHttpError(
                403, "GENERAL", f"the key reads environment {scope.env!r}; the selector names another"
            )
        if kind is KeyKind.CLIENT and not allow_client:
            raise OfrepHttpError(
                403, "GENERAL", "a client key (rlc_…) cannot do this: use a server key (rlf_…)"
            )
        self._limit(key, request)
        return Admitted(key, scope, kind)


def _unauthorized(details: str) -> OfrepHttpError:
    return OfrepHttpError(401, "GENERAL", details, headers={"WWW-Authenticate": 'Bearer realm="ofrep"'})


OFREP_GATE = web.AppKey("ofrep_gate", OfrepGate)
OFREP_LIVE = web.AppKey("ofrep_live", LiveFlags)


def _is_json(request: web.Request) -> bool:
    content_type = request.content_type
    return content_type == JSON_TYPE or content_type.endswith("+json")


async def _read_body(request: web.Request, limit: int) -> bytes:
    if not _is_json(request):
        raise OfrepHttpError(
            415,
            "PARSE_ERROR",
            f"Content-Type is {request.content_type!r}: send Content-Type: application/json",
        )
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(length, limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(None, limit) from None


def _too_large(length: int | None, limit: int) -> OfrepHttpError:
    size = "over the limit" if length is None else f"{length} bytes"
    return OfrepHttpError(413, "INVALID_CONTEXT", f"the request body is {size}; the limit is {limit} bytes")


def parse_context(body: bytes) -> EvaluationContext:
    """The evaluation context of an OFREP request body (400 if it is not one)."""
    try:
        doc = json.loads(body) if body else {}
    except (ValueError, RecursionError) as error:
        raise OfrepHttpError(400, "PARSE_ERROR", f"the request body is not JSON: {error}") from None
    if not isinstance(doc, dict):
        raise OfrepHttpError(400, "PARSE_ERROR", 'the request body is a JSON object: {"context": {...}}')
    context = doc.get("context")
    if context is None:
        context = {}  # the Python provider sends {} when the application set no context
    if not isinstance(context, dict):
        raise OfrepHttpError(
            400, "INVALID_CONTEXT", '"context" is a JSON object, e.g. {"targetingKey": "user-1"}'
        )
    targeting_key = context.get("targetingKey")
    if targeting_key is not None and not isinstance(targeting_key, str):
        raise OfrepHttpError(
            400, "INVALID_CONTEXT", f'"targetingKey" is a string, not {type(targeting_key).__name__}'
        )
    attributes = {k: v for k, v in context.items() if k != "targetingKey"}
    return EvaluationContext(targeting_key, attributes)


class _Ofrep:
    """The evaluation routes' state: plans per environment version and the ETag memo."""

    def __init__(
        self,
        live: LiveFlags,
        gate: OfrepGate,
        limits: OfrepLimits,
        exposures: ExposureRecorder | None,
        public_url: str | None,
    ) -> None:
        self.live = live
        self.gate = gate
        self.limits = limits
        self.exposures = exposures
        self.public_url = public_url.rstrip("/") if public_url else None
        self.events_route = False
        """Set once the app's routes are known: whether bulk bodies name the change pings."""
        self._plans: dict[Scope, BulkPlan] = {}
        self._memo: dict[tuple[str, bytes], tuple[int, str]] = {}
        """(clear key, digest of the request body) -> (environment version, ETag)."""

    def plan(self, scope: Scope) -> BulkPlan:
        serving = self.live.serving(scope)
        if serving is None:  # deleted between the key check and now
            raise _unauthorized("the key's environment no longer exists")
        plan = self._plans.get(scope)
        if plan is None or plan.serving is not serving:
            plan = self._plans[scope] = BulkPlan.build(self.live, serving)
        return plan

    def _exposure_hook(
        self, scope: Scope, context: EvaluationContext
    ) -> Callable[[PlannedFlag, FlagOutcome], None] | None:
        exposures = self.exposures
        targeting_key = context.targeting_key
        if exposures is None or not targeting_key:
            return None

        def record(flag: PlannedFlag, outcome: FlagOutcome) -> None:
            if outcome.variant is not None:
                exposures.record(
                    scope, flag.key, outcome.variant, outcome.reason, targeting_key, flag.version, "ofrep"
                )

        return record

    def event_streams(self, key: str) -> list[dict[str, Any]]:
        if not self.events_route:
            return []
        uri = f"{EVENTS_PATH}?key={key}"  # keys are [A-Za-z0-9_-]: nothing to escape
        delay = self.limits.inactivity_delay_s
        if self.public_url:
            return [{"type": "sse", "url": self.public_url + uri, "inactivityDelaySec": delay}]
        return [{"type": "sse", "endpoint": {"requestUri": uri}, "inactivityDelaySec": delay}]

    async def bulk(self, request: web.Request) -> web.StreamResponse:
        key, scope, _ = self.gate.admit(request)
        body = await _read_body(request, self.limits.max_body_bytes)
        plan = self.plan(scope)
        version = plan.serving.version
        memo_key = (key, hashlib.blake2b(body, digest_size=16).digest())
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None:
            known = self._memo.get(memo_key)
            if known is not None and known[0] == version and etag_matches(if_none_match, known[1]):
                return web.Response(status=304, headers={"ETag": known[1]})
        context = parse_context(body)
        entries = plan.evaluate_all(context, self._exposure_hook(scope, context))
        answer = plan.bulk_body(entries, self.event_streams(key))
        etag = etag_of(answer)
        if not plan.time_dependent:
            self._remember(memo_key, version, etag)
        if if_none_match is not None and etag_matches(if_none_match, etag):
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=answer, content_type=JSON_TYPE, headers={"ETag": etag})

    def _remember(self, memo_key: tuple[str, bytes], version: int, etag: str) -> None:
        memo = self._memo
        if memo_key not in memo and len(memo) >= self.limits.max_memo_entries:
            for old in list(itertools.islice(memo, max(1, len(memo) // 8))):  # the oldest, in a batch
                del memo[old]
        memo[memo_key] = (version, etag)

    async def one(self, request: web.Request) -> web.Response:
        flag_key = request.match_info["key"]
        _, scope, _ = self.gate.admit(request)
        body = await _read_body(request, self.limits.max_body_bytes)
        context = parse_context(body)
        plan = self.plan(scope)
        flag = plan.by_key.get(flag_key)
        if flag is None:
            raise OfrepHttpError(
                404, "FLAG_NOT_FOUND", f"flag {flag_key!r} was not found in this environment", key=flag_key
            )
        outcome = evaluate_one(plan.serving.evaluator, flag.key, flag.kind, context)
        hook = self._exposure_hook(scope, context)
        if hook is not None:
            hook(flag, outcome)
        status = 400 if outcome.error_code is not None else 200
        return web.Response(status=status, body=canonical_json(outcome.entry), content_type=JSON_TYPE)


# --- CORS and errors ---------------------------------------------------------------------


async def _add_cors(request: web.Request, response: web.StreamResponse) -> None:
    """Every response (errors and streams too) may be read by a browser app
    of any origin: keys travel in headers, never in cookies."""
    headers = response.headers
    headers["Access-Control-Allow-Origin"] = "*"
    headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS


_PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
    "Access-Control-Max-Age": CORS_MAX_AGE_S,
}


@web.middleware
async def _ofrep_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=_PREFLIGHT_HEADERS)
    try:
        return await handler(request)
    except OfrepHttpError as error:
        return error.response()
    except web.HTTPRequestEntityTooLarge as error:
        return OfrepHttpError(413, "INVALID_CONTEXT", error.text or "request body too large").response()


def ofrep_app(
    live: LiveFlags,
    *,
    limits: OfrepLimits | None = None,
    is_ready: Callable[[], bool] = lambda: True,
    exposures: ExposureRecorder | None = None,
    public_url: str | None = None,
    extra_routes: Sequence[Callable[[web.Application], object]] = (),
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The OFREP application (module docstring). ``extra_routes``: each is
    called with the app to add its routes (before it is frozen; what it
    returns is ignored)."""
    limits = limits or OfrepLimits()
    app = web.Application(middlewares=[_ofrep_middleware], client_max_size=limits.max_body_bytes)
    gate = OfrepGate(live, limits, is_ready, clock)
    app[OFREP_GATE] = gate
    app[OFREP_LIVE] = live
    state = _Ofrep(live, gate, limits, exposures, public_url)
    app.router.add_post(BULK_PATH, state.bulk)
    app.router.add_post(FLAG_PATH, state.one)
    for add in extra_routes:
        add(app)
    state.events_route = any(resource.canonical == EVENTS_PATH for resource in app.router.resources())
    app.on_response_prepare.append(_add_cors)
    return app
