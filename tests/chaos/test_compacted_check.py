"""The compacted topics' check on hand-made histories: clean views pass
(compacted or not), and each way a key's latest value can go wrong is
reported as what it is (chaos/compacted_check.py)."""

from __future__ import annotations

from pathlib import Path

from chaos.checker import CheckResult, check
from chaos.history import Attempt, History, Outcome, ScanRecord
from chaos.replicas import ReplicaLog
from chaos.report import build_report, summary_line, summary_lines

TP = ("state", 0)


class Writes:
    """Keyed attempts to ``state/0`` in send order, one producer per key."""

    def __init__(self) -> None:
        self.history = History(started=0.0)
        self.history.compacted_topics.append("state")
        self.versions: dict[str, int] = {}

    def write(
        self, key: str, offset: int | None, outcome: Outcome = Outcome.OK, *, tombstone: bool = False
    ) -> Attempt:
        version = self.versions.get(key, 0)
        self.versions[key] = version + 1
        label = f"state/0/{key}/v{version}" + ("/tombstone" if tombstone else "")
        seq = len(self.history.attempts)
        a = Attempt(
            label.encode(),
            "default",
            TP[0],
            TP[1],
            0,
            seq,
            float(seq),
            key=key.encode(),
            version=version,
            tombstone=tombstone,
        )
        if outcome is Outcome.OK:
            assert offset is not None
            a.succeed(offset, seq + 0.1)
        else:
            a.fail(outcome, "TEST", seq + 0.1)
        self.history.attempts.append(a)
        return a


def record(a: Attempt, offset: int | None = None) -> tuple[int, bytes]:
    """``a`` as the offline reader shows it (a tombstone: an empty value)."""
    at = a.offset if offset is None else offset
    assert at is not None
    return (at, b"" if a.tombstone else a.value)


def scan_of(history: History, records: list[tuple[int, bytes]], end: int) -> None:
    """A consumer's read of ``records`` (keys from the attempts)."""
    by_value = {a.value: a for a in history.attempts}
    tombstones = {a.offset: a for a in history.attempts if a.tombstone and a.offset is not None}
    for offset, value in records:
        a = tombstones[offset] if not value else by_value[value]
        history.scans.append(ScanRecord(TP[0], TP[1], offset, a.key, value or None))
    history.scan_ends[TP] = end


def three(records: list[tuple[int, bytes]], commit: int = 20) -> list[ReplicaLog]:
    return [ReplicaLog(n, commit, 0, list(records)) for n in (1, 2, 3)]


