"""The SDK's error tree and its mapping from gRPC failures.

The trailers are built by the server's own ``cluster.frontend.grpc_errors`` (tests may
import the server; the SDK may not), so a change on either side that breaks
the wire contract fails here. One test goes over a real gRPC connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import status_pb2

import client
from client.errors import (
    DETAILS_KEY,
    AlreadyExistsError,
    AuthenticationError,
    AuthorizationError,
    BackpressureError,
    DeliveryTimeoutError,
    DuplicateSequenceError,
    InvalidBatchError,
    InvalidRequestError,
    NotLeaderError,
    OffsetOutOfRangeError,
    OutcomeUnknownError,
    OutOfOrderSequenceError,
    PreconditionFailedError,
    ProducerFencedError,
    ProducerStateError,
    RaftlogError,
    RequestTimeoutError,
    RetriableError,
    ServerError,
    UnavailableError,
    UnknownProducerIdError,
    UnknownTopicOrPartitionError,
    error_info,
    from_rpc_error,
)
from cluster.frontend.grpc_errors import ServiceError, abort
from raftlog.v1 import log_pb2, log_pb2_grpc
from raftlog.v1.reasons import Reason

Code = grpc.StatusCode


def rpc_error(
    code: grpc.StatusCode, details: str = "details", trailer: tuple[tuple[str, bytes], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailer), details)


def server_error(code: grpc.StatusCode, reason: str, **kwargs: object) -> grpc.aio.AioRpcError:
    """The AioRpcError a client sees when the server raises ServiceError."""
    error = ServiceError(code, reason, f"message for {reason}", **kwargs)  # type: ignore[arg-type]
    return rpc_error(code, f"message for {reason}", error.trailer())


@pytest.mark.parametrize(
    ("code", "reason", "cls", "retriable"),
    [
        (Code.FAILED_PRECONDITION, "NOT_LEADER", NotLeaderError, True),
        (Code.UNAVAILABLE, "OUTCOME_UNKNOWN", OutcomeUnknownError, True),
        (Code.RESOURCE_EXHAUSTED, "BACKPRESSURE", BackpressureError, True),
        (Code.UNAVAILABLE, "REPLICA_STOPPED", UnavailableError, True),
        (Code.NOT_FOUND, "UNKNOWN_TOPIC_OR_PARTITION", UnknownTopicOrPartitionError, False),
        (Code.OUT_OF_RANGE, "OFFSET_OUT_OF_RANGE", OffsetOutOfRangeError, False),
        (Code.INVALID_ARGUMENT, "CORRUPT_BATCH", InvalidBatchError, False),
        (Code.INVALID_ARGUMENT, "BATCH_TOO_LARGE", InvalidBatchError, False),
        (Code.INVALID_ARGUMENT, "BAD_RECORD_COUNT", InvalidBatchError, False),
        (Code.FAILED_PRECONDITION, "INVALID_PRODUCER_EPOCH", ProducerFencedError, False),
        (Code.FAILED_PRECONDITION, "OUT_OF_ORDER_SEQUENCE", OutOfOrderSequenceError, False),
        (Code.FAILED_PRECONDITION, "UNKNOWN_PRODUCER_ID", UnknownProducerIdError, False),
        (Code.FAILED_PRECONDITION, "DUPLICATE_SEQUENCE", DuplicateSequenceError, False),
        (Code.INTERNAL, "INTERNAL", ServerError, False),
    ],
)
def test_each_reason_maps_to_its_class(
    code: grpc.StatusCode, reason: str, cls: type[RaftlogError], retriable: bool
) -> None:
    error = from_rpc_error(server_error(code, reason))
    assert type(error) is cls
    assert error.reason == reason
    assert error.code == code
    assert error.retriable is retriable
    assert isinstance(error, RetriableError) is retriable
    assert error.message == f"message for {reason}"
    assert str(error) == f"{reason}: message for {reason}"


def test_leader_address_retry_after_and_offsets_come_through() -> None:
    not_leader = from_rpc_error(server_error(Code.FAILED_PRECONDITION, "NOT_LEADER", leader_address="h:7002"))
    assert isinstance(not_leader, NotLeaderError) and not_leader.leader_address == "h:7002"
    slow = from_rpc_error(server_error(Code.RESOURCE_EXHAUSTED, "BACKPRESSURE", retry_after_ms=50))
    assert slow.retry_after_ms == 50
    out = from_rpc_error(
        server_error(
            Code.OUT_OF_RANGE,
            "OFFSET_OUT_OF_RANGE",
            metadata={"log_start_offset": "7", "high_watermark": "42"},
        )
    )
    assert isinstance(out, OffsetOutOfRangeError)
    assert (out.log_start_offset, out.high_watermark) == (7, 42)
    assert OffsetOutOfRangeError("no metadata").high_watermark is None


@pytest.mark.parametrize(
    ("code", "cls", "retriable"),
    [
        (Code.UNAVAILABLE, UnavailableError, True),
        (Code.DEADLINE_EXCEEDED, RequestTimeoutError, True),
        (Code.CANCELLED, UnavailableError, True),
        (Code.RESOURCE_EXHAUSTED, BackpressureError, True),
        (Code.NOT_FOUND, UnknownTopicOrPartitionError, False),
        (Code.INVALID_ARGUMENT, InvalidRequestError, False),
        (Code.INTERNAL, ServerError, False),
        (Code.UNIMPLEMENTED, ServerError, False),
        (Code.FAILED_PRECONDITION, PreconditionFailedError, False),
        (Code.UNAUTHENTICATED, AuthenticationError, False),
        (Code.PERMISSION_DENIED, AuthorizationError, False),
        (Code.ALREADY_EXISTS, AlreadyExistsError, False),
    ],
)
def test_without_error_info_the_code_decides(
    code: grpc.StatusCode, cls: type[RaftlogError], retriable: bool
) -> None:
    error = from_rpc_error(rpc_error(code, "connection refused"))
    assert type(error) is cls
    assert error.reason == code.name
    assert error.retriable is retriable
    assert error.message == "connection refused"
    assert error.leader_address == "" and error.retry_after_ms == 0


def test_an_unknown_reason_keeps_its_name_and_takes_the_codes_retry_behaviour() -> None:
    error = from_rpc_error(server_error(Code.UNAVAILABLE, "SOMETHING_NEW"))
    assert isinstance(error, UnavailableError) and error.retriable
    assert error.reason == "SOMETHING_NEW"
    definite = from_rpc_error(server_error(Code.FAILED_PRECONDITION, "ANOTHER_NEW_THING"))
    assert type(definite) is PreconditionFailedError and not definite.retriable


def test_damaged_or_foreign_details_fall_back_to_the_code() -> None:
    garbage = from_rpc_error(rpc_error(Code.UNAVAILABLE, "down", ((DETAILS_KEY, b"\xff\x00garbage"),)))
    assert isinstance(garbage, UnavailableError) and garbage.reason == "UNAVAILABLE"
    other = any_pb2.Any()
    other.Pack(status_pb2.Status(code=1, message="not ours"))
    foreign = status_pb2.Status(code=Code.NOT_FOUND.value[0], message="x", details=[other])
    error = from_rpc_error(rpc_error(Code.NOT_FOUND, "gone", ((DETAILS_KEY, foreign.SerializeToString()),)))
    assert isinstance(error, UnknownTopicOrPartitionError) and error.reason == "NOT_FOUND"
    assert error_info(None) is None
    assert error_info(((DETAILS_KEY, b"\xff"),)) is None


def test_the_tree() -> None:
    assert issubclass(InvalidBatchError, InvalidRequestError)
    for cls in (ProducerFencedError, OutOfOrderSequenceError, UnknownProducerIdError, DuplicateSequenceError):
        assert issubclass(cls, ProducerStateError)
    exported = [getattr(client, name) for name in client.__all__]
    error_classes = [c for c in exported if isinstance(c, type) and issubclass(c, Exception)]
    assert len(error_classes) >= 20
    assert all(issubclass(c, RaftlogError) for c in error_classes)
    timeout = DeliveryTimeoutError("gave up", cause=OutcomeUnknownError("lost"))
    assert not timeout.retriable and isinstance(timeout.cause, OutcomeUnknownError)


class _Refusing(log_pb2_grpc.LogServiceServicer):
    async def Produce(
        self, request: log_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ProduceResponse:
        await abort(
            context,
            ServiceError(
                Code.FAILED_PRECONDITION, Reason.NOT_LEADER, "not me", leader_address="10.0.0.2:7001"
            ),
        )


@pytest.fixture
async def refusing_server() -> AsyncIterator[str]:
    server = grpc.aio.server()
    log_pb2_grpc.add_LogServiceServicer_to_server(_Refusing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=None)


async def test_errors_over_a_real_connection(refusing_server: str) -> None:
    async with grpc.aio.insecure_channel(refusing_server) as channel:
        stub = log_pb2_grpc.LogServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Produce(log_pb2.ProduceRequest(topic="t", batch=b"x"), timeout=5)
        error = from_rpc_error(info.value)
        assert isinstance(error, NotLeaderError)
        assert error.leader_address == "10.0.0.2:7001"
        assert error.message == "not me"
        # UNIMPLEMENTED from the real stack, with no ErrorInfo at all.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Fetch(log_pb2.FetchRequest(topic="t"), timeout=5)
        assert type(from_rpc_error(info.value)) is ServerError
        assert error_info(info.value.trailing_metadata()) is None
