"""Produce, latency, end-to-end and consume figures, driven through the SDK.

One 3-node ``LocalCluster`` on loopback (RF 3: every partition on every
node; a produce is acknowledged once committed on a majority, each replica
having fsynced it) with four topics, all loaded by this process through the
SDK's ``Producer`` and ``Consumer`` with their default settings unless said:

- ``load`` (``partitions``): 1 KiB records sent as fast as the producer
  accepts them, with the SDK's batching (linger 5 ms, batches up to
  1 MiB, sticky partitioner) → ``produce_records_s``, ``produce_mb_s``; then read
  back from its start → ``consume_mb_s``;
- ``small`` (``partitions``): the same with 100-byte records →
  ``produce_small_records_s``;
- ``lat`` (1 partition): one 1 KiB record at a time, ``linger_ms=0`` →
  ``produce_p50_ms``, ``produce_p99_ms``, ``produce_p999_ms``;
- ``steady`` (``partitions``): 1 KiB records at half the measured maximum
  rate while a consumer tails the topic → latency under load and
  ``e2e_p99_ms`` (produce to the consumer holding the record). Both are
  measured from the moment each record was *due* by the schedule, so a
  client that falls behind shows up as latency instead of hiding it.

The load generator shares the machine's cores with the three nodes; its
CPU and the nodes' are reported beside each throughput figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.cluster_access import NodeAdmin, bootstrap, cpu_pct, credentials, running_cluster
from bench.percentiles import summary
from client import Consumer, Producer
from harness.local_cluster import LocalCluster, TopicSpec

KiB = 1024


@dataclass(frozen=True)
class ClusterParams:
    partitions: int = 16
    record_bytes: int = KiB
    small_record_bytes: int = 100
    warmup_s: float = 2.0
    seconds: float = 10.0
    """Measured seconds of each flat-out produce run."""
    latency_samples: int = 5000
    steady_s: float = 10.0
    consume_timeout_s: float = 60.0


def _ms_since(t_ns: int) -> float:
    return (time.perf_counter_ns() - t_ns) / 1e6


async def produce_flat_out(
    cluster: LocalCluster,
    admin: NodeAdmin,
    topic: str,
    record_bytes: int,
    warmup_s: float,
    seconds: float,
    **producer_options: Any,
) -> dict[str, Any]:
    """Records of ``record_bytes`` sent as fast as ``send`` takes them;
    acknowledged records per second over ``seconds`` after ``warmup_s``.
    ``producer_options`` go to ``Producer`` (the benchmark itself uses the
    SDK's defaults; diagnostics vary them)."""
    value = b"v" * record_bytes
    failed = 0
    stop = False

    def count_failure(future: asyncio.Future[Any]) -> None:
        nonlocal failed
        # exception() also marks the error as seen (no "never retrieved" noise).
        if (future.cancelled() or future.exception() is not None) and not stop:
            failed += 1

    producer = Producer(bootstrap(cluster), **credentials(cluster), **producer_options)

    async def pump() -> None:
        # send() returns without yielding while the buffer has room: yield
        # now and then, or this loop would hold the event loop for the
        # seconds it takes to fill 32 MiB with small records (and the
        # measurement's timers would fire late).
        sent = 0
        while not stop:
            (await producer.send(topic, value)).add_done_callback(count_failure)
            sent += 1
            if sent % 256 == 0:
                await asyncio.sleep(0)

    task = asyncio.create_task(pump())
    try:
        await asyncio.sleep(warmup_s)
        before = await admin.stats()
        records0, batches0 = producer.stats.records, producer.stats.batches
        cpu0 = time.process_time()
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        records = producer.stats.records - records0
        batches = producer.stats.batches - batches0
        client_cpu = (time.process_time() - cpu0) / elapsed * 100
        after = await admin.stats()
    finally:
        stop = True
        await task
        # The buffer is full of records nobody waits for (32 MiB: seconds
        # of 100-byte records): drop them rather than deliver them.
        await producer.close(timeout_s=0)
    errors = dict(producer.stats.errors)
    retries = producer.stats.retries
    syncs = sum(after[n].syncs - before[n].syncs for n in after)
    entries = sum(after[n].synced_entries - before[n].synced_entries for n in after)
    node_cpu = cpu_pct(before, after, elapsed)
    return {
        "topic": topic,
        "record_bytes": record_bytes,
        "records_s": round(records / elapsed),
        "mb_s": round(records * record_bytes / elapsed / 1e6, 1),
        "records_per_batch": round(records / batches, 1) if batches else None,
        "batches_s": round(batches / elapsed, 1),
        "entries_per_fsync": round(entries / syncs, 2) if syncs else None,
        "fsyncs_s_per_node": round(syncs / len(after) / elapsed, 1),
        "node_cpu_pct": node_cpu,
        "client_cpu_pct": round(client_cpu, 1),
        # Where the CPU goes: the client's per record, all three nodes' per MB.
        "client_cpu_us_per_record": round(client_cpu / 100 * elapsed * 1e6 / records, 2) if records else None,
        "nodes_cpu_ms_per_mb": (
            round(sum(node_cpu.values()) / 100 * elapsed * 1e3 / (records * record_bytes / 1e6), 1)
            if records
            else None
        ),
        "failed_records": failed,
        "retries": retries,
        "errors": errors,
        "seconds": round(elapsed, 2),
    }


async def produce_one_at_a_time(
    cluster: LocalCluster, topic: str, record_bytes: int, samples: int, api_key: str | None = None
) -> dict[str, Any]:
    """One record, then wait for its acknowledgement, ``samples`` times
    (as ``api_key``'s tenant when given, else with the operator key)."""
    value = b"v" * record_bytes
    timings: list[float] = []
    options = credentials(cluster) | ({"api_key": api_key} if api_key else {})
    async with Producer(bootstrap(cluster), linger_ms=0, **options) as producer:
        for i in range(samples + min(200, samples)):
            t0 = time.perf_counter_ns()
            await (await producer.send(topic, value, partition=0))
            if i >= min(200, samples):  # the first ones warm up channels and caches
                timings.append(_ms_since(t0))
    return {"topic": topic, "record_bytes": record_bytes} | summary(timings)


async def steady_with_e2e(
    cluster: LocalCluster, topic: str, partitions: int, record_bytes: int, rate: float, seconds: float
) -> dict[str, Any]:
    """``rate`` records/s for ``seconds`` while a consumer tails ``topic``.
    Each value starts with the time it was due (``perf_counter_ns``, one
    clock: same process)."""
    pad = b"v" * (record_bytes - 8)
    produce_ms: list[float] = []
    e2e_ms: list[float] = []
    failed = 0
    produced_done = asyncio.Event()

    def on_ack(due_ns: int) -> Any:
        def done(future: asyncio.Future[Any]) -> None:
            nonlocal failed
            if future.cancelled() or future.exception() is not None:
                failed += 1
            else:
                produce_ms.append(_ms_since(due_ns))

        return done

    async with (
        Consumer(bootstrap(cluster), fetch_max_wait_ms=500, **credentials(cluster)) as consumer,
        Producer(bootstrap(cluster), **credentials(cluster)) as producer,
    ):
        consumer.assign([(topic, p) for p in range(partitions)])
        await consumer.seek_to_end()

        async def tail() -> None:
            while not (produced_done.is_set() and len(e2e_ms) >= len(produce_ms)):
                for record in await consumer.poll(0.2, max_records=10_000):
                    assert record.value is not None
                    e2e_ms.append(_ms_since(int.from_bytes(record.value[:8], "big")))

        tailer = asyncio.create_task(tail())
        await asyncio.sleep(0.5)  # the fetchers' first long polls are out
        cpu0 = time.process_time()
        start = time.perf_counter_ns()
        interval_ns = 1e9 / rate
        sent = 0
        while (now := time.perf_counter_ns()) - start < seconds * 1e9:
            due_count = int((now - start) / interval_ns) + 1
            while sent < due_count:
                due = int(start + sent * interval_ns)
                future = await producer.send(topic, due.to_bytes(8, "big") + pad)
                future.add_done_callback(on_ack(due))
                sent += 1
            await asyncio.sleep(0.001)
        elapsed = (time.perf_counter_ns() - start) / 1e9
        await producer.close(timeout_s=30)
        client_cpu = (time.process_time() - cpu0) / elapsed * 100
        produced_done.set()
        with contextlib.suppress(TimeoutError):  # the report shows how many arrived
            await asyncio.wait_for(tailer, timeout=30)
    return {
        "topic": topic,
        "target_records_s": round(rate),
        "achieved_records_s": round(sent / elapsed),
        "failed_records": failed,
        "client_cpu_pct": round(client_cpu, 1),
        "produce": summary(produce_ms),
        "e2e": summary(e2e_ms),
        "consumed": len(e2e_ms),
    }


async def consume_from_start(
    cluster: LocalCluster, topic: str, partitions: int, timeout_s: float
) -> dict[str, Any]:
    """Read every record of ``topic`` from its start: value MB/s."""
    tps = [(topic, p) for p in range(partitions)]
    async with Consumer(bootstrap(cluster), **credentials(cluster)) as probe:
        probe.assign(tps)
        await probe.seek_to_end()
        ends = {tp: probe.position(tp) or 0 for tp in tps}
    records = 0
    value_bytes = 0
    async with Consumer(bootstrap(cluster), **credentials(cluster)) as consumer:
        consumer.assign(tps)
        cpu0 = time.process_time()
        t0 = time.monotonic()
        await consumer.seek_to_beginning()
        while time.monotonic() - t0 < timeout_s:
            batch = await consumer.poll(1.0, max_records=10_000)
            records += len(batch)
            value_bytes += sum(len(r.value) for r in batch if r.value is not None)
            if all((consumer.position(tp) or 0) >= end for tp, end in ends.items()):
                break
        elapsed = time.monotonic() - t0
        client_cpu = (time.process_time() - cpu0) / elapsed * 100
    total = sum(ends.values())
    return {
        "topic": topic,
        "records": records,
        "records_in_topic": total,
        "complete": records >= total,
        "mb_s": round(value_bytes / elapsed / 1e6, 1),
        "records_s": round(records / elapsed),
        "client_cpu_pct": round(client_cpu, 1),
        "client_cpu_us_per_record": round(client_cpu / 100 * elapsed * 1e6 / records, 2) if records else None,
        "seconds": round(elapsed, 2),
    }


async def measure(root: Path, params: ClusterParams) -> dict[str, Any]:
    """Every figure of this module on one fresh cluster under ``root``."""
    p = params.partitions
    topics = [TopicSpec("load", p), TopicSpec("small", p), TopicSpec("steady", p), TopicSpec("lat", 1)]
    step_s: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        step_s[name] = round(now - clock, 2)
        clock = now

    async with running_cluster(root, topics) as cluster:
        admin = NodeAdmin(cluster)
        try:
            await admin.wait_for_leaders(3 * p + 1)
            elections_before = await admin.election_timeouts()
            lap("start")
            load = await produce_flat_out(
                cluster, admin, "load", params.record_bytes, params.warmup_s, params.seconds
            )
            lap("produce_1k")
            small = await produce_flat_out(
                cluster, admin, "small", params.small_record_bytes, params.warmup_s, params.seconds
            )
            lap("produce_small")
            one = await produce_one_at_a_time(cluster, "lat", params.record_bytes, params.latency_samples)
            lap("one_at_a_time")
            steady = await steady_with_e2e(
                cluster, "steady", p, params.record_bytes, max(1.0, load["records_s"] / 2), params.steady_s
            )
            lap("steady_half_max")
            consume = await consume_from_start(cluster, "load", p, params.consume_timeout_s)
            lap("consume")
            # No node fails during these runs: every election a silent
            # leader triggered is spurious (the election timeout's cost).
            spurious_elections = await admin.election_timeouts() - elections_before
        finally:
            await admin.close()
    return {
        "produce_partitions": p,
        "produce_mb_s": load["mb_s"],
        "produce_records_s": load["records_s"],
        "produce_small_records_s": small["records_s"],
        "produce_small_mb_s": small["mb_s"],
        "produce_p50_ms": one["p50_ms"],
        "produce_p99_ms": one["p99_ms"],
        "produce_p999_ms": one["p999_ms"],
        "steady_produce_p50_ms": steady["produce"].get("p50_ms"),
        "steady_produce_p99_ms": steady["produce"].get("p99_ms"),
        "e2e_p50_ms": steady["e2e"].get("p50_ms"),
        "e2e_p99_ms": steady["e2e"].get("p99_ms"),
        "consume_mb_s": consume["mb_s"],
        "consume_records_s": consume["records_s"],
        # CPU per unit of work: far less sensitive than the rates to other
        # work sharing the machine, and what a rate on N cores is bounded by.
        "produce_client_us_per_record": load["client_cpu_us_per_record"],
        "produce_small_client_us_per_record": small["client_cpu_us_per_record"],
        "produce_nodes_cpu_ms_per_mb": load["nodes_cpu_ms_per_mb"],
        "consume_client_us_per_record": consume["client_cpu_us_per_record"],
        "spurious_elections_under_load": spurious_elections,
        "details": {
            "params": asdict(params),
            "step_s": step_s,
            "produce_1k": load,
            "produce_small": small,
            "one_at_a_time": one,
            "steady_half_max": steady,
            "consume": consume,
        },
    }
