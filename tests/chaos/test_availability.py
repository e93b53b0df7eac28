"""Availability figures and the report's verdict line, on hand-made histories."""

from __future__ import annotations

from typing import Any

import pytest

from chaos.availability import availability, percentile
from chaos.checker import check
from chaos.history import Attempt, FaultRecord, History, Outcome
from chaos.replicas import ReplicaLog
from chaos.report import build_report, summary_line, summary_lines

A = ("orders", 0)
B = ("orders", 1)


def acked(tp: tuple[str, int], sent: float, done: float, seq: int, offset: int) -> Attempt:
    a = Attempt(f"{tp[1]}/{seq}".encode(), "default", tp[0], tp[1], 0, seq, sent)
    a.succeed(offset, done)
    return a


def drill_config(seed: int, *nemeses: str) -> dict[str, Any]:
    """The report's ``config`` section, as far as the summary reads it."""
    return {
        "seed": seed,
        "nodes": 3,
        "nemeses": list(nemeses),
        "idempotent": True,
        "unsafe_ack_before_commit": False,
        "replay": f"python -m chaos --seed {seed}",
    }


def history() -> History:
    """Partition A acks every 0.1 s from 0 to 10 s except 4.0-5.9 (a fault
    at 4.0 healed at 5.0; first write sent after 4.0 acked at 6.0); B acks
    every 0.1 s throughout."""
    h = History(started=0.0)
    seq = {A: 0, B: 0}
    for i in range(101):
        t = i / 10
        for tp in (A, B):
            if tp == A and 4.0 <= t < 6.0:
                continue
            sent = t - 0.05
            if tp == A and t == 6.0:
                sent = 4.5
            h.attempts.append(acked(tp, sent, t, seq[tp], seq[tp]))
            seq[tp] += 1
    h.faults = [FaultRecord("kill-leader", "SIGKILL node 1", 4.0, 5.0, nodes=(1,), affected=(A,))]
    return h


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile(list(map(float, range(1, 101))), 99) == 99.0


def test_failover_gap_and_throughput() -> None:
    result = availability(history(), end=10.0)
    fault = result.faults[0]
    assert fault.failover_ms["orders/0"] == pytest.approx(2000.0)
    assert fault.failover_ms["orders/1"] == pytest.approx(100.0)
    # Percentiles are over the affected partitions only.
    assert result.failover_p50_ms == pytest.approx(2000.0)
    assert result.failover_p99_ms == pytest.approx(2000.0)
    assert result.partition_longest_gap_ms["orders/0"] == pytest.approx(2100.0)
    assert result.partition_longest_gap_ms["orders/1"] == pytest.approx(100.0)
    # B kept writing, so the cluster as a whole never went 2 s without an ack.
    assert result.longest_gap_ms == pytest.approx(100.0)
    assert fault.throughput_during == pytest.approx(10.0, abs=1.0)  # B only
    assert fault.throughput_after == pytest.approx(18.0, abs=1.0)  # B, then both again from 6 s
    assert result.baseline_throughput == pytest.approx(20.0, abs=1.0)
    assert result.unrecovered == 0


def test_a_partition_that_never_recovers_makes_p99_infinite() -> None:
    h = history()
    h.attempts = [a for a in h.attempts if not (a.tp == A and (a.done_at or 0) >= 4.0)]
    result = availability(h, end=10.0)
    assert result.unrecovered == 1
    assert result.failover_p99_ms is None
    h.attempts.append(Attempt(b"x", "default", *A, 0, 999, 9.0))
    h.attempts[-1].fail(Outcome.UNKNOWN, "DELIVERY_TIMEOUT", 9.5)
    report = build_report(
        config={"seed": 1},
        check=check(h, {}),
        availability=result,
        extra={},
    )
    assert summary_line(report).endswith("failover_p50_ms=inf failover_p99_ms=inf")


def test_skipped_faults_are_reported_but_not_counted() -> None:
    h = history()
    h.faults.append(FaultRecord("kill-controller", "", 8.0, skipped="not wired"))
    result = availability(h, end=10.0)
    assert [f.skipped for f in result.faults] == ["", "not wired"]
    logs = {tp: [ReplicaLog(n, 1, 0, []) for n in (1, 2, 3)] for tp in (A, B)}
    for a in h.attempts:
        for log in logs[a.tp]:
            log.records.append((a.offset or 0, a.value))
    config = drill_config(5, "kill-leader", "kill-controller")
    report = build_report(config=config, check=check(h, logs), availability=result, extra={})
    lines = summary_lines(report)
    assert report["passed"]
    assert any("SKIPPED: not wired" in line for line in lines)
    assert lines[-1] == (
        f"faults=1 acked={len(h.attempts)} lost=0 duplicated=0 unexpected=0 reordered=0 divergent=0 "
        "failover_p50_ms=2000 failover_p99_ms=2000"
    )
    assert lines[-2] == "PASS (seed 5)"


