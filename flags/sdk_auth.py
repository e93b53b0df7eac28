"""SDK keys on the flagd protocols: who is calling, and which environment they read.

flagd itself has no authentication; its clients send one per-client value, the
selector. So an SDK key (``rlf_<id>_<secret>``, flags/sdk_keys.py) is accepted
in either of two places:

============================== ==================================================
where                          rule
============================== ==================================================
``authorization: Bearer <key>`` the key names tenant and environment; a selector
                               (header or body) may then be empty, the key itself
                               or the key's environment name; anything else is
                               PERMISSION_DENIED (it asks for something the key
                               does not grant)
selector (``flagd-selector``   for clients that cannot send headers: the selector
header; the ``selector`` body  *is* the key
field of SyncFlags and
FetchAllFlags as fallback)
============================== ==================================================

No key, an unknown or a revoked key, or a cluster key (``rlk_``) where an SDK key
belongs: UNAUTHENTICATED, with a message that says what to send. Refusals are
permanent statuses: the flagd provider retries UNAVAILABLE and UNKNOWN, so those
are kept for "not ready yet" (the flag log is still loading), which is transient.

Invariants:

- ``sdk_scope`` is pure: the answer depends only on the LiveFlags key index and
  the two strings; it never reveals whether a key id exists (unknown and revoked
  read the same) and never echoes a key back in a message.
- A granted ``Scope`` is exactly the key's (tenant, environment): a selector can
  narrow the request to the key's own environment, never widen or move it.
- ``SdkGate`` caches keys that authenticated (``KeyCache``): clear key ->
  (scope, ``LiveFlags.key_epoch`` then). An entry counts only while the epoch
  is unchanged, so a revoke, a deleted environment or a forgotten tenant
  refuses the next call at once (and wakes the streams of the environment,
  which re-check). Only keys that passed the full HMAC check are stored, at
  most ``max_keys`` of them (oldest dropped first): unknown keys cannot grow
  it. Keys are never logged; the cache is a plain dict in this process.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import grpc

from flags.live import LiveFlags, Scope

__all__ = [
    "AUTHORIZATION_HEADER",
    "NOT_READY_MESSAGE",
    "SDK_KEY_PREFIX",
    "SELECTOR_HEADER",
    "KeyCache",
    "Refusal",
    "SdkAuthError",
    "SdkGate",
    "sdk_scope",
]

SDK_KEY_PREFIX = "rlf_"
CLUSTER_KEY_PREFIX = "rlk_"
SELECTOR_HEADER = "flagd-selector"
AUTHORIZATION_HEADER = "authorization"
NOT_READY_MESSAGE = "flag server is loading the flag log"
REVOKED_MESSAGE = "the SDK key was revoked: create a new one with `raftlog flags key create ENV`"
MISSING_KEY_MESSAGE = "missing SDK key: send authorization: Bearer rlf_… or use the key as the selector"
MAX_CACHED_KEYS = 10_000
"""Keys (SDK clients' distinct keys) a gate remembers: ~200 bytes each."""


class Refusal(enum.Enum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.value]


class SdkAuthError(Exception):
    """A request the SDK key rules refuse (see the module table)."""

    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.message = message


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request carried: the Bearer token and the selector (either may be empty)."""

    bearer: str
    selector: str
    other_scheme: str = ""
    """An authorization header with a scheme other than Bearer (refused, by name)."""


def credentials(metadata: Sequence[tuple[str, str | bytes]] | None, body_selector: str = "") -> Credentials:
    """The Bearer token and selector of a call's metadata; the body selector fills an empty header."""
    bearer = other_scheme = selector = ""
    seen_authorization = False
    for name, value in metadata or ():
        if isinstance(value, bytes):  # binary headers end in -bin; never ours
            continue
        lowered = name.lower()
        if lowered == AUTHORIZATION_HEADER and not seen_authorization:
            seen_authorization = True
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                bearer = token.strip()
            elif scheme.startswith((SDK_KEY_PREFIX, CLUSTER_KEY_PREFIX)):
                other_scheme = "none (a bare key)"  # never echo a key into an error message
            else:
                other_scheme = scheme or "none"
        elif lowered == SELECTOR_HEADER and not selector:
            selector = value.strip()
    return Credentials(bearer, selector or body_selector.strip(), other_scheme)


class KeyCache:
    """``LiveFlags.authenticate`` for keys seen before: one dict lookup and an
    epoch compare instead of parsing the key and an HMAC (module invariants)."""

    __slots__ = ("_entries", "live", "max_keys")

    def __init__(self, live: LiveFlags, max_keys: int = MAX_CACHED_KEYS) -> None:
        self.live = live
        self.max_keys = max_keys
        self._entries: dict[str, tuple[Scope, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, clear_key: str) -> Scope | None:
        """The key's scope if it is cached and nothing changed for keys since; else None."""
        found = self._entries.get(clear_key)
        if found is not None and found[1] == self.live.key_epoch:
            return found[0]
        return None

    def authenticate(self, clear_key: str) -> Scope | None:
        entries = self._entries
        epoch = self.live.key_epoch
        found = entries.get(clear_key)
        if found is not None:
            if found[1] == epoch:
                return found[0]
            del entries[clear_key]  # something changed since: check it in full again
        scope = self.live.authenticate(clear_key)
        if scope is not None:
            if len(entries) >= self.max_keys:
                del entries[next(iter(entries))]  # the oldest entry
            entries[clear_key] = (scope, epoch)
        return scope


def _authenticate_key(authenticate: Callable[[str], Scope | None], key: str, where: str) -> Scope:
    if key.startswith(CLUSTER_KEY_PREFIX):
        raise SdkAuthError(
            Refusal.UNAUTHENTICATED,
            f"the {where} holds a cluster API key (rlk_…); flagd clients use an SDK key (rlf_…): "
            "create one with `raftlog flags key create ENV`",
        )
    if not key.startswith(SDK_KEY_PREFIX):
        raise SdkAuthError(Refusal.UNAUTHENTICATED, MISSING_KEY_MESSAGE)
    scope = authenticate(key)
    if scope is None:
        raise SdkAuthError(
            Refusal.UNAUTHENTICATED,
            f"the SDK key in the {where} is not valid (unknown, revoked, or its environment was deleted): "
            "create one with "
            "`raftlog flags key create ENV`",
        )
    return scope


def sdk_scope(
    live: LiveFlags, found: Credentials, authenticate: Callable[[str], Scope | None] | None = None
) -> Scope:
    """The scope the request may read; raises ``SdkAuthError`` (rules: module table).
    ``authenticate``: ``live.authenticate`` or a cache of it (``KeyCache``)."""
    if authenticate is None:
        authenticate = live.authenticate
    if found.other_scheme:
        raise SdkAuthError(
            Refusal.UNAUTHENTICATED,
            f"authorization header uses scheme {found.other_scheme!r}; send authorization: Bearer rlf_…",
        )
    if found.bearer:
        scope = _authenticate_key(authenticate, found.bearer, "authorization header")
        selector = found.selector
        if selector and selector != found.bearer and selector != scope.env:
            shown = "another SDK key" if selector.startswith(SDK_KEY_PREFIX) else repr(selector)
            raise SdkAuthError(
                Refusal.PERMISSION_DENIED,
                f"the selector asks for {shown}, but the SDK key grants environment {scope.env!r} only: "
                f"leave the selector empty or set it to {scope.env!r}",
            )
        return scope
    if found.selector:
        return _authenticate_key(authenticate, found.selector, "selector")
    raise SdkAuthError(Refusal.UNAUTHENTICATED, MISSING_KEY_MESSAGE)


class SdkGate:
    """The check every flagd RPC passes first: ready, then an SDK key (aborts the call otherwise)."""

    def __init__(
        self, live: LiveFlags, is_ready: Callable[[], bool], *, max_cached_keys: int = MAX_CACHED_KEYS
    ) -> None:
        self.live = live
        self.is_ready = is_ready
        self.keys = KeyCache(live, max_cached_keys)

    async def admit(
        self, context: grpc.aio.ServicerContext, body_selector: str = ""
    ) -> tuple[Scope, Credentials]:
        if not self.is_ready():
            await context.abort(grpc.StatusCode.UNAVAILABLE, NOT_READY_MESSAGE)
        found = credentials(context.invocation_metadata(), body_selector)
        try:
            return sdk_scope(self.live, found, self.keys.authenticate), found
        except SdkAuthError as error:
            await refuse(context, error)

    def still_grants(self, found: Credentials, scope: Scope) -> bool:
        """True when the stream's key is cached for ``scope`` and nothing changed for keys
        since (a dict lookup, no await); False: ``recheck`` decides."""
        return self.keys.cached(found.bearer or found.selector) is scope

    async def recheck(self, context: grpc.aio.ServicerContext, found: Credentials, scope: Scope) -> None:
        """End a stream whose key no longer grants ``scope`` (revoked, or its tenant deleted).
        While nothing changed for keys (``key_epoch``) this is a dict lookup.

        While the environment does not exist (deleted) the key cannot be told from a
        revoked one (``LiveFlags.authenticate`` refuses both): the stream stays open and
        serves the empty set, and is checked again once the environment exists again."""
        if self.still_grants(found, scope):
            return
        try:
            if sdk_scope(self.live, found, self.keys.authenticate) == scope:
                return
        except SdkAuthError:
            pass
        live = self.live
        if not live.store.has_environment(scope.tenant, scope.env) and scope.tenant in live.tenants():
            return
        await refuse(context, SdkAuthError(Refusal.UNAUTHENTICATED, REVOKED_MESSAGE))


async def refuse(context: grpc.aio.ServicerContext, error: SdkAuthError) -> NoReturn:
    await context.abort(error.refusal.grpc_code, error.message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
