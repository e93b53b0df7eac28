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

How a change reaches 1,000 streams cheaply: one ``LiveFlags.watch`` per
environment with subscribers (a *channel*) and one task following it. On a
change that task encodes the event once, frames it once for HTTP/1.1
chunked transfer (and once raw, for HTTP/1.0), and writes those bytes to
every subscribed connection's transport in one synchronous pass: one
``transport.write`` (one ``send``) per client and nothing else, no task
woken per client. A client's handler only waits for its stream to end.
Heartbeats are one timer per channel, written the same way. The bytes go
around aiohttp's payload writer; that is safe because, after ``prepare``
sent the head (a ``StreamResponse`` sends it at once), nothing else writes
to the connection until the stream ends, and this route never compresses.

Invariants:

- No change is missed: the channel registers its watcher before reading the
  version; a handler subscribes before it sends the response head and, once
  its client is in the channel's set, sends the current event itself if the
  version moved meanwhile. Every later version is written to every client
  in the set by the channel's pass.
- ``Last-Event-ID`` (a reconnect): an id that is not the current version
  (older, or not a number) gets the current event at once; the current
  version gets nothing until the next change. No ``Last-Event-ID``: nothing
  until the next change (the app fetched just before connecting).
- A key that stops authenticating (revoked, environment deleted, tenant
  forgotten) ends its streams at once: those events wake the channel, which
  re-checks each distinct key of its clients when ``LiveFlags.key_epoch``
  moved (a handler re-checks its own key if the epoch moved between its
  admission and joining the channel).
- Bounded memory per client, never an unbounded buffer: after each write,
  a connection whose transport holds more than ``max_buffer_bytes`` unsent
  is reset (its buffers discarded, the kernel's too) and counted in ``slow_clients_dropped``;
  so is one whose buffer has not emptied for ``send_timeout_s`` (checked at
  heartbeats). The app reconnects and re-fetches, as OFREP providers do
  after a reconnect. ``TCP_USER_TIMEOUT`` (Linux) is ``send_timeout_s``, so
  the kernel drops a peer that stopped acknowledging.
- A client that left is noticed at the next write to it (an event or a
  heartbeat): its transport is closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import socket
import struct
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.http import HttpVersion11

from flags.live import LiveFlags, Scope, Watcher
from flags.ofrep import EVENTS_PATH, OfrepGate
from flags.sdk_keys import KeyKind
from flags.tracking import answering_refusals, route_gate

__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_MAX_BUFFER_BYTES",
    "EVENTS_PATH",
    "ChangePings",
    "add_event_routes",
    "encode_event",
    "version_token",
]

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 15.0
DEFAULT_SEND_TIMEOUT_S = 30.0
DEFAULT_MAX_BUFFER_BYTES = 64 * 1024
"""Unsent bytes a stream may hold in user space (beyond the kernel's socket
buffer): an event is ~150 bytes, so this is hundreds of unread events."""

HEARTBEAT = b": ping\n\n"
_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",  # proxies such as nginx must not buffer the stream
}
_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets

Framed = tuple[bytes, bytes]
"""An SSE payload as written: ``(raw, chunked)``; a client picks by its
``chunked`` flag (a bool indexes the pair)."""


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


def framed(payload: bytes) -> Framed:
    """``payload`` raw and as one HTTP/1.1 chunk (size in hex, CRLF, data, CRLF)."""
    return payload, b"%x\r\n%b\r\n" % (len(payload), payload)


_HEARTBEAT_FRAMED = framed(HEARTBEAT)


class _End(enum.Enum):
    """Why a stream ended."""

    LEFT = "left"  # the connection closed under us
    SLOW = "slow"  # aborted: it did not read (module docstring)
    REVOKED = "revoked"  # its key stopped authenticating
    CLOSING = "closing"  # the server shuts the change pings down


class _Client:
    """One stream in a channel: its connection and how to write to it."""

    __slots__ = ("chunked", "ended", "granted", "key", "stalled_since", "transport")

    def __init__(
        self, transport: asyncio.Transport, chunked: bool, key: str, granted: tuple[Scope, KeyKind]
    ) -> None:
        self.transport = transport
        self.chunked = chunked
        self.key = key
        self.granted = granted
        """What the key authenticated as when admitted (scope and kind)."""
        self.stalled_since: float | None = None
        """Monotonic s of the first heartbeat that found unsent bytes (None: it drained)."""
        self.ended: asyncio.Future[_End] = asyncio.get_running_loop().create_future()


