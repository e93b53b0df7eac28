"""The SDK's exceptions, and the one place gRPC failures become them.

Every exception the SDK raises (or sets on a record's future) is a
``RaftlogError``. It carries:

- ``reason``: the machine-readable cause in UPPER_SNAKE_CASE, the server's
  ``ErrorInfo.reason`` (``NOT_LEADER``, ``CORRUPT_BATCH``...) or the SDK's own
  (``DELIVERY_TIMEOUT``, ``RECORD_TOO_LARGE``...). Switch on it or on the
  class, never on ``message``;
- ``message``: what happened and what to do, for people;
- ``code``: the gRPC status code (``None`` for errors raised by the SDK
  without a server answer);
- ``retriable``: whether sending the same request again may succeed;
- ``leader_address`` (``NOT_LEADER``), ``retry_after_ms`` (``BACKPRESSURE``)
  and ``metadata`` (further details, such as the offsets of
  ``OFFSET_OUT_OF_RANGE``).

The tree (with the server reasons, ``raftlog.v1.reasons.Reason``, that map
to each class; a class also stands for its status code when a reason is
unknown)::

    RaftlogError
    ├── RetriableError                 retriable: the SDK retries these itself
    │   ├── NotLeaderError             NOT_LEADER: ask the leader instead
    │   ├── LeaderNotAvailableError    no leader known (election under way)
    │   ├── OutcomeUnknownError        OUTCOME_UNKNOWN: may or may not have committed
    │   ├── BackpressureError          BACKPRESSURE / RESOURCE_EXHAUSTED: slow down
    │   ├── UnavailableError           UNAVAILABLE, CANCELLED, ABORTED: node down or restarting
    │   │                              (REPLICA_STOPPED, NO_CONTROLLER)
    │   ├── RequestTimeoutError        DEADLINE_EXCEEDED: no answer in time
    │   └── NotCoordinatorError        NOT_COORDINATOR: ask the group's coordinator instead
    ├── NotFoundError                  UNKNOWN_NODE, UNKNOWN_API_KEY, UNKNOWN_GROUP (a Raft group)
    │   ├── UnknownTopicOrPartitionError  NOT_FOUND (UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC)
    │   ├── UnknownTenantError         UNKNOWN_TENANT
    │   └── GroupNotFoundError         GROUP_NOT_FOUND
    ├── OffsetOutOfRangeError          OUT_OF_RANGE (log_start_offset, high_watermark)
    ├── InvalidRequestError            INVALID_ARGUMENT (INVALID_NAME, INVALID_PAGE_TOKEN,
    │   │                              INVALID_PARTITIONS, MALFORMED_REQUEST, ...)
    │   └── InvalidBatchError          batch validation reasons (CORRUPT_BATCH, INVALID_BATCH, ...)
    ├── ProducerStateError             FAILED_PRECONDITION, producer state
    │   ├── ProducerFencedError        INVALID_PRODUCER_EPOCH
    │   ├── OutOfOrderSequenceError    OUT_OF_ORDER_SEQUENCE
    │   ├── UnknownProducerIdError     UNKNOWN_PRODUCER_ID
    │   └── DuplicateSequenceError     DUPLICATE_SEQUENCE
    ├── DeliveryTimeoutError           the SDK gave up retrying (``cause``: last error)
    ├── RecordTooLargeError            refused before sending
    ├── ClientClosedError              the producer/consumer is closed
    ├── AuthenticationError            UNAUTHENTICATED: MISSING_API_KEY, INVALID_API_KEY
    ├── AuthorizationError             PERMISSION_DENIED: OPERATOR_KEY_REQUIRED, INTERNAL_TOPIC
    ├── AlreadyExistsError             ALREADY_EXISTS (TOPIC_EXISTS, TENANT_EXISTS, ...)
    ├── PreconditionFailedError        FAILED_PRECONDITION, any other reason
    │                                  (REPLICATION_FACTOR_TOO_LARGE, TOO_MANY_PARTITIONS,
    │                                  TENANT_NOT_EMPTY, ...)
    ├── ServerError                    anything else (INTERNAL, UNIMPLEMENTED, OFFSETS_LOG_UNREADABLE)
    ├── GroupFullError                 GROUP_MAX_SIZE_REACHED
    └── GroupMembershipError           FAILED_PRECONDITION, group membership
        ├── FencedMemberError          FENCED_MEMBER: drop every partition, join again
        ├── UnknownMemberIdError       UNKNOWN_MEMBER_ID: drop every partition, join again
        └── StaleMemberEpochError      STALE_MEMBER_EPOCH: heartbeat, then commit again

``from_rpc_error`` maps a failed call: it reads the ``google.rpc.Status`` in
the ``grpc-status-details-bin`` trailer and its ``raftlog.v1.ErrorInfo``
detail; without one (a proxy, a crashed node, a connection failure) it falls
back to the status code and details string. The class is chosen by reason
first (``_BY_REASON`` names one for every ``Reason``: tests/test_contract.py
checks it), then by code, so a reason from a newer server still gets the
right retry behaviour from its code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import grpc

from client.rpc_status import call_value, error_info
from raftlog.v1.headers import STATUS_DETAILS
from raftlog.v1.reasons import Reason

__all__ = [
    "CALLER_ERRORS",
    "DETAILS_KEY",
    "AlreadyExistsError",
    "AuthenticationError",
    "AuthorizationError",
    "BackpressureError",
    "ClientClosedError",
    "DeliveryTimeoutError",
    "DuplicateSequenceError",
    "FencedMemberError",
    "GroupFullError",
    "GroupMembershipError",
    "GroupNotFoundError",
    "InvalidBatchError",
    "InvalidRequestError",
    "LeaderNotAvailableError",
    "NotCoordinatorError",
    "NotFoundError",
    "NotLeaderError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "OutcomeUnknownError",
    "PreconditionFailedError",
    "ProducerFencedError",
    "ProducerStateError",
    "QuotaExceededError",
    "RaftlogError",
    "RecordTooLargeError",
    "RequestTimeoutError",
    "RetriableError",
    "ServerError",
    "StaleMemberEpochError",
    "StorageFullError",
    "UnavailableError",
    "UnknownMemberIdError",
    "UnknownProducerIdError",
    "UnknownTenantError",
    "UnknownTopicOrPartitionError",
    "error_info",
    "from_rpc_error",
]

DETAILS_KEY = STATUS_DETAILS
"""The trailer that carries a serialized ``google.rpc.Status``
(``raftlog.v1.headers.STATUS_DETAILS``; this name is kept for callers)."""


class RaftlogError(Exception):
    """Base of every SDK error. See the module docstring for the fields."""

    default_reason: ClassVar[str] = "UNKNOWN"
    default_retriable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        code: grpc.StatusCode | None = None,
        retriable: bool | None = None,
        leader_address: str = "",
        retry_after_ms: int = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.reason = reason or self.default_reason
        self.message = message
        self.code = code
        self.retriable = self.default_retriable if retriable is None else retriable
        self.leader_address = leader_address
        self.retry_after_ms = retry_after_ms
        self.metadata: dict[str, str] = dict(metadata or {})
        super().__init__(f"{self.reason}: {message}")


class RetriableError(RaftlogError):
    """The same request may succeed later or on another node. Producers and
    consumers retry these themselves (within their timeouts)."""

    default_retriable = True


class NotLeaderError(RetriableError):
    """The node asked does not lead the partition; ``leader_address`` names
    the leader when the node knows it. Nothing was written."""

    default_reason = "NOT_LEADER"


class LeaderNotAvailableError(RetriableError):
    """No node is known to lead the partition (an election is under way).
    Raised by the SDK from its metadata; nothing was sent."""

    default_reason = "LEADER_NOT_AVAILABLE"


class OutcomeUnknownError(RetriableError):
    """The leader lost leadership before it knew whether the batch
    committed. An idempotent producer resends the same bytes: the server
    answers with the original offsets or appends it once."""

    default_reason = "OUTCOME_UNKNOWN"


class BackpressureError(RetriableError):
    """The server is overloaded; wait ``retry_after_ms`` (when set) before
    trying again. Nothing was written."""

    default_reason = "BACKPRESSURE"


class QuotaExceededError(BackpressureError):
    """The tenant is over a quota. Over a rate or its storage the server
    names ``retry_after_ms`` and the SDK waits that long before its retry;
    over a count (partitions, topics, groups, streams) ``retry_after_ms`` is
    0 and the error is not retriable: delete something or ask an operator
    to raise the quota. Nothing was written."""

    default_reason = "QUOTA_EXCEEDED"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        code: grpc.StatusCode | None = None,
        retriable: bool | None = None,
        leader_address: str = "",
        retry_after_ms: int = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            message,
            reason=reason,
            code=code,
            retriable=retry_after_ms > 0 if retriable is None else retriable,
            leader_address=leader_address,
            retry_after_ms=retry_after_ms,
            metadata=metadata,
        )


class StorageFullError(RetriableError):
    """The leader's data disk is full: it refuses writes (reads still work)
    until space returns or leadership moves. Nothing was written."""

    default_reason = "DISK_FULL"


class UnavailableError(RetriableError):
    """The node could not be reached or is stopping. A write sent before
    this may or may not have committed."""

    default_reason = "UNAVAILABLE"


class RequestTimeoutError(RetriableError):
    """No answer before the request's deadline. A write may or may not have
    committed."""

    default_reason = "DEADLINE_EXCEEDED"


class NotFoundError(RaftlogError):
    """What the call names does not exist (NOT_FOUND): a node, an API key,
    a group (topics and tenants have their own subclasses)."""

    default_reason = "NOT_FOUND"


class UnknownTopicOrPartitionError(NotFoundError):
    """The topic or partition does not exist (or this client may not see it)."""

    default_reason = "UNKNOWN_TOPIC_OR_PARTITION"


class OffsetOutOfRangeError(RaftlogError):
    """A fetch offset is outside ``[log_start_offset, high_watermark]``."""

    default_reason = "OFFSET_OUT_OF_RANGE"

    @property
    def log_start_offset(self) -> int | None:
        return _int_or_none(self.metadata.get("log_start_offset"))

    @property
    def high_watermark(self) -> int | None:
        return _int_or_none(self.metadata.get("high_watermark"))


class InvalidRequestError(RaftlogError):
    """The request is malformed (INVALID_ARGUMENT); resending it fails again."""

    default_reason = "INVALID_ARGUMENT"


class InvalidBatchError(InvalidRequestError):
    """The server refused the record batch (bad CRC, too large, ...). Nothing
    was written."""

    default_reason = "INVALID_BATCH"


class ProducerStateError(RaftlogError):
    """The batch disagrees with the partition's record of this producer."""

    default_reason = "PRODUCER_STATE"


