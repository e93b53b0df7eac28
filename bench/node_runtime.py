"""Node runtime figures on a local 3-node cluster (real processes, loopback).

    python -m bench.node_runtime [--seconds 10] [--idle-partitions 1000] [--out FILE]

Measures, in one run, and prints one JSON document:

- ``produce_mb_s_1p`` / ``produce_mb_s_16p``: acknowledged produce throughput
  (acks = commit on a majority, fsync on) with 64 KiB batches of 64 x 1 KiB
  records, ``--inflight`` requests in flight per partition, sent straight to
  each partition's leader;
- ``batches_per_sync``: Raft entries carried per fsync on the nodes during
  the 16-partition run (the group-commit payoff), and the nodes' CPU;
- ``produce_p50_ms`` / ``produce_p99_ms``: one 1 KiB single-record batch at
  a time to one partition;
- ``idle_cpu_pct_per_node``: CPU of each node hosting ``--idle-partitions``
  idle replicas, once every group has elected a leader and hibernated.

The load generator runs in this process, on the same 2 cores as the nodes;
its CPU is part of what limits the figures, and is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client.local_cluster import LocalCluster, TopicSpec
from client.metadata import ChannelPool
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc
from raftlog.v1 import log_pb2
from raftlog.v1.record_batch import Record, encode_batch

KiB = 1024


class Nodes:
    """Channels to every node of a LocalCluster."""

    def __init__(self, cluster: LocalCluster) -> None:
        self._pool = ChannelPool()
        self.log = {n: self._pool.log(a) for n, a in cluster.addresses.items()}
        self.admin = {
            n: node_admin_pb2_grpc.NodeAdminStub(self._pool.channel(a)) for n, a in cluster.addresses.items()
        }

    async def close(self) -> None:
        await self._pool.close()

    async def stats(self, summary_only: bool = True) -> dict[int, node_admin_pb2.NodeStats]:
        request = node_admin_pb2.StatsRequest(summary_only=summary_only)
        answers = await asyncio.gather(*(stub.Stats(request, timeout=10) for stub in self.admin.values()))
        return dict(zip(self.admin, answers, strict=True))

    async def leaders(self, groups: int, timeout: float = 60.0) -> dict[int, int]:
        """group -> leader node, once every group has one."""
        deadline = time.monotonic() + timeout
        while True:
            found: dict[int, int] = {}
            for node, stats in (await self.stats(summary_only=False)).items():
                for p in stats.partitions:
                    if p.role == "LEADER":
                        found[p.group] = node
            if len(found) >= groups:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(found)} of {groups} groups have a leader")
            await asyncio.sleep(0.2)


def _batch_of(record_bytes: int, records: int) -> bytes:
    return encode_batch([Record(value=os.urandom(record_bytes)) for _ in range(records)])


async def _throughput(
    nodes: Nodes, partitions: int, seconds: float, inflight: int, batch: bytes
) -> dict[str, Any]:
    leaders = await nodes.leaders(partitions)
    acked = 0
    latencies: list[float] = []
    stop_at = 0.0
    measuring = False

    async def worker(partition: int) -> None:
        nonlocal acked
        stub = nodes.log[leaders[partition + 1]]
        request = log_pb2.ProduceRequest(topic="load", partition=partition, batch=batch)
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            await stub.Produce(request, timeout=30)
            if measuring:
                acked += 1
                latencies.append(time.perf_counter() - started)

    warmup = 2.0
    stop_at = time.monotonic() + warmup + seconds
    tasks = [asyncio.create_task(worker(p)) for p in range(partitions) for _ in range(inflight)]
    await asyncio.sleep(warmup)
    measuring = True
    before = await nodes.stats()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    after = await nodes.stats()
    client_cpu = (time.process_time() - cpu0) / elapsed * 100
    syncs = sum(after[n].syncs - before[n].syncs for n in after)
    entries = sum(after[n].synced_entries - before[n].synced_entries for n in after)
    latencies.sort()
    return {
        "partitions": partitions,
        "inflight_per_partition": inflight,
        "batch_bytes": len(batch),
        "batches_s": round(acked / elapsed, 1),
        "mb_s": round(acked * len(batch) / elapsed / 1e6, 1),
        "batch_p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
        "batch_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None,
        "batches_per_sync": round(entries / syncs, 2) if syncs else None,
        "syncs_s_per_node": {n: round((after[n].syncs - before[n].syncs) / elapsed, 1) for n in after},
        "node_cpu_pct": {
            n: round((after[n].cpu_seconds - before[n].cpu_seconds) / elapsed * 100, 1) for n in after
        },
        "client_cpu_pct": round(client_cpu, 1),
    }


async def _latency(nodes: Nodes, samples: int) -> dict[str, Any]:
    leaders = await nodes.leaders(1)
    stub = nodes.log[leaders[1]]
    batch = _batch_of(KiB, 1)
    request = log_pb2.ProduceRequest(topic="load", partition=0, batch=batch)
    for _ in range(50):
        await stub.Produce(request, timeout=10)
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        await stub.Produce(request, timeout=10)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return {
        "samples": samples,
        "p50_ms": round(statistics.median(timings), 3),
        "p99_ms": round(timings[int(samples * 0.99)], 3),
        "max_ms": round(timings[-1], 3),
    }


async def _idle(nodes: Nodes, partitions: int, seconds: float) -> dict[str, Any]:
    await nodes.leaders(partitions, timeout=300)
    deadline = time.monotonic() + 120
    while True:
        stats = await nodes.stats()
        awake = {n: s.awake_replicas for n, s in stats.items()}
        if all(a == 0 for a in awake.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    before = await nodes.stats()
    await asyncio.sleep(seconds)
    after = await nodes.stats()
    return {
        "partitions_per_node": partitions,
        "awake_replicas": {n: s.awake_replicas for n, s in after.items()},
        "cpu_pct": {
            n: round((after[n].cpu_seconds - before[n].cpu_seconds) / seconds * 100, 2) for n in after
        },
        "rss_mb": {n: round(after[n].rss_bytes / 1e6, 1) for n in after},
        "seconds": seconds,
    }


async def _with_cluster(root: Path, partitions: int, body: Any) -> Any:
    cluster = LocalCluster(root, topics=[TopicSpec("load", partitions=partitions)])
    await asyncio.to_thread(cluster.start_all)
    nodes = Nodes(cluster)
    try:
        return await body(nodes)
    finally:
        await nodes.close()
        await asyncio.to_thread(cluster.stop_all)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    batch = _batch_of(KiB, 64)
    results: dict[str, Any] = {"machine": {"cores": os.cpu_count()}, "parameters": vars(args) | {"out": None}}
    with tempfile.TemporaryDirectory(prefix="raftlog-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        if "throughput" in args.only:
            one = await _with_cluster(
                root / "p1", 1, lambda n: _throughput(n, 1, args.seconds, args.inflight, batch)
            )
            sixteen = await _with_cluster(
                root / "p16", 16, lambda n: _throughput(n, 16, args.seconds, args.inflight, batch)
            )
            results["produce_1p"] = one
            results["produce_16p"] = sixteen
            results["produce_mb_s_1p"] = one["mb_s"]
            results["produce_mb_s_16p"] = sixteen["mb_s"]
            results["batches_per_sync"] = sixteen["batches_per_sync"]
        if "latency" in args.only:
            latency = await _with_cluster(root / "lat", 1, lambda n: _latency(n, args.samples))
            results["latency_1k"] = latency
            results["produce_p50_ms"] = latency["p50_ms"]
            results["produce_p99_ms"] = latency["p99_ms"]
        if "idle" in args.only:
            idle = await _with_cluster(
                root / "idle",
                args.idle_partitions,
                lambda n: _idle(n, args.idle_partitions, args.idle_seconds),
            )
            results["idle"] = idle
            results["idle_cpu_pct_per_node"] = max(idle["cpu_pct"].values())
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.node_runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per throughput run")
    parser.add_argument("--inflight", type=int, default=8, help="produce requests in flight per partition")
    parser.add_argument("--samples", type=int, default=2000, help="latency samples")
    parser.add_argument("--idle-partitions", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--only", nargs="+", default=["throughput", "latency", "idle"])
    parser.add_argument("--dir", default=None, help="where the cluster's data goes (default: system temp)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