class _Channel:
    """One environment with subscribers: its watcher, the latest event framed
    once, the clients written to, and the heartbeat timer."""

    __slots__ = (
        "clients",
        "epoch",
        "frame",
        "heartbeat",
        "scope",
        "stopped",
        "subscribers",
        "task",
        "version",
        "watcher",
    )

    def __init__(self, scope: Scope, watcher: Watcher, version: int, frame: Framed, epoch: int) -> None:
        self.scope = scope
        self.watcher = watcher
        self.version = version
        self.frame = frame
        self.epoch = epoch
        """``LiveFlags.key_epoch`` when the clients' keys were last known good."""
        self.clients: dict[_Client, None] = {}
        """Streams written to (insertion-ordered set)."""
        self.subscribers = 0
        """Handlers holding the channel (clients, plus those still sending their head)."""
        self.task: asyncio.Task[None] | None = None
        self.heartbeat: asyncio.TimerHandle | None = None
        self.stopped = False
        """No more writes come from this channel (closed, or its task failed)."""


class ChangePings:
    """The ``/ofrep/v1/events`` handler and its channels (module docstring)."""

    def __init__(
        self,
        live: LiveFlags,
        gate: OfrepGate,
        *,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if heartbeat_s <= 0:
            raise ValueError("heartbeat_s must be positive")
        self.live = live
        self.gate = gate
        self.heartbeat_s = heartbeat_s
        self.send_timeout_s = send_timeout_s
        self.max_buffer_bytes = max_buffer_bytes
        self._clock = clock
        self._channels: dict[Scope, _Channel] = {}
        self.events_encoded = 0
        """Events encoded since start (one per environment change with subscribers)."""
        self.slow_clients_dropped = 0
        """Streams aborted because they did not read (module docstring)."""

    def clients(self, scope: Scope | None = None) -> int:
        if scope is not None:
            channel = self._channels.get(scope)
            return 0 if channel is None else channel.subscribers
        return sum(c.subscribers for c in self._channels.values())

    # --- channels ----------------------------------------------------------------------

    def _subscribe(self, scope: Scope) -> _Channel:
        channel = self._channels.get(scope)
        if channel is None:
            watcher = self.live.watch(scope)  # before reading the version: nothing is missed
            version = self.live.store.env_version(scope.tenant, scope.env)
            channel = _Channel(scope, watcher, version, self._encode(version), self.live.key_epoch)
            loop = asyncio.get_running_loop()
            channel.task = loop.create_task(
                self._follow(channel), name=f"ofrep-events-{scope.tenant}-{scope.env}"
            )
            channel.heartbeat = loop.call_later(self.heartbeat_s, self._beat, channel)
            self._channels[scope] = channel
        channel.subscribers += 1
        return channel

    def _unsubscribe(self, channel: _Channel) -> None:
        channel.subscribers -= 1
        if channel.subscribers == 0 and self._channels.get(channel.scope) is channel:
            del self._channels[channel.scope]
            self._stop(channel)

    @staticmethod
    def _stop(channel: _Channel) -> None:
        channel.stopped = True
        channel.watcher.close()
        if channel.task is not None:
            channel.task.cancel()
        if channel.heartbeat is not None:
            channel.heartbeat.cancel()

    def _encode(self, version: int) -> Framed:
        self.events_encoded += 1
        return framed(encode_event(version, int(self._clock())))

    async def _follow(self, channel: _Channel) -> None:
        try:
            while True:
                update = await channel.watcher.next()
                if self.live.key_epoch != channel.epoch:
                    self._recheck_keys(channel)
                if update.version != channel.version:
                    channel.version = update.version
                    channel.frame = frame = self._encode(update.version)
                    for client in tuple(channel.clients):  # a copy: a write may end a client
                        self._write(channel, client, frame)
        except Exception:
            # Not expected; its clients must not wait for changes that will never come.
            log.exception("change pings of %s stopped", channel.scope)
            if self._channels.get(channel.scope) is channel:
                del self._channels[channel.scope]  # the next stream starts a fresh channel
            channel.stopped = True
            channel.watcher.close()
            if channel.heartbeat is not None:
                channel.heartbeat.cancel()
            self._end_all(channel, _End.CLOSING)
            raise

    def _recheck_keys(self, channel: _Channel) -> None:
        channel.epoch = self.live.key_epoch
        verdicts: dict[str, bool] = {}  # once per distinct key: checking one costs a hash
        for client in tuple(channel.clients):
            good = verdicts.get(client.key)
            if good is None:
                good = verdicts[client.key] = self.live.authenticate_ofrep(client.key) == client.granted
            if not good:
                self._end(channel, client, _End.REVOKED)

    def _write(self, channel: _Channel, client: _Client, frame: Framed) -> None:
        """``frame`` to ``client`` now, or the client ends (module docstring)."""
        transport = client.transport
        if transport.is_closing():
            self._end(channel, client, _End.LEFT)
            return
        transport.write(frame[client.chunked])
        if transport.get_write_buffer_size() > self.max_buffer_bytes:
            self._drop_slow(channel, client)

    def _beat(self, channel: _Channel) -> None:
        """The channel's heartbeat: a ping to every client, the stalled ones cut."""
        channel.heartbeat = asyncio.get_running_loop().call_later(self.heartbeat_s, self._beat, channel)
        now = time.monotonic()
        for client in tuple(channel.clients):
            if client.transport.get_write_buffer_size():
                if client.stalled_since is None:
                    client.stalled_since = now
                elif now - client.stalled_since >= self.send_timeout_s:
                    self._drop_slow(channel, client)
                    continue
            else:
                client.stalled_since = None
            self._write(channel, client, _HEARTBEAT_FRAMED)

    def _drop_slow(self, channel: _Channel, client: _Client) -> None:
        transport = client.transport
        # A reset (linger 0), not a FIN after the kernel's unsent bytes: the
        # socket's memory goes at once. abort, not close: close would wait for
        # the transport's buffer to drain, which a stalled peer never does.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()
        self.slow_clients_dropped += 1
        self._end(channel, client, _End.SLOW)

    @staticmethod
    def _end(channel: _Channel, client: _Client, why: _End) -> None:
        channel.clients.pop(client, None)
        if not client.ended.done():
            client.ended.set_result(why)

    def _end_all(self, channel: _Channel, why: _End) -> None:
        for client in tuple(channel.clients):
            self._end(channel, client, why)

    # --- the handler -------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key, scope, kind = self.gate.admit(request, key=request.query.get("key") or None)
        admitted_epoch = self.live.key_epoch
        channel = self._subscribe(scope)  # before the head is sent (the bench counts on it)
        subscribed_version = channel.version
        response = web.StreamResponse(headers=_SSE_HEADERS)
        if request.version >= HttpVersion11:
            response.enable_chunked_encoding()  # so the channel knows the framing to write
        client: _Client | None = None
        why = _End.LEFT
        saved_timeout: int | None = None
        try:
            await response.prepare(request)
            transport = request.transport
            if transport is None or transport.is_closing():
                return response
            client = _Client(transport, response.chunked, key, (scope, kind))
            if channel.stopped:
                why = _End.CLOSING  # while the head went out: nothing would ever be written
            elif (
                self.live.key_epoch != admitted_epoch and self.live.authenticate_ofrep(key) != client.granted
            ):
                why = _End.REVOKED  # between admission and now
            else:
                saved_timeout = _set_user_timeout(transport, self.send_timeout_s)
                channel.clients[client] = None
                last_id = request.headers.get("Last-Event-ID")
                if last_id is None:
                    behind = channel.version != subscribed_version  # changed while the head went out
                else:
                    behind = last_id.strip() != str(channel.version)  # a reconnect that missed something
                if behind:
                    self._write(channel, client, channel.frame)
                why = await client.ended
        finally:
            if client is not None:
                channel.clients.pop(client, None)
            self._unsubscribe(channel)
        if client is not None and not client.transport.is_closing():
            _restore_user_timeout(client.transport, saved_timeout)
            if why in (_End.REVOKED, _End.CLOSING):
                with contextlib.suppress(Exception):
                    await response.write_eof()  # a clean end of stream: the connection may be reused
        return response

    async def close(self) -> None:
        """End every stream (cleanly) and stop the channels."""
        for channel in list(self._channels.values()):
            self._end_all(channel, _End.CLOSING)
            self._stop(channel)
        self._channels.clear()


def _set_user_timeout(transport: asyncio.Transport, seconds: float) -> int | None:
    """Ask the kernel to drop the connection when sent data stays unacknowledged
    for ``seconds`` (a peer gone without a FIN); the previous value, to restore."""
    sock = transport.get_extra_info("socket")
    if _TCP_USER_TIMEOUT is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        saved = int(sock.getsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT))
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, int(seconds * 1000))
    except OSError:
        return None
    return saved


def _restore_user_timeout(transport: asyncio.Transport, saved: int | None) -> None:
    sock = transport.get_extra_info("socket")
    if saved is None or _TCP_USER_TIMEOUT is None or sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, saved)


def add_event_routes(
    app: web.Application,
    live: LiveFlags,
    *,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
) -> ChangePings:
    """Add ``GET /ofrep/v1/events`` to ``app`` (admitted by its OFREP gate,
    ``tracking.route_gate``); the returned ``ChangePings`` is closed with
    the app (``on_shutdown``, and ``on_cleanup`` for an app never started)."""
    pings = ChangePings(
        live,
        route_gate(app, live),
        heartbeat_s=heartbeat_s,
        send_timeout_s=send_timeout_s,
        max_buffer_bytes=max_buffer_bytes,
    )
    # No HEAD: its answer has no body, and the channel writes body bytes.
    app.router.add_get(EVENTS_PATH, answering_refusals(pings.handle), allow_head=False)

    async def close(_: web.Application) -> None:
        await pings.close()

    # At shutdown, before the server waits for its handlers: streams end at once, cleanly.
    app.on_shutdown.append(close)
    app.on_cleanup.append(close)
    return pings
