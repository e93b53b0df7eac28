"""Flag propagation: from a write to every connected stream seeing it.

``measure_propagation`` starts ``listeners`` child processes
(``python -m bench.flag_streams``), which together hold ``streams`` open
streams to the flag server with one SDK key: half ``flagd.evaluation.v2``
``EventStream`` (what the RPC provider holds), half ``flagd.sync.v1``
``SyncFlags`` (what the in-process provider holds), ``per_channel`` streams
per gRPC channel (one HTTP/2 connection each). Then it makes ``writes``
writes, one at a time, through the admin API (``PutFlag`` of the flag
``MARKER_FLAG``, as ``raftlog flags set`` does: the whole path, produce to
the cluster, the follower applying it, the streams woken).

Timing: the driver reads ``time.monotonic_ns()`` just before each
``PutFlag`` call; each listener reads it as the message is handed to its
code (the raw bytes, before any decoding). Both are ``CLOCK_MONOTONIC``,
one clock for every process of the machine, so the difference is the
propagation time, the listeners' own receive cost included (they share the
machine's cores with the flag server and the cluster).

Invariants:

- One write at a time: write *k + 1* starts only after every stream has
  reported write *k* (and a pause of ``settle_s``), so no change is
  coalesced with another and the *k*-th change message of every stream
  belongs to write *k*. A stream that misses one, or sees one too many, is
  an error (the figure is not reported), not a sample.
- Content is checked, not only counted: an ``EventStream`` change must be a
  ``configuration_change`` naming ``MARKER_FLAG``; a ``SyncFlags`` snapshot
  must carry write *k*'s marker value (``mark-<k>``), so a snapshot of the
  wrong state never counts.
- Listeners talk to the driver on their stdin/stdout, one JSON or word line
  at a time: the driver sends the set-up (address, key, counts), a listener
  answers ``ready`` once every stream got its first message
  (``provider_ready``, the first snapshot), then ``seen <k>`` when all its
  streams have write *k*; ``dump`` makes it print its timings and exit.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2 as v2_pb2
from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2

from bench.child_processes import read_setup
from bench.child_processes import split_evenly as _split
from bench.listener_processes import (
    ListenerProcess,
    answer_driver,
    delays_ms,
    listeners_cpu_ms_per_write,
    p50_p99,
    run_writes,
    spread,
    start_listeners,
)
from bench.percentiles import percentile

EVENT_STREAM = "/flagd.evaluation.v2.Service/EventStream"
SYNC_FLAGS = "/flagd.sync.v1.FlagSyncService/SyncFlags"
MARKER_FLAG = "bench-propagation"
_MARK = re.compile(rb"mark-(\d{6})")
_CONFIGURATION_CHANGE = b"configuration_change"
_KEEP_ALIVE = b"keep_alive"


def marker_definition(write: int) -> dict[str, Any]:
    """The flag ``MARKER_FLAG`` as write ``write`` leaves it."""
    return {
        "state": "ENABLED",
        "variants": {"current": f"mark-{write:06d}", "other": "other"},
        "defaultVariant": "current",
    }


# --- the listener (child process) ----------------------------------------------------------


@dataclass
class _Listener:
    kinds: list[str]
    """Per stream: "event" or "sync"."""
    received: list[list[int]] = field(default_factory=list)
    """Per stream: monotonic ns of each change seen."""
    seen: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    ready: int = 0
    all_ready: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.received = [[] for _ in self.kinds]

    def _counted(self, stream: int) -> None:
        write = len(self.received[stream])
        count = self.seen[write] = self.seen.get(write, 0) + 1
        if count == len(self.kinds):
            print(f"seen {write}", flush=True)

    def on_message(self, stream: int, raw: bytes) -> None:
        now = time.monotonic_ns()
        if self.kinds[stream] == "event":
            if _CONFIGURATION_CHANGE not in raw:
                if _KEEP_ALIVE not in raw:
                    self.problems.append(f"stream {stream}: unexpected event {raw[:80]!r}")
                return
            if MARKER_FLAG.encode() not in raw:
                self.problems.append(f"stream {stream}: a change without {MARKER_FLAG}: {raw[:80]!r}")
            self.received[stream].append(now)
        else:
            self.received[stream].append(now)
            mark = _MARK.search(raw)
            write = len(self.received[stream])
            if mark is None or int(mark.group(1)) != write:
                found = None if mark is None else int(mark.group(1))
                self.problems.append(f"stream {stream}: snapshot {write} carries mark {found}")
        self._counted(stream)

    def on_first(self) -> None:
        self.ready += 1
        if self.ready == len(self.kinds):
            self.all_ready.set()


def _channels(address: str, streams: int, per_channel: int) -> list[grpc.aio.Channel]:
    """Enough channels for ``streams``, each its own connection (a local
    subchannel pool: channels with equal arguments otherwise share one)."""
    count = -(-streams // per_channel)
    return [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(count)
    ]


async def _hold(listener: _Listener, channel: grpc.aio.Channel, stream: int, key: str) -> None:
    metadata = (("authorization", f"Bearer {key}"),)
    if listener.kinds[stream] == "event":
        request, method = v2_pb2.EventStreamRequest().SerializeToString(), EVENT_STREAM
    else:
        request, method = sync_pb2.SyncFlagsRequest().SerializeToString(), SYNC_FLAGS
    # Raw bytes both ways: the timestamp is taken before any decoding.
    call = channel.unary_stream(method)(request, metadata=metadata)
    first = await call.read()
    if first is grpc.aio.EOF:
        raise RuntimeError(f"stream {stream} ended before its first message: {await call.code()}")
    listener.on_first()
    while True:
        raw = await call.read()
        if raw is grpc.aio.EOF:
            listener.problems.append(f"stream {stream} ended: {await call.code()} {await call.details()}")
            return
        listener.on_message(stream, raw)


async def _connected(
    listener: _Listener, tasks: Sequence[asyncio.Task[None]], timeout_s: float
) -> str | None:
    """None once every stream has its first message; else why not."""
    waiting = asyncio.create_task(listener.all_ready.wait())
    deadline = time.monotonic() + timeout_s
    pending: set[asyncio.Task[Any]] = {waiting, *tasks}
    while not waiting.done():
        done, pending = await asyncio.wait(
            pending, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            waiting.cancel()
            return f"{listener.ready} of {len(listener.kinds)} streams connected after {timeout_s:g} s"
        for task in done:
            if task is not waiting and task.exception() is not None:
                waiting.cancel()
                return f"a stream failed: {task.exception()!r}"
    return None


async def _listen() -> None:
    reader, setup = await read_setup()
    events, syncs, per_channel = setup["event_streams"], setup["sync_streams"], setup["per_channel"]
    listener = _Listener(["event"] * events + ["sync"] * syncs)
    event_channels = _channels(setup["eval"], events, per_channel)
    sync_channels = _channels(setup["sync"], syncs, per_channel)
    tasks = [
        asyncio.create_task(_hold(listener, event_channels[i // per_channel], i, setup["key"]))
        for i in range(events)
    ] + [
        asyncio.create_task(_hold(listener, sync_channels[i // per_channel], events + i, setup["key"]))
        for i in range(syncs)
    ]
    problem = await _connected(listener, tasks, setup["connect_timeout_s"])
    await answer_driver(
        reader,
        problem,
        lambda: {"kinds": listener.kinds, "received": listener.received, "problems": listener.problems[:20]},
    )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in (*event_channels, *sync_channels):
        await channel.close()


# --- the driver (the bench process) ----------------------------------------------------------


@dataclass(frozen=True)
class PropagationParams:
    streams: int = 1000
    """Open streams in all, half EventStream, half SyncFlags."""
    writes: int = 20
    listeners: int = 4
    """Child processes holding the streams (the machine's cores are shared)."""
    per_channel: int = 50
    """Streams per gRPC channel (connection)."""
    settle_s: float = 0.2
    """Pause before each write (after every stream saw the previous one)."""
    connect_timeout_s: float = 60.0
    write_timeout_s: float = 15.0
    """How long every stream may take to see one write (else the step fails)."""


async def _start_listeners(
    eval_address: str, sync_address: str, sdk_key: str, params: PropagationParams
) -> list[ListenerProcess]:
    events = _split(params.streams // 2, params.listeners)
    syncs = _split(params.streams - params.streams // 2, params.listeners)
    setups = [
        {
            "eval": eval_address,
            "sync": sync_address,
            "key": sdk_key,
            "event_streams": events[index],
            "sync_streams": syncs[index],
            "per_channel": params.per_channel,
            "connect_timeout_s": params.connect_timeout_s,
        }
        for index in range(params.listeners)
    ]
    return await start_listeners("bench.flag_streams", setups)


def _latencies(dumps: Sequence[dict[str, Any]], started_ns: Sequence[int]) -> dict[str, list[list[float]]]:
    """Per kind, per write: the ms from the write's start to each stream's receipt."""
    found: dict[str, list[list[float]]] = {
        "event": [[] for _ in started_ns],
        "sync": [[] for _ in started_ns],
    }
    for dump in dumps:
        if dump["problems"]:
            raise RuntimeError(f"streams saw wrong messages: {dump['problems'][:5]}")
        for kind, received in zip(dump["kinds"], dump["received"], strict=True):
            delays = delays_ms(received, started_ns, stream=f"a {kind} stream", items="changes")
            for write, delay in enumerate(delays):
                found[kind][write].append(delay)
    return found


async def measure_propagation(
    eval_address: str,
    sync_address: str,
    sdk_key: str,
    write: Callable[[int], Awaitable[object]],
    params: PropagationParams,
    *,
    server_cpu_s: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """``write(k)`` makes write ``k`` (1, 2, ...): sets ``MARKER_FLAG`` to
    ``marker_definition(k)`` and returns once the server answered. The
    figures (p50/p99 over every stream and write) and their breakdown;
    ``server_cpu_s()``: the server's CPU seconds so far, for its CPU per
    write (the pauses between writes included)."""
    children = await _start_listeners(eval_address, sync_address, sdk_key, params)
    run = await run_writes(
        children,
        write,
        params,
        streams="stream",
        server_cpu_s=server_cpu_s,
    )
    by_kind = _latencies(run.dumps, run.started_ns)
    every = sorted(ms for kind in by_kind.values() for write in kind for ms in write)
    per_write = [sorted(e + s) for e, s in zip(by_kind["event"], by_kind["sync"], strict=True)]
    return {
        "flag_propagation_p50_ms": round(percentile(every, 50), 2),
        "flag_propagation_p99_ms": round(percentile(every, 99), 2),
        "details": {
            "streams": params.streams,
            "writes": params.writes,
            "samples": len(every),
            "listener_processes": params.listeners,
            "listeners_cpu_ms_per_write": listeners_cpu_ms_per_write(run.dumps, params.writes),
            "seconds": round(run.seconds, 2),
            "flag_server_cpu_ms_per_write": run.server_cpu_ms_per_write,
            "streams_per_channel": params.per_channel,
            "max_ms": round(every[-1], 2),
            "event_stream": p50_p99(x for w in by_kind["event"] for x in w),
            "sync_flags": p50_p99(x for w in by_kind["sync"] for x in w),
            **spread(per_write, run.answered_ms),
        },
    }


def main() -> None:
    asyncio.run(_listen())


if __name__ == "__main__":
    main()
