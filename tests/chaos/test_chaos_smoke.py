"""Real drills: three node processes behind proxies, the SDK workload, the
offline check (``make chaos-smoke`` runs the same smoke schedule).

- The smoke drill (leader kill, pause, leader isolation) must pass.
- Negative controls, which keep the checker honest:
  - with idempotence switched off, retries after a leader kill and after
    answers lost on the way back to the client (reply-reset) write some
    batches twice: the checker must report duplicates;
  - with the test-only ``--unsafe-ack-before-commit`` switch, produce is
    acknowledged before it commits, and a failover (an isolated leader,
    then a killed one) loses acknowledged writes: the checker must report
    them lost;
  - with the test-only ``--unsafe-compaction-drops-latest`` switch, each
    compaction pass also drops the latest record of about one key in four
    of the compacted topic: the checker must report keys whose last
    acknowledged value is missing (or stale).

``RAFTLOG_CHAOS_SEED`` replays a seed (each test prints the one it used).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from chaos.drill import DrillConfig, run_drill
from chaos.schedule import SMOKE, Step

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _seed() -> int:
    return int(os.environ.get("RAFTLOG_CHAOS_SEED", str(random.randrange(1 << 31))))


async def _drill(config: DrillConfig) -> tuple[dict[str, Any], list[str]]:
    lines: list[str] = []
    report = await run_drill(config, out=lines.append)
    print("\n".join(lines))
    return report, lines


async def test_the_smoke_drill_passes(tmp_path: Path) -> None:
    config = DrillConfig(nemeses=SMOKE, duration_s=0, seed=_seed(), workdir=tmp_path)
    report, lines = await _drill(config)
    assert report["passed"], "\n".join(lines)
    assert lines[-1].startswith("faults=3 ")
    faults = report["availability"]["faults"]
    assert [f["nemesis"] for f in faults] == list(SMOKE)
    assert report["availability"]["unrecovered"] == 0
    assert report["check"]["consumer_reads"] > 0 and report["check"]["consumer_commits"] > 0
    assert report["verdict"]["acked"] > 1000
    compacted = report["check"]["compacted"]
    assert compacted["partitions"] == 3 and compacted["acked"] > 100
    assert any(
        line.startswith("compacted: compacted_missing=0 compacted_stale=0 compacted_divergent=0 ")
        for line in lines
    )


async def test_without_idempotence_the_checker_reports_duplicates(tmp_path: Path) -> None:
    steps = (Step("kill-leader", 1.5, 4.0), Step("reply-reset", 3.0, 4.0))
    config = DrillConfig(
        nemeses=("kill-leader", "reply-reset"),
        duration_s=0,
        seed=_seed(),
        idempotent=False,
        consumers=0,
        workdir=tmp_path,
        schedule=steps,
    )
    report, lines = await _drill(config)
    assert report["verdict"]["duplicated"] > 0, "\n".join(lines)
    assert not report["passed"]


async def test_acking_before_commit_loses_writes_on_failover(tmp_path: Path) -> None:
    # A kill alone loses only what was acknowledged in the few milliseconds
    # before it replicated: too rare at this load for a reliable test. An
    # isolated leader acknowledges its nearby clients' writes until it steps
    # down, and those never commit.
    config = DrillConfig(
        nemeses=("isolate-leader", "kill-leader"),
        duration_s=0,
        seed=_seed(),
        unsafe_ack_before_commit=True,
        consumers=0,
        workdir=tmp_path,
        schedule=(Step("isolate-leader", 2.0, 3.0), Step("kill-leader", 1.5, 3.0)),
    )
    report, lines = await _drill(config)
    assert report["verdict"]["lost"] > 0, "\n".join(lines)
    assert not report["passed"]


async def test_compaction_that_drops_latest_values_fails_the_drill(tmp_path: Path) -> None:
    config = DrillConfig(
        nemeses=("kill-leader",),
        duration_s=0,
        seed=_seed(),
        unsafe_compaction_drops_latest=True,
        consumers=0,
        workdir=tmp_path,
        schedule=(Step("kill-leader", 1.5, 3.0),),
    )
    report, lines = await _drill(config)
    verdict = report["verdict"]
    assert verdict["compacted_missing"] + verdict["compacted_stale"] > 0, "\n".join(lines)
    assert report["check"]["compacted"]["removed"] > 0  # compaction ran
    assert not report["passed"]
    # Only the compacted topic was harmed: the other checks still pass.
    assert (verdict["lost"], verdict["duplicated"], verdict["divergent"]) == (0, 0, 0)
