"""Who is calling, and in which tenant: the front end's first step.

Every ``raftlog.v1`` call carries ``authorization: Bearer <api key>``
(header names: ``raftlog.v1.headers``). The front door (front_door.py) asks
``Authenticator.caller`` once per call, before any handler runs. The key is checked against this node's applied
metadata (salted hashes, cluster/controller/api_keys.py). A tenant key acts
in its own tenant; an operator key acts in the tenant named by the
``raftlog-tenant`` header, ``default`` when there is none.

Invariants:

- No key, or a key that is not stored: ``UNAUTHENTICATED``; nothing of the
  request is looked at.
- A tenant never learns whether another tenant's names exist: a tenant key
  naming another tenant in the header, or an operator naming a tenant that
  does not exist, gets ``NOT_FOUND UNKNOWN_TENANT`` — the same answer for
  "exists but not yours" and "does not exist". Topics are looked up only
  under the caller's tenant, so another tenant's topic is ``NOT_FOUND`` too.
- A key or a tenant this node does not know yet may have been created a
  moment ago on the controller leader: the check waits up to
  ``CATCH_UP_S`` for this node's metadata to move before refusing it (a
  tenant created and used at once — the flag server does so — must not
  meet a node that is a few entries behind). A key this node has admitted
  before is not waited for (nor is a call already admitted that checks its
  caller again, ``front_door.confirm_caller``): it was known here, so gone
  now means revoked — key ids are random and never reused — and the
  refusal is immediate.
- A key past its expiry (``expires_at_ms``, set by a rotation's grace
  period or at creation) is refused ``UNAUTHENTICATED API_KEY_EXPIRED``
  with the time it expired, not as an unknown key: its owner learns to
  switch to the rotated key. The time is ``wall_ms()`` (Unix ms, passed
  in so tests set it); clocks of nodes differ by their NTP error, which is
  how far apart two nodes may start refusing it.
- Revocation reaches every node as a replicated metadata entry (every node
  applies the controller log), so each node refuses the key as soon as it
  applies the entry: milliseconds after the leader does. Calls in progress
  learn it at their next ``confirm_caller``: a waiting fetch or stream as
  soon as the entry is applied (metadata_watch.py wakes it), and at least
  every ``log_service.CALLER_CHECK_S`` (how an expiry, which no entry
  announces, reaches them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import grpc

from cluster.controller import Principal
from cluster.controller.api_keys import parse_api_key
from cluster.controller.model import key_expired
from cluster.controller_duties import DEFAULT_TENANT
from cluster.controller_replica import ControllerReplica
from cluster.frontend.front_door import Caller, confirming
from cluster.frontend.grpc_errors import ServiceError, shown
from raftlog.v1 import headers
from raftlog.v1.reasons import Reason

__all__ = ["CATCH_UP_S", "Authenticator", "Caller", "key_expired_error", "unknown_tenant", "wall_ms"]

CATCH_UP_S = 0.5
ADMITTED_KEYS_MAX = 65_536
"""How many admitted key ids a node remembers (to refuse them at once once
revoked); past it the memory starts again (they are then waited for)."""
T = TypeVar("T")


def _header(context: grpc.aio.ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode()
    return None


def unknown_tenant(tenant: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.NOT_FOUND,
        Reason.UNKNOWN_TENANT,
        f"tenant {shown(tenant)} does not exist (or this key cannot act in it); check the tenant name",
        metadata={"tenant": shown(tenant)},
    )


def wall_ms() -> int:
    """Unix time in ms: what key expiry is measured against."""
    return time.time_ns() // 1_000_000


def key_expired_error(principal: Principal) -> ServiceError:
    when = datetime.fromtimestamp(principal.expires_at_ms / 1000, UTC).isoformat(timespec="seconds")
    return ServiceError(
        grpc.StatusCode.UNAUTHENTICATED,
        Reason.API_KEY_EXPIRED,
        f"API key {principal.key_id} expired at {when.replace('+00:00', 'Z')}: it was rotated or "
        "created with an expiry; use the key that replaced it (`raftlog key rotate` issues one, "
        "`raftlog key list` shows expiries)",
        metadata={"key_id": principal.key_id, "expired_at_ms": str(principal.expires_at_ms)},
    )


class Authenticator:
    def __init__(self, controller: ControllerReplica, wall_ms: Callable[[], int] = wall_ms) -> None:
        """``wall_ms``: Unix time in ms, for key expiry."""
        self._controller = controller
        self._wall_ms = wall_ms
        self._admitted: set[str] = set()
        """Ids of keys this node has admitted (module docstring)."""

    async def caller(self, context: grpc.aio.ServicerContext) -> Caller:
        """The authenticated caller and its tenant, or a ``ServiceError``."""
        principal = await self._principal(context)
        wanted = _header(context, headers.TENANT)
        if principal.tenant is not None:
            if wanted and wanted != principal.tenant:
                raise unknown_tenant(wanted)
            return Caller(principal, principal.tenant)
        tenant = wanted or DEFAULT_TENANT
        if await self._caught_up(lambda: self._controller.state.tenant(tenant)) is None:
            raise unknown_tenant(tenant)
        return Caller(principal, tenant)

    async def _caught_up(self, lookup: Callable[[], T | None]) -> T | None:
        """``lookup()``, again each time this node's metadata moves, for up
        to ``CATCH_UP_S`` while it answers None; no waiting when an admitted
        call checks its caller again (module docstring)."""
        controller = self._controller
        found = lookup()
        if found is not None or confirming():
            return found
        deadline = time.monotonic() + CATCH_UP_S
        while found is None and (remaining := deadline - time.monotonic()) > 0:
            await controller.wait_changed(controller.version, timeout=remaining)
            found = lookup()
        return found

    async def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        header = _header(context, headers.AUTHORIZATION)
        if not header:
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                Reason.MISSING_API_KEY,
                "no API key: send 'authorization: Bearer <key>' (the CLI reads RAFTLOG_API_KEY)",
            )
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                Reason.INVALID_API_KEY,
                "the authorization header must be 'Bearer <api key>'",
            )
        key = key.strip()
        principal = self._controller.state.authenticate(key)
        if principal is None and not self._revoked(key):
            principal = await self._caught_up(lambda: self._controller.state.authenticate(key))
        if principal is None:
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                Reason.INVALID_API_KEY,
                "the API key is not valid (unknown, revoked or mistyped); ask an operator for a key",
            )
        if key_expired(principal, self._wall_ms()):
            raise key_expired_error(principal)
        if principal.key_id not in self._admitted:
            if len(self._admitted) >= ADMITTED_KEYS_MAX:
                self._admitted.clear()
            self._admitted.add(principal.key_id)
        return principal

    def _revoked(self, key: str) -> bool:
        """Whether ``key`` names a key this node admitted before (it is
        not known now: revoked, not new)."""
        parsed = parse_api_key(key)
        return parsed is not None and parsed[0] in self._admitted
