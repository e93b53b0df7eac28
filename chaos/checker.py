"""The verdict on a drill: the history against every replica's log.

Pure: ``check(history, logs)`` reads nothing else, so each anomaly it looks
for is unit-tested on a hand-made history (tests/chaos/test_checker.py).

What must hold after healing, and what each count means:

- acknowledged: attempts whose outcome is ``ok``.
- lost: acknowledged records that are not, in every replica of their
  partition, at the offset their acknowledgement gave (``lost_missing``:
  in no replica; ``lost_moved``: present, but at another offset;
  ``lost_on_some``: missing from some replicas only, e.g. one that never
  caught up). Each record counts once.
- duplicated: extra copies of a value in a replica's log (the worst replica
  of each partition).
- unexpected: values in a log that no attempt sent (``never_sent``), sent
  to another partition (``misrouted``), or whose attempt definitely failed
  (``failed_present``).
- reordered: acknowledged records of one producer to one partition that
  are not in the order it sent them, either in the log or in their
  acknowledged offsets. A record the producer gave up on (unknown outcome)
  may still land later, after records sent after it (a request that was on
  the wire when the producer timed it out): ``late_unknown`` counts those,
  they are not reordering.
- divergent: replicas whose log differs from the furthest-reaching
  replica's at some offset both hold (a replica may end earlier, or start
  later after installing a snapshot, never differ), whose offsets are not
  contiguous, or that could not be read. An acknowledged record below a
  replica's log start is not judged on that replica.
- unknown outcomes may be present once or absent (``unknown_present``,
  ``unknown_absent``); twice counts as duplicated.

Consumer groups (``History.groups``, ``.reads``, ``.commits``,
``.rebalances``), at least once:

- consumer_mismatches: a read whose offset holds another value in the log
  (or no value: the consumer saw a record the log does not have).
- consumer_out_of_order: within one member's ownership of a partition
  (``Read.span``), an offset received at or below one received before.
  A new ownership may start lower: that is redelivery, not disorder.
- consumer_gaps: within one ownership, an offset received after one that
  is not its predecessor (log offsets are contiguous; the consumer
  promises no gap).
- skipped_by_commit (``skipped`` in the group report): log offsets below an
  offset the group committed that no member of the group had received
  when the commit was sent (``commit_skips``): the commit ran ahead of
  delivery, so a new owner starting there would never see them. Every
  commit sent counts, whatever its outcome (an unanswered one may have
  been applied).
- consumer_undelivered: acknowledged records of a group's partitions that
  no member of the group received by the end of the drill (the group must
  read every partition it subscribed to up to its end after healing).
- redelivered (reported, allowed): reads of an offset the group had
  already received, e.g. records after the last commit read again by the
  partition's next owner after a rebalance.
- commit_lag (reported, allowed): per partition, records between the
  group's highest successful commit and the end of the log.
- longest_unowned_ms (reported, allowed): the longest a partition waited,
  from the moment its last owner was told it was revoked or lost, for the
  next grant (waits no grant ended, e.g. while the members close, are
  not counted). With the coordinator's failover fence (session plus a
  margin) this is where a group's unavailability shows.

Compacted topics (``History.compacted_topics``) are checked apart, by
chaos/compacted_check.py (key → latest value in every view:
``compacted_missing``, ``compacted_stale``, ``compacted_divergent``; values
that do not belong there count as unexpected); the checks above, made for
logs that keep every record, skip them.

``CheckResult.ok`` is true only when lost, duplicated, unexpected,
reordered, divergent, the failing consumer counts (mismatches,
out_of_order, gaps, skipped, undelivered) and the failing compacted counts
(missing, stale, divergent) are all zero.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.compacted_check import CompactedFigures, check_compacted
from chaos.history import TP, Attempt, Commit, CommitOutcome, GroupRecord, History, Outcome, Read, Rebalance
from chaos.replicas import ReplicaLog

__all__ = ["CheckResult", "GroupCheck", "check", "commit_skips"]

_EXAMPLES = 5


@dataclass
class GroupCheck:
    """One consumer group's figures (the report's ``groups`` section).

    ``delivered``: distinct offsets some member received; ``redelivered``:
    reads beyond the first of an offset; ``skipped``/``undelivered``/
    ``gaps``/``out_of_order``/``mismatches``: as in the module docstring;
    ``commits_failed``/``commits_unknown``: commits refused or unanswered;
    ``committed``/``log_end``: per partition (``topic/partition``), the
    highest successful commit and the end of the reference log;
    ``commit_lag``: the sum of their differences; ``assigned``/``revoked``/
    ``lost``: rebalance notices the members got; ``longest_unowned_ms``:
    the module docstring's."""

    members: int = 0
    partitions: int = 0
    reads: int = 0
    delivered: int = 0
    redelivered: int = 0
    commits: int = 0
    commits_failed: int = 0
    commits_unknown: int = 0
    skipped: int = 0
    undelivered: int = 0
    gaps: int = 0
    out_of_order: int = 0
    mismatches: int = 0
    assigned: int = 0
    revoked: int = 0
    lost: int = 0
    longest_unowned_ms: float = 0.0
    commit_lag: int = 0
    committed: dict[str, int] = field(default_factory=dict)
    log_end: dict[str, int] = field(default_factory=dict)


