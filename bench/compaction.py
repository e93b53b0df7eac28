"""Compaction figures: how fast a pass cleans a partition, and what it costs
the produce latency of another topic while it runs.

One 3-node ``LocalCluster`` (RF 3) with two topics:

- ``compacted`` (1 partition, ``cleanup_policy`` compact, created through
  ``client.admin.Admin``) filled with ``fill_mb`` MB of updates over
  ``keys`` keys (``value_bytes`` values) while compaction is held back
  (``min_compaction_lag_ms`` of an hour: neither an automatic nor an asked
  pass runs), so the pass measured has the whole log to clean;
- ``lat`` (1 partition, delete policy): one record at a time
  (``linger_ms=0``, ``record_bytes``), send to acknowledgement.

Figures:

- ``produce_p99_without_compaction_ms``: ``latency_samples`` one-at-a-time
  produces to ``lat`` with the compacted topic full and no pass running;
- ``compaction_mb_s``: the hold is lifted (``alter_topic_config``) and
  ``compact_topic(wait=True)`` asked (again, until the leader's copy is
  cleaned up to the last offset written); the bytes the nodes stored for
  the compacted range (each node's ``bytes_written`` during the fill; the
  median of the three, so the Raft entries as stored: batches plus a few
  bytes of command header each) over the wall time from the alter to that
  answer. The time includes the alter's commit and its push to the
  replicas (tens of milliseconds; ``alter_s`` in the details), so this is a
  lower bound of the pass's own rate. Every replica cleans its own copy at
  the same time (the followers' passes are in the nodes' CPU figures);
- ``produce_p99_during_compaction_ms``: the same one-at-a-time produces
  to ``lat`` from the alter until the pass is over (``samples`` in the
  details says how many fell inside the pass: at least a few hundred are
  needed for the p99 to mean something, so ``fill_mb`` sets the pass's
  length).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.cluster_access import NodeAdmin, bootstrap, cpu_pct, credentials, running_cluster
from bench.percentiles import summary
from client import Producer
from client.admin import Admin
from client.batches import RecordMetadata
from client.errors import RaftlogError
from harness.local_cluster import LocalCluster, TopicSpec

COMPACTED = "compacted"
LATENCY = "lat"
HOLD_MS = 3_600_000
"""``min_compaction_lag_ms`` while the topic fills: no pass starts."""


@dataclass(frozen=True)
class CompactionParams:
    fill_mb: float = 64.0
    keys: int = 10_000
    value_bytes: int = 100
    record_bytes: int = 1024
    """Of the one-at-a-time records to ``lat`` (as ``produce_p99_ms``)."""
    latency_samples: int = 1000
    """One-at-a-time produces without compaction (the baseline)."""
    pass_timeout_s: float = 300.0


async def _fill(cluster: LocalCluster, params: CompactionParams) -> tuple[int, int]:
    """``fill_mb`` MB of keyed updates, round-robin over the keys, all
    acknowledged; returns (records, last offset)."""
    records = max(1, int(params.fill_mb * 1e6 / (params.value_bytes + 8)))
    pad = b"v" * (params.value_bytes - 8)
    last = -1
    failed: list[BaseException] = []

    def acked(future: asyncio.Future[RecordMetadata]) -> None:
        nonlocal last
        if future.cancelled() or future.exception() is not None:
            failed.append(future.exception() or asyncio.CancelledError())
        else:
            last = max(last, future.result().offset)

    async with Producer(bootstrap(cluster), **credentials(cluster)) as producer:
        for i in range(records):
            key = b"k%07d" % (i % params.keys)
            future = await producer.send(COMPACTED, i.to_bytes(8, "big") + pad, key=key, partition=0)
            future.add_done_callback(acked)
            if i % 256 == 0:  # let the sender run (see cluster_figures.produce_flat_out)
                await asyncio.sleep(0)
        await producer.flush()
    if failed:
        raise RuntimeError(f"{len(failed)} of {records} fill records failed, first: {failed[0]!r}")
    return records, last


class _Sampler:
    """One record at a time to ``lat`` until stopped: send, wait for the
    acknowledgement, note the milliseconds."""

    def __init__(self, producer: Producer, record_bytes: int) -> None:
        self._producer = producer
        self._value = b"v" * record_bytes
        self.samples: list[float] = []
        self.stop = False

    async def run(self, count: int | None = None) -> None:
        while not self.stop and (count is None or len(self.samples) < count):
            t0 = time.perf_counter_ns()
            await (await self._producer.send(LATENCY, self._value, partition=0))
            self.samples.append((time.perf_counter_ns() - t0) / 1e6)


async def _compact_to(admin: Admin, last_offset: int, deadline: float) -> tuple[int, list[str]]:
    """``compact_topic(wait=True)`` until the partition's leader says its copy
    is cleaned up to ``last_offset``; returns (calls made, errors seen).
    An answer with a smaller target comes from a leader that did not have
    the lifted hold yet: ask again."""
    calls = 0
    errors: list[str] = []
    while True:
        calls += 1
        try:
            (answer,) = await admin.compact_topic(COMPACTED, wait=True)
            if answer.done and answer.target_offset >= last_offset:
                return calls, errors
        except RaftlogError as error:  # a leader not reachable this moment: a pass is harmless to repeat
            errors.append(f"{type(error).__name__}: {error}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the compaction pass did not finish ({calls} calls, errors {errors[-3:]})")
        await asyncio.sleep(0.02)


async def measure(root: Path, params: CompactionParams) -> dict[str, Any]:
    """Every figure of this module on one fresh cluster under ``root``."""
    async with running_cluster(root, [TopicSpec(LATENCY, 1)]) as cluster:
        nodes = NodeAdmin(cluster)
        try:
            async with Admin(bootstrap(cluster), **credentials(cluster)) as admin:
                await admin.create_topic(
                    COMPACTED, 1, 3, cleanup_policy="compact", min_compaction_lag_ms=HOLD_MS
                )
                await nodes.wait_for_leaders(3)  # controller, lat, compacted
                before_fill = await nodes.stats()
                t0 = time.monotonic()
                records, last_offset = await _fill(cluster, params)
                fill_s = time.monotonic() - t0
                after_fill = await nodes.stats()
                written = [after_fill[n].bytes_written - before_fill[n].bytes_written for n in after_fill]
                range_bytes = int(statistics.median(written))

                async with Producer(bootstrap(cluster), linger_ms=0, **credentials(cluster)) as producer:
                    warm = _Sampler(producer, params.record_bytes)
                    await warm.run(min(200, params.latency_samples))  # channels and caches
                    baseline = _Sampler(producer, params.record_bytes)
                    await baseline.run(params.latency_samples)

                    during = _Sampler(producer, params.record_bytes)
                    sampling = asyncio.create_task(during.run())
                    stats0 = await nodes.stats()
                    cpu0 = time.process_time()
                    t0 = time.monotonic()
                    await admin.alter_topic_config(COMPACTED, min_compaction_lag_ms=0)
                    alter_s = time.monotonic() - t0
                    calls, errors = await _compact_to(admin, last_offset, t0 + params.pass_timeout_s)
                    pass_s = time.monotonic() - t0
                    during.stop = True
                    client_cpu = (time.process_time() - cpu0) / pass_s * 100
                    stats1 = await nodes.stats(summary_only=False)
                    await sampling
        finally:
            await nodes.close()
    without = summary(baseline.samples)
    with_pass = summary(during.samples)
    return {
        "compaction_mb_s": round(range_bytes / pass_s / 1e6, 1),
        "produce_p99_during_compaction_ms": with_pass.get("p99_ms"),
        "produce_p99_without_compaction_ms": without.get("p99_ms"),
        "details": {
            "params": asdict(params),
            "records": records,
            "last_offset": last_offset,
            "range_bytes": range_bytes,
            "bytes_written_per_node_during_fill": written,
            "fill_s": round(fill_s, 2),
            "alter_s": round(alter_s, 3),
            "pass_s": round(pass_s, 3),
            "compact_calls": calls,
            "compact_errors": errors,
            "node_cpu_pct_during_pass": cpu_pct(stats0, stats1, pass_s),
            "client_cpu_pct_during_pass": round(client_cpu, 1),
            "compacted_bytes_by_replica": {
                f"{n}/{r.group}": r.compacted_bytes
                for n, s in stats1.items()
                for r in s.partitions
                if r.compacted_bytes
            },
            "latency_without_compaction": without,
            "latency_during_compaction": with_pass,
        },
    }
