"""Tenants that cannot hurt each other: a noisy neighbour, quota accuracy, TLS's cost.

On one 3-node ``LocalCluster`` (RF 3) two tenants share every node:

- ``quiet`` (tenant B) produces one 1 KiB record at a time to a
  1-partition topic, ``linger_ms=0``, waiting for each acknowledgement
  (the latency loop of ``bench.cluster_figures``), in this process;
- ``noisy`` (tenant A) has a produce quota of ``quota_mb_s`` (1 MB/s) and floods a
  3-partition topic at ``flood_factor`` times it from a child process
  (``bench.tenant_flood``).

Phases: B alone; B while A floods with raw 64 KiB produce calls that ignore
every retry-after (the adversary: the cluster sees all 10x); B while A
floods through the SDK (a polite client, which waits out each retry-after);
B while A offers exactly its quota through the SDK (the control: nothing
refused, so B's loss there is the cost of A's admitted bytes, not of the
flood); B alone again. The headline figures come from the raw flood.
``noisy_neighbor_p99_ratio`` = B's p99 during the flood / B's p99 alone,
where "alone" is the mean of the p99s before and after the flood, so a
drift of the machine during the run does not count for or against the
flood. ``quota_accuracy`` = A's acknowledged bytes per second over the
flood phase's window / A's quota.

Then produce throughput with TLS on, as a ratio to plaintext in the same
run (``tls_produce_ratio``): the flat-out produce of
``bench.cluster_figures`` with the operator key on a plaintext cluster,
then on a TLS cluster (client port TLS, node-to-node mTLS), same
parameters, back to back.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.child_processes import ChildProcess
from bench.cluster_access import NodeAdmin, bootstrap, credentials, running_cluster
from bench.cluster_figures import produce_flat_out, produce_one_at_a_time
from client.admin import Admin
from harness.local_cluster import LocalCluster, TopicSpec

KiB = 1024
QUIET, NOISY = "quiet", "noisy"


@dataclass(frozen=True)
class TenancyParams:
    quota_mb_s: float = 1.0
    """Tenant A's produce quota (1 MB = 1,000,000 bytes)."""
    flood_factor: float = 10.0
    flood_partitions: int = 3
    flood_record_bytes: int = KiB
    samples: int = 2000
    """B's acknowledged records per phase."""
    flood_warmup_s: float = 3.0
    """The flood runs this long before B's loop starts (the buckets drain
    their burst, the SDK meets its first refusals)."""
    quota_window_s: float = 20.0
    """A's rate is measured over at least this long (B's loop, then more
    flood if B was quicker): over its quota the SDK's batches grow to
    1 MiB, a second of a 1 MB/s quota each, so a short window would
    measure the batch size rather than the quota."""
    tls_warmup_s: float = 2.0
    tls_seconds: float = 8.0
    tls_partitions: int = 16


async def _quiet_loop(cluster: LocalCluster, key: str, samples: int) -> dict[str, Any]:
    """B's one-record-at-a-time produce latency."""
    return await produce_one_at_a_time(cluster, "lat", KiB, samples, api_key=key)


async def _mark(flood: ChildProcess) -> tuple[int, int, float]:
    await flood.send("mark")
    answer = json.loads(await flood.line())
    return int(answer["acked_bytes"]), int(answer["refused"]), float(answer["t"])


async def _beside_flood(
    cluster: LocalCluster, keys: dict[str, str], mode: str, offered_bytes_s: float, params: TenancyParams
) -> tuple[dict[str, Any], float, int]:
    """B's latency loop while A offers ``offered_bytes_s`` from a child
    process (``mode``: ``raw`` or ``sdk``, bench.tenant_flood); A's
    acknowledged bytes/s over at least ``quota_window_s``, and how many of
    its calls were refused in that window."""
    flood = await ChildProcess.start("bench.tenant_flood", name="the noisy tenant's flood")
    try:
        setup = {
            "mode": mode,
            "bootstrap": bootstrap(cluster),
            "api_key": keys[NOISY],
            "topic": "flood",
            "offered_bytes_s": offered_bytes_s,
            "record_bytes": params.flood_record_bytes,
            "tls_ca": credentials(cluster).get("tls_ca"),
        }
        await flood.send(json.dumps(setup))
        await flood.expect("ready")
        await asyncio.sleep(params.flood_warmup_s)
        acked0, refused0, t0 = await _mark(flood)
        started = time.monotonic()
        during = await _quiet_loop(cluster, keys[QUIET], params.samples)
        await asyncio.sleep(max(0.0, params.quota_window_s - (time.monotonic() - started)))
        acked1, refused1, t1 = await _mark(flood)
    finally:
        await flood.stop()
    return during, (acked1 - acked0) / (t1 - t0), refused1 - refused0


