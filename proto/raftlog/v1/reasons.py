"""The error-reason vocabulary of the ``raftlog.v1`` API: every value a node
may put in ``raftlog.v1.ErrorInfo.reason``.

Hand-written and stdlib-only, like ``headers`` and ``record_batch``: the
server raises with ``Reason.X`` (``cluster.frontend.grpc_errors.ServiceError``
takes a ``Reason``, so mypy refuses a free string) and the SDK's reason table
(``client/errors.py``) is keyed by it. ``tests/test_contract.py`` fails when
a member has no SDK exception class, or when server code names a reason that
is not listed here.

Invariants:

- A value never changes meaning and is never removed while a released SDK
  may switch on it; values are UPPER_SNAKE_CASE and equal to the member name.
- One reason may travel with more than one status code (``INVALID_API_KEY``
  is ``UNAUTHENTICATED`` from the front door and ``INVALID_ARGUMENT`` from a
  refused controller command); the SDK picks its class by reason.

Narrower enums stay where they are and are *checked against* this one rather
than derived from it: ``cluster.controller.results.RejectReason`` and
``partitions.results.RejectReason`` are part of deterministic state-machine
results, ``raftlog.v1.record_batch.InvalidBatchReason`` belongs to the batch
codec, and the consumer-group errors (``cluster.groups``) to a pure core that
must not know the wire. A StrEnum with members cannot be subclassed, so
"derive" would mean one flat enum for four layers; instead the boundary
converts with ``Reason(member)`` and ``tests/test_contract.py`` asserts every
member of each narrower enum is a ``Reason`` (so that conversion cannot fail).
"""

from __future__ import annotations

import enum

__all__ = ["Reason"]


