"""Helpers shared by the partition state machine tests (test_state_machine*.py):
batch builders and ``Feed``, which drives a ``PartitionStateMachine`` the way
the replica driver does.

- ``Feed`` gives each entry the next Raft index and records it in ``log``
  (``None`` for a noop), so ``replay`` can apply the same log to another
  state machine and compare its results with ``Feed.results``.
- ``state_of`` is everything a snapshot holds except the index: equal
  values mean "nothing changed".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from partitions.commands import encode_produce
from partitions.partition_snapshot import PartitionImage, decode_image
from partitions.state_machine import (
    Appended,
    ApplyResult,
    PartitionConfig,
    PartitionStateMachine,
    Rejected,
    RejectReason,
)
from raftlog.v1.record_batch import Record, encode_batch

WRAP = 2**31
NO_RETENTION = PartitionConfig(retention_ms=None, retention_bytes=None)


def batch(
    n: int = 1, *, pid: int = -1, epoch: int = -1, seq: int = -1, ts: int = 1_000, size: int = 10
) -> bytes:
    records = [Record(b"v" * size, timestamp_ms=ts) for _ in range(n)]
    return encode_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def pbatch(pid: int, seq: int, n: int = 1, epoch: int = 0, **kwargs: int) -> bytes:
    return batch(n, pid=pid, epoch=epoch, seq=seq, **kwargs)


@dataclass
class Feed:
    """Drives a state machine like the replica driver does, keeping the log
    (to replay it elsewhere) and every result."""

    sm: PartitionStateMachine
    log: list[tuple[int, bytes | None]] = field(default_factory=list)
    results: dict[int, ApplyResult] = field(default_factory=dict)
    now: int = 1_000

    @property
    def index(self) -> int:
        return self.sm.applied_index

    def produce(self, data: bytes, at: int | None = None) -> ApplyResult:
        if at is not None:
            self.now = at
        return self.command(encode_produce(data, self.now))

    def command(self, data: bytes) -> ApplyResult:
        index = self.index + 1
        self.log.append((index, data))
        result = self.sm.apply(index, data)
        self.results[index] = result
        return result

    def noop(self) -> None:
        index = self.index + 1
        self.log.append((index, None))
        self.sm.apply_noop(index)


def feed(config: PartitionConfig = NO_RETENTION) -> Feed:
    return Feed(PartitionStateMachine(config))


def replay(sm: PartitionStateMachine, log: list[tuple[int, bytes | None]]) -> dict[int, ApplyResult]:
    """Apply the entries after ``sm.applied_index``; their results."""
    results: dict[int, ApplyResult] = {}
    for index, data in log:
        if index <= sm.applied_index:
            continue
        if data is None:
            sm.apply_noop(index)
        else:
            results[index] = sm.apply(index, data)
    return results


def state_of(sm: PartitionStateMachine) -> PartitionImage:
    """Everything a snapshot holds but the index (to say "nothing changed")."""
    snapshot = sm.checkpoint()
    return dataclasses.replace(decode_image(snapshot.data, snapshot.index), index=0)


def appended(result: ApplyResult) -> Appended:
    assert isinstance(result, Appended), result
    return result


def rejected(result: ApplyResult, reason: RejectReason) -> Rejected:
    assert isinstance(result, Rejected), result
    assert result.reason == reason, result
    assert result.message
    return result
