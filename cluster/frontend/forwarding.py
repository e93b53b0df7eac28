"""Forwarding a client request to the node that leads its partition.

Any node takes any request (DESIGN.md): when the local replica is not the
leader but knows who is, the front end re-sends the request there and relays
the answer, status and error details included, unchanged.

Invariants:
- A request is forwarded at most once: the forwarded call carries
  ``raftlog-no-forward: 1`` and a node never forwards such a call (it
  answers NOT_LEADER with the leader's address instead), so two nodes with
  stale views cannot bounce a request between them. A client may send the
  same header to learn the leader from the answer rather than pay for a
  hop (the integration tests' ``LogClient`` does; the SDK does not: it
  routes to the leader it knows and lets a stale guess be forwarded).
- The forwarded call gets the caller's remaining deadline, never more, and
  the caller's identity headers: the leader authenticates it itself.
- A produce forwarded and then failing with UNAVAILABLE or DEADLINE_EXCEEDED
  has an unknown outcome, exactly as if the client had sent it itself; the
  client's idempotent retry covers both cases.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from client.auth import AUTHORIZATION_HEADER, TENANT_HEADER
from client.metadata import ChannelPool

NO_FORWARD_KEY = "raftlog-no-forward"
DEFAULT_TIMEOUT_S = 30.0
T = TypeVar("T")


_PASSED_ON = frozenset({AUTHORIZATION_HEADER, TENANT_HEADER})


def forwarded_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The headers a forwarded call carries: the caller's identity (the
    leader authenticates it again) and the no-forward mark."""
    passed = tuple((key, value) for key, value in context.invocation_metadata() or () if key in _PASSED_ON)
    return (*passed, (NO_FORWARD_KEY, "1"))


def may_forward(context: grpc.aio.ServicerContext) -> bool:
    return not any(key == NO_FORWARD_KEY for key, _ in context.invocation_metadata() or ())


async def relay_error(context: grpc.aio.ServicerContext, error: grpc.aio.AioRpcError) -> NoReturn:
    """End this call with the status the leader answered (details kept)."""
    trailing = tuple(error.trailing_metadata() or ())
    await context.abort(error.code(), error.details() or "", trailing_metadata=trailing)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


class Forwarder:
    """Re-sends requests over the SDK's channel pool (one channel per leader
    address, opened on first use, with its message limits and reconnect
    back-off)."""

    def __init__(self) -> None:
        self._pool = ChannelPool()

    async def forward(
        self,
        context: grpc.aio.ServicerContext,
        address: str,
        method: Callable[[grpc.aio.Channel], Callable[..., Awaitable[T]]],
        request: Any,
    ) -> T:
        """Call ``method(channel)`` (e.g. ``lambda ch: LogServiceStub(ch).Produce``)
        on ``address`` with ``request`` and relay its answer."""
        response, _ = await self.forward_with_trailers(context, address, method, request)
        return response

    async def forward_with_trailers(
        self,
        context: grpc.aio.ServicerContext,
        address: str,
        method: Callable[[grpc.aio.Channel], Callable[..., Any]],
        request: Any,
    ) -> tuple[Any, tuple[tuple[str, str], ...]]:
        """``forward``, also returning the leader's trailing metadata (what
        the leader says about its answer, e.g. the metadata index a change
        was applied at)."""
        remaining = context.time_remaining()
        timeout = DEFAULT_TIMEOUT_S if remaining is None else max(0.0, remaining)
        try:
            call = method(self._pool.channel(address))(
                request, timeout=timeout, metadata=forwarded_metadata(context)
            )
            response = await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as error:
            await relay_error(context, error)
        return response, tuple((str(k), str(v)) for k, v in trailing or ())

    async def close(self) -> None:
        await self._pool.close()
