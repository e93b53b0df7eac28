"""Errors a partition replica returns to whoever produces to or reads from it.

Each carries a ``reason`` in UPPER_SNAKE_CASE (the ``raftlog.v1.ErrorInfo``
reason the front end sends) and a message that says what to do. Which are
safe to retry:

- ``NotLeaderError``: nothing was appended here; retry on ``leader`` (a node
  id, 0 when unknown).
- ``OutcomeUnknown``: the batch was proposed but this replica lost leadership
  (or stopped) before it knew whether it committed. An idempotent producer
  retries with the same sequence and gets either the original offsets or a
  fresh append, never both.
- ``Backpressure``: too many bytes are waiting to commit; retry after a
  moment.
- ``DiskFull``: this node's data disk is below its reserve
  (partitions/disk_space.py); nothing was appended. Retry later (after
  ``DISK_FULL_RETRY_AFTER_MS``) or on another leader.
- ``ProduceRejected``: the batch itself is wrong (bad CRC, stale producer
  epoch, sequence gap...). Retrying the same bytes fails the same way.
- ``ReplicaStopped``: the replica is shutting down or failed (its storage
  writer failed); the node must restart.

Every ``reason`` is a ``raftlog.v1.reasons.Reason`` (``ProduceRejected``
converts the validator's or the state machine's narrower enum member; both
enums are subsets of ``Reason``, tests/test_contract.py checks it).
"""

from __future__ import annotations

from raftlog.v1.reasons import Reason


class ReplicaError(Exception):
    """Base of the errors in this module."""

    reason: Reason = Reason.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotLeaderError(ReplicaError):
    reason = Reason.NOT_LEADER

    def __init__(self, group: int, leader: int) -> None:
        hint = f"node {leader}" if leader else "unknown (an election is under way)"
        super().__init__(f"this replica of group {group} is not its leader; the leader is {hint}")
        self.group = group
        self.leader = leader


class OutcomeUnknown(ReplicaError):
    reason = Reason.OUTCOME_UNKNOWN

    def __init__(self, group: int, leader: int) -> None:
        super().__init__(
            f"group {group} lost its leader before this batch was known to commit; "
            "retry it unchanged (an idempotent producer's retry is never duplicated)"
        )
        self.group = group
        self.leader = leader


class Backpressure(ReplicaError):
    reason = Reason.BACKPRESSURE


DISK_FULL_RETRY_AFTER_MS = 1000
"""What a client refused with ``DISK_FULL`` is told to wait: freeing disk
space takes an operator or a retention pass, not milliseconds."""


class DiskFull(ReplicaError):
    reason = Reason.DISK_FULL


class ProduceRejected(ReplicaError):
    """The batch is invalid; ``reason`` comes from the validator or the state
    machine (e.g. ``CORRUPT_BATCH``, ``INVALID_PRODUCER_EPOCH``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = Reason(reason)


class ReplicaStopped(ReplicaError):
    reason = Reason.REPLICA_STOPPED
