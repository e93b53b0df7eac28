"""The consumer-group checks on hand-made histories: a group whose members
hand a partition over (with redelivery) passes; a commit that runs ahead of
delivery is reported as skipped and fails the drill, down to the exit
status; records never delivered, gaps and disorder within one ownership
fail too; redelivery across ownerships is counted, never failing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import chaos.__main__ as chaos_main
from chaos.availability import availability
from chaos.checker import CheckResult, check
from chaos.history import (
    Attempt,
    Commit,
    CommitOutcome,
    GroupRecord,
    History,
    Outcome,
    Read,
    Rebalance,
)
from chaos.replicas import ReplicaLog
from chaos.report import build_report, passed, summary_lines

TP = ("orders", 0)
G = "g-default"
CONFIG = {
    "seed": 3,
    "nodes": 3,
    "nemeses": ["kill-leader"],
    "idempotent": True,
    "unsafe_ack_before_commit": False,
    "replay": "python -m chaos --seed 3",
}


def base_history(records: int = 8) -> History:
    """One producer, ``records`` acknowledged records at 0..records-1, and
    a two-member group over the partition (no reads yet)."""
    h = History(started=0.0)
    for seq in range(records):
        a = Attempt(f"v{seq}".encode(), "default", *TP, 0, seq, sent_at=float(seq))
        a.succeed(seq, float(seq) + 0.1)
        h.attempts.append(a)
    h.groups = [GroupRecord(G, "default", ("orders",), (TP,), {"m0": "id-0", "m1": "id-1"})]
    return h


def logs(h: History) -> dict[tuple[str, int], list[ReplicaLog]]:
    records = sorted((a.offset, a.value) for a in h.attempts if a.offset is not None)
    return {TP: [ReplicaLog(n, 10, 0, list(records)) for n in (1, 2, 3)]}


class Group:
    """Builds a group's reads and commits in order, keeping ``seen`` right."""

    def __init__(self, h: History) -> None:
        self.h = h
        self.t = 10.0
        self.spans: dict[str, int] = {}

    def _tick(self) -> float:
        self.t += 0.1
        return self.t

    def assign(self, member: str) -> None:
        self.spans[member] = self.spans.get(member, 0) + 1
        self.h.rebalances.append(Rebalance(G, member, "assigned", (TP,), self._tick()))

    def revoke(self, member: str, change: str = "revoked") -> None:
        self.h.rebalances.append(Rebalance(G, member, change, (TP,), self._tick()))

    def read(self, member: str, *offsets: int) -> None:
        for offset in offsets:
            value = f"v{offset}".encode()
            self.h.reads.append(
                Read(G, *TP, offset, value, self._tick(), member=member, span=self.spans[member])
            )

    def seen(self) -> int:
        return sum(1 for r in self.h.reads if r.group == G and (r.topic, r.partition) == TP)

    def commit(
        self, member: str, offset: int, outcome: CommitOutcome = CommitOutcome.OK, seen: int | None = None
    ) -> None:
        at = self._tick()
        self.h.commits.append(
            Commit(
                G,
                *TP,
                offset,
                self.seen() if seen is None else seen,
                at,
                member=member,
                outcome=outcome,
                done_at=at + 0.05 if outcome is CommitOutcome.OK else None,
            )
        )


def handover_history() -> History:
    """m0 reads 0-4, commits 3, loses the partition (lost: no commit); m1
    gets it, starts at the committed 3, reads 3-7 (3 and 4 again) and
    commits 8: clean, two records redelivered."""
    h = base_history()
    g = Group(h)
    g.assign("m0")
    g.read("m0", 0, 1, 2)
    g.commit("m0", 3)
    g.read("m0", 3, 4)
    g.revoke("m0", "lost")
    g.assign("m1")
    g.read("m1", 3, 4, 5, 6, 7)
    g.commit("m1", 8)
    return h


def report_of(h: History, result: CheckResult | None = None) -> dict[str, Any]:
    result = result if result is not None else check(h, logs(h))
    return build_report(config=CONFIG, check=result, availability=availability(h), extra={})


def test_a_handover_with_redelivery_passes_and_counts_the_redelivery() -> None:
    h = handover_history()
    result = check(h, logs(h))
    assert result.ok, result.examples
    group = result.groups[G]
    assert (group.reads, group.delivered, group.redelivered) == (10, 8, 2)
    assert (group.skipped, group.undelivered, group.gaps, group.out_of_order) == (0, 0, 0, 0)
    assert (group.assigned, group.revoked, group.lost) == (2, 0, 1)
    assert group.longest_unowned_ms == pytest.approx(100.0)  # lost at 10.6 s, granted at 10.7 s
    assert group.committed == {"orders/0": 8} and group.commit_lag == 0
    report = report_of(h, result)
    assert report["passed"]
    assert report["groups"]["redelivered"] == 2 and report["groups"]["skipped"] == 0
    lines = summary_lines(report)
    assert any(line.startswith("groups: ") and " redelivered=2 " in line for line in lines)
    assert any(line.startswith(f"  group {G}: members=2 ") for line in lines)


