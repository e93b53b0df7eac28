"""Change pings: OFREP's Server-Sent Events stream, one per environment.

``GET /ofrep/v1/events?key=<key>`` (the key may also come as
``Authorization: Bearer`` or ``X-API-Key``; browsers' ``EventSource`` cannot
send headers, hence the query; client and server keys alike, admitted by the
OFREP app's gate like every route of the port: same key check, rate limits
and refusals) streams, per OFREP ADR 0008 (published in
open-feature/protocol ``service/event-streams.yaml``)::

    id: <env version>
    event: message
    data: {"etag":"\\"<env version>\\"","lastModified":<unix s>,"type":"refetchEvaluation"}

whenever the key's environment changes. The app then re-fetches the bulk
evaluation (``POST /ofrep/v1/evaluate/flags`` with its ETag; a 304 costs
little). ``id`` is the environment's version (``FlagStore.env_version``),
``etag`` its token (``version_token``), ``lastModified`` when this server
saw that version (unix seconds). Heartbeats are SSE comment lines
(``: ping``) every ``heartbeat_s`` (15 s by default) so mobile networks and
proxies keep idle streams open.

Invariants:

- Within the gRPC streams' bound: one ``LiveFlags.watch`` per environment
  with subscribers (a *channel*), woken synchronously by the record that
  changed it; the channel encodes the event once and wakes every client of
  the environment, each of which writes the same bytes. No per-client
  encoding, no per-client watcher: 1,000 clients cost 1,000 small tasks and
  one encode per change.
- No change is missed: the channel registers its watcher before reading the
  version, and a client compares the channel's version with the last it sent
  (a client busy writing picks up the latest, coalesced, on its next turn).
- ``Last-Event-ID`` (a reconnect): an id that is not the current version
  (older, or not a number) gets the current event at once; the current
  version gets nothing until the next change. No ``Last-Event-ID``: nothing
  until the next change (the app fetched just before connecting).
- A key that stops authenticating (revoked, environment deleted, tenant
  forgotten) ends its streams at once: those events wake the channel, and
  each client re-checks its key when ``LiveFlags.key_epoch`` moved.
- A client that does not read is cut after ``send_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from flags.live import LiveFlags, Scope, Watcher
from flags.ofrep import EVENTS_PATH, OfrepGate
from flags.tracking import answering_refusals, route_gate

__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "EVENTS_PATH",
    "ChangePings",
    "add_event_routes",
    "encode_event",
    "version_token",
]

DEFAULT_HEARTBEAT_S = 15.0
DEFAULT_SEND_TIMEOUT_S = 30.0


def version_token(version: int) -> str:
    """The ``etag`` of an environment version in events (a quoted string, like an HTTP ETag)."""
    return f'"{version}"'


def encode_event(version: int, modified_s: int) -> bytes:
    """One ``refetchEvaluation`` event, framed (module docstring)."""
    data = json.dumps(
        {"type": "refetchEvaluation", "etag": version_token(version), "lastModified": modified_s},
        sort_keys=True,
        separators=(",", ":"),
    )
    return f"id: {version}\nevent: message\ndata: {data}\n\n".encode()


class _Channel:
    """One environment with subscribers: its watcher, and the latest event, encoded once."""

    __slots__ = ("changed", "clients", "frame", "scope", "task", "version", "watcher")

    def __init__(self, scope: Scope, watcher: Watcher, version: int, frame: bytes) -> None:
        self.scope = scope
        self.watcher = watcher
        self.version = version
        self.frame = frame
        self.changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolved (and replaced) on every wake: a new version, or a key event."""
        self.clients = 0
        self.task: asyncio.Task[None] | None = None

    def nudge(self) -> None:
        changed, self.changed = self.changed, asyncio.get_running_loop().create_future()
        changed.set_result(None)


