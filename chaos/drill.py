"""One drill, start to verdict.

1. Start a cluster of real node processes behind proxies (chaos/cluster.py)
   in a fresh directory, create the tenants and topics, and wait until
   every partition has a leader.
2. Start the workload (chaos/workload.py) and let it warm up.
3. Run the schedule (chaos/schedule.py): each step's nemesis injects its
   fault, holds it, heals it; then the cluster gets the step's recovery
   time. A node that exits on its own is recorded (the drill fails) and
   restarted.
4. Heal everything and let the workload run until every partition has
   acknowledged a write sent after the heal (at least ``settle_s``).
   Throughout steps 2-4 the compacted topics are asked to compact every
   few seconds (chaos/keyed.py).
5. Stop the producers (waiting for what they sent), wait until every
   replica has converged, ask the compacted topics for one more pass and
   wait for it (at most ``FINAL_COMPACTION_S``), let the consumer groups
   read up to each high watermark and commit (at most
   ``CONSUME_AFTER_S``) while a plain consumer reads every compacted
   partition from offset 0, wait for convergence again (the pass appended
   to the logs), ask the controller for the final replica sets, stop the
   nodes cleanly.
6. Read every replica's log offline (chaos/replicas.py), check the history
   against them (chaos/checker.py), measure availability
   (chaos/availability.py), write ``report.json`` and ``history.jsonl``
   into the drill directory and return the report (chaos/report.py).

The directory is removed afterwards when the drill passed, unless ``keep``;
a failed drill keeps it (node logs, history, report) and says where.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chaos.availability import availability
from chaos.checker import check
from chaos.cluster import DEFAULT_TENANT, ChaosCluster, TopicTarget
from chaos.history import FaultRecord, History
from chaos.keyed import compact_once, compact_periodically, scan
from chaos.nemesis import NEMESES, NemesisContext
from chaos.replicas import read_replica_logs
from chaos.report import build_report, summary_lines, write_report
from chaos.schedule import Step, build_schedule
from chaos.workload import Workload, WorkloadSpec

__all__ = ["DEFAULT_TOPICS", "DrillConfig", "run_drill"]

DEFAULT_TOPICS = (
    TopicTarget(DEFAULT_TENANT, "orders", 3),
    TopicTarget("acme", "audit", 2),
    TopicTarget(DEFAULT_TENANT, "state", 3, compacted=True),
)
"""Two tenants, ``default`` and ``acme`` (created when the drill starts),
one topic each, and a compacted topic ``state`` in ``default``."""

FINAL_COMPACTION_S = 10.0
"""How long the last compaction pass, after the heal, may take."""

CONSUME_AFTER_S = 45.0
"""How long the consumer groups get, once the replicas converged, to read
and commit up to the end of every partition."""


@dataclass(frozen=True)
class DrillConfig:
    nemeses: tuple[str, ...]
    duration_s: float
    seed: int
    nodes: int = 3
    shuffle: bool = False
    producers: int = 4
    rate: float = 120.0
    consumers: int = 2
    idempotent: bool = True
    unsafe_ack_before_commit: bool = False
    unsafe_compaction_drops_latest: bool = False
    workdir: Path | None = None
    keep: bool = False
    report_path: Path | None = None
    """Also write the JSON report here (the drill directory goes away when
    the drill passes, unless ``keep``)."""
    warmup_s: float = 3.0
    settle_s: float = 4.0
    topics: tuple[TopicTarget, ...] = DEFAULT_TOPICS
    schedule: tuple[Step, ...] = field(default=())
    """Explicit steps (tests); empty: built from nemeses, duration and seed."""

    def replay(self) -> str:
        parts = [
            "python -m chaos",
            f"--nemesis {','.join(self.nemeses)}",
            f"--duration {self.duration_s:g}",
            f"--seed {self.seed}",
            f"--nodes {self.nodes}",
        ]
        if self.shuffle:
            parts.append("--shuffle")
        if not self.idempotent:
            parts.append("--no-idempotence")
        if self.unsafe_ack_before_commit:
            parts.append("--unsafe-ack-before-commit")
        if self.unsafe_compaction_drops_latest:
            parts.append("--unsafe-compaction-drops-latest")
        return " ".join(parts)


def _print(line: str) -> None:
    print(line, flush=True)


async def run_drill(config: DrillConfig, out: Callable[[str], None] = _print) -> dict[str, Any]:
    """Run one drill; returns the report (``report["passed"]``)."""
    rng = random.Random(config.seed)
    steps = list(config.schedule) or build_schedule(
        config.nemeses, config.duration_s, rng, shuffle=config.shuffle
    )
    root = Path(tempfile.mkdtemp(prefix="raftlog-chaos-", dir=config.workdir))
    out(f"chaos: seed={config.seed} nodes={config.nodes} dir={root}")
    out(f"chaos: schedule {' '.join(f'{s.nemesis}:{s.duration:g}s' for s in steps)}")
    out(f"chaos: replay with: {config.replay()}")
    history = History()
    cluster = ChaosCluster(
        root,
        nodes=config.nodes,
        topics=config.topics,
        seed=config.seed,
        unsafe_ack_before_commit=config.unsafe_ack_before_commit,
        unsafe_compaction_drops_latest=config.unsafe_compaction_drops_latest,
    )
    compacted = [t for t in config.topics if t.compacted]
    history.compacted_topics.extend(t.topic for t in compacted)
    stop_compacting = asyncio.Event()
    compacting: asyncio.Task[None] | None = None
    spec = WorkloadSpec(
        topics=config.topics,
        producers=config.producers,
        rate=config.rate,
        idempotent=config.idempotent,
        consumers=config.consumers,
    )
    workload = Workload(spec, cluster, history, random.Random(rng.random()))
    unexpected_exits: dict[int, int] = {}
    extra: dict[str, Any] = {}
    report: dict[str, Any] | None = None
    try:
        await cluster.start_all()
        await cluster.setup_topics()
        history.started = time.monotonic()
        leaders = await cluster.wait_for_leaders()
        if len(leaders) != len(cluster.groups):
            raise RuntimeError(
                f"only {len(leaders)} of {len(cluster.groups)} partitions have a leader after 30 s"
            )
        workload.start()
        if compacted:
            compacting = asyncio.create_task(
                compact_periodically(
                    cluster, compacted, history, random.Random(rng.random()), stop_compacting
                ),
                name="chaos-compaction",
            )
        await asyncio.sleep(config.warmup_s)
        ctx = NemesisContext(cluster, history, rng)
        for number, step in enumerate(steps, start=1):
            nemesis = NEMESES[step.nemesis]
            reason = nemesis.unavailable(cluster)
            if reason:
                history.faults.append(FaultRecord(step.nemesis, "", history.clock(), skipped=reason))
                out(f"chaos: [{number}/{len(steps)}] {step.nemesis}: skipped: {reason}")
                continue
            fault = await nemesis.run(ctx, step.duration)
            history.faults.append(fault)
            if fault.skipped:
                out(f"chaos: [{number}/{len(steps)}] {step.nemesis}: skipped: {fault.skipped}")
                continue
            out(
                f"chaos: [{number}/{len(steps)}] t={fault.injected_at:.1f}s {step.nemesis}: {fault.description}"
            )
            await asyncio.sleep(step.recovery)
            for node, code in cluster.exited().items():
                unexpected_exits[node] = code
                out(f"chaos: node {node} exited on its own ({code}):\n{cluster.log_tail(node)}")
                cluster.local.processes.pop(node, None)
                await cluster.start(node)
        await cluster.heal_all()
        healed = history.clock()
        await _settle(history, config.settle_s, healed)
        await workload.stop_producing()
        history.close_pending()
        ends = await cluster.wait_converged(30.0)
        extra["converged"] = ends is not None
        stop_compacting.set()
        if compacting is not None:
            await compacting
        if compacted:
            await compact_once(cluster, compacted, history, wait=True, timeout_s=FINAL_COMPACTION_S)
        # Each leader change of a group's coordinator partition holds the
        # group for a session plus a margin (about 11 s), and the last fault
        # may cost two (the failover, then the balancer handing leadership
        # back). A group that is done stops at once.
        await asyncio.gather(
            workload.stop_consuming(ends, CONSUME_AFTER_S), scan(cluster, compacted, history, ends)
        )
        if compacted and extra["converged"]:
            # The last pass appended a command to each compacted log.
            extra["converged"] = await cluster.wait_converged(15.0) is not None
        end = history.clock()
        for node, code in cluster.exited().items():
            unexpected_exits[node] = code
        await cluster.refresh_assignments()  # the replicas may have moved
        extra["replicas"] = {f"{t}/{p}": list(r) for (t, p), r in sorted(cluster.replicas.items())}
        codes = await cluster.stop_all()
        extra["stop_codes"] = codes
        logs = await asyncio.to_thread(
            read_replica_logs, cluster.data_dirs(), cluster.groups, replicas=cluster.replicas
        )
        expected = {tp: len(r) for tp, r in cluster.replicas.items()}
        result = check(history, logs, expected_replicas=expected)
        avail = availability(history, end=end)
        extra["unexpected_exits"] = unexpected_exits
        extra["schedule"] = [asdict(s) for s in steps]
        extra["producers"] = workload.producer_stats
        extra["consumer_errors"] = workload.consumer_errors()
        extra["proxy_links"] = {name: asdict(s) for name, s in cluster.fleet.stats().items()}
        extra["events"] = history.events
        calls = [m for _, m in history.events if m.startswith("compact ")]
        answered = sum(1 for m in calls if m.endswith((" asked", " done")))
        extra["compactions"] = f"{answered}/{len(calls)}"
        config_json = {
            "seed": config.seed,
            "nodes": config.nodes,
            "nemeses": list(config.nemeses),
            "duration_s": config.duration_s,
            "shuffle": config.shuffle,
            "producers": config.producers,
            "rate": config.rate,
            "consumers": config.consumers,
            "idempotent": config.idempotent,
            "unsafe_ack_before_commit": config.unsafe_ack_before_commit,
            "unsafe_compaction_drops_latest": config.unsafe_compaction_drops_latest,
            "topics": [asdict(t) for t in config.topics],
            "replay": config.replay(),
        }
        extra["paths"] = {
            "dir": str(root),
            "report": str(root / "report.json"),
            "history": str(root / "history.jsonl"),
        }
        report = build_report(config=config_json, check=result, availability=avail, extra=extra)
        report["kept"] = config.keep or not report["passed"]
        if config.report_path is not None:
            report["paths"]["copy"] = str(config.report_path)
            config.report_path.parent.mkdir(parents=True, exist_ok=True)
            write_report(report, config.report_path)
        history.dump(root / "history.jsonl")
        write_report(report, root / "report.json")
        for line in summary_lines(report):
            out(line)
        return report
    finally:
        stop_compacting.set()
        if compacting is not None:
            compacting.cancel()
            with contextlib.suppress(BaseException):
                await compacting
        await workload.abort()
        await cluster.close()
        if report is not None and not report["kept"]:
            shutil.rmtree(root, ignore_errors=True)
        elif report is None:
            out(f"chaos: the drill stopped early; its directory is kept: {root}")


async def _settle(history: History, settle_s: float, healed: float, timeout_s: float = 30.0) -> None:
    """Wait ``settle_s``, then until every partition acknowledged a write
    sent after ``healed`` (at most ``timeout_s``)."""
    await asyncio.sleep(settle_s)
    partitions = {a.tp for a in history.attempts}
    deadline = history.clock() + timeout_s
    while history.clock() < deadline:
        recovered = {a.tp for a in history.attempts if a.offset is not None and a.sent_at >= healed}
        if recovered >= partitions:
            return
        await asyncio.sleep(0.2)
