"""Consumer groups: a coordinator per group, server-side assignment, fenced
offset commits stored durably in a Raft-replicated log.

The modules, lowest first (each imports only the ones above it):

- ``assignor``: the deterministic, sticky, balanced partition assignor;
- ``membership``: one group's members, epochs, target assignment and the
  revocation handshake (pure: time and metadata are passed in);
- ``offsets``: the record format of the coordinator partition's log (offset
  commits, coordinator starts, group metadata; keyed for compaction) and the
  ``CommittedOffsets`` table rebuilt from it;
- ``takeover``: why a new coordinator may resume the recorded groups at once
  (the argument), and the replayed state it resumes from;
- ``coordinator``: every group of one coordinator partition, commit
  validation, replay, takeover, the failover fence for older logs;
- ``service``: the gRPC ``raftlog.v1.GroupService`` over the pure core and an
  abstract durable ``OffsetsLog``.

This module holds the vocabulary they share: ``TopicPartition`` and the error
tree. Every error carries the ``raftlog.v1.ErrorInfo`` reason it becomes at
the gRPC boundary (``service`` maps the classes to status codes in one table),
so the pure core never imports grpc.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "FencedMemberError",
    "GroupError",
    "GroupFullError",
    "GroupNotFoundError",
    "InvalidGroupRequest",
    "StaleMemberEpochError",
    "TopicPartition",
    "UnknownMemberError",
    "UnknownPartitionError",
]


class TopicPartition(NamedTuple):
    """One partition of one topic; sorts by topic, then partition."""

    topic: str
    partition: int


class GroupError(Exception):
    """Base of the consumer-group errors. ``reason`` is the ErrorInfo reason."""

    reason = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidGroupRequest(GroupError):
    """A request that can never succeed as sent (bad name, timeout out of
    bounds, oversize metadata...). ``reason`` names the field's rule."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnknownMemberError(GroupError):
    """The member id is not in the group (never joined, left, expired, or the
    coordinator failed over and lost its soft state): rejoin."""

    reason = "UNKNOWN_MEMBER_ID"


class FencedMemberError(GroupError):
    """The request comes from an incarnation of the member the coordinator no
    longer recognises (an epoch it never gave, or an older one): drop every
    partition without committing, then rejoin."""

    reason = "FENCED_MEMBER"


class StaleMemberEpochError(GroupError):
    """A commit for partitions the member does not own at the epoch it sent
    (given to it later, or taken away): heartbeat, then commit what the
    current assignment allows."""

    reason = "STALE_MEMBER_EPOCH"


class GroupFullError(GroupError):
    reason = "GROUP_MAX_SIZE_REACHED"


class GroupNotFoundError(GroupError):
    reason = "GROUP_NOT_FOUND"


class UnknownPartitionError(GroupError):
    reason = "UNKNOWN_TOPIC_OR_PARTITION"
