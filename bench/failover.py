"""Failover: SIGKILL of a partition's leader → the first acknowledged write.

A 3-node cluster with one partition (RF 3) and a producer writing to it
all the time: one 1 KiB record every ``interval_ms``, each sent without
waiting for the previous (the SDK keeps one batch in flight per partition
and queues the rest). Each round:

1. let the producer run for a random 0.2-0.6 s;
2. ask the nodes who leads the partition and SIGKILL that node;
3. the round's figure is the time from the SIGKILL to the first
   acknowledgement of a record sent after it (a record acknowledged after
   the kill but sent before could have been committed by the dead leader);
   since records queue behind the batch in flight, the figure includes at
   most one produce round trip on the new leader beyond the failover
   itself;
4. restart the killed node and wait until it has caught up with the
   leaders' commit indexes (of every group the nodes host), so that every
   round starts with three live, up-to-date replicas.

A round with no acknowledgement within ``round_timeout_s`` counts as that
long (a lower bound; ``timeouts`` says how many). A round that cannot go
on (a node that does not restart, say) ends the drill: the figures are
those of the rounds done, and ``error`` says why it stopped.

The producer uses the SDK's defaults except ``linger_ms=0`` (each record
goes out at once) and ``retry_backoff_max_ms`` (``params.retry_backoff_max_ms``;
the default 1 s cap would make the figure mostly the client's backoff).
Leader balancing is off (``leader_balance_ms=0``), so only the kills move
leaders. Raft timing is the default one (50 ms ticks, election timeout
randomised over 6-11 ticks).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.cluster_access import NodeAdmin, bootstrap, credentials, running_cluster
from bench.percentiles import summary
from client import Producer
from harness.local_cluster import LocalCluster, TopicSpec

TOPIC = "failover"


@dataclass(frozen=True)
class FailoverParams:
    kills: int = 25
    interval_ms: float = 5.0
    record_bytes: int = 1024
    retry_backoff_max_ms: float = 100.0
    round_timeout_s: float = 60.0
    """Bound on each wait of a round: the first ack, the restart, the catch-up."""
    seed: int = 1


class _Writer:
    """Sends a record every ``interval_s``; remembers each ack as
    (send time, ack time) in ``perf_counter_ns``."""

    def __init__(self, producer: Producer, record_bytes: int, interval_s: float) -> None:
        self.producer = producer
        self.value = b"f" * record_bytes
        self.interval_s = interval_s
        self.acks: list[tuple[int, int]] = []
        self.failed = 0
        self.stopping = False

    def _on_done(self, sent_ns: int) -> Any:
        def done(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                self.failed += 1
            else:
                self.acks.append((sent_ns, time.perf_counter_ns()))

        return done

    async def run(self) -> None:
        while not self.stopping:
            sent_ns = time.perf_counter_ns()
            future = await self.producer.send(TOPIC, self.value, partition=0)
            future.add_done_callback(self._on_done(sent_ns))
            await asyncio.sleep(self.interval_s)

    def first_ack_after(self, t_ns: int, search_from: int) -> int | None:
        """The earliest ack time of a record sent at or after ``t_ns``,
        looking at acks from index ``search_from`` on."""
        times = [ack for sent, ack in self.acks[search_from:] if sent >= t_ns]
        return min(times) if times else None


async def _leader(admin: NodeAdmin, cluster: LocalCluster, timeout_s: float) -> int:
    """The partition's leader, as every running node names it."""
    deadline = time.monotonic() + timeout_s
    while True:
        leader = await admin.partition_leader(TOPIC, 0, list(cluster.processes))
        if leader is not None and leader in cluster.processes:
            return leader
        if time.monotonic() > deadline:
            raise TimeoutError(f"the nodes name no common leader of {TOPIC}/0 after {timeout_s:g} s")
        await asyncio.sleep(0.05)


async def _caught_up(admin: NodeAdmin, cluster: LocalCluster, node: int, timeout_s: float) -> None:
    """Until ``node`` knows a leader for, and has applied, every group the
    other nodes lead, up to their commit index when first asked (the
    partition's group and any other the nodes host)."""
    others = [n for n in cluster.processes if n != node]
    targets = {
        p.group: p.commit_index
        for stats in (await admin.stats(others, summary_only=False)).values()
        for p in stats.partitions
        if p.role == "LEADER"
    }
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            replicas = {p.group: p for p in (await admin.stats([node], summary_only=False))[node].partitions}
            if all(
                g in replicas and replicas[g].leader and replicas[g].applied_index >= c
                for g, c in targets.items()
            ):
                return
        except grpc.aio.AioRpcError:
            pass  # still starting
        if time.monotonic() > deadline:
            raise TimeoutError(f"node {node} did not catch up within {timeout_s:g} s")
        await asyncio.sleep(0.05)


async def _rounds(cluster: LocalCluster, admin: NodeAdmin, params: FailoverParams) -> dict[str, Any]:
    rng = random.Random(params.seed)
    timings: list[float] = []
    timeouts = 0
    victims: list[int] = []
    error: str | None = None
    producer = Producer(
        bootstrap(cluster),
        linger_ms=0,
        retry_backoff_max_ms=params.retry_backoff_max_ms,
        **credentials(cluster),
    )
    writer = _Writer(producer, params.record_bytes, params.interval_ms / 1000)
    task = asyncio.create_task(writer.run())
    try:
        for _ in range(params.kills):
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            victim = await _leader(admin, cluster, params.round_timeout_s)
            seen = len(writer.acks)
            t_kill = time.perf_counter_ns()
            await asyncio.to_thread(cluster.kill, victim)
            victims.append(victim)
            deadline = time.monotonic() + params.round_timeout_s
            while (first := writer.first_ack_after(t_kill, seen)) is None:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.005)
            if first is None:
                # Counted at the timeout, a lower bound: a miss must show
                # in the percentiles, not vanish from them.
                timeouts += 1
                timings.append(params.round_timeout_s * 1000)
            else:
                timings.append((first - t_kill) / 1e6)
            await asyncio.to_thread(cluster.start, victim, params.round_timeout_s)
            await _caught_up(admin, cluster, victim, params.round_timeout_s)
    except Exception as exc:  # keep the rounds measured so far; the run reports the error
        error = f"after {len(victims)} kills: {type(exc).__name__}: {exc}"
    finally:
        writer.stopping = True
        await task
        await producer.close(timeout_s=10)
    return {
        "kills": len(victims),
        "timeouts": timeouts,
        "victims": victims,
        "failover_ms": [round(t, 1) for t in timings],
        "summary": summary(timings),
        "acknowledged": len(writer.acks),
        "failed_records": writer.failed,
        "producer": {"retries": producer.stats.retries, "errors": dict(producer.stats.errors)},
        "error": error,
    }


async def measure(root: Path, params: FailoverParams) -> dict[str, Any]:
    async with running_cluster(root, [TopicSpec(TOPIC, 1)], leader_balance_ms=0) as cluster:
        admin = NodeAdmin(cluster)
        try:
            await admin.wait_for_leaders(1)
            result = await _rounds(cluster, admin, params)
        finally:
            await admin.close()
    s = result["summary"]
    return {
        "failover_p50_ms": s.get("p50_ms"),
        "failover_p99_ms": s.get("p99_ms"),
        "failover_max_ms": s.get("max_ms"),
        "failover_kills": result["kills"],
        "error": result["error"],
        "details": {"params": asdict(params)} | result,
    }
