"""What happened during a drill: every write attempt and its outcome, every
record a consumer read, every offset it committed, and every fault.

The checker (chaos/checker.py) and the availability figures
(chaos/availability.py) are pure functions of a ``History`` plus the
replicas' logs, so both can be tested on hand-made histories and a drill can
be checked again later from its ``history.jsonl``.

Invariants:

- Times are seconds on ``time.monotonic()`` minus the drill's start
  (``History.clock``), so they compare across the workload, the nemeses
  and the report.
- Every attempt has a value no other attempt has (the checker maps records
  back to attempts by value). ``seq`` numbers one producer's attempts to
  one partition from 0 in send order.
- An attempt's outcome moves once, from ``pending`` to ``ok`` (with the
  acknowledged offset), ``failed`` (definitely not written: refused before
  or by the server) or ``unknown`` (may or may not be in the log); attempts
  still pending when the drill ends count as unknown.
- ``Commit.seen`` is how many reads of that group and partition had been
  delivered (to any member) when the commit's offset was chosen, before
  the commit was sent: a prefix of ``History.reads`` filtered to the group
  and partition. Taking it before sending errs towards reporting a skip,
  never towards hiding one.
- Every commit a member *sent* is recorded, whatever came back
  (``Commit.outcome``): a commit that timed out may still have been
  applied, so every one of them must be covered by what was delivered.
- ``Read.member`` and ``Read.span`` say which member received the record
  during which of its ownerships of the partition (``span`` counts that
  member's grants of the partition from 1): within one span a member
  receives a partition's offsets in order, each once, with no gap; a new
  span may start lower (the group's committed offset: at-least-once).
- ``History.groups`` names each consumer group the workload ran, its
  members and the partitions it had to read to the end;
  ``History.rebalances`` is every grant, revocation and loss a member was
  told about, in the order they were told.
- Compacted topics (``History.compacted_topics``): their attempts carry a
  ``key``; ``version`` numbers one key's attempts from 0 in send order
  (one producer owns each key, so send order is log order for what it
  acknowledged); a ``tombstone`` attempt sent a null value (its ``value``
  is only its unique label). ``History.scans`` is what a plain consumer
  read of every compacted partition from offset 0 after the heal, and
  ``History.scan_ends`` the offset each scan reached.
"""

from __future__ import annotations

import base64
import enum
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "TP",
    "Attempt",
    "Commit",
    "CommitOutcome",
    "FaultRecord",
    "GroupRecord",
    "History",
    "Outcome",
    "Read",
    "Rebalance",
    "ScanRecord",
]

TP = tuple[str, int]
"""A partition: (topic, partition number)."""


class Outcome(enum.StrEnum):
    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class Attempt:
    """One record a producer tried to write."""

    value: bytes
    tenant: str
    topic: str
    partition: int
    producer: int
    seq: int
    sent_at: float
    outcome: Outcome = Outcome.PENDING
    offset: int | None = None
    done_at: float | None = None
    error: str = ""
    key: bytes | None = None
    """Set only for compacted topics."""
    version: int = 0
    """The key's attempts from 0, in send order (compacted topics)."""
    tombstone: bool = False
    """Sent with a null value; ``value`` is only its unique label."""

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)

    def succeed(self, offset: int, at: float) -> None:
        assert self.outcome is Outcome.PENDING, f"{self.value!r} resolved twice"
        self.outcome, self.offset, self.done_at = Outcome.OK, offset, at

    def fail(self, outcome: Outcome, error: str, at: float) -> None:
        assert outcome in (Outcome.FAILED, Outcome.UNKNOWN)
        assert self.outcome is Outcome.PENDING, f"{self.value!r} resolved twice"
        self.outcome, self.error, self.done_at = outcome, error, at


@dataclass(frozen=True, slots=True)
class Read:
    """A record a consumer of ``group`` received: ``member`` (its label in
    ``GroupRecord.members``) during its ``span``-th ownership of the
    partition (0: not known, e.g. a history from before groups)."""

    group: str
    topic: str
    partition: int
    offset: int
    value: bytes
    at: float
    member: str = ""
    span: int = 0


class CommitOutcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"  # refused (fenced, stale epoch...): not applied
    UNKNOWN = "unknown"  # timed out or unanswered: may have been applied


@dataclass(frozen=True, slots=True)
class Commit:
    """``member`` of ``group`` committed (or tried to: ``outcome``)
    ``offset``, the next offset the group will read, for a partition, when
    the group had delivered ``seen`` reads of that partition. ``at``: when
    it was sent; ``done_at``: when the answer came (None: never)."""

    group: str
    topic: str
    partition: int
    offset: int
    seen: int
    at: float
    member: str = ""
    outcome: CommitOutcome = CommitOutcome.OK
    done_at: float | None = None


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """A consumer group the workload ran: ``members`` maps each member's
    label (as in ``Read.member``) to its member id; ``partitions`` are
    those it subscribed to, every one to be read to its end."""

    name: str
    tenant: str
    topics: tuple[str, ...]
    partitions: tuple[TP, ...]
    members: dict[str, str]