class ProducerFencedError(ProducerStateError):
    """A newer instance of this producer took over (its epoch is higher).
    Fatal for this producer: every later send fails with it."""

    default_reason = "INVALID_PRODUCER_EPOCH"


class OutOfOrderSequenceError(ProducerStateError):
    """The batch's sequence is not the one the partition expects."""

    default_reason = "OUT_OF_ORDER_SEQUENCE"


class UnknownProducerIdError(ProducerStateError):
    """The partition has no state for this producer (new or expired) and the
    batch does not start at sequence 0."""

    default_reason = "UNKNOWN_PRODUCER_ID"


class DuplicateSequenceError(ProducerStateError):
    """The batch was written long ago (before the partition's dedup window):
    it is in the log once; do not resend it."""

    default_reason = "DUPLICATE_SEQUENCE"


class DeliveryTimeoutError(RaftlogError):
    """The SDK stopped retrying a request at its deadline. ``cause`` is the
    last error seen. For a produce, the records may or may not have been
    written (``cause`` tells whether any attempt could have committed)."""

    default_reason = "DELIVERY_TIMEOUT"

    def __init__(self, message: str, *, cause: RaftlogError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class RecordTooLargeError(RaftlogError):
    """A record does not fit in one batch of the server's maximum size;
    refused before anything was sent."""

    default_reason = "RECORD_TOO_LARGE"


class ClientClosedError(RaftlogError):
    """The producer or consumer is closed (or closing)."""

    default_reason = "CLIENT_CLOSED"


class AuthenticationError(RaftlogError):
    """No API key, or one the cluster does not know (UNAUTHENTICATED):
    check RAFTLOG_API_KEY / the ``api_key`` argument."""

    default_reason = "INVALID_API_KEY"


class AuthorizationError(RaftlogError):
    """The key is valid but may not do this (PERMISSION_DENIED), e.g. a
    tenant key calling an operator-only admin method."""

    default_reason = "OPERATOR_KEY_REQUIRED"


class UnknownTenantError(NotFoundError):
    """The tenant does not exist, or this key cannot act in it."""

    default_reason = "UNKNOWN_TENANT"


class AlreadyExistsError(RaftlogError):
    """What the call would create exists already (ALREADY_EXISTS)."""

    default_reason = "ALREADY_EXISTS"


class PreconditionFailedError(RaftlogError):
    """The request is well formed but the cluster's state does not allow it
    now (FAILED_PRECONDITION), e.g. REPLICATION_FACTOR_TOO_LARGE."""

    default_reason = "FAILED_PRECONDITION"


class ServerError(RaftlogError):
    """Any other failure (INTERNAL, UNIMPLEMENTED, an unknown reason under a
    code that is not retriable)."""

    default_reason = "INTERNAL"


class NotCoordinatorError(RetriableError):
    """The node asked does not serve the consumer group and could not
    forward the request; ``leader_address`` names the group coordinator's
    node when it is known (ask there), otherwise ask another node."""

    default_reason = "NOT_COORDINATOR"


class GroupNotFoundError(NotFoundError):
    """The consumer group does not exist in the caller's tenant."""

    default_reason = "GROUP_NOT_FOUND"


class GroupFullError(RaftlogError):
    """The consumer group already has as many members as it may have."""

    default_reason = "GROUP_MAX_SIZE_REACHED"


class GroupMembershipError(RaftlogError):
    """The group coordinator refused a member's request because of the
    member's standing in the group (FAILED_PRECONDITION). ``rejoin`` says
    whether the member must drop every partition, without committing, and
    join again (a consumer does that itself)."""

    default_reason = "GROUP_MEMBERSHIP"
    rejoin: ClassVar[bool] = False


class FencedMemberError(GroupMembershipError):
    """The coordinator no longer recognises this incarnation of the member
    (an old epoch, or it missed its revocation deadline): its partitions
    may belong to someone else already."""

    default_reason = "FENCED_MEMBER"
    rejoin = True


class UnknownMemberIdError(GroupMembershipError):
    """The member is not in the group (it left, its session expired, or the
    coordinator moved and lost its soft state)."""

    default_reason = "UNKNOWN_MEMBER_ID"
    rejoin = True


class StaleMemberEpochError(GroupMembershipError):
    """A commit named partitions the member does not own at the epoch it
    sent (taken away, or granted after that epoch): heartbeat, then commit
    what the current assignment allows. Nothing was committed."""

    default_reason = "STALE_MEMBER_EPOCH"


CALLER_ERRORS = (AuthenticationError, AuthorizationError, UnknownTenantError)
"""Errors about who is calling: no retry or other node changes them."""

# --- mapping ---------------------------------------------------------------------

R = Reason

_BY_REASON: dict[str, type[RaftlogError]] = {
    # where to send it
    R.NOT_LEADER: NotLeaderError,
    R.NOT_COORDINATOR: NotCoordinatorError,
    R.OUTCOME_UNKNOWN: OutcomeUnknownError,
    R.BACKPRESSURE: BackpressureError,
    R.QUOTA_EXCEEDED: QuotaExceededError,
    R.DISK_FULL: StorageFullError,
    R.REPLICA_STOPPED: UnavailableError,
    R.NO_CONTROLLER: UnavailableError,
    R.COMPACTION_UNAVAILABLE: UnavailableError,
    # who is calling
    R.MISSING_API_KEY: AuthenticationError,
    R.INVALID_API_KEY: AuthenticationError,
    R.OPERATOR_KEY_REQUIRED: AuthorizationError,
    R.KEY_SCOPE: AuthorizationError,
    R.API_KEY_EXPIRED: AuthenticationError,
    R.INTERNAL_TOPIC: AuthorizationError,
    R.UNKNOWN_TENANT: UnknownTenantError,
    # what does not exist
    R.UNKNOWN_TOPIC_OR_PARTITION: UnknownTopicOrPartitionError,
    R.UNKNOWN_TOPIC: UnknownTopicOrPartitionError,
    R.UNKNOWN_NODE: NotFoundError,
    R.UNKNOWN_API_KEY: NotFoundError,
    R.UNKNOWN_GROUP: NotFoundError,
    R.GROUP_NOT_FOUND: GroupNotFoundError,
    R.OFFSET_OUT_OF_RANGE: OffsetOutOfRangeError,
    # producer state
    R.INVALID_PRODUCER_EPOCH: ProducerFencedError,
    R.OUT_OF_ORDER_SEQUENCE: OutOfOrderSequenceError,
    R.UNKNOWN_PRODUCER_ID: UnknownProducerIdError,
    R.DUPLICATE_SEQUENCE: DuplicateSequenceError,
    # the batch itself
    **dict.fromkeys(
        (
            R.INVALID_BATCH,
            R.BATCH_TOO_SHORT,
            R.BATCH_TOO_LARGE,
            R.DECOMPRESSED_TOO_LARGE,
            R.BAD_LENGTH,
            R.UNSUPPORTED_VERSION,
            R.CORRUPT_BATCH,
            R.UNSUPPORTED_CODEC,
            R.UNSUPPORTED_ATTRIBUTES,
            R.BAD_RECORD_COUNT,
            R.BAD_TIMESTAMPS,
            R.BAD_PRODUCER_FIELDS,
            R.MALFORMED_RECORDS,
        ),
        InvalidBatchError,
    ),
    # a malformed request
    **dict.fromkeys(
        (
            R.INVALID_ARGUMENT,
            R.MALFORMED_REQUEST,
            R.INVALID_COMMAND,
            R.KEY_REQUIRED,
            R.INVALID_NAME,
            R.INVALID_PAGE_SIZE,
            R.INVALID_PAGE_TOKEN,
            R.INVALID_PARTITIONS,
            R.INVALID_REPLICATION_FACTOR,
            R.INVALID_RETENTION,
            R.INVALID_TOPIC_CONFIG,
            R.INVALID_QUOTA,
            R.INVALID_KEY_SCOPE,
            R.INVALID_ASSIGNMENT,
            R.INVALID_NODE,
            R.INVALID_POSITION,
            R.INVALID_SUBSCRIPTION,
            R.INVALID_OFFSET,
            R.OFFSET_METADATA_TOO_LARGE,
            R.DUPLICATE_PARTITION,
            R.INVALID_SESSION_TIMEOUT,
            R.INVALID_REBALANCE_TIMEOUT,
        ),
        InvalidRequestError,
    ),
    # exists already
    **dict.fromkeys(
        (
            R.TENANT_EXISTS,
            R.API_KEY_EXISTS,
            R.TOPIC_EXISTS,
            R.ADDRESS_IN_USE,
            R.ALREADY_REPLICA,
            R.NODE_ID_IN_USE,
        ),
        AlreadyExistsError,
    ),
    # the cluster's state does not allow it now
    **dict.fromkeys(
        (
            R.REPLICATION_FACTOR_TOO_LARGE,
            R.TOO_MANY_PARTITIONS,
            R.PLACEMENT_FAILED,
            R.TENANT_NOT_EMPTY,
            R.NODE_DECOMMISSIONING,
            R.NODE_NOT_DECOMMISSIONING,
            R.NODE_HAS_REPLICAS,
            R.LIVENESS_UNCHANGED,
            R.NODE_UNAVAILABLE,
            R.STALE_REVISION,
            R.NOT_A_LEARNER,
            R.NOT_A_REPLICA,
            R.LAST_VOTER,
            R.CLUSTER_MISMATCH,
            R.NOT_COMPACTED,
        ),
        PreconditionFailedError,
    ),
    # consumer groups
    R.FENCED_MEMBER: FencedMemberError,
    R.UNKNOWN_MEMBER_ID: UnknownMemberIdError,
    R.STALE_MEMBER_EPOCH: StaleMemberEpochError,
    R.GROUP_MAX_SIZE_REACHED: GroupFullError,
    # the server failed
    R.INTERNAL: ServerError,
    R.OFFSETS_LOG_UNREADABLE: ServerError,
}
"""The class of each reason the server sends (every ``Reason``)."""

# Without a known reason the code decides. CANCELLED and ABORTED come from a
# server shutting down a call (grace period over) or a proxy: retriable. A
# cancellation by this client never gets here (asyncio raises CancelledError).
_BY_CODE: dict[grpc.StatusCode, type[RaftlogError]] = {
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.CANCELLED: UnavailableError,
    grpc.StatusCode.ABORTED: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: RequestTimeoutError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: BackpressureError,
    grpc.StatusCode.NOT_FOUND: UnknownTopicOrPartitionError,
    grpc.StatusCode.OUT_OF_RANGE: OffsetOutOfRangeError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthorizationError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: PreconditionFailedError,
}


def from_rpc_error(error: grpc.RpcError) -> RaftlogError:
    """The ``RaftlogError`` for a failed gRPC call (``grpc.aio.AioRpcError``
    or a sync ``grpc.RpcError`` that is also a ``grpc.Call``)."""
    code = call_value(error, "code")
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details = call_value(error, "details")
    details_text = details if isinstance(details, str) and details else code.name
    info = error_info(call_value(error, "trailing_metadata"))
    if info is not None and info.reason:
        reason = info.reason
        cls = _BY_REASON.get(reason) or _BY_CODE.get(code, ServerError)
        return cls(
            info.message or details_text,
            reason=reason,
            code=code,
            leader_address=info.leader_address,
            retry_after_ms=int(info.retry_after_ms),
            metadata=dict(info.metadata),
        )
    cls = _BY_CODE.get(code, ServerError)
    return cls(details_text, reason=code.name, code=code)


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None
