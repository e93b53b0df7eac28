"""Errors at the gRPC boundary: a status code, a reason, and what to do.

Every failed ``raftlog.v1`` call carries a ``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer (``raftlog.v1.headers.STATUS_DETAILS``:
the standard rich-error channel that grpcurl and every gRPC library read)
whose one detail is a ``raftlog.v1.ErrorInfo``. ``ServiceError`` is raised
anywhere inside a handler; the front door (front_door.py) turns it, and the
replica and offset errors mapped here, into the status.

Invariants:

- A reason is a ``raftlog.v1.reasons.Reason`` (mypy refuses a free string;
  tests/test_contract.py checks the few places a narrower enum's member is
  converted), so every reason the server sends has an SDK exception class.
- A replica error maps to one status code, in ``from_replica_error`` only,
  so a reason always travels with the same code.
- A client-supplied name goes into a message or ``ErrorInfo.metadata`` only
  through ``shown`` (at most a short, escaped prefix and the length): the
  same helper the controller's own messages use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from cluster.controller.model import shown
from cluster.primitives.pagination import InvalidPageSize, PageError
from partitions.replica_errors import (
    DISK_FULL_RETRY_AFTER_MS,
    Backpressure,
    DiskFull,
    NotLeaderError,
    OutcomeUnknown,
    ProduceRejected,
    ReplicaError,
    ReplicaStopped,
)
from partitions.state_machine import OffsetOutOfRange
from raftlog.v1 import errors_pb2, headers
from raftlog.v1.reasons import Reason

__all__ = [
    "DETAILS_KEY",
    "ServiceError",
    "abort",
    "error_info",
    "from_offset_error",
    "from_page_error",
    "from_replica_error",
    "info_in",
    "malformed_request",
    "shown",
]

DETAILS_KEY = headers.STATUS_DETAILS


class ServiceError(Exception):
    """A failed call: ``code``, and the ``ErrorInfo`` that says why."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: Reason,
        message: str,
        *,
        leader_address: str = "",
        retry_after_ms: int = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.info = errors_pb2.ErrorInfo(
            reason=reason,
            message=message,
            leader_address=leader_address,
            retry_after_ms=retry_after_ms,
            metadata=dict(metadata or {}),
        )

    def trailer(self) -> tuple[tuple[str, bytes], ...]:
        detail = any_pb2.Any()
        detail.Pack(self.info)
        status = status_pb2.Status(code=self.code.value[0], message=self.info.message, details=[detail])
        return ((DETAILS_KEY, status.SerializeToString()),)


async def abort(context: grpc.aio.ServicerContext, error: ServiceError) -> NoReturn:
    await context.abort(error.code, error.info.message, trailing_metadata=error.trailer())
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


_PRODUCER_STATE_REASONS = frozenset(
    {
        Reason.INVALID_PRODUCER_EPOCH,
        Reason.OUT_OF_ORDER_SEQUENCE,
        Reason.UNKNOWN_PRODUCER_ID,
        Reason.DUPLICATE_SEQUENCE,
    }
)


def from_replica_error(error: ReplicaError, leader_address: str = "") -> ServiceError:
    if isinstance(error, NotLeaderError):
        return ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION, error.reason, error.message, leader_address=leader_address
        )
    if isinstance(error, OutcomeUnknown):
        return ServiceError(
            grpc.StatusCode.UNAVAILABLE, error.reason, error.message, leader_address=leader_address
        )
    if isinstance(error, Backpressure):
        return ServiceError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, error.reason, error.message, retry_after_ms=50
        )
    # The leader's disk, or a quorum of its followers', is below its
    # reserve (partitions/disk_space.py): nothing was written.
    if isinstance(error, DiskFull):
        return ServiceError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            error.reason,
            error.message,
            retry_after_ms=DISK_FULL_RETRY_AFTER_MS,
        )
    if isinstance(error, ProduceRejected):
        code = (
            grpc.StatusCode.FAILED_PRECONDITION
            if error.reason in _PRODUCER_STATE_REASONS
            else grpc.StatusCode.INVALID_ARGUMENT
        )
        return ServiceError(code, error.reason, error.message)
    if isinstance(error, ReplicaStopped):
        return ServiceError(grpc.StatusCode.UNAVAILABLE, error.reason, error.message)
    return ServiceError(grpc.StatusCode.INTERNAL, error.reason, error.message)


def malformed_request(method: str) -> ServiceError:
    """The request bytes of a call to ``method`` did not decode."""
    return ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.MALFORMED_REQUEST,
        f"the request is not a valid {method.rpartition('/')[2]} request message; "
        "send the protobuf message the method takes",
    )


def from_offset_error(error: OffsetOutOfRange) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.OUT_OF_RANGE,
        Reason.OFFSET_OUT_OF_RANGE,
        f"offset {error.offset} is outside the log [{error.log_start_offset}, {error.high_watermark}]; "
        "seek to an offset in that range",
        metadata={
            "log_start_offset": str(error.log_start_offset),
            "high_watermark": str(error.high_watermark),
        },
    )


def from_page_error(error: PageError) -> ServiceError:
    reason = Reason.INVALID_PAGE_SIZE if isinstance(error, InvalidPageSize) else Reason.INVALID_PAGE_TOKEN
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, reason, f'{error}; start again from page_token ""')


def error_info(error: grpc.RpcError) -> errors_pb2.ErrorInfo | None:
    """The ErrorInfo a failed call carried, if any (for tests, tools and the
    node's own outgoing calls; the node does not use the SDK's parser)."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return info_in(trailing or ())


def info_in(trailing: Iterable[tuple[str, str | bytes]]) -> errors_pb2.ErrorInfo | None:
    """The ErrorInfo in trailing metadata, or None when there is none or it
    cannot be decoded."""
    for key, value in trailing:
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            if detail.Is(errors_pb2.ErrorInfo.DESCRIPTOR):
                info = errors_pb2.ErrorInfo()
                detail.Unpack(info)
                return info
    return None
