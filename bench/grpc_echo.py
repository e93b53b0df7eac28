"""Loopback gRPC echo between two Python processes: the transport's ceiling.

The server (``python -m bench.grpc_echo``, started by ``measure`` as a
child process) answers ``/bench.Echo/Echo`` with the request's bytes. The
service has no ``.proto``: a generic handler without serializers moves
raw ``bytes`` both ways, so the figures are gRPC and HTTP/2 alone, with no
protobuf encoding. Server and client both run ``grpc.aio`` on the default
asyncio loop, as the nodes and the SDK do.

Figures (``measure``):

- ``rpc_s``: small (``small_bytes``) unary calls per second with
  ``concurrency`` calls in flight on one channel;
- ``sequential_p50_ms`` / ``sequential_p99_ms``: one small call at a time
  (the floor under any one-at-a-time produce latency);
- ``mb_s``: 64 KiB unary calls with ``concurrency`` in flight, counting the
  payload once per call (the echo carries it back as well).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

import grpc

from bench.percentiles import percentile

METHOD = "/bench.Echo/Echo"
_OPTIONS = [("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve() -> None:
    server = grpc.aio.server(options=_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"echo ready on {port}", flush=True)
    # Until the parent closes our stdin (or dies).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(None)


async def _flat_out(call: Any, payload: bytes, concurrency: int, seconds: float) -> int:
    """Calls completed in ``seconds`` with ``concurrency`` in flight."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call(payload, timeout=10)
            done += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done


async def _client(address: str, seconds: float, concurrency: int, small_bytes: int) -> dict[str, Any]:
    large = b"x" * (64 * 1024)
    small = b"x" * small_bytes
    async with grpc.aio.insecure_channel(address, options=_OPTIONS) as channel:
        call = channel.unary_unary(METHOD)
        for _ in range(200):  # connect and warm up
            await call(small, timeout=10)
        timings = []
        stop_at = time.perf_counter() + seconds / 3
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await call(small, timeout=10)
            timings.append((time.perf_counter() - t0) * 1000)
        timings.sort()
        t0 = time.perf_counter()
        small_calls = await _flat_out(call, small, concurrency, seconds / 3)
        small_elapsed = time.perf_counter() - t0
        t0 = time.perf_counter()
        large_calls = await _flat_out(call, large, concurrency, seconds / 3)
        large_elapsed = time.perf_counter() - t0
    return {
        "rpc_s": round(small_calls / small_elapsed),
        "mb_s": round(large_calls * len(large) / large_elapsed / 1e6, 1),
        "sequential_p50_ms": round(percentile(timings, 50), 3),
        "sequential_p99_ms": round(percentile(timings, 99), 3),
        "small_bytes": small_bytes,
        "large_bytes": len(large),
        "concurrency": concurrency,
    }


def measure(seconds: float = 3.0, concurrency: int = 16, small_bytes: int = 100) -> dict[str, Any]:
    """Start the echo server in a child process and measure it from this one
    (``seconds`` in all, split over the three figures)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.grpc_echo"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().decode()
        if not line.startswith("echo ready on "):
            raise RuntimeError(f"echo server did not start: {line!r}")
        port = int(line.rsplit(" ", 1)[1])
        return asyncio.run(_client(f"127.0.0.1:{port}", seconds, concurrency, small_bytes))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="the echo server (run by measure())")
    parser.parse_args()
    asyncio.run(serve())


if __name__ == "__main__":
    main()
