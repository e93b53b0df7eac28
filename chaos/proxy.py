"""A fault-injecting TCP proxy on every directed link of a drill.

Why a proxy and not network namespaces: it needs no root, runs the same on a
laptop and on CI, and the faults it injects are the ones a node actually
sees through its sockets (stalls, resets, delay). What it cannot do is drop
single IP packets: TCP would retransmit them anyway, so a proxy models what
loss looks like *above* TCP (see ``LinkMode``).

A *link* is one listening port that forwards every connection to one
upstream address. The drill gives each directed pair its own link: node i
reaches peer j through link ``n{i}->n{j}`` (``--dial j=...`` on the node),
and a client placed next to node i reaches node j through ``c{i}->n{j}``.
A link carries whole TCP connections, so it is directional in the sense of
*who dialled*: blocking ``n1->n2`` stops everything on the connections node 1
opened to node 2 (its Raft messages to 2, and 2's stream acks back), while
node 2's own connection to node 1 (2's messages to 1) still flows.

Modes (``LinkMode``), changed at any time for all of a link's connections:

- pass: bytes flow unchanged.
- blackhole: new connections are accepted but never connected upstream;
  open connections stop forwarding in both directions (the bytes wait, as
  in a network that silently drops every packet until TCP gives up). On
  heal, held connections resume where they stopped, unless an endpoint has
  given up on them meanwhile (keepalive, deadline).
- reset: every open connection is reset (RST) and new ones are reset as
  soon as they are accepted (a refused or torn-down link).
- delay/jitter: each chunk read is delivered ``delay_ms`` ± ``jitter_ms``
  later, never before the chunk read ahead of it (TCP never reorders bytes).
- loss: TCP turns a lost segment into a stall of the whole byte stream until
  the retransmission arrives; so with probability ``loss`` a chunk (and all
  bytes behind it) is held an extra ``stall_ms`` (a retransmission timeout).
  With probability ``reset`` a chunk instead tears the connection down (a
  connection that lost too much and was given up).
- reply reset: with probability ``reply_reset``, a chunk travelling back
  to the dialer (an answer) resets the connection instead of being
  delivered: the request got through and was acted on, the dialer never
  learns the outcome.

Invariants: bytes of one direction of one connection leave in the order
they arrived, none is invented, changed or dropped without the connection
being reset; the mode is read per chunk, so a change takes effect at once.
The proxies run on their own event loop in a daemon thread (``ProxyFleet``),
so a busy drill loop cannot stall the network, nor the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

__all__ = ["BLACKHOLE", "PASS", "RESET", "LinkMode", "LinkStats", "ProxyFleet", "ProxyLink"]

T = TypeVar("T")
_CHUNK = 64 * 1024
_QUEUE_CHUNKS = 64  # per direction: beyond this the reader waits (backpressure)


@dataclass(frozen=True, slots=True)
class LinkMode:
    """How a link treats its traffic; see the module docstring. ``block``
    wins over the rest; delay and loss combine."""

    block: Literal["", "blackhole", "reset"] = ""
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    stall_ms: float = 250.0
    reset: float = 0.0
    reply_reset: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.stall_ms < 0:
            raise ValueError("delays must be >= 0")
        if not all(0 <= p <= 1 for p in (self.loss, self.reset, self.reply_reset)):
            raise ValueError("loss and reset are probabilities")

    def describe(self) -> str:
        if self.block:
            return self.block
        parts = []
        if self.delay_ms or self.jitter_ms:
            parts.append(f"delay {self.delay_ms:.0f}±{self.jitter_ms:.0f} ms")
        if self.loss:
            parts.append(f"loss {self.loss:.0%} (stall {self.stall_ms:.0f} ms)")
        if self.reset:
            parts.append(f"reset {self.reset:.1%}/chunk")
        if self.reply_reset:
            parts.append(f"reset {self.reply_reset:.0%} of answers")
        return ", ".join(parts) or "pass"


PASS = LinkMode()
BLACKHOLE = LinkMode(block="blackhole")
RESET = LinkMode(block="reset")


@dataclass(slots=True)
class LinkStats:
    connections: int = 0
    bytes: int = 0
    resets: int = 0
    stalls: int = 0


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST, not FIN: the peer sees a reset connection."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    """One accepted connection and its upstream twin."""

    def __init__(self, down: asyncio.StreamWriter) -> None:
        self.down = down
        self.up: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in (self.down, self.up):
            if writer is not None:
                _abort(writer)
        for task in self.tasks:
            task.cancel()

    def close(self) -> None:
        """The end of a connection one side closed: FIN the other."""
        for writer in (self.down, self.up):
            if writer is not None:
                writer.close()
        for task in self.tasks:
            task.cancel()


class ProxyLink:
    """One listening port forwarding to ``upstream``. Lives on one event loop."""

    def __init__(self, name: str, upstream: tuple[str, int], rng: random.Random) -> None:
        self.name = name
        self.upstream = upstream
        self.mode = PASS
        self.stats = LinkStats()
        self.port = 0
        self._rng = rng
        self._open = asyncio.Event()
        self._open.set()
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        self._connections.clear()
        if self._server is not None:
            await self._server.wait_closed()

    def set_mode(self, mode: LinkMode) -> None:
        self.mode = mode
        if mode.block:
            self._open.clear()
        else:
            self._open.set()
        if mode.block == "reset":
            for connection in list(self._connections):
                self.stats.resets += 1
                connection.abort()
            self._connections.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(writer)
        self._connections.add(connection)
        try:
            await self._serve(connection, reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(connection)
            connection.close()

    async def _serve(
        self, connection: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.mode.block == "reset":
            self.stats.resets += 1
            connection.abort()
            return
        await self._open.wait()  # blackholed: the dialer's connection hangs
        if writer.is_closing():
            return  # reset while it was held (set_mode aborts every held connection)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            connection.abort()  # upstream down: the dialer sees a reset, as with a refused port
            return
        connection.up = up_writer
        self.stats.connections += 1
        connection.tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, connection, back=False)),
            asyncio.create_task(self._pipe(up_reader, writer, connection, back=True)),
        ]
        # The connection ends when either direction ends (gRPC does not
        # half-close its TCP connections).
        await asyncio.wait(connection.tasks, return_when=asyncio.FIRST_COMPLETED)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: _Connection,
        *,
        back: bool,
    ) -> None:
        """One direction; ``back``: upstream to the dialer (answers)."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_QUEUE_CHUNKS)
        # One sender delivers the chunks in the order read, so a chunk never
        # leaves before the one read ahead of it, whatever its own delay.
        sender = asyncio.create_task(self._send(queue, writer, connection))
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                mode = self.mode
                at = time.monotonic()
                if mode.delay_ms or mode.jitter_ms:
                    at += max(0.0, mode.delay_ms + self._rng.uniform(-mode.jitter_ms, mode.jitter_ms)) / 1000
                reset = mode.reset + (mode.reply_reset if back else 0.0)
                if reset and self._rng.random() < reset:
                    self.stats.resets += 1
                    connection.abort()
                    return
                if mode.loss and self._rng.random() < mode.loss:
                    self.stats.stalls += 1
                    at += mode.stall_ms / 1000
                await queue.put((at, data))
            await queue.put(None)
            await sender
        except (OSError, ConnectionError):
            pass
        finally:
            sender.cancel()

    async def _send(
        self,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
        connection: _Connection,
    ) -> None:
        try:
            while (item := await queue.get()) is not None:
                at, data = item
                delay = at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._open.wait()  # blackholed: hold the bytes
                writer.write(data)
                self.stats.bytes += len(data)
                await writer.drain()
        except (OSError, ConnectionError):
            connection.abort()


