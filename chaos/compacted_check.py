"""The check of compacted topics: every key's latest value, in every view.

A compacted partition keeps, below its cleaning point, only the latest
record of each key; offsets never change, so a log read from 0 has gaps,
and how much was cleaned differs between replicas and over time. So this
check compares *views* (key → its latest record), never bytes, and it must
hold whether or not compaction ran at all.

The views of a partition: every replica's log as read offline from RocksDB
(``ReplicaLog``; a tombstone there is an empty value with no key) and a
plain consumer's read from offset 0 through the leaders after the heal
(``History.scans``: keys and null values). A record maps back to its
attempt by its value (each value is unique and names its key); a tombstone
by its offset, through the acknowledged tombstone written there or the key
the consumer read there (``unattributed`` when neither knows it: it is left
out of the views, and reported).

For each key, ``A`` is its last acknowledged write (highest ``version``;
one producer owns a key, so acknowledged writes of a key are in send order
in the log) and ``L`` the latest record of the key in a view:

- missing (``compacted_missing``): A is a value and L is not A at A's
  acknowledged offset nor a record of the key written after it (a higher
  offset), except that the key may be absent when a tombstone for it was
  sent after A and did not definitely fail (it may have landed and been
  cleaned, with A, after ``delete_retention_ms``);
- stale (``compacted_stale``): L is a value of the key that is older than
  A: below A's offset, or above it but from an attempt that was
  acknowledged with a lower version (reordered). A write whose outcome was
  unknown may land late, after later ones (the producer gave up on a
  request still on the wire): as L above A's offset it is allowed and
  counted as ``compacted_late_unknown``. When A is a tombstone the key
  may be absent, or its latest record a tombstone;
- A view is judged on the offsets it holds: a replica with the highest
  commit index holds the whole partition (up to its last acknowledged
  offset, even when its last records were cleaned away), a lagging one up
  to its last record, the consumer up to where its read ended.
- divergent (``compacted_divergent``): a replica missing or unreadable; a
  view whose offsets are not strictly increasing; two views that hold
  different records at the same offset; or a view whose key → latest map
  differs from the reference (the replica reaching furthest). Absent and a
  tombstone count as the same; a lagging replica (lower commit index) or
  one that starts later (installed a snapshot) is compared only on the
  keys whose reference latest record lies in the range it holds. A
  value facing absence is not judged when a tombstone of unknown key
  follows it on its side (one whose write's outcome was unknown, which the
  consumer did not see: it may be that key's).
- Values nobody sent, sent to another partition, or whose write failed
  definitely count as ``unexpected`` (as in the other topics).

A key counts at most once in each of missing and stale, over all views.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from chaos.history import TP, Attempt, History, Outcome
from chaos.replicas import ReplicaLog

__all__ = ["CompactedFigures", "check_compacted"]

_EXAMPLES = 5


@dataclass
class CompactedFigures:
    """The figures of every compacted partition together (the module
    docstring says what each counts). ``removed``: offsets of the
    reference replicas' ranges that hold no record (what compaction
    cleaned; 0 when it never ran)."""

    partitions: int = 0
    keys: int = 0
    acked: int = 0
    acked_tombstones: int = 0
    views: int = 0
    records: int = 0
    removed: int = 0
    missing: int = 0
    stale: int = 0
    divergent: int = 0
    late_unknown: int = 0
    unattributed: int = 0
    never_sent: int = 0
    misrouted: int = 0
    failed_present: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def example(self, kind: str, text: str) -> None:
        found = self.examples.setdefault(kind, [])
        if len(found) < _EXAMPLES:
            found.append(text)


@dataclass(frozen=True, slots=True)
class _Entry:
    """A record in a view: its offset, its key, what it holds (``label``:
    the attempt's value, or None for a tombstone) and the attempt (None
    for a tombstone)."""

    offset: int
    key: bytes
    label: bytes | None
    attempt: Attempt | None


@dataclass
class _View:
    name: str
    start: int
    end: int
    commit: int
    records: list[tuple[int, bytes | None, _Entry | None]]
    """(offset, raw value or None, entry: None when not attributable)."""
    latest: dict[bytes, _Entry] = field(default_factory=dict)

    def anonymous_after(self, offset: int) -> bool:
        """Whether a tombstone of unknown key lies past ``offset`` (it may
        be the latest record of any key whose value is at ``offset``)."""
        return any(o > offset and item is None and not v for o, v, item in self.records)


def _name(tp: TP) -> str:
    return f"{tp[0]}/{tp[1]}"


def check_compacted(
    history: History,
    logs: Mapping[TP, Sequence[ReplicaLog]],
    attempts: Mapping[TP, Sequence[Attempt]],
    *,
    expected_replicas: Mapping[TP, int] | None = None,
) -> CompactedFigures:
    """Check every partition of ``history.compacted_topics`` (their
    ``logs`` and ``attempts``; see the module docstring)."""
    figures = CompactedFigures()
    compacted = set(history.compacted_topics)
    by_value = {a.value: a for a in history.attempts}
    scans: dict[TP, list[tuple[int, bytes | None, bytes | None]]] = defaultdict(list)
    for scan in history.scans:
        scans[(scan.topic, scan.partition)].append((scan.offset, scan.key, scan.value))
    tps = sorted(tp for tp in {*logs, *attempts, *scans} if tp[0] in compacted)
    for tp in tps:
        figures.partitions += 1
        expected = expected_replicas.get(tp) if expected_replicas is not None else None
        _check_partition(
            figures,
            tp,
            list(logs.get(tp, ())),
            scans.get(tp),
            history.scan_ends.get(tp),
            list(attempts.get(tp, ())),
            by_value,
            expected,
        )
    return figures


def _check_partition(
    figures: CompactedFigures,
    tp: TP,
    replicas: list[ReplicaLog],
    scan: list[tuple[int, bytes | None, bytes | None]] | None,
    scan_end: int | None,
    attempts: list[Attempt],
    by_value: Mapping[bytes, Attempt],
    expected: int | None,
) -> None:
    name = _name(tp)
    if expected is not None and len(replicas) < expected:
        figures.divergent += expected - len(replicas)
        figures.example(
            "divergent", f"{name}: {expected - len(replicas)} replica(s) missing from the logs read"
        )
    by_key: dict[bytes, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        if attempt.key is not None:
            by_key[attempt.key].append(attempt)
    figures.keys += len(by_key)
    # Tombstones carry no key in the offline logs: name them by offset.
    tombstone_keys: dict[int, bytes] = {
        a.offset: a.key
        for a in attempts
        if a.tombstone and a.outcome is Outcome.OK and a.offset is not None and a.key
    }
    for offset, key, value in scan or ():
        if value is None and key is not None:
            tombstone_keys.setdefault(offset, key)
    strangers: dict[bytes, str] = {}

    def entry(offset: int, key: bytes | None, value: bytes | None) -> _Entry | None:
        """The record at ``offset`` (``value`` None or empty: a tombstone)."""
        if not value:
            key = key if key is not None else tombstone_keys.get(offset)
            if key is None:
                figures.unattributed += 1
                return None
            return _Entry(offset, key, None, None)
        attempt = by_value.get(value)
        if attempt is None or attempt.key is None or attempt.tp != tp or attempt.outcome is Outcome.FAILED:
            strangers[value] = "" if attempt is None else _name(attempt.tp)
            return None
        if key is not None and key != attempt.key:
            figures.divergent += 1
            figures.example("divergent", f"{name}@{offset}: {value!r} read with key {key!r}")
        return _Entry(offset, attempt.key, value, attempt)

    views: list[_View] = []
    for log in replicas:
        if log.error:
            figures.divergent += 1
            figures.example("divergent", f"{name} node {log.node}: unreadable ({log.error})")
            continue
        records: list[tuple[int, bytes | None, _Entry | None]] = [
            (o, v, entry(o, None, v)) for o, v in log.records
        ]
        end = log.records[-1][0] + 1 if log.records else log.log_start_offset
        views.append(_View(f"node {log.node}", log.log_start_offset, end, log.commit_index, records))
    if scan is not None:
        read: list[tuple[int, bytes | None, _Entry | None]] = [(o, v, entry(o, k, v)) for o, k, v in scan]
        end = scan_end if scan_end is not None else (scan[-1][0] + 1 if scan else 0)
        views.append(_View("consumer", 0, end, -1, read))
    figures.views += len(views)
    for value, elsewhere in sorted(strangers.items()):
        sender = by_value.get(value)
        if sender is None:
            figures.never_sent += 1
            figures.example("unexpected", f"{name}: {value!r} was never sent")
        elif elsewhere != name:
            figures.misrouted += 1
            figures.example("unexpected", f"{name}: {value!r} was sent to {elsewhere}")
        else:
            figures.failed_present += 1
            figures.example(
                "unexpected", f"{name}: {value!r} failed definitely ({sender.error}) yet is there"
            )

    # A replica as far along as any (same commit index) holds the whole
    # partition, even when its last records were cleaned away: its end is
    # the partition's, so an acknowledged write past its last record is
    # judged there too.
    partition_end = max(
        [v.end for v in views]
        + [a.offset + 1 for a in attempts if a.offset is not None and a.outcome is Outcome.OK],
        default=0,
    )
    top_commit = max((v.commit for v in views), default=-1)
    for view in views:
        if view.commit >= 0 and view.commit == top_commit:
            view.end = partition_end
        _build_latest(figures, name, view)
    replica_views = [v for v in views if v.commit >= 0]
    reference = max(replica_views, key=lambda v: (v.commit, v.end), default=None)
    if reference is not None:
        figures.records += len(reference.records)
        figures.removed += max(0, reference.end - reference.start - len(reference.records))
        _compare(figures, name, reference, views)

    last_acked = {
        key: max((a for a in writes if a.outcome is Outcome.OK), key=lambda a: a.version, default=None)
        for key, writes in by_key.items()
    }
    figures.acked += sum(1 for a in attempts if a.outcome is Outcome.OK)
    figures.acked_tombstones += sum(1 for a in attempts if a.outcome is Outcome.OK and a.tombstone)
    missing: set[bytes] = set()
    stale: set[bytes] = set()
    for key, acked in sorted(last_acked.items()):
        if acked is None:
            continue
        for view in views:
            _judge_key(figures, name, view, key, acked, by_key[key], missing, stale)
    figures.missing += len(missing)
    figures.stale += len(stale)


def _build_latest(figures: CompactedFigures, name: str, view: _View) -> None:
    last: int | None = None
    disordered = False
    for offset, _, item in view.records:
        if last is not None and offset <= last:
            disordered = True
        last = offset
        if item is not None:
            view.latest[item.key] = item  # log order: a later record of the key replaces it
    if disordered:
        figures.divergent += 1
        figures.example("divergent", f"{name} {view.name}: offsets not strictly increasing")


def _compare(figures: CompactedFigures, name: str, reference: _View, views: Iterable[_View]) -> None:
    """Each view against ``reference``: same record at every offset both
    hold, same key → latest map over the range the view holds."""
    ref_at = {offset: value or None for offset, value, _ in reference.records}
    for view in views:
        if view is reference:
            continue
        clash = next((o for o, v, _ in view.records if o in ref_at and ref_at[o] != (v or None)), None)
        if clash is not None:
            figures.divergent += 1
            figures.example(
                "divergent", f"{name} {view.name} differs from {reference.name} at offset {clash}"
            )
            continue
        full = view.end >= reference.end and (view.commit < 0 or view.commit >= reference.commit)
        differs = _view_difference(reference, view, full)
        if differs is not None:
            figures.divergent += 1
            figures.example("divergent", f"{name} {view.name}: {differs}")


def _view_difference(reference: _View, view: _View, full: bool) -> str | None:
    """Where ``view``'s key → latest map differs from ``reference``'s over
    the offsets ``view`` holds (absent and a tombstone are the same)."""
    for key in sorted(reference.latest.keys() | view.latest.keys()):
        ref = reference.latest.get(key)
        mine = view.latest.get(key)
        ref_value = None if ref is None or ref.label is None else (ref.offset, ref.label)
        my_value = None if mine is None or mine.label is None else (mine.offset, mine.label)
        if ref_value == my_value:
            continue
        if ref is not None and ref.offset < view.start:
            continue  # below what this view holds (a snapshot)
        if not full and (ref is None or ref.offset >= view.end):
            continue  # beyond what a lagging view holds
        # One side has a value, the other none: an unattributed tombstone
        # after that value, on its side, may be the key's (cleaned away on
        # the other side once past delete_retention_ms).
        if ref_value is None and mine is not None and view.anonymous_after(mine.offset):
            continue
        if my_value is None and ref is not None and reference.anonymous_after(ref.offset):
            continue
        return f"key {key!r} latest {_show(mine)}, {reference.name} has {_show(ref)}"
    return None


def _show(item: _Entry | None) -> str:
    if item is None:
        return "absent"
    return f"{'a tombstone' if item.label is None else repr(item.label)} at {item.offset}"


def _judge_key(
    figures: CompactedFigures,
    name: str,
    view: _View,
    key: bytes,
    acked: Attempt,
    writes: Sequence[Attempt],
    missing: set[bytes],
    stale: set[bytes],
) -> None:
    """``key``'s latest record in ``view`` against its last acknowledged
    write ``acked`` (module docstring)."""
    assert acked.offset is not None
    if acked.offset < view.start or acked.offset >= view.end:
        return  # outside what this view holds
    latest = view.latest.get(key)
    where = f"{name} {view.name}: key {key!r}"
    if latest is not None and latest.offset == acked.offset:
        if latest.label == (None if acked.tombstone else acked.value):
            return
        if key not in missing:
            figures.example("missing", f"{where}: {_show(latest)} instead of {acked.value!r}")
        missing.add(key)
        return
    if latest is not None and latest.offset > acked.offset:
        attempt = latest.attempt
        if attempt is not None and attempt.version < acked.version and latest.label is not None:
            if attempt.outcome is Outcome.OK:
                if key not in stale:
                    figures.example("stale", f"{where}: {_show(latest)} after the later {acked.value!r}")
                stale.add(key)
            else:
                figures.late_unknown += 1
        return  # a write after the acknowledged one
    # The acknowledged write is not there and nothing later is.
    if latest is not None and latest.label is not None:
        if key not in stale:
            figures.example(
                "stale", f"{where}: served {_show(latest)}, older than the acknowledged {acked.value!r}"
            )
        stale.add(key)
    if acked.tombstone:
        return  # a deleted key may be absent (or its latest a tombstone)
    if latest is None or latest.label is None:
        later_tombstone = any(
            w.tombstone and w.version > acked.version and w.outcome is not Outcome.FAILED for w in writes
        )
        if later_tombstone:
            return
    if key not in missing:
        figures.example(
            "missing",
            f"{where}: acknowledged {acked.value!r} at {acked.offset} gone (latest {_show(latest)})",
        )
    missing.add(key)