async def noisy_neighbour(root: Path, params: TenancyParams) -> dict[str, Any]:
    quota_bytes_s = params.quota_mb_s * 1e6
    async with running_cluster(root, topics=()) as cluster:
        async with Admin(bootstrap(cluster), **credentials(cluster)) as admin:
            keys: dict[str, str] = {}
            for tenant in (QUIET, NOISY):
                keys[tenant] = (await admin.create_tenant(tenant)).api_key.clear_text
            await admin.set_tenant_quota(NOISY, produce_bytes_s=int(quota_bytes_s))
        async with Admin(bootstrap(cluster), **(credentials(cluster) | {"api_key": keys[QUIET]})) as quiet:
            await quiet.create_topic("lat", 1, 3)
        async with Admin(bootstrap(cluster), **(credentials(cluster) | {"api_key": keys[NOISY]})) as noisy:
            await noisy.create_topic("flood", params.flood_partitions, 3)
        node_admin = NodeAdmin(cluster)
        try:
            await node_admin.wait_for_leaders(params.flood_partitions + 1)
            elections0 = await node_admin.election_timeouts()
            before = await _quiet_loop(cluster, keys[QUIET], params.samples)
            flood = quota_bytes_s * params.flood_factor
            during, achieved, refused = await _beside_flood(cluster, keys, "raw", flood, params)
            # A polite client at the same 10x: the SDK waits out every
            # retry-after, so less of the flood reaches the cluster.
            polite, polite_achieved, _ = await _beside_flood(cluster, keys, "sdk", flood, params)
            # The control: A offering exactly its quota, so nothing is
            # refused; what B loses here is the cost of A's admitted bytes.
            at_quota, _, _ = await _beside_flood(cluster, keys, "sdk", quota_bytes_s, params)
            after = await _quiet_loop(cluster, keys[QUIET], params.samples)
            elections = await node_admin.election_timeouts() - elections0
        finally:
            await node_admin.close()
    alone_p99 = (before["p99_ms"] + after["p99_ms"]) / 2
    return {
        "noisy_neighbor_p99_ratio": round(during["p99_ms"] / alone_p99, 3),
        "quota_accuracy": round(achieved / quota_bytes_s, 3),
        "details": {
            "quiet_alone_before": before,
            "quiet_during_flood": during,
            "quiet_during_polite_flood": polite,
            "quiet_beside_a_at_its_quota": at_quota,
            "quiet_alone_after": after,
            "p99_ratio_during_polite_flood": round(polite["p99_ms"] / alone_p99, 3),
            "p99_ratio_beside_a_at_its_quota": round(at_quota["p99_ms"] / alone_p99, 3),
            "noisy_quota_mb_s": params.quota_mb_s,
            "noisy_offered_mb_s": round(flood / 1e6, 2),
            "noisy_achieved_mb_s": round(achieved / 1e6, 3),
            "noisy_refused_calls": refused,
            "polite_achieved_mb_s": round(polite_achieved / 1e6, 3),
            "polite_quota_accuracy": round(polite_achieved / quota_bytes_s, 3),
            "election_timeouts": elections,
        },
    }


async def _flat_out(root: Path, params: TenancyParams, **options: Any) -> dict[str, Any]:
    topics = [TopicSpec("tput", params.tls_partitions)]
    async with running_cluster(root, topics, **options) as cluster:
        admin = NodeAdmin(cluster)
        try:
            await admin.wait_for_leaders(params.tls_partitions)
            return await produce_flat_out(
                cluster, admin, "tput", KiB, params.tls_warmup_s, params.tls_seconds
            )
        finally:
            await admin.close()


async def tls_cost(root: Path, params: TenancyParams) -> dict[str, Any]:
    plain = await _flat_out(root / "plain", params)
    tls = await _flat_out(root / "tls", params, tls=True)
    return {
        "tls_produce_ratio": round(tls["mb_s"] / plain["mb_s"], 3) if plain["mb_s"] else None,
        "details": {"plaintext": plain, "tls": tls},
    }


async def measure(root: Path, params: TenancyParams) -> dict[str, Any]:
    neighbour = await noisy_neighbour(root / "neighbour", params)
    cost = await tls_cost(root / "tls", params)
    return {
        "noisy_neighbor_p99_ratio": neighbour["noisy_neighbor_p99_ratio"],
        "quota_accuracy": neighbour["quota_accuracy"],
        "tls_produce_ratio": cost["tls_produce_ratio"],
        "details": {"params": asdict(params), "noisy_neighbor": neighbour["details"], "tls": cost["details"]},
    }
