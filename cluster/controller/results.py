"""What applying one metadata command returns.

Invariants:

- Exactly one result per applied command entry, computed from the command
  and the state alone, so every node returns the same result for the same
  entry (the controller leader hands it to the caller who proposed it).
- A ``Rejected`` command changed nothing: the state after it equals the
  state after a no-op entry at the same index (tests check the snapshot
  bytes).
- ``Rejected.reason`` is a ``RejectReason``: stable and machine-readable (the
  admin service maps it to a gRPC status); ``message`` says what is wrong.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Applied", "ApplyResult", "AssignmentChanged", "RejectReason", "Rejected", "TopicCreated"]


class RejectReason(enum.StrEnum):
    INVALID_COMMAND = "INVALID_COMMAND"
    """The entry data is not a well-formed command."""
    INVALID_NAME = "INVALID_NAME"
    """A tenant or topic name breaks the naming rules (``model``)."""
    TENANT_EXISTS = "TENANT_EXISTS"
    UNKNOWN_TENANT = "UNKNOWN_TENANT"
    TENANT_NOT_EMPTY = "TENANT_NOT_EMPTY"
    """A tenant with topics cannot be deleted: delete its topics first."""
    INVALID_API_KEY = "INVALID_API_KEY"
    """A key id, salt or digest of the wrong shape."""
    API_KEY_EXISTS = "API_KEY_EXISTS"
    UNKNOWN_API_KEY = "UNKNOWN_API_KEY"
    TOPIC_EXISTS = "TOPIC_EXISTS"
    UNKNOWN_TOPIC = "UNKNOWN_TOPIC"
    INVALID_PARTITIONS = "INVALID_PARTITIONS"
    """Below 1 or above ``MAX_PARTITIONS`` (per topic)."""
    TOO_MANY_PARTITIONS = "TOO_MANY_PARTITIONS"
    """The new topic does not fit the cluster's partition cap
    (``model.check_partitions``; a tenant's own cap is its quota:
    ``QUOTA_EXCEEDED``)."""
    INVALID_REPLICATION_FACTOR = "INVALID_REPLICATION_FACTOR"
    """Below 1 or above ``MAX_REPLICATION_FACTOR``."""
    REPLICATION_FACTOR_TOO_LARGE = "REPLICATION_FACTOR_TOO_LARGE"
    """More replicas than live nodes (alive and not decommissioning)."""
    INVALID_RETENTION = "INVALID_RETENTION"
    INVALID_TOPIC_CONFIG = "INVALID_TOPIC_CONFIG"
    """A cleanup setting out of its range (``model.check_topic_config``)."""
    INVALID_ASSIGNMENT = "INVALID_ASSIGNMENT"
    """The proposed replicas do not match the topic's shape or name nodes
    that cannot take replicas (unknown, dead or decommissioning)."""
    INVALID_NODE = "INVALID_NODE"
    """A node id, address or zone label of the wrong shape."""
    ADDRESS_IN_USE = "ADDRESS_IN_USE"
    UNKNOWN_NODE = "UNKNOWN_NODE"
    NODE_DECOMMISSIONING = "NODE_DECOMMISSIONING"
    NODE_NOT_DECOMMISSIONING = "NODE_NOT_DECOMMISSIONING"
    NODE_HAS_REPLICAS = "NODE_HAS_REPLICAS"
    LIVENESS_UNCHANGED = "LIVENESS_UNCHANGED"
    """Only transitions are commands: the node is already in that state."""
    NODE_UNAVAILABLE = "NODE_UNAVAILABLE"
    """A new replica cannot go to a dead or decommissioning node."""
    UNKNOWN_GROUP = "UNKNOWN_GROUP"
    STALE_REVISION = "STALE_REVISION"
    """The group changed since the proposer planned the step: plan again."""
    ALREADY_REPLICA = "ALREADY_REPLICA"
    NOT_A_LEARNER = "NOT_A_LEARNER"
    NOT_A_REPLICA = "NOT_A_REPLICA"
    LAST_VOTER = "LAST_VOTER"
    """Removing the group's only voter would leave it without a quorum."""
    INVALID_POSITION = "INVALID_POSITION"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    """The new topic does not fit the tenant's partition or topic quota
    (``ControllerState.check_new_topic``); waiting does not help."""
    INVALID_QUOTA = "INVALID_QUOTA"
    """A quota below 0 (``quotas.check_quota``)."""
    INVALID_KEY_SCOPE = "INVALID_KEY_SCOPE"
    """A key's role or prefixes do not fit its tenant
    (``model.check_key_scope``), or a negative expiry."""


@dataclass(frozen=True, slots=True)
class Applied:
    """The command at ``index`` took effect."""

    index: int


@dataclass(frozen=True, slots=True)
class TopicCreated:
    """The topic exists at ``revision`` (the index of its create command)
    with one Raft group per partition, ``groups[p]`` for partition ``p``."""

    index: int
    revision: int
    groups: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AssignmentChanged:
    """``group``'s replicas changed; ``revision`` is its new revision."""

    index: int
    group: int
    revision: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """Nothing changed; ``reason`` says why."""

    reason: RejectReason
    message: str


ApplyResult = Applied | TopicCreated | AssignmentChanged | Rejected