class Reason(enum.StrEnum):
    """Why a call failed. The comment after a group names where it comes from."""

    # --- the front door: who is calling (cluster/frontend/auth.py, front_door.py)
    MISSING_API_KEY = "MISSING_API_KEY"
    """UNAUTHENTICATED: no ``authorization`` header."""
    INVALID_API_KEY = "INVALID_API_KEY"
    """UNAUTHENTICATED: a malformed, unknown or revoked key (also a refused
    controller command with key material of the wrong shape)."""
    OPERATOR_KEY_REQUIRED = "OPERATOR_KEY_REQUIRED"
    """PERMISSION_DENIED: an operator-only call made with a tenant key."""
    UNKNOWN_TENANT = "UNKNOWN_TENANT"
    """NOT_FOUND: the tenant does not exist, or the key cannot act in it."""
    INTERNAL = "INTERNAL"
    """INTERNAL: an unexpected failure, logged on the node that had it."""
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    """INVALID_ARGUMENT: the request bytes are not the method's request message."""
    INTERNAL_TOPIC = "INTERNAL_TOPIC"
    """PERMISSION_DENIED: only the node itself writes an internal topic (one
    of the ``__system`` tenant, or named ``__...``), whatever the key."""
    KEY_SCOPE = "KEY_SCOPE"
    """PERMISSION_DENIED: the key's scope (its role, topic or group
    prefixes) does not cover this call on a name of its own tenant."""
    API_KEY_EXPIRED = "API_KEY_EXPIRED"
    """UNAUTHENTICATED: the key's expiry time has passed (a rotation's
    grace period ended); use the key that replaced it."""

    # --- locating a partition or a coordinator (cluster/frontend/log_service.py, groups)
    UNKNOWN_TOPIC_OR_PARTITION = "UNKNOWN_TOPIC_OR_PARTITION"
    NOT_LEADER = "NOT_LEADER"
    """FAILED_PRECONDITION: ask the leader (``leader_address`` when known)."""
    NOT_COORDINATOR = "NOT_COORDINATOR"
    """FAILED_PRECONDITION: ask the group's coordinator instead."""
    NO_CONTROLLER = "NO_CONTROLLER"
    """UNAVAILABLE: the metadata controller has no leader right now."""
    OFFSET_OUT_OF_RANGE = "OFFSET_OUT_OF_RANGE"

    # --- a partition replica (partitions/replica_errors.py)
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"
    BACKPRESSURE = "BACKPRESSURE"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    """RESOURCE_EXHAUSTED: the tenant is over a quota. A rate (bytes/s,
    requests/s) or storage: wait ``retry_after_ms``. A count (partitions,
    topics, groups, streams): ``retry_after_ms`` is 0, and retrying does not
    help until something is deleted or the quota raised."""
    DISK_FULL = "DISK_FULL"
    """RESOURCE_EXHAUSTED: the leader's data disk is (nearly) full; it
    refuses writes and still serves reads until space returns."""
    REPLICA_STOPPED = "REPLICA_STOPPED"

    # --- a produce refused by the partition state machine (partitions/results.py)
    OUT_OF_ORDER_SEQUENCE = "OUT_OF_ORDER_SEQUENCE"
    INVALID_PRODUCER_EPOCH = "INVALID_PRODUCER_EPOCH"
    UNKNOWN_PRODUCER_ID = "UNKNOWN_PRODUCER_ID"
    DUPLICATE_SEQUENCE = "DUPLICATE_SEQUENCE"
    INVALID_BATCH = "INVALID_BATCH"
    INVALID_COMMAND = "INVALID_COMMAND"
    """Also a controller command that is not well formed."""
    KEY_REQUIRED = "KEY_REQUIRED"
    """A record without a key produced to a compacted topic (the leader's
    check before proposing, partitions/replica.py)."""

    # --- a batch refused by the codec (raftlog/v1/record_batch.py InvalidBatchReason)
    BATCH_TOO_SHORT = "BATCH_TOO_SHORT"
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    DECOMPRESSED_TOO_LARGE = "DECOMPRESSED_TOO_LARGE"
    BAD_LENGTH = "BAD_LENGTH"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    CORRUPT_BATCH = "CORRUPT_BATCH"
    UNSUPPORTED_CODEC = "UNSUPPORTED_CODEC"
    UNSUPPORTED_ATTRIBUTES = "UNSUPPORTED_ATTRIBUTES"
    BAD_RECORD_COUNT = "BAD_RECORD_COUNT"
    BAD_TIMESTAMPS = "BAD_TIMESTAMPS"
    BAD_PRODUCER_FIELDS = "BAD_PRODUCER_FIELDS"
    MALFORMED_RECORDS = "MALFORMED_RECORDS"

    # --- admin requests (cluster/frontend/admin_service.py, cluster/primitives/pagination.py)
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    INVALID_PAGE_SIZE = "INVALID_PAGE_SIZE"
    INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
    PLACEMENT_FAILED = "PLACEMENT_FAILED"
    NOT_COMPACTED = "NOT_COMPACTED"
    """FAILED_PRECONDITION: CompactTopic on a topic whose cleanup_policy is
    ``delete``: alter it to ``compact`` first."""
    COMPACTION_UNAVAILABLE = "COMPACTION_UNAVAILABLE"
    """UNAVAILABLE: CompactTopic could not start a pass on some partition
    (no leader known, or it did not answer): retry; a pass is harmless to
    repeat."""

    # --- a refused controller command (cluster/controller/results.py RejectReason)
    INVALID_NAME = "INVALID_NAME"
    """Also a consumer-group, client id or topic name in a group request."""
    TENANT_EXISTS = "TENANT_EXISTS"
    TENANT_NOT_EMPTY = "TENANT_NOT_EMPTY"
    API_KEY_EXISTS = "API_KEY_EXISTS"
    UNKNOWN_API_KEY = "UNKNOWN_API_KEY"
    TOPIC_EXISTS = "TOPIC_EXISTS"
    UNKNOWN_TOPIC = "UNKNOWN_TOPIC"
    INVALID_PARTITIONS = "INVALID_PARTITIONS"
    TOO_MANY_PARTITIONS = "TOO_MANY_PARTITIONS"
    """FAILED_PRECONDITION: the new topic does not fit the tenant's or the
    cluster's partition cap; delete topics first."""
    INVALID_REPLICATION_FACTOR = "INVALID_REPLICATION_FACTOR"
    REPLICATION_FACTOR_TOO_LARGE = "REPLICATION_FACTOR_TOO_LARGE"
    INVALID_RETENTION = "INVALID_RETENTION"
    INVALID_TOPIC_CONFIG = "INVALID_TOPIC_CONFIG"
    INVALID_QUOTA = "INVALID_QUOTA"
    INVALID_KEY_SCOPE = "INVALID_KEY_SCOPE"
    """INVALID_ARGUMENT: a cleanup setting out of its range (the message
    names the setting and the values it takes)."""
    INVALID_ASSIGNMENT = "INVALID_ASSIGNMENT"
    INVALID_NODE = "INVALID_NODE"
    ADDRESS_IN_USE = "ADDRESS_IN_USE"
    UNKNOWN_NODE = "UNKNOWN_NODE"
    NODE_DECOMMISSIONING = "NODE_DECOMMISSIONING"
    NODE_NOT_DECOMMISSIONING = "NODE_NOT_DECOMMISSIONING"
    NODE_HAS_REPLICAS = "NODE_HAS_REPLICAS"
    LIVENESS_UNCHANGED = "LIVENESS_UNCHANGED"
    NODE_UNAVAILABLE = "NODE_UNAVAILABLE"
    UNKNOWN_GROUP = "UNKNOWN_GROUP"
    """A Raft group (a partition's replicas), not a consumer group."""
    STALE_REVISION = "STALE_REVISION"
    ALREADY_REPLICA = "ALREADY_REPLICA"
    NOT_A_LEARNER = "NOT_A_LEARNER"
    NOT_A_REPLICA = "NOT_A_REPLICA"
    LAST_VOTER = "LAST_VOTER"
    INVALID_POSITION = "INVALID_POSITION"

    # --- joining the cluster (cluster/internal/join.py; not public, same ErrorInfo)
    CLUSTER_MISMATCH = "CLUSTER_MISMATCH"
    NODE_ID_IN_USE = "NODE_ID_IN_USE"

    # --- consumer groups (cluster/groups/)
    UNKNOWN_MEMBER_ID = "UNKNOWN_MEMBER_ID"
    FENCED_MEMBER = "FENCED_MEMBER"
    STALE_MEMBER_EPOCH = "STALE_MEMBER_EPOCH"
    GROUP_MAX_SIZE_REACHED = "GROUP_MAX_SIZE_REACHED"
    GROUP_NOT_FOUND = "GROUP_NOT_FOUND"
    INVALID_SUBSCRIPTION = "INVALID_SUBSCRIPTION"
    INVALID_OFFSET = "INVALID_OFFSET"
    OFFSET_METADATA_TOO_LARGE = "OFFSET_METADATA_TOO_LARGE"
    DUPLICATE_PARTITION = "DUPLICATE_PARTITION"
    INVALID_SESSION_TIMEOUT = "INVALID_SESSION_TIMEOUT"
    INVALID_REBALANCE_TIMEOUT = "INVALID_REBALANCE_TIMEOUT"
    OFFSETS_LOG_UNREADABLE = "OFFSETS_LOG_UNREADABLE"
