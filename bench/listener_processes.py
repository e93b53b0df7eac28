"""Stream listeners in child processes, and the one-write-at-a-time loop that times them.

bench.flag_streams (gRPC EventStream/SyncFlags) and bench.sse_streams (OFREP
SSE) measure the same thing the same way: child processes (``python -m
<module>``) hold the streams, the driver makes one write at a time and
waits until every stream reported it, then collects each stream's receipt
times. What differs is only what a stream is; this module is the rest.

The line protocol between the driver and a listener (stdin/stdout, one
line each; bench.child_processes): the driver sends one JSON set-up line; the listener answers
``ready`` once every stream is connected (or ``{"error": ...}``), then
``seen <k>`` when all its streams have write *k*; on ``dump`` it prints its
timings as one JSON line (``received``, ``problems``, ``cpu_s`` and
whatever else it adds) and stops.

Invariants:

- Write *k + 1* starts only after every listener said ``seen <k>`` (and a
  pause of ``settle_s``), so no change is coalesced with another and the
  *k*-th receipt of every stream belongs to write *k*.
- Timestamps are ``time.monotonic_ns()`` (``CLOCK_MONOTONIC``, one clock for
  every process of the machine), so a receipt minus a write's start is a
  delay even across processes.
- Every listener process is stopped (bench.child_processes) before
  ``run_writes`` returns or raises.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bench.child_processes import ChildProcess
from bench.percentiles import percentile


class ListenerProcess(ChildProcess):
    """One listener process (the driver's side): the line protocol above."""

    async def dump(self) -> dict[str, Any]:
        await self.send("dump")
        while not (line := await self.line()).startswith("{"):
            pass  # "seen" lines still in the pipe
        result: dict[str, Any] = json.loads(line)
        return result


async def start_listeners(module: str, setups: Iterable[dict[str, Any]]) -> list[ListenerProcess]:
    """One ``python -m <module>`` per set-up, each sent its set-up line;
    returns once every one of them said ``ready``."""
    children: list[ListenerProcess] = []
    for setup in setups:
        children.append(child := await ListenerProcess.start(module, name="a stream listener"))
        await child.send(json.dumps(setup))
    await asyncio.gather(*(c.expect("ready") for c in children))
    return children


@dataclass(frozen=True)
class WriteRun:
    """What ``run_writes`` saw."""

    started_ns: list[int]
    """Per write: monotonic ns just before it was made."""
    answered_ms: list[float]
    """Per write: how long the server took to answer it."""
    dumps: list[dict[str, Any]]
    """Per listener: its dump (receipt times, problems, CPU seconds)."""
    server_cpu_ms_per_write: float | None
    seconds: float
    """From before the first write's pause to every listener closed."""


class Pacing(Protocol):
    """How ``run_writes`` paces its writes (each bench's params have these)."""

    @property
    def writes(self) -> int: ...

    @property
    def settle_s(self) -> float:
        """Pause before each write (after every stream saw the previous one)."""
        ...

    @property
    def write_timeout_s(self) -> float:
        """How long every stream may take to see one write (else the run fails)."""
        ...


async def run_writes(
    children: Sequence[ListenerProcess],
    write: Callable[[int], Awaitable[object]],
    pacing: Pacing,
    *,
    streams: str,
    server_cpu_s: Callable[[], float] | None = None,
) -> WriteRun:
    """Makes writes 1..``pacing.writes`` one at a time, each once every
    stream saw the previous one and ``pacing.settle_s`` passed; then collects
    the dumps and stops the listeners (also on failure). ``streams`` names
    the streams in the error when a write is not seen everywhere in time."""
    writes, settle_s, write_timeout_s = pacing.writes, pacing.settle_s, pacing.write_timeout_s
    started: list[int] = []
    answered_ms: list[float] = []
    first_write_ns = time.monotonic_ns()
    cpu_before = None if server_cpu_s is None else server_cpu_s()
    try:
        for k in range(1, writes + 1):
            await asyncio.sleep(settle_s)
            t0 = time.monotonic_ns()
            await write(k)
            answered_ms.append((time.monotonic_ns() - t0) / 1e6)
            started.append(t0)
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(c.expect(f"seen {k}") for c in children)), write_timeout_s
                )
            except TimeoutError:
                raise RuntimeError(
                    f"write {k}: not every {streams} saw it within {write_timeout_s:g} s"
                ) from None
        server_cpu_ms = (
            None
            if cpu_before is None or server_cpu_s is None
            else round((server_cpu_s() - cpu_before) / writes * 1000, 1)
        )
        dumps = [await c.dump() for c in children]
    finally:
        await asyncio.gather(*(c.stop() for c in children))
    seconds = (time.monotonic_ns() - first_write_ns) / 1e9
    return WriteRun(started, answered_ms, dumps, server_cpu_ms, seconds)


def delays_ms(received: Sequence[int], started_ns: Sequence[int], *, stream: str, items: str) -> list[float]:
    """One stream's delay per write: ms from the write's start to the
    stream's receipt. Raises when the stream missed a write or saw one too
    many (``"<stream> saw 3 <items> for 2 writes"``)."""
    if len(received) != len(started_ns):
        raise RuntimeError(f"{stream} saw {len(received)} {items} for {len(started_ns)} writes")
    return [(t1 - t0) / 1e6 for t0, t1 in zip(started_ns, received, strict=True)]


def listeners_cpu_ms_per_write(dumps: Sequence[dict[str, Any]], writes: int) -> float:
    """All listeners' CPU per write: their share of the machine's cores
    while the server fans a change out."""
    return round(sum(d["cpu_s"] for d in dumps) / writes * 1000, 1)


def p50_p99(values: Iterable[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(percentile(ordered, 50), 2), "p99": round(percentile(ordered, 99), 2)}


def spread(per_write: Sequence[Sequence[float]], answered_ms: Sequence[float]) -> dict[str, dict[str, float]]:
    """Where the time goes: the write's answer (produced, committed, applied
    by the server), the first stream, the last stream. ``per_write``: each
    write's delays, sorted."""
    return {
        "write_answered_ms": p50_p99(answered_ms),
        "first_stream_ms": p50_p99(w[0] for w in per_write),
        "last_stream_ms": p50_p99(w[-1] for w in per_write),
        "first_to_last_stream_ms": p50_p99(w[-1] - w[0] for w in per_write),
    }


# --- the listener's side ----------------------------------------------------------------------


async def answer_driver(
    reader: asyncio.StreamReader, problem: str | None, timings: Callable[[], dict[str, Any]]
) -> None:
    """Says ``ready`` (or the problem); when ready, waits for ``dump`` and
    prints ``timings()`` with the listener's CPU seconds since ready."""
    print("ready" if problem is None else json.dumps({"error": problem}), flush=True)
    if problem is not None:
        return
    cpu_at_ready = time.process_time()
    while (line := await reader.readline()) and line.strip() != b"dump":
        pass
    print(json.dumps({**timings(), "cpu_s": time.process_time() - cpu_at_ready}), flush=True)