def scenario() -> tuple[Writes, list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """Keys a (3 versions), b (value then tombstone), c (1 version): the
    full log and the same log compacted (each key's latest only)."""
    w = Writes()
    a0 = w.write("a", 0)
    b0 = w.write("b", 1)
    a1 = w.write("a", 2)
    c0 = w.write("c", 3)
    b1 = w.write("b", 4, tombstone=True)
    a2 = w.write("a", 5)
    full = [record(x) for x in (a0, b0, a1, c0, b1, a2)]
    compacted = [record(x) for x in (c0, b1, a2)]
    return w, full, compacted


def run(w: Writes, logs: list[ReplicaLog]) -> CheckResult:
    return check(w.history, {TP: logs}, expected_replicas={TP: 3})


def test_compacted_and_uncompacted_views_pass() -> None:
    for which in (1, 2):
        w, full, compacted = scenario()
        log = full if which == 1 else compacted
        scan_of(w.history, log, 6)
        result = run(w, three(log))
        assert result.ok, result.examples
        assert (result.compacted_missing, result.compacted_stale, result.compacted_divergent) == (0, 0, 0)
        # The log-keeping checks skip the compacted topic: its gaps are not divergence.
        assert (result.lost, result.divergent, result.unexpected) == (0, 0, 0)
        assert result.compacted.keys == 3 and result.compacted.views == 4
        assert result.compacted.removed == (0 if which == 1 else 3)


def test_replicas_cleaned_to_different_points_agree() -> None:
    w, full, compacted = scenario()
    logs = [ReplicaLog(1, 20, 0, full), ReplicaLog(2, 20, 0, compacted), ReplicaLog(3, 20, 0, full[2:])]
    assert run(w, logs).ok


def test_a_deleted_key_may_be_absent() -> None:
    w, _, compacted = scenario()
    without_tombstone = [r for r in compacted if r[1]]  # past delete_retention_ms
    assert run(w, three(without_tombstone)).ok


def test_the_last_acknowledged_value_gone_is_missing() -> None:
    w, _, compacted = scenario()
    gone = [r for r in compacted if r[0] != 5]  # a's latest dropped, older ones already cleaned
    scan_of(w.history, gone, 6)
    result = run(w, three(gone))
    assert not result.ok
    assert (result.compacted_missing, result.compacted_stale) == (1, 0)
    assert "b'a'" in result.examples["compacted_missing"][0]


def test_an_older_value_served_as_latest_is_stale() -> None:
    w, full, _ = scenario()
    stale = [r for r in full if r[0] != 5]  # a's latest dropped, v1 (offset 2) is served
    result = run(w, three(stale))
    assert not result.ok
    assert result.compacted_stale == 1
    assert result.compacted_missing == 1  # the acknowledged v2 is gone too
    assert "stale" in " ".join(result.examples)


def test_a_deleted_key_whose_old_value_comes_back_is_stale() -> None:
    w, full, _ = scenario()
    resurrected = [r for r in full if r[0] != 4]  # b's tombstone gone, b's v0 still there
    result = run(w, three(resurrected))
    assert (result.compacted_stale, result.compacted_missing) == (1, 0)
    assert not result.ok


def test_missing_is_excused_by_a_later_unknown_tombstone_only() -> None:
    w, _, compacted = scenario()
    w.write("c", None, Outcome.UNKNOWN, tombstone=True)
    no_c = [r for r in compacted if r[0] != 3]  # the unknown tombstone landed, then both were cleaned
    assert run(w, three(no_c)).ok
    w2, _, compacted2 = scenario()
    w2.write("c", None, Outcome.UNKNOWN)  # a later value, not a tombstone: something must be there
    assert run(w2, three([r for r in compacted2 if r[0] != 3])).compacted_missing == 1


def test_a_later_unknown_write_may_be_the_latest() -> None:
    w, _, compacted = scenario()
    late = w.write("c", None, Outcome.UNKNOWN)
    log = [r for r in compacted if r[0] != 3] + [record(late, 6)]
    assert run(w, three(log)).ok


def test_an_older_unknown_write_landing_late_is_allowed_but_counted() -> None:
    w = Writes()
    early = w.write("a", None, Outcome.UNKNOWN)  # given up on, still on the wire
    acked = w.write("a", 0)
    log = [record(acked), record(early, 1)]
    result = run(w, three(log))
    assert result.ok, result.examples
    assert result.compacted.late_unknown == 3  # once per view


def test_an_acknowledged_older_write_after_a_newer_one_is_stale() -> None:
    w = Writes()
    older = w.write("a", 1)  # acknowledged at 1...
    newer = w.write("a", 0)  # ...after the newer one at 0: reordered
    log = [record(newer), record(older)]
    assert run(w, three(log)).compacted_stale == 1


def test_replicas_with_different_latest_views_diverge() -> None:
    w, _, compacted = scenario()
    extra = w.write("c", None, Outcome.UNKNOWN)
    # Node 3 holds an unknown write at 6 that nodes 1 and 2, as far along, lack.
    logs = three(compacted)
    logs[2] = ReplicaLog(3, 20, 0, [*compacted, record(extra, 6)])
    logs[0] = ReplicaLog(1, 20, 0, [*compacted, (7, b"")])  # an unattributable tombstone past 6
    result = run(w, logs)
    assert result.compacted_divergent >= 1
    assert result.compacted_missing == 0 and result.compacted_stale == 0
    assert not result.ok


def test_different_records_at_one_offset_diverge() -> None:
    w, _, compacted = scenario()
    other = w.write("c", None, Outcome.UNKNOWN)
    logs = three(compacted)
    logs[1] = ReplicaLog(2, 20, 0, [record(other, 3) if r[0] == 3 else r for r in compacted])
    result = run(w, logs)
    assert result.compacted_divergent == 1
    assert "at offset 3" in result.examples["compacted_divergent"][0]


def test_a_lagging_replica_does_not_diverge() -> None:
    w, full, compacted = scenario()
    logs = three(compacted)
    logs[2] = ReplicaLog(3, 15, 0, full[:4])  # behind: a's v2 and b's tombstone not there yet
    result = run(w, logs)
    assert result.ok, result.examples


def test_offsets_not_increasing_diverge() -> None:
    w, full, _ = scenario()
    logs = three(full)
    logs[0] = ReplicaLog(1, 20, 0, [full[1], full[0], *full[2:]])
    assert run(w, logs).compacted_divergent == 1


def test_a_missing_replica_and_a_consumer_disagreeing_diverge() -> None:
    w, _, compacted = scenario()
    result = run(w, three(compacted)[:2])
    assert result.compacted_divergent == 1
    w2, _, compacted2 = scenario()
    scan_of(w2.history, [r for r in compacted2 if r[0] != 5], 6)  # the consumer misses a's latest
    result2 = run(w2, three(compacted2))
    assert result2.compacted_divergent == 1 and result2.compacted_missing == 1


def test_values_that_do_not_belong_are_unexpected() -> None:
    w, _, compacted = scenario()
    failed = w.write("c", None, Outcome.FAILED)
    logs = three([*compacted, (6, b"nobody/sent/this"), record(failed, 7)])
    result = run(w, logs)
    assert (result.never_sent, result.failed_present, result.unexpected) == (1, 1, 2)
    assert not result.ok


def test_the_history_keeps_keys_tombstones_and_scans(tmp_path: Path) -> None:
    w, _, compacted = scenario()
    scan_of(w.history, compacted, 6)
    path = tmp_path / "history.jsonl"
    w.history.dump(path)
    loaded = History.load(path)
    assert loaded.compacted_topics == ["state"]
    assert loaded.attempts == w.history.attempts
    assert loaded.scans == w.history.scans and loaded.scan_ends == {TP: 6}
    assert any(s.value is None for s in loaded.scans)
    assert check(loaded, {TP: three(compacted)}).ok


def test_the_report_has_the_counts_and_keeps_the_verdict_line() -> None:
    from chaos.availability import availability

    w, _, compacted = scenario()
    result = run(w, three([r for r in compacted if r[0] != 5]))
    report = build_report(
        config={
            "seed": 1,
            "nodes": 3,
            "nemeses": [],
            "idempotent": True,
            "unsafe_ack_before_commit": False,
            "replay": "x",
        },
        check=result,
        availability=availability(w.history, end=10.0),
        extra={},
    )
    assert report["verdict"]["compacted_missing"] == 1 and not report["passed"]
    lines = summary_lines(report)
    assert lines[-1] == summary_line(report)
    assert lines[-1].split()[0].startswith("faults=") and "compacted" not in lines[-1]
    assert any(line.startswith("compacted: compacted_missing=1 compacted_stale=0 ") for line in lines)


def test_an_unattributed_tombstone_cleaned_on_one_replica_only_is_not_divergence() -> None:
    w, _, compacted = scenario()
    w.write("c", None, Outcome.UNKNOWN, tombstone=True)  # landed at 6; nobody knows its key there
    cleaned = [r for r in compacted if r[0] != 3]  # the leader cleaned c's value and the tombstone
    logs = [ReplicaLog(1, 20, 0, cleaned), *(ReplicaLog(n, 20, 0, [*compacted, (6, b"")]) for n in (2, 3))]
    result = run(w, logs)
    assert result.ok, result.examples
    assert result.compacted.unattributed == 2
    # Without such a tombstone, the same difference is divergence.
    w2, _, compacted2 = scenario()
    logs2 = [ReplicaLog(1, 20, 0, [r for r in compacted2 if r[0] != 3]), *three(compacted2)[1:]]
    assert run(w2, logs2).compacted_divergent >= 1
