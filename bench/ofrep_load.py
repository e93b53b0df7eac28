"""HTTP load on the flag server's OFREP port, from child processes.

``run_load`` starts ``processes`` children (``python -m bench.ofrep_load``),
each holding ``connections`` keep-alive HTTP/1.1 connections to the OFREP
port, and drives them through one of three jobs:

- ``bulk``: ``POST /ofrep/v1/evaluate/flags`` (every flag of the
  environment), each request a context not asked before in the run (its own
  targeting key, an email and an age), no ``If-None-Match``: every answer is
  a fresh evaluation and a fresh body (the server's ETag memo never answers
  it). Expected status 200.
- ``revalidate``: each connection first fetches the bulk answer of its
  contexts (remembering each ``ETag``), then asks again in a loop with
  ``If-None-Match: <that ETag>``, as a mobile SDK revalidating its cache
  does. Expected status 304.
- ``exposures``: ``POST /raftlog/v1/exposures`` batches of ``batch_size``
  exposures (what the in-process hook, flags/openfeature_hook.py, posts:
  up to 1,000 a request), each exposure a (targeting key, flag) pair sent
  once in the whole run, so none is deduplicated; the children share
  ``batches`` batches out and stop when they are sent, flat out or
  (``exposures_per_s``) each batch when it falls due. Expected 202.

Why a minimal client instead of ``aiohttp``/``httpx``: a general client
costs 100-200 µs of CPU per request in Python, so on this 2-core machine it
would bound the figure before the server does. Requests here are encoded
once, before the timed window (only the bytes of a connection's next
request are written), and a response is framed by its ``Content-Length``
(the OFREP app always sends one; anything else is an error). The answers'
content is checked outside the timed window (``check`` in the warm-up: one
bulk body decoded, its flag count compared).

Protocol with the driver (one line each way, bench.child_processes): the
driver writes the set-up JSON; a child answers ``ready`` (connected, warmed
up) or ``{"error": ...}``; on ``go`` it runs, then prints its result JSON
(status counts, requests, its window's seconds, CPU seconds, latency
percentiles) and exits.

Invariants: a status other than the job's expected one is counted, never
hidden (the driver fails the figure on any); the rate is completed
requests over the window in which all children ran (the latest start to
the earliest stop would undercount; the window is each child's own,
summed per child: every child runs the same ``seconds``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bench.child_processes import ChildProcess, read_setup, split_evenly
from bench.percentiles import summary

BULK_PATH = "/ofrep/v1/evaluate/flags"
EXPOSURES_PATH = "/raftlog/v1/exposures"
EXPECTED = {"bulk": 200, "revalidate": 304, "exposures": 202}


# --- requests --------------------------------------------------------------------------


def http_request(host: str, path: str, key: str, body: bytes, extra: Sequence[tuple[str, str]] = ()) -> bytes:
    """One ``POST`` of a JSON body, encoded (keep-alive: HTTP/1.1's default)."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in extra),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def bulk_body(user: int) -> bytes:
    """The bulk request of user ``user``: a context the targeting rules of
    bench.flag_load's definitions read (email domain, age)."""
    context = {
        "targetingKey": f"user-{user:07d}",
        "email": f"user{user}@{'example.com' if user % 2 else 'example.org'}",
        "age": 10 + user % 60,
    }
    return json.dumps({"context": context}, separators=(",", ":")).encode()


def exposure_batch(first: int, size: int, flags: Sequence[tuple[str, str]]) -> bytes:
    """``size`` exposures, exposure ``i`` (from ``first``) of user ``i //
    len(flags)`` to flag ``i % len(flags)``: every pair once across batches."""
    items = []
    for i in range(first, first + size):
        flag, variant = flags[i % len(flags)]
        items.append(
            {
                "flag": flag,
                "variant": variant,
                "reason": "TARGETING_MATCH",
                "targetingKey": f"h-{i // len(flags)}",
            }
        )
    return json.dumps({"exposures": items}, separators=(",", ":")).encode()


# --- responses -------------------------------------------------------------------------


class ResponseError(Exception):
    """An answer this client cannot frame (no Content-Length, chunked, closed)."""


def frame(buffer: bytes | bytearray) -> tuple[int, bytes, bytes, int] | None:
    """The first complete response in ``buffer``: (status, head, body, bytes
    used), or None while incomplete. Bodies are framed by Content-Length
    only (1xx, 204 and 304 have none)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end])
    if not head.startswith(b"HTTP/1.1 "):
        raise ResponseError(f"not an HTTP/1.1 response: {head[:60]!r}")
    status = int(head[9:12])
    length = 0
    if status not in (204, 304) and status >= 200:
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise ResponseError(f"a {status} answer without Content-Length: {head[:200]!r}")
        stop = lower.find(b"\r\n", at + 2)
        length = int(lower[at + 17 : stop if stop >= 0 else len(lower)])
    total = end + 4 + length
    if len(buffer) < total:
        return None
    return status, head, bytes(buffer[end + 4 : total]), total


def header(head: bytes, name: bytes) -> str | None:
    """A header's value in a response head (``name`` lower case)."""
    for line in head.split(b"\r\n")[1:]:
        field, _, value = line.partition(b":")
        if field.strip().lower() == name:
            return value.strip().decode()
    return None


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            found = frame(self.buffer)
        except (ResponseError, ValueError) as error:
            waiter.set_exception(error)
            return
        if found is not None:
            status, head, body, used = found
            del self.buffer[:used]
            waiter.set_result((status, head, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ResponseError(f"connection closed: {exc!r}"))

    async def request(self, raw: bytes) -> tuple[int, bytes, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


# --- the child -------------------------------------------------------------------------


@dataclass
class _Tally:
    statuses: dict[int, int]
    latencies_ms: list[float]

    def add(self, status: int, started: float, ended: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies_ms.append((ended - started) * 1000)


async def _warm_up(setup: dict[str, Any], connections: list[_Connection]) -> list[list[bytes]]:
    """Each connection's requests for the run (encoded), after fetching what
    the job needs first; checks a bulk answer's content."""
    host, key, job = setup["host_header"], setup["key"], setup["job"]
    per_connection: list[list[bytes]] = [[] for _ in connections]
    if job == "exposures":
        return per_connection  # batches are shared out while running
    first, count = setup["users"]
    for index in range(count):
        user = first + index
        request = http_request(host, BULK_PATH, key, bulk_body(user))
        if job == "revalidate":
            status, head, body = await connections[index % len(connections)].request(request)
            etag = header(head, b"etag")
            if status != 200 or etag is None:
                raise ResponseError(f"bulk answered {status} (ETag {etag!r}): {body[:200]!r}")
            if index == 0:
                _check_bulk(body, setup["flags"])
            request = http_request(host, BULK_PATH, key, bulk_body(user), [("If-None-Match", etag)])
        per_connection[index % len(connections)].append(request)
    if job == "bulk":
        # A request that is not part of the run (user -1): checks content, connects.
        status, _, body = await connections[0].request(
            http_request(host, BULK_PATH, key, bulk_body(10**7 - 1))
        )
        if status != 200:
            raise ResponseError(f"bulk answered {status}: {body[:200]!r}")
        _check_bulk(body, setup["flags"])
    return per_connection


def _check_bulk(body: bytes, flags: int) -> None:
    doc = json.loads(body)
    entries = doc.get("flags")
    if not isinstance(entries, list) or len(entries) != flags:
        raise ResponseError(f"a bulk answer with {len(entries or [])} flags, not {flags}")
    broken = [e for e in entries if "errorCode" in e]
    if broken:
        raise ResponseError(f"bulk entries with errors: {broken[:3]}")


async def _run_requests(
    connection: _Connection, requests: list[bytes], stop_at: float, tally: _Tally
) -> None:
    perf = time.perf_counter
    i = 0
    while (now := perf()) < stop_at:
        status, _, _ = await connection.request(requests[i % len(requests)])
        tally.add(status, now, perf())
        i += 1


async def _run_batches(
    connection: _Connection,
    batches: Iterator[tuple[float, bytes]],
    tally: _Tally,
    recorded: list[int],
) -> None:
    """Sends batches as they fall due (``due``: perf_counter time; 0 = now)
    until the shared iterator is exhausted."""
    perf = time.perf_counter
    for due, request in batches:
        if (wait := due - perf()) > 0:
            await asyncio.sleep(wait)
        started = perf()
        status, _, body = await connection.request(request)
        tally.add(status, started, perf())
        if status == 202:
            recorded[0] += int(json.loads(body).get("recorded", 0))


def _schedule(
    requests: Sequence[bytes], start: float, batch_size: int, per_s: float
) -> Iterator[tuple[float, bytes]]:
    """Each batch with the time it is due: ``per_s`` exposures a second from
    ``start`` (0: flat out, every batch due at once)."""
    for index, request in enumerate(requests):
        yield (start + index * batch_size / per_s if per_s > 0 else 0.0), request


def _batches(setup: dict[str, Any]) -> Iterator[bytes]:
    flags = [tuple(pair) for pair in setup["exposure_flags"]]
    size = setup["batch_size"]
    for batch in range(setup["batches"]):
        first = setup["first_exposure"] + batch * size
        yield http_request(
            setup["host_header"], EXPOSURES_PATH, setup["key"], exposure_batch(first, size, flags)
        )


async def _child() -> None:
    reader, setup = await read_setup()
    loop = asyncio.get_running_loop()
    connections: list[_Connection] = []
    try:
        for _ in range(setup["connections"]):
            _, protocol = await loop.create_connection(_Connection, setup["host"], setup["port"])
            connections.append(protocol)
        requests = await _warm_up(setup, connections)
        # Exposure batches are encoded before the window too (a few MB).
        batches = list(_batches(setup)) if setup["job"] == "exposures" else []
    except Exception as error:
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
        return
    print("ready", flush=True)
    if (await reader.readline()).strip() != b"go":
        return
    tally = _Tally({}, [])
    recorded = [0]
    cpu0, started = time.process_time(), time.perf_counter()
    try:
        if setup["job"] == "exposures":
            shared = _schedule(batches, started, setup["batch_size"], setup["per_s"])
            await asyncio.gather(*(_run_batches(c, shared, tally, recorded) for c in connections))
        else:
            stop_at = started + setup["seconds"]
            await asyncio.gather(
                *(_run_requests(c, r, stop_at, tally) for c, r in zip(connections, requests, strict=True))
            )
        failed = None
    except Exception as failure:
        failed = f"{type(failure).__name__}: {failure}"
    result = {
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "requests": sum(tally.statuses.values()),
        "seconds": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu0,
        "recorded": recorded[0],
        "latency": summary(tally.latencies_ms),
        "error": failed,
    }
    print(json.dumps(result), flush=True)
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()


# --- the driver ------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """One load run: ``job`` (module docstring) from ``processes`` children
    with ``connections`` connections each."""

    job: str
    key: str
    processes: int = 3
    connections: int = 16
    seconds: float = 5.0
    users: int = 3000
    """Contexts per child (bulk: a run's requests cycle over them only if it
    outlasts them: ``users`` is sized so it never does in practice; see
    ``fresh`` in the result)."""
    flags: int = 100
    """Flags of the environment (a bulk answer must have them all)."""
    batches: int = 0
    batch_size: int = 1000
    exposure_flags: tuple[tuple[str, str], ...] = ()
    first_exposure: int = 0
    """The run's first exposure number (runs that must not repeat pairs differ here)."""
    exposures_per_s: float = 0.0
    """Offered exposures a second, all children together (0: flat out)."""
    first_user: int = 0


async def run_load(
    host: str,
    port: int,
    spec: LoadSpec,
    *,
    server_cpu_s: Callable[[], float] | None = None,
    on_go: Callable[[], None] | None = None,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Run ``spec``; totals over the children, the server's CPU per request
    (``server_cpu_s()``: its CPU seconds so far) and each child's CPU.
    ``on_go()`` is called right before the children are told to go."""
    children: list[ChildProcess] = []
    shares = split_evenly(spec.batches, spec.processes)
    try:
        for index in range(spec.processes):
            child = await ChildProcess.start("bench.ofrep_load", name="a load client", limit=16 << 20)
            children.append(child)
            setup = {
                "host": host,
                "port": port,
                "host_header": f"{host}:{port}",
                "key": spec.key,
                "job": spec.job,
                "connections": spec.connections,
                "seconds": spec.seconds,
                "users": [spec.first_user + index * spec.users, spec.users],
                "flags": spec.flags,
                "batches": shares[index],
                "batch_size": spec.batch_size,
                "first_exposure": spec.first_exposure + sum(shares[:index]) * spec.batch_size,
                "per_s": spec.exposures_per_s / spec.processes,
                "exposure_flags": [list(pair) for pair in spec.exposure_flags],
            }
            await child.send(json.dumps(setup))
        for child in children:
            line = await asyncio.wait_for(child.line(), timeout_s)
            if line != "ready":
                raise RuntimeError(f"a load client said {line[:300]!r}")
        if on_go is not None:
            on_go()
        cpu0 = server_cpu_s() if server_cpu_s is not None else None
        started = time.perf_counter()
        for child in children:
            await child.send("go")
        results = [json.loads(await asyncio.wait_for(c.line(), timeout_s)) for c in children]
        wall_s = time.perf_counter() - started
        server_cpu = None if cpu0 is None or server_cpu_s is None else server_cpu_s() - cpu0
    finally:
        for child in children:
            await child.stop()
    return summarize(spec, results, wall_s, server_cpu)


def summarize(
    spec: LoadSpec, results: Sequence[dict[str, Any]], wall_s: float, server_cpu_s: float | None
) -> dict[str, Any]:
    """The run's totals; raises on a child's error or an unexpected status."""
    errors = [r["error"] for r in results if r.get("error")]
    if errors:
        raise RuntimeError(f"load clients failed: {errors[:3]}")
    statuses: dict[str, int] = {}
    for result in results:
        for status, count in result["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    expected = str(EXPECTED[spec.job])
    unexpected = {s: n for s, n in statuses.items() if s != expected}
    if unexpected:
        raise RuntimeError(f"{spec.job}: answers other than {expected}: {unexpected}")
    requests = statuses.get(expected, 0)
    if requests == 0:
        raise RuntimeError(f"{spec.job}: no request completed")
    # Each child's own window (they start within milliseconds of each other).
    window_s = sum(r["seconds"] for r in results) / len(results)
    client_cpu = [round(r["cpu_s"] / r["seconds"] * 100, 1) for r in results]
    return {
        "requests": requests,
        "seconds": round(window_s, 3),
        "wall_s": round(wall_s, 3),
        "rps": requests / window_s,
        "client_processes": spec.processes,
        "connections_per_process": spec.connections,
        "client_cpu_pct_each": client_cpu,
        "client_cpu_us_per_request": round(sum(r["cpu_s"] for r in results) / requests * 1e6, 1),
        "flag_server_cpu_pct": None if server_cpu_s is None else round(server_cpu_s / wall_s * 100, 1),
        "flag_server_cpu_us_per_request": (
            None if server_cpu_s is None else round(server_cpu_s / requests * 1e6, 1)
        ),
        "latency_p50_ms": round(sum(r["latency"]["p50_ms"] for r in results) / len(results), 3),
        "latency_p99_ms": round(max(r["latency"]["p99_ms"] for r in results), 3),
        "recorded": sum(r.get("recorded", 0) for r in results),
        # A bulk run's contexts repeat only once a connection used up its own.
        "fresh": spec.job != "bulk" or requests <= spec.users * spec.processes,
    }


def main() -> None:
    asyncio.run(_child())


if __name__ == "__main__":
    main()