@dataclass
class CheckResult:
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    reordered: int = 0
    divergent: int = 0
    # breakdowns and context
    attempts: int = 0
    lost_missing: int = 0
    lost_moved: int = 0
    lost_on_some: int = 0
    never_sent: int = 0
    misrouted: int = 0
    failed_present: int = 0
    failed: int = 0
    unknown: int = 0
    unknown_present: int = 0
    unknown_absent: int = 0
    late_unknown: int = 0
    lagging_replicas: int = 0
    replicas: int = 0
    log_records: int = 0
    consumer_reads: int = 0
    consumer_commits: int = 0
    consumer_mismatches: int = 0
    consumer_out_of_order: int = 0
    consumer_gaps: int = 0
    skipped_by_commit: int = 0
    consumer_undelivered: int = 0
    consumer_redelivered: int = 0
    compacted_missing: int = 0
    compacted_stale: int = 0
    compacted_divergent: int = 0
    compacted: CompactedFigures = field(default_factory=CompactedFigures)
    groups: dict[str, GroupCheck] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.unexpected
            or self.reordered
            or self.divergent
            or self.consumer_mismatches
            or self.consumer_out_of_order
            or self.consumer_gaps
            or self.skipped_by_commit
            or self.consumer_undelivered
            or self.compacted_missing
            or self.compacted_stale
            or self.compacted_divergent
        )

    def example(self, kind: str, text: str) -> None:
        found = self.examples.setdefault(kind, [])
        if len(found) < _EXAMPLES:
            found.append(text)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def check(
    history: History,
    logs: Mapping[TP, Sequence[ReplicaLog]],
    *,
    expected_replicas: Mapping[TP, int] | None = None,
) -> CheckResult:
    """Check ``history`` against ``logs`` ((topic, partition) → that
    partition's replica logs). ``expected_replicas``: how many replicas
    each partition must have (a missing one counts as divergent)."""
    result = CheckResult(attempts=len(history.attempts))
    by_value: dict[bytes, Attempt] = {}
    by_tp: dict[TP, list[Attempt]] = defaultdict(list)
    for attempt in history.attempts:
        assert attempt.value not in by_value, f"two attempts wrote {attempt.value!r}"
        by_value[attempt.value] = attempt
        by_tp[attempt.tp].append(attempt)
        if attempt.outcome is Outcome.OK:
            result.acknowledged += 1
        elif attempt.outcome is Outcome.FAILED:
            result.failed += 1
        else:
            result.unknown += 1
    compacted = set(history.compacted_topics)
    figures = check_compacted(history, logs, by_tp, expected_replicas=expected_replicas)
    result.compacted = figures
    result.compacted_missing = figures.missing
    result.compacted_stale = figures.stale
    result.compacted_divergent = figures.divergent
    result.never_sent += figures.never_sent
    result.misrouted += figures.misrouted
    result.failed_present += figures.failed_present
    result.unexpected += figures.never_sent + figures.misrouted + figures.failed_present
    for kind, texts in figures.examples.items():
        for text in texts:
            result.example("unexpected" if kind == "unexpected" else f"compacted_{kind}", text)
    references: dict[TP, dict[int, bytes]] = {}
    for tp in sorted(set(logs) | set(by_tp)):
        if tp[0] in compacted:
            continue  # checked above: a compacted log keeps only each key's latest record
        replicas = list(logs.get(tp, ()))
        expected = expected_replicas.get(tp) if expected_replicas is not None else None
        references[tp] = _check_partition(result, tp, replicas, by_tp.get(tp, []), by_value, expected)
    _check_groups(result, history, references, by_tp)
    return result


def _name(tp: TP) -> str:
    return f"{tp[0]}/{tp[1]}"


