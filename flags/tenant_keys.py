"""Who is calling the admin API: a cluster API key -> ``Caller(tenant, key_id, operator)``.

The flag server keeps no key table of its own. It asks the cluster
(``AdminService.WhoAmI``, through the SDK's ``Admin``) with the caller's own
key and ``raftlog-tenant`` header, and remembers the answer for ``cache_s``
(5 s): a revoked key keeps working here at most that long.

Rules:

- ``authorization: Bearer rlk_...`` is required (``UNAUTHENTICATED
  MISSING_API_KEY``); a key the cluster does not know, a server SDK key
  (``rlf_``, which belongs on the flagd and OFREP ports) or a client key
  (``rlc_``, OFREP evaluation and tracking only) is ``UNAUTHENTICATED
  INVALID_API_KEY``. SDK keys are refused by their prefix, without asking
  the cluster.
- A tenant key acts in its own tenant; naming another in ``raftlog-tenant`` is
  ``NOT_FOUND UNKNOWN_TENANT``, the cluster's answer for "exists but not yours"
  and "does not exist" alike, so no tenant learns another's name.
- An operator key must name the tenant it acts in (``PERMISSION_DENIED
  TENANT_REQUIRED`` otherwise): the flag server never guesses ``default``.
- The cluster unreachable: ``UNAVAILABLE CLUSTER_UNAVAILABLE`` (retry).

Invariants:

- The key is never logged, never put in a message, and never kept: the cache
  is keyed by SHA-256 of (key, tenant header), and holds successes only (a
  refusal is asked again next time, so a key created a moment ago works as
  soon as the cluster knows it).
- Concurrent lookups of one key share one WhoAmI call.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from client.admin import Admin
from client.errors import AuthenticationError, NotFoundError, RaftlogError
from flags.admin_errors import AdminError, shown
from flags.sdk_keys import CLEAR_PREFIX as SERVER_KEY_PREFIX
from flags.sdk_keys import CLIENT_CLEAR_PREFIX as CLIENT_KEY_PREFIX
from raftlog.v1 import admin_pb2
from raftlog.v1.headers import AUTHORIZATION, TENANT

__all__ = ["MAX_CACHED", "Caller", "TenantKeys"]

MAX_CACHED = 10_000
"""Cached identities at most (the oldest go first): bounded memory whatever
keys callers send."""
SDK_KEY_REFUSALS = {
    SERVER_KEY_PREFIX: "that is an SDK key (rlf_...), which only evaluates flags; "
    "the admin API takes a cluster API key (rlk_...)",
    CLIENT_KEY_PREFIX: "a client key (rlc_…) is for OFREP evaluation and tracking only; "
    "the admin API needs a tenant API key (rlk_…)",
}
"""Key prefix -> why the admin API refuses such a key (answered here: the
cluster does not know SDK keys, so asking it would only cost a round trip)."""

WhoAmI = Callable[[str, str | None], Awaitable[admin_pb2.WhoAmIResponse]]
"""(key, tenant header or None) -> the cluster's answer, or a ``RaftlogError``."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated admin caller: the tenant it acts in and its key's id
    (the ``who`` of the changes it makes)."""

    tenant: str
    key_id: str
    operator: bool


def _header(metadata: Sequence[tuple[str, str | bytes]], name: str) -> str | None:
    for key, value in metadata:
        if key == name:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def _unauthenticated(reason: str, message: str) -> AdminError:
    return AdminError(grpc.StatusCode.UNAUTHENTICATED, reason, message)


class TenantKeys:
    """Cluster API key -> ``Caller``, via ``AdminService.WhoAmI``, cached."""

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        cache_s: float = 5.0,
        who_am_i: WhoAmI | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``who_am_i`` replaces the cluster call (tests); ``clock`` the cache's clock."""
        self._admin: Admin | None = None
        if who_am_i is None:
            admin = self._admin = Admin(bootstrap, timeout_s=5.0, request_timeout_s=2.0)
            who_am_i = lambda key, tenant: admin.who_am_i(api_key=key, tenant=tenant)  # noqa: E731
        self._who_am_i = who_am_i
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[bytes, tuple[float, Caller]] = {}
        self._pending: dict[bytes, asyncio.Future[Caller]] = {}

    async def caller(self, metadata: Sequence[tuple[str, str | bytes]]) -> Caller:
        """The caller of a call with these headers, or an ``AdminError``."""
        header = _header(metadata, AUTHORIZATION)
        if not header:
            raise _unauthenticated(
                "MISSING_API_KEY",
                "no API key: send 'authorization: Bearer <cluster API key>' (the CLI reads RAFTLOG_API_KEY)",
            )
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise _unauthenticated("INVALID_API_KEY", "the authorization header must be 'Bearer <api key>'")
        for prefix, refusal in SDK_KEY_REFUSALS.items():
            if key.startswith(prefix):
                raise _unauthenticated("INVALID_API_KEY", refusal)
        tenant = _header(metadata, TENANT) or None
        digest = hashlib.sha256(f"{key}\0{tenant or ''}".encode()).digest()
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        pending = self._pending.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._ask(key, tenant))
            self._pending[digest] = pending
            pending.add_done_callback(lambda _: self._pending.pop(digest, None))
        caller = await asyncio.shield(pending)
        self._remember(digest, caller)
        return caller

    async def _ask(self, key: str, tenant: str | None) -> Caller:
        try:
            answer = await self._who_am_i(key, tenant)
        except AuthenticationError:
            raise _unauthenticated(
                "INVALID_API_KEY",
                "the API key is not valid (unknown, revoked or mistyped); ask an operator for a key",
            ) from None
        except NotFoundError:
            raise AdminError(
                grpc.StatusCode.NOT_FOUND,
                "UNKNOWN_TENANT",
                f"tenant {shown(tenant or '')} does not exist (or this key cannot act in it); "
                "check the raftlog-tenant header",
            ) from None
        except RaftlogError as error:
            raise AdminError(
                grpc.StatusCode.UNAVAILABLE,
                "CLUSTER_UNAVAILABLE",
                f"could not check the API key with the cluster ({type(error).__name__}); retry",
            ) from None
        if answer.operator and tenant is None:
            raise AdminError(
                grpc.StatusCode.PERMISSION_DENIED,
                "TENANT_REQUIRED",
                "an operator key acts in the tenant named by the 'raftlog-tenant' header; send one",
            )
        return Caller(answer.tenant, answer.key_id, answer.operator)

    def _remember(self, digest: bytes, caller: Caller) -> None:
        if digest not in self._cache and len(self._cache) >= MAX_CACHED:
            now = self._clock()
            for stale in [d for d, (expires, _) in self._cache.items() if expires <= now]:
                del self._cache[stale]
            while len(self._cache) >= MAX_CACHED:
                del self._cache[next(iter(self._cache))]
        self._cache[digest] = (self._clock() + self._cache_s, caller)

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
