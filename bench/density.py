"""Density: what idle partitions cost a node.

Two fresh 3-node clusters (RF 3, so every node hosts a replica of every
partition), one after the other:

- a baseline with ``baseline_partitions`` partitions;
- one with ``partitions`` partitions (1,000 by default).

In each, once the cluster has settled — every group has a leader, the
nodes' first leader-balancing pass is over (a node hands partitions back
to their preferred replicas ``leader_balance_ms``, 10 s, after it starts),
every replica hibernates (no ticks until a proposal or vote wakes it;
``awake_replicas`` is 0 on every node) and the leader counts stopped
moving — or ``settle_timeout_s`` ran out, which the details say — each
node's CPU is read over
``idle_s`` seconds (``idle_cpu_pct_per_node``: the busiest node, % of one
core) and its RSS afterwards. Memory per partition is the difference of the
nodes' mean RSS between the two clusters divided by the difference in
partitions: what one more replica costs a node, including its share of
RocksDB and of the Raft transport.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.cluster_access import NodeAdmin, cpu_pct, running_cluster
from harness.local_cluster import TopicSpec


@dataclass(frozen=True)
class DensityParams:
    partitions: int = 1000
    baseline_partitions: int | None = 1
    """None: no baseline cluster, so no memory per partition (the smoke test
    saves a cluster start)."""
    idle_s: float = 30.0
    start_timeout_s: float = 180.0
    """1,000 replicas per node start in seconds on an idle machine, but much
    slower when other work shares the cores."""
    elect_timeout_s: float = 300.0
    settle_timeout_s: float = 120.0
    leader_balance_ms: int = 10_000
    """The nodes' setting (LocalCluster's default); shorter only to settle sooner in the smoke test."""


async def idle_cluster(root: Path, partitions: int, params: DensityParams) -> dict[str, Any]:
    """CPU and RSS of each node of a cluster of ``partitions`` idle partitions."""
    t_start = time.monotonic()
    async with running_cluster(
        root,
        [TopicSpec("idle", partitions)],
        start_timeout_s=params.start_timeout_s,
        leader_balance_ms=params.leader_balance_ms,
    ) as cluster:
        admin = NodeAdmin(cluster)
        try:
            t0 = time.monotonic()
            started_s = t0 - t_start
            await admin.wait_for_leaders(partitions, timeout=params.elect_timeout_s)
            elected_s = time.monotonic() - t0
            balanced_at = t_start + params.leader_balance_ms / 1000 + 1.0
            deadline = time.monotonic() + params.settle_timeout_s
            previous: list[int] = []
            while True:
                stats = await admin.stats()
                leaders = [s.leaders for s in stats.values()]
                hibernated = all(s.awake_replicas == 0 for s in stats.values())
                settled = hibernated and leaders == previous and time.monotonic() >= balanced_at
                if settled or time.monotonic() > deadline:
                    break
                previous = leaders
                await asyncio.sleep(0.5)
            settled_s = time.monotonic() - t0
            before = await admin.stats()
            t1 = time.monotonic()
            await asyncio.sleep(params.idle_s)
            after = await admin.stats()
            elapsed = time.monotonic() - t1
        finally:
            await admin.close()
    return {
        "partitions_per_node": partitions,
        "started_s": round(started_s, 1),
        "elected_s": round(elected_s, 1),
        "settled_s": round(settled_s, 1),
        "settled": settled,
        "leaders": {n: s.leaders for n, s in after.items()},
        "awake_replicas": {n: s.awake_replicas for n, s in after.items()},
        "cpu_pct": cpu_pct(before, after, elapsed),
        "rss_mb": {n: round(s.rss_bytes / 1e6, 1) for n, s in after.items()},
        "mean_rss_bytes": statistics.fmean(s.rss_bytes for s in after.values()),
        "seconds": round(elapsed, 1),
    }


async def measure(root: Path, params: DensityParams) -> dict[str, Any]:
    baseline = None
    if params.baseline_partitions is not None:
        baseline = await idle_cluster(root / "baseline", params.baseline_partitions, params)
    full = await idle_cluster(root / "full", params.partitions, params)
    per_partition = None
    if baseline is not None and params.partitions > baseline["partitions_per_node"]:
        extra = params.partitions - baseline["partitions_per_node"]
        per_partition = (full["mean_rss_bytes"] - baseline["mean_rss_bytes"]) / extra
    return {
        "idle_cpu_pct_per_node": max(full["cpu_pct"].values()),
        "idle_partitions_per_node": params.partitions,
        "memory_per_partition_kib": round(per_partition / 1024, 1) if per_partition is not None else None,
        "idle_rss_mb_per_node": round(full["mean_rss_bytes"] / 1e6, 1),
        "details": {"params": asdict(params), "baseline": baseline, "full": full},
    }