class ChangePings:
    """The ``/ofrep/v1/events`` handler and its channels (module docstring)."""

    def __init__(
        self,
        live: LiveFlags,
        gate: OfrepGate,
        *,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.live = live
        self.gate = gate
        self.heartbeat_s = heartbeat_s
        self.send_timeout_s = send_timeout_s
        self._clock = clock
        self._channels: dict[Scope, _Channel] = {}
        self.events_encoded = 0
        """Events encoded since start (one per environment change with subscribers)."""

    def clients(self, scope: Scope | None = None) -> int:
        if scope is not None:
            channel = self._channels.get(scope)
            return 0 if channel is None else channel.clients
        return sum(c.clients for c in self._channels.values())

    # --- channels ----------------------------------------------------------------------

    def _subscribe(self, scope: Scope) -> _Channel:
        channel = self._channels.get(scope)
        if channel is None:
            watcher = self.live.watch(scope)  # before reading the version: nothing is missed
            version = self.live.store.env_version(scope.tenant, scope.env)
            channel = _Channel(scope, watcher, version, self._encode(version))
            channel.task = asyncio.get_running_loop().create_task(
                self._follow(channel), name=f"ofrep-events-{scope.tenant}-{scope.env}"
            )
            self._channels[scope] = channel
        channel.clients += 1
        return channel

    def _unsubscribe(self, channel: _Channel) -> None:
        channel.clients -= 1
        if channel.clients == 0 and self._channels.get(channel.scope) is channel:
            del self._channels[channel.scope]
            channel.watcher.close()
            if channel.task is not None:
                channel.task.cancel()

    def _encode(self, version: int) -> bytes:
        self.events_encoded += 1
        return encode_event(version, int(self._clock()))

    async def _follow(self, channel: _Channel) -> None:
        while True:
            update = await channel.watcher.next()
            if update.version != channel.version:
                channel.version = update.version
                channel.frame = self._encode(update.version)
            channel.nudge()  # also for key events (same version): clients re-check their key

    # --- the handler -------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key, scope, kind = self.gate.admit(request, key=request.query.get("key") or None)
        granted = (scope, kind)
        channel = self._subscribe(scope)
        response = EventSourceResponse(ping_interval=self.heartbeat_s, send_timeout=self.send_timeout_s)
        closed: asyncio.Future[None] | None = None
        try:
            await response.prepare(request)
            closed = asyncio.ensure_future(response.wait())  # ends when a ping fails: the client left
            sent = channel.version
            last_id = request.headers.get("Last-Event-ID")
            if last_id is not None and last_id.strip() != str(channel.version):
                sent = -1  # a reconnect that missed something (or sent an id we never gave)
            epoch = self.live.key_epoch
            while True:
                if sent != channel.version:
                    sent = channel.version
                    async with asyncio.timeout(self.send_timeout_s):
                        await response.write(channel.frame)
                changed = channel.changed
                await asyncio.wait((changed, closed), return_when=asyncio.FIRST_COMPLETED)
                if closed.done():
                    break
                if self.live.key_epoch != epoch:
                    epoch = self.live.key_epoch
                    # Once per client and key event (rare), not per change.
                    if self.live.authenticate_ofrep(key) != granted:
                        break  # revoked (or its environment is gone): end the stream
        except (ConnectionResetError, TimeoutError, RuntimeError):
            pass  # the client left or stalled: nothing to tell it
        finally:
            self._unsubscribe(channel)
            if closed is not None:
                closed.cancel()
            if response.prepared:
                with contextlib.suppress(Exception):
                    response.stop_streaming()
                    await response.write_eof()
        return response

    async def close(self) -> None:
        for channel in list(self._channels.values()):
            channel.watcher.close()
            if channel.task is not None:
                channel.task.cancel()
        self._channels.clear()


def add_event_routes(
    app: web.Application,
    live: LiveFlags,
    *,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
) -> ChangePings:
    """Add ``GET /ofrep/v1/events`` to ``app`` (admitted by its OFREP gate,
    ``tracking.route_gate``); the returned ``ChangePings`` is closed with
    the app (``on_cleanup``)."""
    pings = ChangePings(live, route_gate(app, live), heartbeat_s=heartbeat_s, send_timeout_s=send_timeout_s)
    app.router.add_get(EVENTS_PATH, answering_refusals(pings.handle))

    async def cleanup(_: web.Application) -> None:
        await pings.close()

    app.on_cleanup.append(cleanup)
    return pings