class ProxyFleet:
    """Every link of a drill, on one event loop in a daemon thread.

    The methods are called from any thread and return once the change is in
    place on the proxy loop. ``seed`` makes each link's jitter and loss
    draws reproducible (given the same traffic).
    """

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxies", daemon=True)
        self._thread.start()
        self.links: dict[str, ProxyLink] = {}
        self._closed = False

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def add_link(self, name: str, upstream: str) -> int:
        """Start link ``name`` forwarding to ``upstream`` (``host:port``); its
        local port."""
        if name in self.links:
            raise ValueError(f"link {name} exists")
        host, _, port = upstream.rpartition(":")
        link = ProxyLink(name, (host, int(port)), random.Random(f"{self._seed}:{name}"))
        port_number = self._call(link.start())
        self.links[name] = link
        return port_number

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.links[name].port}"

    def set_modes(self, modes: Mapping[str, LinkMode]) -> None:
        """Change several links at once (one step of the proxy loop, so no
        connection sees a half-applied partition)."""
        unknown = set(modes) - set(self.links)
        if unknown:
            raise KeyError(f"unknown links {sorted(unknown)}")

        async def apply() -> None:
            for name, mode in modes.items():
                self.links[name].set_mode(mode)

        self._call(apply())

    def modes(self) -> dict[str, LinkMode]:
        return {name: link.mode for name, link in self.links.items()}

    def stats(self) -> dict[str, LinkStats]:
        return {name: link.stats for name, link in self.links.items()}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def close_all() -> None:
            await asyncio.gather(*(link.close() for link in self.links.values()), return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()
