"""The drill's report: a JSON document and a human summary.

The summary's last line is always, and only, the verdict in one line::

    faults=N acked=A lost=L duplicated=D unexpected=U reordered=R divergent=V failover_p50_ms=X failover_p99_ms=Y

``failover_p99_ms=inf`` means some affected partition never took a write
again; ``n/a`` means there was no fault to measure. The same figures per
nemesis are in the JSON (``availability.by_nemesis``) and on the summary's
``failover by nemesis`` lines.

The consumer groups have their own JSON section (``groups``: totals and
``by_group``) and summary lines (``groups: ...``, one line per group),
apart from the verdict line so its format stays fixed. ``skipped`` (commits
that ran ahead of delivery) is also in the JSON verdict. So are the
compacted topics' failing counts (``compacted_missing``,
``compacted_stale``, ``compacted_divergent``; chaos/compacted_check.py),
whose summary line (``compacted: ...``) comes before the verdict too.

The exit status of ``python -m chaos`` is 0 only when the verdict passes
(``passed``): L, D, U, R and V are 0, the consumer checks found nothing (in
particular ``skipped`` is 0; ``redelivered`` is reported, never failing),
something was acknowledged, and no node exited on its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chaos.availability import Availability
from chaos.checker import CheckResult

__all__ = ["build_report", "passed", "summary_line", "summary_lines", "write_report"]


def _ms(value: float | None, unrecovered: int = 0) -> str:
    if value is None:
        return "inf" if unrecovered else "n/a"
    return f"{value:.0f}"


# The group figures that fail a drill, and those only reported.
_GROUP_FAILING = ("skipped", "undelivered", "gaps", "out_of_order", "mismatches")
_GROUP_TOTALS = ("reads", "delivered", "redelivered", "commits", *_GROUP_FAILING, "commit_lag")


def _groups(check: CheckResult) -> dict[str, Any]:
    by_group = {name: asdict(group) for name, group in sorted(check.groups.items())}
    totals = {key: sum(group[key] for group in by_group.values()) for key in _GROUP_TOTALS}
    return {**totals, "by_group": by_group}


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
            "skipped": check.skipped_by_commit,
            "compacted_missing": check.compacted_missing,
            "compacted_stale": check.compacted_stale,
            "compacted_divergent": check.compacted_divergent,
        },
        "check": check.to_json(),
        "groups": _groups(check),
        "availability": availability.to_json(),
        **extra,
    }
    report["passed"] = passed(report)
    return report


def passed(report: Mapping[str, Any]) -> bool:
    # ``ok`` covers the failing group figures too (CheckResult.ok counts the
    # same GroupCheck figures the ``groups`` totals add up).
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
    by_nemesis = avail.get("by_nemesis") or {}
    if by_nemesis:
        lines.append("failover by nemesis:")
        for nemesis, figures in by_nemesis.items():
            # A figure missing although there were samples is infinite: some
            # partition never took a write again.
            never = figures["samples"]
            lines.append(
                f"  {nemesis:<16} faults={figures['faults']} p50_ms={_ms(figures['p50_ms'], never)} "
                f"p99_ms={_ms(figures['p99_ms'], never)} max_ms={_ms(figures['max_ms'], never)} "
                f"unrecovered={figures['unrecovered']}"
            )
    lines.append(
        f"logs: {check['replicas']} replicas, {check['log_records']} records, lagging {check['lagging_replicas']}; "
        f"lost: missing {check['lost_missing']}, moved {check['lost_moved']}, on some replicas "
        f"{check['lost_on_some']}; unexpected: never sent {check['never_sent']}, misrouted {check['misrouted']}, "
        f"failed yet present {check['failed_present']}"
    )
    groups = report.get("groups") or {}
    if groups.get("by_group"):
        lines.append(
            f"groups: reads={groups['reads']} delivered={groups['delivered']} "
            f"redelivered={groups['redelivered']} commits={groups['commits']} skipped={groups['skipped']} "
            f"undelivered={groups['undelivered']} gaps={groups['gaps']} "
            f"out_of_order={groups['out_of_order']} mismatches={groups['mismatches']}"
        )
        errors = report.get("consumer_errors") or {}
        for name, g in groups["by_group"].items():
            lines.append(
                f"  group {name}: members={g['members']} partitions={g['partitions']} reads={g['reads']} "
                f"redelivered={g['redelivered']} commits={g['commits']} (failed {g['commits_failed']}, "
                f"unknown {g['commits_unknown']}) skipped={g['skipped']} undelivered={g['undelivered']} "
                f"commit_lag={g['commit_lag']} rebalances: assigned {g['assigned']}, revoked "
                f"{g['revoked']}, lost {g['lost']}; longest without an owner "
                f"{g['longest_unowned_ms']:.0f} ms"
            )
            if errors.get(name):
                found = ", ".join(f"{what} x{n}" for what, n in sorted(errors[name].items()))
                lines.append(f"  group {name} errors: {found}")
    compacted = check.get("compacted") or {}
    if compacted.get("partitions"):
        lines.append(
            f"compacted: compacted_missing={check['compacted_missing']} compacted_stale={check['compacted_stale']} "
            f"compacted_divergent={check['compacted_divergent']} partitions={compacted['partitions']} "
            f"keys={compacted['keys']} acked={compacted['acked']} (tombstones {compacted['acked_tombstones']}) "
            f"views={compacted['views']} records={compacted['records']} removed={compacted['removed']} "
            f"late_unknown={compacted['late_unknown']} unattributed={compacted['unattributed']} "
            f"compaction_calls_answered={report.get('compactions', 'n/a')}"
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
