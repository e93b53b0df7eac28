"""Change pings: from a flag write to every OFREP SSE client seeing it.

``measure_sse_propagation`` starts ``listeners`` child processes
(``python -m bench.sse_streams``), which together hold ``streams`` open
``GET /ofrep/v1/events`` streams (flags/ofrep_events.py) with one client
key, each its own HTTP/1.1 connection, as an app's ``EventSource`` holds
one. Then it makes ``writes`` writes, one at a time, through the admin API
(the caller's ``write(k)``: a ``PutFlag``, the whole path: produce to the
cluster, the follower applying it, the environment's channel woken).

Timing, as bench.flag_streams does it (both drive bench.listener_processes): the driver reads
``time.monotonic_ns()`` just before each write; a listener reads it when
the bytes holding the event arrive (before anything is parsed). Both are
``CLOCK_MONOTONIC``: one clock for every process of the machine.

The listeners read raw bytes: the stream is HTTP/1.1 chunked, and each
event is one write of the server, so one chunk; an event is found by the
pattern ``id: N\\nevent: message\\ndata: {...}\\n\\n`` in what arrived
(chunk-size lines sit between writes, never inside one). Heartbeats
(``: ping``) are skipped.

Invariants:

- One write at a time: write *k + 1* starts only after every stream
  reported write *k* (and ``settle_s``), so no change is coalesced and the
  *k*-th event of every stream belongs to write *k*.
- Content is checked: each event must be a ``refetchEvaluation`` whose
  ``id`` is larger than the stream's previous one; a stream that misses a
  write or sees an extra event fails the figure (not a sample).
- A stream counts as connected once its ``200`` response head arrived
  (the server subscribes the stream before it sends the head).
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.child_processes import read_setup, split_evenly
from bench.listener_processes import (
    ListenerProcess,
    answer_driver,
    delays_ms,
    listeners_cpu_ms_per_write,
    run_writes,
    spread,
    start_listeners,
)
from bench.percentiles import percentile

EVENTS_PATH = "/ofrep/v1/events"
_EVENT = re.compile(rb"id: (\d+)\nevent: message\ndata: (\{[^\n]*\})\n\n")


# --- the listener (child process) ----------------------------------------------------


@dataclass
class SseListener:
    streams: int
    received: list[list[int]] = field(default_factory=list)
    """Per stream: monotonic ns of each event seen."""
    ids: list[int] = field(default_factory=list)
    """Per stream: the last event id seen."""
    seen: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    connected: int = 0
    all_connected: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.received = [[] for _ in range(self.streams)]
        self.ids = [-1] * self.streams

    def on_connected(self) -> None:
        self.connected += 1
        if self.connected == self.streams:
            self.all_connected.set()

    def on_event(self, stream: int, event_id: int, data: bytes, now_ns: int) -> None:
        if b'"refetchEvaluation"' not in data:
            self.problems.append(f"stream {stream}: an event that is not refetchEvaluation: {data[:80]!r}")
            return
        if event_id <= self.ids[stream]:
            self.problems.append(f"stream {stream}: id {event_id} after {self.ids[stream]}")
        self.ids[stream] = event_id
        self.received[stream].append(now_ns)
        write = len(self.received[stream])
        count = self.seen[write] = self.seen.get(write, 0) + 1
        if count == self.streams:
            print(f"seen {write}", flush=True)


class _Stream(asyncio.Protocol):
    """One SSE connection: the response head, then events found in the bytes."""

    def __init__(self, listener: SseListener, index: int, request: bytes) -> None:
        self.listener = listener
        self.index = index
        self.request = request
        self.buffer = b""
        self.head_seen = False
        self.failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buffer = self.buffer + data
        if not self.head_seen:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 200"):
                self._fail(f"stream {self.index}: {buffer[:end][:200]!r}")
                return
            self.head_seen = True
            buffer = buffer[end + 4 :]
            self.listener.on_connected()
        consumed = 0
        for match in _EVENT.finditer(buffer):
            self.listener.on_event(self.index, int(match.group(1)), match.group(2), now)
            consumed = match.end()
        # Keep only what may still be the start of an event.
        rest = buffer[consumed:]
        at = rest.rfind(b"id: ")
        self.buffer = rest[at:] if at >= 0 else rest[-64:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"stream {self.index} closed: {exc!r}")

    def _fail(self, why: str) -> None:
        if not self.failed.done():
            self.failed.set_result(why)
            self.listener.problems.append(why)


async def _listen() -> None:
    reader, setup = await read_setup()
    loop = asyncio.get_running_loop()
    listener = SseListener(setup["streams"])
    request = (
        f"GET {EVENTS_PATH}?key={setup['key']} HTTP/1.1\r\nHost: {setup['host']}:{setup['port']}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()
    transports: list[asyncio.BaseTransport] = []
    problem: str | None = None
    try:
        async with asyncio.timeout(setup["connect_timeout_s"]):
            for index in range(setup["streams"]):
                transport, _ = await loop.create_connection(
                    functools.partial(_Stream, listener, index, request), setup["host"], setup["port"]
                )
                transports.append(transport)
            await listener.all_connected.wait()
    except TimeoutError:
        problem = f"{listener.connected} of {setup['streams']} streams connected after {setup['connect_timeout_s']} s"
    except OSError as error:
        problem = f"connecting: {error!r}"
    if problem is None and listener.problems:
        problem = listener.problems[0]
    await answer_driver(
        reader, problem, lambda: {"received": listener.received, "problems": listener.problems[:20]}
    )
    for opened in transports:
        opened.close()


# --- the driver (the bench process) ------------------------------------------------------


@dataclass(frozen=True)
class SseParams:
    streams: int = 1000
    writes: int = 20
    listeners: int = 4
    """Child processes holding the streams (the machine's cores are shared)."""
    settle_s: float = 0.2
    connect_timeout_s: float = 60.0
    write_timeout_s: float = 15.0


def latencies_ms(dumps: Sequence[dict[str, Any]], started_ns: Sequence[int]) -> list[list[float]]:
    """Per write: the ms from its start to each stream's receipt; raises when
    a stream saw a wrong event, missed a write or saw one too many."""
    found: list[list[float]] = [[] for _ in started_ns]
    for dump in dumps:
        if dump["problems"]:
            raise RuntimeError(f"SSE streams saw wrong events: {dump['problems'][:5]}")
        for received in dump["received"]:
            delays = delays_ms(received, started_ns, stream="an SSE stream", items="events")
            for write, delay in enumerate(delays):
                found[write].append(delay)
    return found


async def _start(host: str, port: int, key: str, params: SseParams) -> list[ListenerProcess]:
    setups = [
        {
            "host": host,
            "port": port,
            "key": key,
            "streams": count,
            "connect_timeout_s": params.connect_timeout_s,
        }
        for count in split_evenly(params.streams, params.listeners)
    ]
    return await start_listeners("bench.sse_streams", setups)


async def measure_sse_propagation(
    host: str,
    port: int,
    key: str,
    write: Callable[[int], Awaitable[object]],
    params: SseParams,
    *,
    server_cpu_s: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """``write(k)`` makes write ``k`` (1, 2, ...) and returns once the server
    answered. The figure (p99 over every stream and write) and its breakdown."""
    connecting = time.monotonic()
    children = await _start(host, port, key, params)
    connect_s = time.monotonic() - connecting
    run = await run_writes(
        children,
        write,
        params,
        streams="SSE stream",
        server_cpu_s=server_cpu_s,
    )
    per_write = [sorted(w) for w in latencies_ms(run.dumps, run.started_ns)]
    every = sorted(ms for w in per_write for ms in w)
    return {
        "flag_sse_propagation_p50_ms": round(percentile(every, 50), 2),
        "flag_sse_propagation_p99_ms": round(percentile(every, 99), 2),
        "details": {
            "streams": params.streams,
            "writes": params.writes,
            "samples": len(every),
            "listener_processes": params.listeners,
            # From starting the listener processes to every stream's 200
            # (interpreter start and imports included).
            "connect_all_s": round(connect_s, 2),
            "listeners_cpu_ms_per_write": listeners_cpu_ms_per_write(run.dumps, params.writes),
            "flag_server_cpu_ms_per_write": run.server_cpu_ms_per_write,
            "max_ms": round(every[-1], 2),
            **spread(per_write, run.answered_ms),
        },
    }


def main() -> None:
    asyncio.run(_listen())


if __name__ == "__main__":
    main()
