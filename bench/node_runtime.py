"""The servers alone, without the SDK: raw ``Produce`` calls of prebuilt batches.

    python -m bench.node_runtime [--seconds 10] [--inflight 8] [--samples 2000] [--out FILE]

A diagnostic beside ``python -m bench`` (which drives the cluster through
the SDK, as users do): record batches are encoded once, up front, and sent
straight to each partition's leader, so the client costs almost nothing
and the figures are what the three node processes manage on their own.

- ``produce_mb_s_1p`` / ``produce_mb_s_16p``: acknowledged produce
  throughput (commit on a majority, fsync on) with 64 KiB batches of
  64 x 1 KiB records, ``--inflight`` requests in flight per partition, with
  the Raft entries carried per fsync and the nodes' CPU;
- ``produce_p50_ms`` / ``produce_p99_ms``: one 1 KiB single-record batch at
  a time to one partition.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench import report
from bench.cluster_access import NodeAdmin, cpu_pct, credentials, running_cluster
from bench.percentiles import summary
from client.metadata import ChannelPool
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.v1 import log_pb2
from raftlog.v1.record_batch import Record, encode_batch

KiB = 1024


def _batch_of(record_bytes: int, records: int) -> bytes:
    return encode_batch([Record(value=os.urandom(record_bytes)) for _ in range(records)])


async def _leaders(cluster: LocalCluster, admin: NodeAdmin, partitions: int) -> dict[int, int]:
    """Partition of topic ``load`` -> its leader node, as every node names it."""
    leaders: dict[int, int] = {}
    deadline = time.monotonic() + 60
    while len(leaders) < partitions:
        for p in range(partitions):
            if p not in leaders and (node := await admin.partition_leader("load", p, cluster.node_ids)):
                leaders[p] = node
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(leaders)} of {partitions} partitions have a leader")
        await asyncio.sleep(0.1)
    return leaders


async def _throughput(
    cluster: LocalCluster, admin: NodeAdmin, pool: ChannelPool, partitions: int, seconds: float, inflight: int
) -> dict[str, Any]:
    batch = _batch_of(KiB, 64)
    leaders = await _leaders(cluster, admin, partitions)
    acked = 0
    latencies: list[float] = []
    measuring = False

    async def worker(partition: int) -> None:
        nonlocal acked
        stub = pool.log(cluster.addresses[leaders[partition]])
        request = log_pb2.ProduceRequest(topic="load", partition=partition, batch=batch)
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            await stub.Produce(request, timeout=30)
            if measuring:
                acked += 1
                latencies.append((time.perf_counter() - started) * 1000)

    warmup = 2.0
    stop_at = time.monotonic() + warmup + seconds
    tasks = [asyncio.create_task(worker(p)) for p in range(partitions) for _ in range(inflight)]
    await asyncio.sleep(warmup)
    measuring = True
    before = await admin.stats()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    after = await admin.stats()
    syncs = sum(after[n].syncs - before[n].syncs for n in after)
    entries = sum(after[n].synced_entries - before[n].synced_entries for n in after)
    return {
        "partitions": partitions,
        "inflight_per_partition": inflight,
        "batch_bytes": len(batch),
        "batches_s": round(acked / elapsed, 1),
        "mb_s": round(acked * len(batch) / elapsed / 1e6, 1),
        "batch_latency": summary(latencies),
        "batches_per_sync": round(entries / syncs, 2) if syncs else None,
        "node_cpu_pct": cpu_pct(before, after, elapsed),
        "client_cpu_pct": round((time.process_time() - cpu0) / elapsed * 100, 1),
    }


async def _latency(
    cluster: LocalCluster, admin: NodeAdmin, pool: ChannelPool, samples: int
) -> dict[str, Any]:
    leaders = await _leaders(cluster, admin, 1)
    stub = pool.log(cluster.addresses[leaders[0]])
    request = log_pb2.ProduceRequest(topic="load", partition=0, batch=_batch_of(KiB, 1))
    for _ in range(50):
        await stub.Produce(request, timeout=10)
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        await stub.Produce(request, timeout=10)
        timings.append((time.perf_counter() - started) * 1000)
    return summary(timings)


async def _with_cluster(
    root: Path, partitions: int, body: Callable[[LocalCluster, NodeAdmin, ChannelPool], Awaitable[Any]]
) -> Any:
    async with running_cluster(root, [TopicSpec("load", partitions=partitions)]) as cluster:
        admin = NodeAdmin(cluster)
        pool = ChannelPool(**credentials(cluster))
        try:
            return await body(cluster, admin, pool)
        finally:
            await pool.close()
            await admin.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        **report.commit(),
        "machine": report.machine(),
        "parameters": vars(args) | {"out": None},
    }
    with tempfile.TemporaryDirectory(prefix="raftlog-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        for partitions in (1, 16):

            async def body(c: LocalCluster, a: NodeAdmin, p: ChannelPool, n: int = partitions) -> Any:
                return await _throughput(c, a, p, n, args.seconds, args.inflight)

            figures = await _with_cluster(root / f"p{partitions}", partitions, body)
            results[f"produce_{partitions}p"] = figures
            results[f"produce_mb_s_{partitions}p"] = figures["mb_s"]
        latency = await _with_cluster(root / "lat", 1, lambda c, a, p: _latency(c, a, p, args.samples))
        results["latency_1k"] = latency
        results["produce_p50_ms"] = latency["p50_ms"]
        results["produce_p99_ms"] = latency["p99_ms"]
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.node_runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per throughput run")
    parser.add_argument("--inflight", type=int, default=8, help="produce requests in flight per partition")
    parser.add_argument("--samples", type=int, default=2000, help="latency samples")
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
