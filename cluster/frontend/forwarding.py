"""Forwarding a client request to the node that leads its partition.

Any node takes any request (DESIGN.md): when the local replica is not the
leader but knows who is, the front end re-sends the request there and relays
the answer, status and error details included, unchanged. A partition call's
answer (``forward``) gets one more trailer, success or error:
``raftlog-leader: <address forwarded to>`` (``headers.LEADER``), so the
client goes to the leader directly next time. An admin change forwarded to
the controller leader (``forward_with_trailers``) does not: the node that
forwarded it answers only once its own metadata has applied the change
(admin_service.py, read-your-writes), so the client can stay where it is.

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
- An admin change forwarded to the controller leader carries this node's
  proof for ``FORWARDED_CHANGE_PROOF`` (when the node gives ``prove``): the
  leader's audit (cluster/audit/stage.py) then leaves the event to this
  node, which took the call from the client. A client cannot make one.
- A forwarded call carries the trace context of the call it serves
  (W3C ``traceparent``, cluster/telemetry/tracing.py ``trace_headers``)
  when tracing is on, so the leader's span joins the same trace; nothing
  while it is off.
- The node does not use the SDK (DESIGN.md: the SDK knows only the public
  contract, the node knows only ``raftlog``): ``ChannelCache`` is its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final, NoReturn, TypeVar

import grpc

from cluster.telemetry.tracing import trace_headers
from cluster.tls.dial import PLAIN, Dialer
from raftlog.v1 import channel_options, headers

DEFAULT_TIMEOUT_S = 30.0
T = TypeVar("T")

CHANNEL_OPTIONS = channel_options.CHANNEL_OPTIONS
"""The SDK's options (``raftlog.v1.channel_options``): 64 MiB messages (a
forwarded fetch may return up to ``log_service.MAX_FETCH_BYTES``), fast
reconnects, and keepalive pings, so a call forwarded to a leader that went
silent fails in about two seconds."""

FORWARDED_CHANGE_PROOF: Final = "/raftlog.v1.AdminService/(forwarded)"
"""What the node proof on a forwarded admin change names (module docstring)."""

_PASSED_ON = frozenset({headers.AUTHORIZATION, headers.TENANT})


class ChannelCache:
    """One ``grpc.aio`` channel per node address, opened on first use with
    ``dialer`` (cluster/tls/dial.py: plaintext, or mTLS to the node's
    internal listener) and kept until ``close`` (a cluster has few nodes).
    When the dialer's credentials change (a reloaded certificate) every
    cached channel is replaced on its next use; the old ones get
    ``DEFAULT_TIMEOUT_S`` for calls in flight, then close. Use from one
    event loop."""

    def __init__(
        self, options: tuple[tuple[str, int], ...] = CHANNEL_OPTIONS, dialer: Dialer = PLAIN
    ) -> None:
        self._options = list(options)
        self._dialer = dialer
        self._generation = dialer.generation
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._retiring: dict[grpc.aio.Channel, asyncio.Task[None]] = {}
        self._closed = False

    def channel(self, address: str) -> grpc.aio.Channel:
        if self._closed:
            raise RuntimeError("channel cache is closed")
        generation = self._dialer.generation
        if generation != self._generation:
            self._generation = generation
            self._retire(list(self._channels.values()))
            self._channels.clear()
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = self._dialer.dial(address, self._options)
        return channel

    def _retire(self, channels: list[grpc.aio.Channel]) -> None:
        for channel in channels:
            # Not the forwarding call's task: a clean context, so the close
            # (up to its grace) carries no caller, span or tenant of it.
            task = asyncio.get_running_loop().create_task(
                channel.close(grace=DEFAULT_TIMEOUT_S), context=contextvars.Context()
            )
            self._retiring[channel] = task
            task.add_done_callback(functools.partial(self._retired, channel))

    def _retired(self, channel: grpc.aio.Channel, _task: asyncio.Task[None]) -> None:
        self._retiring.pop(channel, None)

    async def close(self) -> None:
        """Close every channel, the retiring ones too (no more grace)."""
        self._closed = True
        channels, self._channels = self._channels, {}
        retiring, self._retiring = self._retiring, {}
        for task in retiring.values():
            task.cancel()
        for channel in (*channels.values(), *retiring):
            await channel.close()


def forwarded_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The headers a forwarded call carries: the caller's identity (the
    leader authenticates it again), the no-forward mark and, when tracing
    is on, the current trace context (this node's server span)."""
    passed = tuple((key, value) for key, value in context.invocation_metadata() or () if key in _PASSED_ON)
    return (*passed, (headers.NO_FORWARD, "1"), *trace_headers())


def may_forward(context: grpc.aio.ServicerContext) -> bool:
    return not any(key == headers.NO_FORWARD for key, _ in context.invocation_metadata() or ())


async def relay_error(
    context: grpc.aio.ServicerContext, error: grpc.aio.AioRpcError, leader: tuple[tuple[str, str], ...] = ()
) -> NoReturn:
    """End this call with the status the leader answered (details kept),
    adding the ``leader`` trailer when given."""
    trailing = (*tuple(error.trailing_metadata() or ()), *leader)
    await context.abort(error.code(), error.details() or "", trailing_metadata=trailing)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


class Forwarder:
    """Re-sends requests to leaders over a ``ChannelCache``."""

    def __init__(
        self, dialer: Dialer = PLAIN, prove: Callable[[str], tuple[tuple[str, str], ...]] | None = None
    ) -> None:
        """``prove(method)``: this node's proof (forwarded admin changes carry one)."""
        self._channels = ChannelCache(dialer=dialer)
        self._prove = prove

    async def forward(
        self,
        context: grpc.aio.ServicerContext,
        address: str,
        method: Callable[[grpc.aio.Channel], Callable[..., Awaitable[T]]],
        request: Any,
    ) -> T:
        """Call ``method(channel)`` (e.g. ``lambda ch: LogServiceStub(ch).Produce``)
        on ``address`` with ``request`` and relay its answer, with the
        ``raftlog-leader`` trailer naming ``address``."""
        leader = ((headers.LEADER, address),)
        response, _ = await self._call(context, address, method, request, leader)
        context.set_trailing_metadata(leader)
        return response

    async def forward_with_trailers(
        self,
        context: grpc.aio.ServicerContext,
        address: str,
        method: Callable[[grpc.aio.Channel], Callable[..., Any]],
        request: Any,
    ) -> tuple[Any, tuple[tuple[str, str], ...]]:
        """``forward``, but without the ``raftlog-leader`` trailer (module
        docstring) and also returning the leader's trailing metadata (what
        the leader says about its answer, e.g. the metadata index a change
        was applied at)."""
        proof = self._prove(FORWARDED_CHANGE_PROOF) if self._prove is not None else ()
        return await self._call(context, address, method, request, (), proof)

    async def _call(
        self,
        context: grpc.aio.ServicerContext,
        address: str,
        method: Callable[[grpc.aio.Channel], Callable[..., Any]],
        request: Any,
        leader: tuple[tuple[str, str], ...],
        proof: tuple[tuple[str, str], ...] = (),
    ) -> tuple[Any, tuple[tuple[str, str], ...]]:
        remaining = context.time_remaining()
        timeout = DEFAULT_TIMEOUT_S if remaining is None else max(0.0, remaining)
        try:
            call = method(self._channels.channel(address))(
                request, timeout=timeout, metadata=(*forwarded_metadata(context), *proof)
            )
            response = await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as error:
            await relay_error(context, error, leader)
        return response, tuple((str(k), str(v)) for k, v in trailing or ())

    async def close(self) -> None:
        await self._channels.close()
