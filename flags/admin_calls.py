"""The one way an admin RPC of the flag server runs (``FlagAdminService`` in
flags/admin_service.py, ``ExperimentService`` in flags/experiments/admin_rpcs.py):
refuse while the flag log is still being read, authenticate the caller's
cluster key (flags/tenant_keys.py), run the handler, and turn every error into
a status with a reason (flags/admin_errors.py).

Invariants:

- A handler never runs before the follower is ready (``UNAVAILABLE
  NOT_READY``) or without an authenticated ``Caller``.
- An ``AdminError`` becomes its own status; a failure to write or read the
  log (the exception types the service names) becomes ``UNAVAILABLE
  LOG_UNAVAILABLE`` with the service's advice on retrying, never UNKNOWN.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from flags.admin_errors import AdminError, abort
from flags.tenant_keys import Caller, TenantKeys

__all__ = ["AdminHost", "admin_call"]


class _Readiness(Protocol):
    def is_ready(self) -> bool: ...


class AdminHost(Protocol):
    """What a servicer using ``admin_call`` holds (read-only here)."""

    @property
    def _follower(self) -> _Readiness: ...

    @property
    def _keys(self) -> TenantKeys: ...


S = TypeVar("S", bound=AdminHost)
R = TypeVar("R")
Handler = Callable[[S, Any, grpc.aio.ServicerContext, Caller], Awaitable[R]]
Method = Callable[[S, Any, grpc.aio.ServicerContext], Awaitable[R]]


def admin_call(
    log_errors: tuple[type[Exception], ...], retry_advice: str
) -> Callable[[Handler[S, R]], Method[S, R]]:
    """The decorator of a service's handlers (module docstring): errors of
    ``log_errors`` are answered ``LOG_UNAVAILABLE`` with ``retry_advice``."""

    def decorate(method: Handler[S, R]) -> Method[S, R]:
        @functools.wraps(method)
        async def handler(self: S, request: Any, context: grpc.aio.ServicerContext) -> R:
            try:
                if not self._follower.is_ready():
                    raise AdminError(
                        grpc.StatusCode.UNAVAILABLE,
                        "NOT_READY",
                        "the flag server is still reading the flag log; retry shortly",
                    )
                caller = await self._keys.caller(tuple(context.invocation_metadata() or ()))
                return await method(self, request, context, caller)
            except AdminError as error:
                await abort(context, error)
            except log_errors as error:
                await abort(
                    context,
                    AdminError(
                        grpc.StatusCode.UNAVAILABLE,
                        "LOG_UNAVAILABLE",
                        f"the flag log could not be written or read in time ({error}); retry: {retry_advice}",
                    ),
                )

        return handler

    return decorate
