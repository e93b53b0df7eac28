"""The drill's report: a JSON document and a human summary.

The summary's last line is always, and only, the verdict in one line::

    faults=N acked=A lost=L duplicated=D unexpected=U reordered=R divergent=V failover_p50_ms=X failover_p99_ms=Y

``failover_p99_ms=inf`` means some affected partition never took a write
again; ``n/a`` means there was no fault to measure. The exit status of
``python -m chaos`` is 0 only when the verdict passes (``passed``): L, D, U,
R and V are 0, the consumer checks found nothing, something was
acknowledged, and no node exited on its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaos.availability import Availability
from chaos.checker import CheckResult

__all__ = ["build_report", "passed", "summary_line", "summary_lines", "write_report"]


def _ms(value: float | None, unrecovered: int = 0) -> str:
    if value is None:
        return "inf" if unrecovered else "n/a"
    return f"{value:.0f}"


def build_report(
    *,
    config: Mapping[str, Any],
    check: CheckResult,
    availability: Availability,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    faults = [f for f in availability.faults if not f.skipped]
    report = {
        "config": dict(config),
        "verdict": {
            "faults": len(faults),
            "acked": check.acknowledged,
            "lost": check.lost,
            "duplicated": check.duplicated,
            "unexpected": check.unexpected,
            "reordered": check.reordered,
            "divergent": check.divergent,
            "failover_p50_ms": availability.failover_p50_ms,
            "failover_p99_ms": availability.failover_p99_ms,
        },
        "check": check.to_json(),
        "availability": availability.to_json(),
        **extra,
    }
    report["passed"] = passed(report)
    return report


def passed(report: Mapping[str, Any]) -> bool:
    check = report["check"]
    return bool(check["ok"]) and check["acknowledged"] > 0 and not report.get("unexpected_exits")


def summary_line(report: Mapping[str, Any]) -> str:
    v = report["verdict"]
    unrecovered = report["availability"]["unrecovered"]
    return (
        f"faults={v['faults']} acked={v['acked']} lost={v['lost']} duplicated={v['duplicated']} "
        f"unexpected={v['unexpected']} reordered={v['reordered']} divergent={v['divergent']} "
        f"failover_p50_ms={_ms(v['failover_p50_ms'], unrecovered)} "
        f"failover_p99_ms={_ms(v['failover_p99_ms'], unrecovered)}"
    )


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    config = report["config"]
    check = report["check"]
    avail = report["availability"]
    lines = [
        f"drill: seed={config['seed']} nodes={config['nodes']} nemeses={','.join(config['nemeses'])} "
        f"idempotent={config['idempotent']} unsafe_ack_before_commit={config['unsafe_ack_before_commit']}",
        f"replay: {config['replay']}",
        "faults:",
    ]
    for fault in avail["faults"]:
        if fault["skipped"]:
            lines.append(f"  {fault['nemesis']:<16} SKIPPED: {fault['skipped']}")
            continue
        affected = [fault["failover_ms"].get(tp) for tp in fault["affected"]]
        worst = "n/a"
        if affected:
            worst = (
                "never"
                if any(a is None for a in affected)
                else f"{max(a for a in affected if a is not None):.0f} ms"
            )
        lines.append(
            f"  {fault['nemesis']:<16} t={fault['injected_at']:6.1f}s {fault['description']}\n"
            f"  {'':<16} affected={len(fault['affected'])} slowest failover={worst} "
            f"longest gap={fault['longest_gap_ms']:.0f} ms "
            f"acks/s during={fault['throughput_during']:.0f} after={fault['throughput_after']:.0f}"
        )
    lines.append(
        f"workload: attempts={check['attempts']} acked={check['acknowledged']} failed={check['failed']} "
        f"unknown={check['unknown']} (present {check['unknown_present']}, absent {check['unknown_absent']}, "
        f"late {check['late_unknown']})"
    )
    lines.append(
        f"availability: baseline {avail['baseline_throughput']:.0f} acks/s, longest window without an ack "
        f"{avail['longest_gap_ms']:.0f} ms, unrecovered partitions {avail['unrecovered']}"
    )
    lines.append(
        f"logs: {check['replicas']} replicas, {check['log_records']} records, lagging {check['lagging_replicas']}; "
        f"lost: missing {check['lost_missing']}, moved {check['lost_moved']}, on some replicas "
        f"{check['lost_on_some']}; unexpected: never sent {check['never_sent']}, misrouted {check['misrouted']}, "
        f"failed yet present {check['failed_present']}"
    )
    lines.append(
        f"consumers: reads={check['consumer_reads']} commits={check['consumer_commits']} "
        f"mismatches={check['consumer_mismatches']} out_of_order={check['consumer_out_of_order']} "
        f"skipped_by_commit={check['skipped_by_commit']}"
    )
    if report.get("converged") is False:
        lines.append("warning: the replicas had not converged when the nodes were stopped")
    if report.get("unexpected_exits"):
        lines.append(f"FAIL: nodes exited on their own: {report['unexpected_exits']}")
    for kind, examples in check["examples"].items():
        for text in examples:
            lines.append(f"  {kind}: {text}")
    paths = report.get("paths") or {}
    if report.get("kept") and paths:
        lines.append(f"kept: {paths['dir']} (report.json, history.jsonl, node logs)")
    if paths.get("copy"):
        lines.append(f"report: {paths['copy']}")
    lines.append(("PASS" if report["passed"] else "FAIL") + f" (seed {config['seed']})")
    lines.append(summary_line(report))
    return lines


def write_report(report: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