def _check_partition(
    result: CheckResult,
    tp: TP,
    replicas: list[ReplicaLog],
    attempts: list[Attempt],
    by_value: Mapping[bytes, Attempt],
    replication_factor: int | None,
) -> dict[int, bytes]:
    """Counts one partition's anomalies into ``result``; returns its
    reference log (offset → value, the longest readable replica)."""
    name = _name(tp)
    result.replicas += len(replicas)
    if replication_factor is not None and len(replicas) < replication_factor:
        missing = replication_factor - len(replicas)
        result.divergent += missing
        result.example("divergent", f"{name}: {missing} replica(s) missing from the logs read")
    readable = []
    for log in replicas:
        if log.error:
            result.divergent += 1
            result.example("divergent", f"{name} node {log.node}: unreadable ({log.error})")
        else:
            readable.append(log)
    # The reference: the replica whose log reaches furthest.
    reference = max(readable, key=lambda log: log.log_start_offset + len(log.records), default=None)
    ref_records = reference.records if reference is not None else []
    ref_start = reference.log_start_offset if reference is not None else 0
    ref_end = ref_start + len(ref_records)
    ref_at = dict(ref_records)
    result.log_records += len(ref_records)

    # Divergence: offsets contiguous, and every record the same as the
    # reference's at that offset (a replica may end earlier, or start later
    # after a snapshot; it may not differ).
    for log in readable:
        offsets = [offset for offset, _ in log.records]
        if offsets != list(range(log.log_start_offset, log.log_start_offset + len(offsets))):
            result.divergent += 1
            result.example("divergent", f"{name} node {log.node}: offsets not contiguous")
            continue
        differs = next((o for o, v in log.records if o >= ref_start and ref_at.get(o) != v), None)
        if differs is not None:
            result.divergent += 1
            result.example(
                "divergent",
                f"{name} node {log.node} differs from node {reference.node if reference else '?'} "
                f"at offset {differs}",
            )
        elif log.log_start_offset + len(log.records) < ref_end:
            result.lagging_replicas += 1

    # Duplicates, and values nobody sent here.
    worst = 0
    strangers: set[bytes] = set()
    for log in readable:
        counts = Counter(value for _, value in log.records)
        extra = sum(c - 1 for c in counts.values() if c > 1)
        if extra > worst:
            worst = extra
        for value, c in counts.items():
            if c > 1:
                result.example("duplicated", f"{name} node {log.node}: {value!r} x{c}")
            attempt = by_value.get(value)
            if attempt is None or attempt.tp != tp or attempt.outcome is Outcome.FAILED:
                strangers.add(value)
    result.duplicated += worst
    for value in sorted(strangers):
        attempt = by_value.get(value)
        if attempt is None:
            result.never_sent += 1
            result.example("unexpected", f"{name}: {value!r} was never sent")
        elif attempt.tp != tp:
            result.misrouted += 1
            result.example("unexpected", f"{name}: {value!r} was sent to {_name(attempt.tp)}")
        else:
            result.failed_present += 1
            result.example(
                "unexpected", f"{name}: {value!r} failed definitely ({attempt.error}) yet is there"
            )
    result.unexpected += len(strangers)

    # Acknowledged records: at their offset on every replica.
    at_offset = [(log.log_start_offset, dict(log.records)) for log in readable]
    anywhere = set().union(*(set(m.values()) for _, m in at_offset)) if at_offset else set()
    for attempt in attempts:
        if attempt.outcome is Outcome.OK:
            assert attempt.offset is not None
            # A replica whose log starts above the offset (it was given a
            # snapshot) cannot show the record: it is not judged there.
            judges = [m for start, m in at_offset if attempt.offset >= start]
            holding = sum(1 for m in judges if m.get(attempt.offset) == attempt.value)
            if judges and holding == len(judges):
                continue
            result.lost += 1
            if attempt.value not in anywhere:
                result.lost_missing += 1
                kind = "missing from every replica"
            elif holding == 0:
                result.lost_moved += 1
                kind = "not at its acknowledged offset on any replica"
            else:
                result.lost_on_some += 1
                kind = f"at its offset on {holding} of {len(judges)} replicas"
            result.example("lost", f"{name}: {attempt.value!r} acked at {attempt.offset}, {kind}")
        elif attempt.outcome is not Outcome.FAILED:
            if attempt.value in anywhere:
                result.unknown_present += 1
            else:
                result.unknown_absent += 1

    # Order: each producer's records in send order, in the log and in acks.
    reordered: set[bytes] = set()
    highest: dict[int, int] = {}
    seen: set[bytes] = set()
    for offset, value in ref_records:
        attempt = by_value.get(value)
        if attempt is None or attempt.tp != tp or value in seen:
            continue
        seen.add(value)
        top = highest.get(attempt.producer, -1)
        if attempt.seq < top and attempt.outcome is not Outcome.OK:
            # A write the producer gave up on (unknown outcome) that landed
            # after later ones: a late retry, allowed (see the docstring).
            result.late_unknown += 1
        elif attempt.seq < top:
            reordered.add(value)
            result.example(
                "reordered", f"{name}: {value!r} (seq {attempt.seq}) at offset {offset}, after seq {top}"
            )
        highest[attempt.producer] = max(top, attempt.seq)
    streams: dict[int, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        if attempt.outcome is Outcome.OK:
            streams[attempt.producer].append(attempt)
    for stream in streams.values():
        # The same rule on the acknowledged offsets: walking them in offset
        # order, a sequence number below one already passed is out of order.
        top_seq = -1
        for attempt in sorted(stream, key=lambda a: a.offset or 0):
            if attempt.seq < top_seq and attempt.value not in reordered:
                reordered.add(attempt.value)
                result.example(
                    "reordered",
                    f"{name}: {attempt.value!r} (seq {attempt.seq}) acked at {attempt.offset}, "
                    f"after a later send (seq {top_seq})",
                )
            top_seq = max(top_seq, attempt.seq)
    result.reordered += len(reordered)
    return ref_at


def commit_skips(log_offsets: Sequence[int], commits: Iterable[tuple[int, Container[int]]]) -> set[int]:
    """Offsets of a partition's log (sorted) that some commit skipped: below
    its committed offset yet not among the offsets the group had read when
    it committed. ``commits`` in the order they were made, each with what
    had been read by then (what was read only grows, so each offset is
    judged at the first commit that covers it)."""
    skipped: set[int] = set()
    checked = log_offsets[0] if log_offsets else 0
    for committed, seen in commits:
        lo = bisect.bisect_left(log_offsets, checked)
        hi = bisect.bisect_left(log_offsets, committed)
        skipped.update(offset for offset in log_offsets[lo:hi] if offset not in seen)
        checked = max(checked, committed)
    return skipped


def _growing_seen(reads: Sequence[Read], commits: Sequence[Commit]) -> Iterator[tuple[int, Container[int]]]:
    """Each commit with the offsets read before it (one set, grown in
    place), commits in the order of what they had seen."""
    seen: set[int] = set()
    taken = 0
    for commit in sorted(commits, key=lambda c: (c.seen, c.at)):
        while taken < min(commit.seen, len(reads)):
            seen.add(reads[taken].offset)
            taken += 1
        yield commit.offset, seen


def _check_groups(
    result: CheckResult,
    history: History,
    references: Mapping[TP, Mapping[int, bytes]],
    attempts: Mapping[TP, Sequence[Attempt]],
) -> None:
    result.consumer_reads = len(history.reads)
    result.consumer_commits = len(history.commits)
    records: dict[str, GroupRecord] = {g.name: g for g in history.groups}
    names = sorted({*records, *(r.group for r in history.reads), *(c.group for c in history.commits)})
    reads: dict[str, list[Read]] = defaultdict(list)
    for read in history.reads:
        reads[read.group].append(read)
    commits: dict[str, list[Commit]] = defaultdict(list)
    for commit in history.commits:
        commits[commit.group].append(commit)
    rebalances: dict[str, list[Rebalance]] = defaultdict(list)
    for rebalance in history.rebalances:
        rebalances[rebalance.group].append(rebalance)
    for name in names:
        group = _check_group(
            result,
            name,
            records.get(name),
            reads[name],
            commits[name],
            rebalances[name],
            references,
            attempts,
        )
        result.groups[name] = group
        result.consumer_mismatches += group.mismatches
        result.consumer_out_of_order += group.out_of_order
        result.consumer_gaps += group.gaps
        result.skipped_by_commit += group.skipped
        result.consumer_undelivered += group.undelivered
        result.consumer_redelivered += group.redelivered


def _check_group(
    result: CheckResult,
    name: str,
    record: GroupRecord | None,
    reads: Sequence[Read],
    commits: Sequence[Commit],
    rebalances: Sequence[Rebalance],
    references: Mapping[TP, Mapping[int, bytes]],
    attempts: Mapping[TP, Sequence[Attempt]],
) -> GroupCheck:
    """One group's figures; its examples go into ``result``."""
    group = GroupCheck(
        members=len(record.members) if record is not None else len({r.member for r in reads}),
        reads=len(reads),
        commits=len(commits),
    )
    owners: dict[TP, set[str]] = defaultdict(set)
    orphaned: dict[TP, float] = {}  # partition -> when its last owner let go
    for rebalance in sorted(rebalances, key=lambda r: r.at):
        if rebalance.change == "assigned":
            group.assigned += 1
        elif rebalance.change == "revoked":
            group.revoked += 1
        elif rebalance.change == "lost":
            group.lost += 1
        for tp in rebalance.partitions:
            if rebalance.change == "assigned":
                owners[tp].add(rebalance.member)
                since = orphaned.pop(tp, None)
                if since is not None:
                    group.longest_unowned_ms = max(group.longest_unowned_ms, (rebalance.at - since) * 1000)
            else:
                owners[tp].discard(rebalance.member)
                if not owners[tp]:
                    orphaned[tp] = rebalance.at
    by_tp: dict[TP, list[Read]] = defaultdict(list)
    spans: dict[tuple[str, int, TP], list[Read]] = defaultdict(list)
    for read in reads:
        tp = (read.topic, read.partition)
        by_tp[tp].append(read)
        spans[(read.member, read.span, tp)].append(read)
        value = references.get(tp, {}).get(read.offset)
        if value != read.value:
            group.mismatches += 1
            result.example(
                "consumer",
                f"group {name} member {read.member or '?'} read {read.value!r} at "
                f"{_name(tp)}@{read.offset}; the log has {value!r}",
            )
    # Order within one ownership: strictly increasing, each offset the
    # successor of the one before (a smaller one is disorder, a larger
    # jump a gap).
    for (member, span, tp), stream in spans.items():
        last: int | None = None
        for read in stream:
            if last is not None and read.offset <= last:
                group.out_of_order += 1
                result.example(
                    "consumer",
                    f"group {name} member {member or '?'} (ownership {span}) read "
                    f"{_name(tp)}@{read.offset} after @{last}",
                )
            elif last is not None and read.offset != last + 1:
                group.gaps += 1
                result.example(
                    "consumer",
                    f"group {name} member {member or '?'} (ownership {span}) read "
                    f"{_name(tp)}@{read.offset} right after @{last}: {read.offset - last - 1} skipped",
                )
            last = read.offset if last is None else max(last, read.offset)
    delivered: dict[TP, set[int]] = {}
    for tp, stream in by_tp.items():
        distinct = {read.offset for read in stream}
        delivered[tp] = distinct
        group.delivered += len(distinct)
        group.redelivered += len(stream) - len(distinct)
    # Commits never ahead of delivery.
    by_tp_commits: dict[TP, list[Commit]] = defaultdict(list)
    for commit in commits:
        by_tp_commits[(commit.topic, commit.partition)].append(commit)
        if commit.outcome == CommitOutcome.FAILED:
            group.commits_failed += 1
        elif commit.outcome == CommitOutcome.UNKNOWN:
            group.commits_unknown += 1
    for tp, tp_commits in by_tp_commits.items():
        offsets = sorted(references.get(tp, {}))
        skipped = commit_skips(offsets, _growing_seen(by_tp.get(tp, []), tp_commits))
        group.skipped += len(skipped)
        for offset in sorted(skipped)[:_EXAMPLES]:
            committer = next(
                (c for c in sorted(tp_commits, key=lambda c: c.at) if c.offset > offset), tp_commits[0]
            )
            result.example(
                "skipped",
                f"group {name} member {committer.member or '?'} committed {_name(tp)}@{committer.offset} "
                f"at t={committer.at:.2f}s before any member received @{offset}",
            )
    # Read to the end: every acknowledged record of its partitions.
    partitions = sorted(set(record.partitions) if record is not None else set(by_tp) | set(by_tp_commits))
    group.partitions = len(partitions)
    for tp in partitions:
        reference = references.get(tp, {})
        end = max(reference) + 1 if reference else 0
        best = max(
            (c.offset for c in by_tp_commits.get(tp, []) if c.outcome == CommitOutcome.OK),
            default=0,
        )
        group.log_end[_name(tp)] = end
        group.committed[_name(tp)] = best
        group.commit_lag += max(0, end - best)
        if record is None:
            continue  # a group nobody declared: no promise to read it all
        got = delivered.get(tp, set())
        missing = sorted(
            a.offset
            for a in attempts.get(tp, ())
            if a.outcome is Outcome.OK and a.offset is not None and a.offset not in got
        )
        group.undelivered += len(missing)
        if missing:
            result.example(
                "undelivered",
                f"group {name}: {len(missing)} acknowledged record(s) of {_name(tp)} never received, "
                f"first at offsets {missing[:_EXAMPLES]}",
            )
    return group
