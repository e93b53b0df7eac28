"""Raft transport throughput between two processes on loopback (run by hand;
not collected by pytest).

    .venv/bin/python tests/cluster/measure_transport.py all --seconds 5

This process is node 1 (the sender); it starts node 2 (the receiver) as a
child process running this file with ``--receiver``. Each node has its own
gRPC server and ``RaftTransport`` with the default ``TransportConfig``.

Scenarios:

- ``appends``: APPEND messages of one 64 KiB entry each (group 1), as fast as
  the transport takes them: the sender keeps at most ``--window`` MiB (and
  half of ``max_queued_messages``) queued, so the transport never drops. Reports the receiver's MB/s of entry
  payload, messages/s and messages per delivered batch.
- ``heartbeats``: HEARTBEAT messages (no payload) for ``--groups`` groups,
  one message per group per burst, bursts as fast as the queue allows.
  Reports messages/s and messages per batch at the receiver.
- ``mixed``: the ``appends`` load against a receiver that spends
  ``--cpu-ms-per-mib`` of CPU per MiB of payload delivered (a node's work
  on what it receives: about 25 ms per MiB caps it near the 40 MB/s a node
  took in the bench), plus one HEARTBEAT every 50 ms stamped with its send
  time. Reports the heartbeats' one-way latency (p50, p99, max): what a
  follower's election timer sees of a healthy leader under load (issue 20).

The receiver measures from its first to its last delivered message, so
connection set-up is not counted; the sender reports its drop count (0 is
expected: it paces itself by the queue) to show nothing was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from cluster.transport.raft_transport import InboundMessage, RaftTransport, TransportConfig, server_options
from raft.types import Entry, Message, MessageType

MiB = 1024 * 1024
END = b"measure:end"
STAMP = b"measure:sent:"  # + time.monotonic() at send (one clock for both processes on Linux)
ENTRY = bytes(64 * 1024)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def serve(
    node_id: int,
    port: int,
    peer: int,
    peer_port: int,
    deliver: Callable[[int, Sequence[InboundMessage]], None],
    config: TransportConfig,
) -> tuple[grpc.aio.Server, RaftTransport]:
    server = grpc.aio.server(options=server_options(config))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"cannot bind 127.0.0.1:{port}")
    transport = RaftTransport(node_id, {peer: f"127.0.0.1:{peer_port}"}, deliver, config=config)
    transport.add_to_server(server)
    await server.start()
    await transport.start()
    return server, transport


# --- the receiver (child process) ------------------------------------------------------------------


async def receive(port: int, peer_port: int, config: TransportConfig, cpu_ms_per_mib: float) -> None:
    done = asyncio.Event()
    counts = {"messages": 0, "payload": 0, "batches": 0}
    first = last = 0.0
    latencies: list[float] = []

    def deliver(_from: int, batch: Sequence[InboundMessage]) -> None:
        nonlocal first, last
        now = time.perf_counter()
        if not first:
            first = now
        payload = 0
        for m in batch:
            if m.message.context == END:
                done.set()
                continue
            if m.message.context.startswith(STAMP):
                latencies.append(time.monotonic() - float(m.message.context[len(STAMP) :]))
            last = now
            counts["messages"] += 1
            for entry in m.message.entries:
                payload += len(entry.data)
        counts["payload"] += payload
        counts["batches"] += 1
        if cpu_ms_per_mib:
            # The node's work on what arrived, holding the event loop.
            busy_until = time.perf_counter() + payload / MiB * cpu_ms_per_mib / 1000
            while time.perf_counter() < busy_until:
                pass

    server, transport = await serve(2, port, 1, peer_port, deliver, config)
    print("ready", flush=True)
    await done.wait()
    elapsed = max(last - first, 1e-9)
    stats = transport.stats()
    print(
        json.dumps(
            {
                **counts,
                "seconds": elapsed,
                "decode_errors": stats.decode_errors,
                "bytes_received": stats.bytes_received,
                "latencies": sorted(latencies),
            }
        ),
        flush=True,
    )
    await transport.close()
    await server.stop(None)


REPO_ROOT = Path(__file__).resolve().parents[2]


# --- the sender (this process) ----------------------------------------------------------------------


async def send(
    scenario: str, seconds: float, window: int, groups: int, config: TransportConfig, cpu_ms_per_mib: float
) -> dict[str, float]:
    port, peer_port = free_port(), free_port()
    # Started once, before anything is measured: blocking the loop here is harmless.
    child = subprocess.Popen(  # noqa: ASYNC220
        [
            sys.executable,
            __file__,
            "--receiver",
            str(peer_port),
            str(port),
            "--cpu-ms-per-mib",
            str(cpu_ms_per_mib),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    assert child.stdout is not None
    loop = asyncio.get_running_loop()
    if (await loop.run_in_executor(None, child.stdout.readline)).strip() != "ready":
        raise SystemExit("receiver did not start")
    server, transport = await serve(1, port, 2, peer_port, lambda _f, _b: None, config)
    try:
        while not transport.stats().peers[2].connected:
            await asyncio.sleep(0.01)
        limit = window * MiB
        sent = 0
        index = 0
        deadline = time.perf_counter() + seconds
        next_stamp = 0.0
        while time.perf_counter() < deadline:
            if scenario == "mixed" and time.monotonic() >= next_stamp:
                next_stamp = time.monotonic() + 0.05
                stamp = STAMP + repr(time.monotonic()).encode()
                transport.send(2, 2, Message(MessageType.HEARTBEAT, to=2, sender=1, term=1, context=stamp))
            queued = transport.stats().peers[2]
            if queued.queued_bytes >= limit or queued.queued_messages >= config.max_queued_messages // 2:
                await asyncio.sleep(0.0005)
                continue
            if scenario in ("appends", "mixed"):
                for _ in range(16):
                    index += 1
                    entries = (Entry(1, index, data=ENTRY),)
                    transport.send(
                        2,
                        1,
                        Message(MessageType.APPEND, to=2, sender=1, term=1, index=index - 1, entries=entries),
                    )
                sent += 16
            else:
                index += 1
                for group in range(groups):
                    transport.send(
                        2, group, Message(MessageType.HEARTBEAT, to=2, sender=1, term=1, commit=index)
                    )
                sent += groups
            await asyncio.sleep(0)
        transport.send(2, 0, Message(MessageType.HEARTBEAT, to=2, sender=1, context=END))
        output = (await loop.run_in_executor(None, child.stdout.readline)).strip()
        result: dict[str, float] = json.loads(output)
        stats = transport.stats()
        result.update(sent=sent, dropped=stats.dropped_messages, batches_sent=stats.batches_sent)
        return result
    finally:
        await transport.close()
        await server.stop(None)
        child.wait(timeout=10)


def report(scenario: str, r: dict[str, float]) -> None:
    rate = r["messages"] / r["seconds"]
    per_batch = r["messages"] / max(r["batches"], 1)
    line = f"{scenario:10s} {r['messages']:>9.0f} msgs in {r['seconds']:5.2f}s  {rate:>10,.0f} msgs/s  {per_batch:7.1f} msgs/batch"
    if scenario in ("appends", "mixed"):
        line += f"  {r['payload'] / r['seconds'] / 1e6:8.1f} MB/s payload"
    latencies = r.get("latencies")
    if isinstance(latencies, list) and latencies:
        n = len(latencies)
        line += (
            f"  heartbeat latency ms p50 {latencies[n // 2] * 1e3:.1f}"
            f" p99 {latencies[min(n - 1, n * 99 // 100)] * 1e3:.1f} max {latencies[-1] * 1e3:.1f} ({n})"
        )
    line += f"  (sent {r['sent']:.0f}, dropped {r['dropped']:.0f}, decode errors {r['decode_errors']:.0f})"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "scenario", nargs="?", choices=["appends", "heartbeats", "mixed", "all"], default="all"
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=16, help="MiB the sender keeps queued at most")
    parser.add_argument("--groups", type=int, default=1000, help="groups per heartbeat burst")
    parser.add_argument("--uvloop", action="store_true", help="run both processes on uvloop")
    parser.add_argument(
        "--cpu-ms-per-mib", type=float, default=25.0, help="the receiver's work per MiB (mixed only)"
    )
    parser.add_argument(
        "--receiver", nargs=2, type=int, metavar=("PORT", "PEER_PORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    config = TransportConfig()
    if args.uvloop:
        import uvloop

        uvloop.install()
    if args.receiver:
        asyncio.run(receive(args.receiver[0], args.receiver[1], config, args.cpu_ms_per_mib))
        return
    scenarios = ["appends", "heartbeats", "mixed"] if args.scenario == "all" else [args.scenario]
    print(
        f"loop: {'uvloop' if args.uvloop else 'asyncio'}; {args.seconds:g}s per scenario; default TransportConfig"
    )
    for scenario in scenarios:
        cpu = args.cpu_ms_per_mib if scenario == "mixed" else 0.0
        report(scenario, asyncio.run(send(scenario, args.seconds, args.window, args.groups, config, cpu)))


if __name__ == "__main__":
    main()