def test_negative_control_a_commit_ahead_of_delivery_is_skipped_and_fails_the_drill() -> None:
    h = base_history()
    g = Group(h)
    g.assign("m0")
    g.read("m0", 0, 1, 2)
    g.commit("m0", 5)  # 3 and 4 were never handed to anyone
    g.read("m0", 3, 4, 5, 6, 7)  # delivered later: too late for that commit
    g.commit("m0", 8)
    result = check(h, logs(h))
    assert result.skipped_by_commit == 2
    assert result.groups[G].skipped == 2
    assert result.consumer_undelivered == 0  # everything arrived in the end; the commit still lied
    assert not result.ok
    assert any("committed orders/0@5" in text for text in result.examples["skipped"])
    report = report_of(h, result)
    assert not report["passed"]
    assert report["groups"]["skipped"] == 2 and report["verdict"]["skipped"] == 2
    lines = summary_lines(report)
    assert lines[-2] == "FAIL (seed 3)"
    # The verdict line keeps its format.
    assert lines[-1].startswith("faults=0 acked=8 lost=0 duplicated=0 unexpected=0 reordered=0 divergent=0 ")


def test_negative_control_exit_status_is_nonzero_when_a_commit_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    h = base_history()
    g = Group(h)
    g.assign("m0")
    g.read("m0", 0)
    g.commit("m0", 8)
    g.read("m0", *range(1, 8))
    report = report_of(h)
    assert report["groups"]["skipped"] == 7

    async def fake_drill(config: object) -> dict[str, Any]:
        return report

    monkeypatch.setattr(chaos_main, "run_drill", fake_drill)
    assert chaos_main.main(["--nemesis", "kill-leader", "--seed", "3"]) == 1
    # The same history without the lying commit exits 0.
    h.commits.clear()
    g.commit("m0", 8)
    report = report_of(h)
    assert report["passed"]
    assert chaos_main.main(["--nemesis", "kill-leader", "--seed", "3"]) == 0


def test_a_record_delivered_to_another_member_counts_as_delivered() -> None:
    h = handover_history()
    # m1 commits 5 before reading anything itself: m0 had received 3 and 4.
    g = Group(h)
    h.reads = [r for r in h.reads if r.member == "m0"]
    h.commits = h.commits[:1]
    g.spans = {"m0": 1, "m1": 1}
    g.commit("m1", 5)
    g.read("m1", 5, 6, 7)
    g.commit("m1", 8)
    result = check(h, logs(h))
    assert result.skipped_by_commit == 0 and result.ok, result.examples


def test_an_unanswered_or_refused_commit_ahead_of_delivery_is_skipped_too() -> None:
    for outcome in (CommitOutcome.UNKNOWN, CommitOutcome.FAILED):
        h = base_history()
        g = Group(h)
        g.assign("m0")
        g.read("m0", 0, 1)
        g.commit("m0", 4, outcome)  # may have been applied: a new owner would start at 4
        g.read("m0", *range(2, 8))
        g.commit("m0", 8)
        result = check(h, logs(h))
        assert result.skipped_by_commit == 2, outcome
        counts = (result.groups[G].commits_unknown, result.groups[G].commits_failed)
        assert counts == ((1, 0) if outcome is CommitOutcome.UNKNOWN else (0, 1))


def test_an_acknowledged_record_nobody_received_is_undelivered() -> None:
    h = base_history()
    g = Group(h)
    g.assign("m0")
    g.read("m0", *range(6))
    g.commit("m0", 6)
    result = check(h, logs(h))
    assert result.consumer_undelivered == 2
    assert result.groups[G].commit_lag == 2
    assert not result.ok
    assert not passed(report_of(h, result))


def test_a_group_nobody_declared_is_not_held_to_reading_everything() -> None:
    h = base_history()
    h.groups = []
    h.reads = [Read("other", *TP, 0, b"v0", 1.0)]
    result = check(h, logs(h))
    assert result.ok and result.groups["other"].undelivered == 0


def test_a_gap_or_going_back_within_one_ownership_fails_but_a_new_ownership_may_go_back() -> None:
    h = base_history(4)
    g = Group(h)
    g.assign("m0")
    g.read("m0", 0, 2)  # 1 missing: a gap
    g.read("m0", 1)  # and back: disorder
    g.read("m0", 3)
    g.commit("m0", 4)
    result = check(h, logs(h))
    assert (result.consumer_gaps, result.consumer_out_of_order) == (1, 1)
    assert not result.ok
    h = base_history(4)
    g = Group(h)
    g.assign("m0")
    g.read("m0", 0, 1, 2)
    g.revoke("m0")
    g.assign("m0")  # the same member again: a new ownership, from the committed offset
    g.read("m0", 0, 1, 2, 3)
    g.commit("m0", 4)
    result = check(h, logs(h))
    assert result.ok, result.examples
    assert result.consumer_redelivered == 3


def test_the_group_history_survives_a_round_trip(tmp_path: Path) -> None:
    h = handover_history()
    Group(h).commit("m1", 8, CommitOutcome.UNKNOWN)
    h.dump(tmp_path / "h.jsonl")
    again = History.load(tmp_path / "h.jsonl")
    assert again.groups == h.groups
    assert again.rebalances == h.rebalances
    assert again.reads == h.reads and again.commits == h.commits
    assert again.commits[-1].outcome is CommitOutcome.UNKNOWN
    assert check(again, logs(again)).to_json() == check(h, logs(h)).to_json()


def test_reads_and_commits_without_members_still_check_as_one_stream() -> None:
    # Histories from before groups (no member, no span): one stream per group.
    h = base_history(3)
    h.groups = []
    h.attempts.append(Attempt(b"late", "default", *TP, 0, 9, 5.0))
    h.attempts[-1].fail(Outcome.UNKNOWN, "TEST", 6.0)
    h.reads = [Read(G, *TP, o, f"v{o}".encode(), 1.0) for o in (0, 1, 2)]
    h.commits = [Commit(G, *TP, 3, 3, 2.0)]
    assert check(h, logs(h)).ok
