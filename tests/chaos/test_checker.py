"""The drill's checker on hand-made histories: a clean one passes, and each
anomaly it exists for is reported (and counted as what it is)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.checker import check, commit_skips
from chaos.history import Attempt, Commit, History, Outcome, Read
from chaos.replicas import ReplicaLog

TP = ("orders", 0)


def attempt(producer: int, seq: int, offset: int | None, outcome: Outcome = Outcome.OK) -> Attempt:
    a = Attempt(f"p{producer}/{seq}".encode(), "default", TP[0], TP[1], producer, seq, sent_at=float(seq))
    if outcome is Outcome.OK:
        assert offset is not None
        a.succeed(offset, float(seq) + 0.1)
    elif outcome is not Outcome.PENDING:
        a.fail(outcome, "TEST", float(seq) + 0.1)
    return a


def clean_history() -> History:
    """Two producers, interleaved, six acknowledged records at 0..5."""
    h = History(started=0.0)
    h.attempts = [
        attempt(0, 0, 0),
        attempt(1, 0, 1),
        attempt(0, 1, 2),
        attempt(1, 1, 3),
        attempt(0, 2, 4),
        attempt(1, 2, 5),
    ]
    return h


def log_of(history: History) -> list[tuple[int, bytes]]:
    return sorted((a.offset, a.value) for a in history.attempts if a.offset is not None)


def replicas(records: list[tuple[int, bytes]], *others: list[tuple[int, bytes]]) -> list[ReplicaLog]:
    logs = [ReplicaLog(1, 10, 0, list(records))]
    logs += [ReplicaLog(n, 10, 0, list(r)) for n, r in enumerate(others or (records, records), start=2)]
    return logs


def test_a_clean_history_passes() -> None:
    h = clean_history()
    result = check(h, {TP: replicas(log_of(h))}, expected_replicas={TP: 3})
    assert result.ok
    assert result.acknowledged == 6
    assert (result.lost, result.duplicated, result.unexpected, result.reordered, result.divergent) == (0,) * 5


def test_a_missing_acknowledged_record_is_lost() -> None:
    h = clean_history()
    records = [r for r in log_of(h) if r[0] != 5]
    result = check(h, {TP: replicas(records)})
    assert (result.lost, result.lost_missing) == (1, 1)
    assert not result.ok


def test_a_record_at_another_offset_than_acknowledged_is_lost() -> None:
    h = clean_history()
    records = log_of(h)
    records[4], records[5] = (4, records[5][1]), (5, records[4][1])  # swap the values of offsets 4 and 5
    result = check(h, {TP: replicas(records)})
    assert (result.lost, result.lost_moved) == (2, 2)


def test_a_record_missing_from_one_replica_is_lost_and_that_replica_lags() -> None:
    h = clean_history()
    full = log_of(h)
    result = check(h, {TP: replicas(full, full, full[:4])})
    assert (result.lost, result.lost_on_some, result.lagging_replicas) == (2, 2, 1)
    assert result.divergent == 0


def test_a_duplicate_is_reported() -> None:
    h = clean_history()
    records = [*log_of(h), (6, b"p1/2")]
    result = check(h, {TP: replicas(records)})
    assert result.duplicated == 1
    assert not result.ok


def test_an_unknown_outcome_may_be_present_once_or_absent_but_not_twice() -> None:
    h = clean_history()
    h.attempts += [attempt(0, 3, None, Outcome.UNKNOWN), attempt(1, 3, None, Outcome.PENDING)]
    h.close_pending()
    present = [*log_of(h), (6, b"p0/3")]
    result = check(h, {TP: replicas(present)})
    assert result.ok
    assert (result.unknown_present, result.unknown_absent) == (1, 1)
    twice = [*present, (7, b"p0/3")]
    assert check(h, {TP: replicas(twice)}).duplicated == 1


def test_a_record_nobody_sent_is_unexpected() -> None:
    h = clean_history()
    result = check(h, {TP: replicas([*log_of(h), (6, b"forged")])})
    assert (result.unexpected, result.never_sent) == (1, 1)


def test_a_definitely_failed_record_in_the_log_is_unexpected() -> None:
    h = clean_history()
    h.attempts.append(attempt(0, 3, None, Outcome.FAILED))
    result = check(h, {TP: replicas([*log_of(h), (6, b"p0/3")])})
    assert (result.unexpected, result.failed_present) == (1, 1)


def test_a_record_sent_to_another_partition_is_unexpected() -> None:
    h = clean_history()
    other = ("orders", 1)
    result = check(h, {TP: replicas(log_of(h)), other: replicas([(0, b"p0/0")])})
    assert (result.unexpected, result.misrouted) == (1, 1)


def test_records_out_of_send_order_are_reordered() -> None:
    h = clean_history()
    # Producer 0's seq 1 and 2 swapped, both in the log and in their acks.
    h.attempts[2].offset, h.attempts[4].offset = 4, 2
    result = check(h, {TP: replicas(log_of(h))})
    assert result.reordered == 1
    assert result.lost == 0


def test_acknowledged_offsets_out_of_send_order_are_reordered_even_if_the_log_is_fine() -> None:
    h = clean_history()
    records = log_of(h)
    h.attempts[4].offset = 1  # acked below seq 1's offset: the ack lies
    result = check(h, {TP: replicas(records)})
    assert result.reordered == 1
    assert result.lost == 1  # and it is not at the offset the ack gave


def test_an_unknown_write_landing_late_is_not_reordering() -> None:
    h = clean_history()
    h.attempts.append(attempt(0, 3, None, Outcome.UNKNOWN))
    h.attempts.append(attempt(0, 4, 6))
    records = [*log_of(h), (7, b"p0/3")]  # seq 3 after seq 4
    result = check(h, {TP: replicas(records)})
    assert result.ok
    assert result.late_unknown == 1


def test_a_replica_that_differs_is_divergent() -> None:
    h = clean_history()
    full = log_of(h)
    other = [*full[:3], (3, b"p1/2"), (4, b"p0/2"), (5, b"p1/1")]
    result = check(h, {TP: replicas(full, full, other)})
    assert result.divergent == 1


def test_a_replica_with_a_gap_in_its_offsets_is_divergent() -> None:
    h = clean_history()
    full = log_of(h)
    gapped = [full[0], (2, full[1][1])]
    assert check(h, {TP: replicas(full, full, gapped)}).divergent == 1


@pytest.mark.parametrize("missing", [1, 3])
def test_missing_or_unreadable_replicas_are_divergent(missing: int) -> None:
    h = clean_history()
    logs = replicas(log_of(h))[: 3 - missing] if missing < 3 else []
    if missing == 1:
        logs.append(ReplicaLog(3, 0, 0, [], error="LOCK held"))
    result = check(h, {TP: logs}, expected_replicas={TP: 3})
    assert result.divergent == missing
    if missing == 3:
        assert result.lost == 6


def test_a_consumer_reading_a_value_the_log_does_not_have_is_a_mismatch() -> None:
    h = clean_history()
    h.reads = [
        Read("g", *TP, 0, b"p0/0", 1.0),
        Read("g", *TP, 1, b"stale", 1.0),
        Read("g", *TP, 9, b"x", 1.0),
    ]
    result = check(h, {TP: replicas(log_of(h))})
    assert result.consumer_mismatches == 2


def test_a_consumer_reading_backwards_is_out_of_order() -> None:
    h = clean_history()
    log = log_of(h)
    h.reads = [Read("g", *TP, o, v, 1.0) for o, v in [log[0], log[2], log[1]]]
    assert check(h, {TP: replicas(log)}).consumer_out_of_order == 1


def test_a_commit_past_an_unread_record_skips_it() -> None:
    h = clean_history()
    log = log_of(h)
    h.reads = [Read("g", *TP, o, v, 1.0) for o, v in log[:2]]
    h.commits = [Commit("g", *TP, 2, seen=2, at=1.0), Commit("g", *TP, 6, seen=2, at=2.0)]
    result = check(h, {TP: replicas(log)})
    assert result.skipped_by_commit == 4  # offsets 2-5: committed past, never read
    assert not result.ok
    # Committing only what was read is fine.
    h.commits = [Commit("g", *TP, 2, seen=2, at=1.0)]
    assert check(h, {TP: replicas(log)}).ok


def test_commit_skips_judges_each_offset_at_the_first_commit_covering_it() -> None:
    log = list(range(10))
    # Offset 3 was read only after the commit at 5: skipped, even though a
    # later commit had seen it.
    assert commit_skips(log, [(5, {0, 1, 2, 4}), (10, set(range(10)))]) == {3}
    assert commit_skips(log, [(5, {0, 1, 2, 3, 4}), (3, set()), (10, set(range(10)))]) == set()
    assert commit_skips([], [(5, set())]) == set()


def test_the_history_survives_a_round_trip(tmp_path: Path) -> None:
    h = clean_history()
    h.attempts.append(attempt(0, 3, None, Outcome.UNKNOWN))
    h.reads = [Read("g", *TP, 0, b"p0/0", 1.0)]
    h.commits = [Commit("g", *TP, 1, 1, 1.5)]
    h.event("hello")
    h.dump(tmp_path / "h.jsonl")
    again = History.load(tmp_path / "h.jsonl")
    assert again.attempts == h.attempts and again.reads == h.reads and again.commits == h.commits
    assert again.events == h.events


def test_a_replica_whose_log_starts_later_does_not_judge_earlier_records() -> None:
    h = clean_history()
    full = log_of(h)
    from_snapshot = ReplicaLog(3, 10, 4, full[4:])  # installed a snapshot up to offset 4
    result = check(h, {TP: [*replicas(full, full), from_snapshot]})
    assert result.ok, result.examples
    assert result.lost == 0