@dataclass(frozen=True, slots=True)
class Rebalance:
    """``member`` of ``group`` was told of a ``change`` (``assigned``,
    ``revoked`` or ``lost``) of ``partitions`` at ``at``."""

    group: str
    member: str
    change: str
    partitions: tuple[TP, ...]
    at: float


@dataclass(frozen=True, slots=True)
class ScanRecord:
    """A record of a compacted partition as a plain consumer read it after
    the heal (``value`` None: a tombstone)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class FaultRecord:
    """One nemesis run: when it struck, what it hit, when it was healed.

    ``nodes``: the nodes it acted on (killed, paused, cut off...).
    ``affected``: the partitions whose writes it was expected to interrupt
    (led by a node it hit; every partition for link-wide faults).
    ``skipped``: why it did not run (then the times are those of the skip).
    """

    nemesis: str
    description: str
    injected_at: float
    healed_at: float | None = None
    nodes: tuple[int, ...] = ()
    affected: tuple[TP, ...] = ()
    skipped: str = ""


@dataclass
class History:
    attempts: list[Attempt] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    commits: list[Commit] = field(default_factory=list)
    groups: list[GroupRecord] = field(default_factory=list)
    rebalances: list[Rebalance] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    compacted_topics: list[str] = field(default_factory=list)
    scans: list[ScanRecord] = field(default_factory=list)
    scan_ends: dict[TP, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def clock(self) -> float:
        """Seconds since the drill started."""
        return time.monotonic() - self.started

    def event(self, message: str) -> None:
        self.events.append((self.clock(), message))

    def close_pending(self, reason: str = "pending at the end of the drill") -> int:
        """Attempts nobody resolved become unknown; how many."""
        n = 0
        for attempt in self.attempts:
            if attempt.outcome is Outcome.PENDING:
                attempt.fail(Outcome.UNKNOWN, reason, self.clock())
                n += 1
        return n

    # --- persistence: one JSON object per line, bytes in base64 -------------------

    def dump(self, path: Path) -> None:
        # "kind" names the line's record type: no record has a field of that name.
        with path.open("w") as out:
            for kind, item in self._items():
                out.write(json.dumps({"kind": kind, **item}) + "\n")

    def _items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for topic in self.compacted_topics:
            yield "compacted_topic", {"topic": topic}
        for attempt in self.attempts:
            yield (
                "attempt",
                {**asdict(attempt), "value": _b64(attempt.value), "key": _b64_or_none(attempt.key)},
            )
        for read in self.reads:
            yield "read", {**asdict(read), "value": _b64(read.value)}
        for commit in self.commits:
            yield "commit", asdict(commit)
        for group in self.groups:
            yield "group", asdict(group)
        for rebalance in self.rebalances:
            yield "rebalance", asdict(rebalance)
        for fault in self.faults:
            yield "fault", asdict(fault)
        for at, message in self.events:
            yield "event", {"at": at, "message": message}
        for scan in self.scans:
            yield "scan", {**asdict(scan), "key": _b64_or_none(scan.key), "value": _b64_or_none(scan.value)}
        for (topic, partition), end in sorted(self.scan_ends.items()):
            yield "scan_end", {"topic": topic, "partition": partition, "end": end}

    @classmethod
    def load(cls, path: Path) -> History:
        history = cls(started=0.0)
        with path.open() as lines:
            for line in lines:
                item = json.loads(line)
                kind = item.pop("kind")
                if kind == "compacted_topic":
                    history.compacted_topics.append(item["topic"])
                elif kind == "attempt":
                    item["value"] = _unb64(item["value"])
                    item["key"] = _unb64_or_none(item.get("key"))
                    item["outcome"] = Outcome(item["outcome"])
                    history.attempts.append(Attempt(**item))
                elif kind == "read":
                    item["value"] = _unb64(item["value"])
                    history.reads.append(Read(**item))
                elif kind == "commit":
                    item["outcome"] = CommitOutcome(item.get("outcome", "ok"))
                    history.commits.append(Commit(**item))
                elif kind == "group":
                    item["topics"] = tuple(item["topics"])
                    item["partitions"] = tuple((t, p) for t, p in item["partitions"])
                    history.groups.append(GroupRecord(**item))
                elif kind == "rebalance":
                    item["partitions"] = tuple((t, p) for t, p in item["partitions"])
                    history.rebalances.append(Rebalance(**item))
                elif kind == "fault":
                    item["nodes"] = tuple(item["nodes"])
                    item["affected"] = tuple((t, p) for t, p in item["affected"])
                    history.faults.append(FaultRecord(**item))
                elif kind == "event":
                    history.events.append((item["at"], item["message"]))
                elif kind == "scan":
                    item["key"] = _unb64_or_none(item["key"])
                    item["value"] = _unb64_or_none(item["value"])
                    history.scans.append(ScanRecord(**item))
                elif kind == "scan_end":
                    history.scan_ends[(item["topic"], item["partition"])] = item["end"]
        return history


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _b64_or_none(data: bytes | None) -> str | None:
    return None if data is None else _b64(data)


def _unb64_or_none(text: str | None) -> bytes | None:
    return None if text is None else _unb64(text)
