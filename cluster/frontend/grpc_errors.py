"""Errors at the gRPC boundary: a status code, a reason, and what to do.

Every failed ``raftlog.v1`` call carries a ``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer (the standard rich-error channel that
grpcurl and every gRPC library read) whose one detail is a
``raftlog.v1.ErrorInfo``. ``ServiceError`` is raised anywhere inside a
handler; ``abort`` turns it into the status. Replica errors map here, in one
table, so a reason always travels with the same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2

from client import errors as client_errors
from partitions.replica_errors import (
    Backpressure,
    NotLeaderError,
    OutcomeUnknown,
    ProduceRejected,
    ReplicaError,
    ReplicaStopped,
)
from partitions.state_machine import OffsetOutOfRange
from raftlog.v1 import errors_pb2

DETAILS_KEY = client_errors.DETAILS_KEY


class ServiceError(Exception):
    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
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
    {"INVALID_PRODUCER_EPOCH", "OUT_OF_ORDER_SEQUENCE", "UNKNOWN_PRODUCER_ID", "DUPLICATE_SEQUENCE"}
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


def from_offset_error(error: OffsetOutOfRange) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.OUT_OF_RANGE,
        "OFFSET_OUT_OF_RANGE",
        f"offset {error.offset} is outside the log [{error.log_start_offset}, {error.high_watermark}]; "
        "seek to an offset in that range",
        metadata={
            "log_start_offset": str(error.log_start_offset),
            "high_watermark": str(error.high_watermark),
        },
    )


def error_info(error: grpc.RpcError) -> errors_pb2.ErrorInfo | None:
    """The ErrorInfo a failed call carried, if any (for tests and tools):
    the SDK's parser, which the server's trailer is built for."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return client_errors.error_info(trailing)