def test_the_verdict_fails_on_anomalies_on_nothing_acknowledged_and_on_crashed_nodes() -> None:
    h = history()
    result = availability(h, end=10.0)
    config = {"seed": 1}
    # No logs at all: every acknowledged record is lost.
    report = build_report(config=config, check=check(h, {}), availability=result, extra={})
    assert not report["passed"] and report["verdict"]["lost"] == len(h.attempts)
    empty = History(started=0.0)
    report = build_report(config=config, check=check(empty, {}), availability=availability(empty), extra={})
    assert not report["passed"]  # nothing acknowledged: nothing was tested
    logs = {tp: [ReplicaLog(1, 1, 0, [])] for tp in (A, B)}
    for a in h.attempts:
        logs[a.tp][0].records.append((a.offset or 0, a.value))
    ok = build_report(config=config, check=check(h, logs), availability=result, extra={})
    assert ok["passed"]
    crashed = build_report(
        config=config, check=check(h, logs), availability=result, extra={"unexpected_exits": {2: -6}}
    )
    assert not crashed["passed"]


def test_failover_percentiles_per_nemesis() -> None:
    """Two kill-leader faults (A back after 2.0 s and 0.5 s) and one pause
    (B never back): each nemesis gets its own percentiles, beside the
    overall ones over every affected partition."""
    h = History(started=0.0)
    seq = {A: 0, B: 0}

    def ack(tp: tuple[str, int], sent: float, done: float) -> None:
        h.attempts.append(acked(tp, sent, done, seq[tp], seq[tp]))
        seq[tp] += 1

    for t in (0.5, 1.0):
        ack(A, t, t + 0.01)
        ack(B, t, t + 0.01)
    ack(A, 2.5, 4.0)  # fault at 2.0: 2000 ms
    ack(A, 10.2, 10.5)  # fault at 10.0: 500 ms
    ack(A, 20.5, 21.0)  # the pause at 20.0 hit B only
    h.faults = [
        FaultRecord("kill-leader", "SIGKILL node 1", 2.0, 3.0, nodes=(1,), affected=(A,)),
        FaultRecord("kill-leader", "SIGKILL node 2", 10.0, 11.0, nodes=(2,), affected=(A,)),
        FaultRecord("pause", "SIGSTOP node 3", 20.0, 22.0, nodes=(3,), affected=(B,)),
        FaultRecord("split", "", 25.0, skipped="not enough nodes"),
    ]
    result = availability(h, end=30.0)
    kill, pause = result.by_nemesis["kill-leader"], result.by_nemesis["pause"]
    assert (kill.faults, kill.samples, kill.unrecovered) == (2, 2, 0)
    assert kill.p50_ms == pytest.approx(500.0) and kill.p99_ms == pytest.approx(2000.0)
    assert kill.max_ms == pytest.approx(2000.0)
    assert (pause.faults, pause.samples, pause.unrecovered) == (1, 1, 1)
    assert pause.p50_ms is None and pause.p99_ms is None and pause.max_ms is None
    assert "split" not in result.by_nemesis  # skipped: nothing measured
    # Overall: 500, 2000 and never.
    assert result.failover_p50_ms == pytest.approx(2000.0) and result.failover_p99_ms is None
    report = build_report(
        config=drill_config(1, "kill-leader", "pause"), check=check(h, {}), availability=result, extra={}
    )
    assert report["availability"]["by_nemesis"]["kill-leader"]["p99_ms"] == pytest.approx(2000.0)
    lines = summary_lines(report)
    assert "  kill-leader      faults=2 p50_ms=500 p99_ms=2000 max_ms=2000 unrecovered=0" in lines
    assert "  pause            faults=1 p50_ms=inf p99_ms=inf max_ms=inf unrecovered=1" in lines
    assert lines[-1].endswith("failover_p50_ms=2000 failover_p99_ms=inf")
