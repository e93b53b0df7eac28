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
  meet a node that is a few entries behind).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from cluster.controller import Principal
from cluster.controller_duties import DEFAULT_TENANT
from cluster.controller_replica import ControllerReplica
from cluster.frontend.front_door import Caller
from cluster.frontend.grpc_errors import ServiceError, shown
from raftlog.v1 import headers
from raftlog.v1.reasons import Reason

__all__ = ["CATCH_UP_S", "Authenticator", "Caller", "unknown_tenant"]

CATCH_UP_S = 0.5
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


class Authenticator:
    def __init__(self, controller: ControllerReplica) -> None:
        self._controller = controller

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
        to ``CATCH_UP_S`` while it answers None."""
        controller = self._controller
        found = lookup()
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
        principal = await self._caught_up(lambda: self._controller.state.authenticate(key))
        if principal is None:
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                Reason.INVALID_API_KEY,
                "the API key is not valid (unknown, revoked or mistyped); ask an operator for a key",
            )
        return principal
