"""The front door's call figures (cluster/frontend/front_door.py step 6,
cluster/telemetry/node_metrics.py) on a loopback ``grpc.aio`` server: each
public call is counted once with the status the client received — success,
the door's own refusals, mapped handler errors, a handler's abort, a
stage's refusal, streams however they end — and timed; without ``calls``
the door does no metric work at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from cluster.controller import Principal
from cluster.frontend import front_door
from cluster.frontend.front_door import Caller, FrontDoor
from cluster.frontend.grpc_errors import ServiceError
from cluster.telemetry.node_metrics import NodeMetrics
from partitions.replica_errors import NotLeaderError
from raftlog.v1 import admin_pb2, admin_pb2_grpc, headers, log_pb2, log_pb2_grpc
from raftlog.v1.reasons import Reason

pytestmark = pytest.mark.timeout(60)

LOG = "raftlog.v1.LogService"
ADMIN = "raftlog.v1.AdminService"
TENANT = Caller(Principal("k-acme", "acme"), "acme")
KEY = ((headers.AUTHORIZATION, f"{headers.BEARER_PREFIX}acme-key"),)

Behaviour = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


async def identify(context: grpc.aio.ServicerContext) -> Caller:
    if (headers.AUTHORIZATION, f"{headers.BEARER_PREFIX}acme-key") in tuple(
        context.invocation_metadata() or ()
    ):
        return TENANT
    raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, Reason.MISSING_API_KEY, "no key")


@dataclass
class Log(log_pb2_grpc.LogServiceServicer):
    """A LogService whose Produce and StreamFetch do what the test says."""

    produce: Behaviour | None = None
    stream: Behaviour | None = None
    stream_messages: int = 1

    async def Produce(self, request: Any, context: grpc.aio.ServicerContext) -> log_pb2.ProduceResponse:
        if self.produce is not None:
            await self.produce(context)
        return log_pb2.ProduceResponse()

    async def StreamFetch(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[log_pb2.FetchResponse]:
        for _ in range(self.stream_messages):
            yield log_pb2.FetchResponse()
        if self.stream is not None:
            await self.stream(context)


@dataclass
class Served:
    stub: log_pb2_grpc.LogServiceStub
    channel: grpc.aio.Channel
    log: Log
    metrics: NodeMetrics | None
    recorders: list[str] = field(default_factory=list)

    def handled(self, method: str, code: str, service: str = LOG) -> float:
        assert self.metrics is not None
        value = self.metrics.registry.get_sample_value(
            "raftlog_rpc_server_handled_total", {"service": service, "method": method, "code": code}
        )
        return value or 0.0

    async def counted(self, method: str, code: str, expected: float, service: str = LOG) -> None:
        """Wait until the count is ``expected`` (the door records a call just
        after its status went out: the client may see it first)."""
        await _eventually(lambda: self.handled(method, code, service) == expected)

    def timed(self, method: str) -> float:
        assert self.metrics is not None
        value = self.metrics.registry.get_sample_value(
            "raftlog_rpc_server_handling_seconds_count", {"service": LOG, "method": method}
        )
        return value or 0.0


@asynccontextmanager
async def serving(metrics: NodeMetrics | None, stages: list[Any] | None = None) -> AsyncIterator[Served]:
    log = Log()
    recorders: list[str] = []

    def calls(method: str) -> front_door.CallRecord:
        assert metrics is not None
        recorders.append(method)
        return metrics.call_recorder(method)

    door = FrontDoor(
        identify, lambda _n: "", stages=stages or (), calls=calls if metrics is not None else None
    )
    server = grpc.aio.server(interceptors=[door])
    log_pb2_grpc.add_LogServiceServicer_to_server(log, server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(admin_pb2_grpc.AdminServiceServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Served(log_pb2_grpc.LogServiceStub(channel), channel, log, metrics, recorders)
    await server.stop(None)


def produce(s: Served, metadata: Any = KEY, timeout: float = 5) -> Any:
    return s.stub.Produce(log_pb2.ProduceRequest(topic="t"), metadata=metadata, timeout=timeout)


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


async def test_a_served_call_is_counted_ok_and_timed() -> None:
    async with serving(NodeMetrics(1, "127.0.0.1", 0)) as s:
        await produce(s)
        await produce(s)
        await s.counted("Produce", "OK", 2)
        assert s.timed("Produce") == 2
        assert s.recorders == [f"/{LOG}/Produce"]  # labels resolved once per method


async def test_refusals_at_the_door_are_counted_with_their_code() -> None:
    async with serving(NodeMetrics(1, "127.0.0.1", 0)) as s:
        assert await code_of(produce(s, metadata=())) == grpc.StatusCode.UNAUTHENTICATED
        # A tenant key on an operator method: refused by the door's scope check.
        create = s.channel.unary_unary(
            f"/{ADMIN}/CreateTenant",
            admin_pb2.CreateTenantRequest.SerializeToString,
            admin_pb2.CreateTenantResponse.FromString,
        )
        assert (
            await code_of(create(admin_pb2.CreateTenantRequest(name="x"), metadata=KEY))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        # Bytes that do not decode: MALFORMED_REQUEST before the handler.
        raw = s.channel.unary_unary(f"/{LOG}/Produce", lambda b: b, lambda b: b)
        assert await code_of(raw(b"\xff\xff\xff", metadata=KEY)) == grpc.StatusCode.INVALID_ARGUMENT
        await s.counted("Produce", "UNAUTHENTICATED", 1)
        await s.counted("CreateTenant", "PERMISSION_DENIED", 1, service=ADMIN)
        await s.counted("Produce", "INVALID_ARGUMENT", 1)
        await s.counted("Produce", "OK", 0)


async def test_handler_errors_are_counted_as_the_door_mapped_them() -> None:
    async with serving(NodeMetrics(1, "127.0.0.1", 0)) as s:

        async def not_found(_c: grpc.aio.ServicerContext) -> None:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, Reason.UNKNOWN_TOPIC, "no such topic")

        async def not_leader(_c: grpc.aio.ServicerContext) -> None:
            raise NotLeaderError(7, 2)

        async def unexpected(_c: grpc.aio.ServicerContext) -> None:
            raise ZeroDivisionError

        async def aborted(c: grpc.aio.ServicerContext) -> None:
            await c.abort(grpc.StatusCode.ABORTED, "relayed")

        outcomes: list[tuple[Behaviour, grpc.StatusCode]] = [
            (not_found, grpc.StatusCode.NOT_FOUND),
            (not_leader, grpc.StatusCode.FAILED_PRECONDITION),
            (unexpected, grpc.StatusCode.INTERNAL),
            (aborted, grpc.StatusCode.ABORTED),
        ]
        for behaviour, expected in outcomes:
            s.log.produce = behaviour
            assert await code_of(produce(s)) == expected
            await s.counted("Produce", expected.name, 1)
        assert s.timed("Produce") == len(outcomes)


async def test_a_stage_refusal_is_counted() -> None:
    @asynccontextmanager
    async def quota(method: str, caller: Caller, request: Any, context: Any) -> AsyncIterator[None]:
        raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.QUOTA_EXCEEDED, "over quota")
        yield

    async with serving(NodeMetrics(1, "127.0.0.1", 0), stages=[quota]) as s:
        assert await code_of(produce(s)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        await s.counted("Produce", "RESOURCE_EXHAUSTED", 1)


async def test_streams_are_counted_when_they_end_however_they_end() -> None:
    async with serving(NodeMetrics(1, "127.0.0.1", 0)) as s:
        request = log_pb2.StreamFetchRequest(topic="t")
        assert len([m async for m in s.stub.StreamFetch(request, metadata=KEY)]) == 1
        await s.counted("StreamFetch", "OK", 1)

        async def aborted(c: grpc.aio.ServicerContext) -> None:
            await c.abort(grpc.StatusCode.DATA_LOSS, "gone")

        s.log.stream = aborted
        assert await code_of(_drain(s.stub.StreamFetch(request, metadata=KEY))) == grpc.StatusCode.DATA_LOSS
        await s.counted("StreamFetch", "DATA_LOSS", 1)

        async def forever(_c: grpc.aio.ServicerContext) -> None:
            await asyncio.sleep(3600)

        s.log.stream = forever
        call = s.stub.StreamFetch(request, metadata=KEY)
        await call.read()  # the stream is open
        call.cancel()
        await _eventually(lambda: s.handled("StreamFetch", "CANCELLED") == 1)

        call = s.stub.StreamFetch(request, metadata=KEY, timeout=0.3)
        assert await code_of(_drain(call)) == grpc.StatusCode.DEADLINE_EXCEEDED
        # Counted DEADLINE_EXCEEDED unless the machine delayed the server's
        # view of it past _DEADLINE_SLACK_S (then, as the client's cancel).
        await _eventually(lambda: s.timed("StreamFetch") == 4)
        assert s.handled("StreamFetch", "DEADLINE_EXCEEDED") + s.handled("StreamFetch", "CANCELLED") == 2


class _Ended:
    """What ``_final_code`` reads of a call context that has no status."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def code(self) -> None:
        return None

    def time_remaining(self) -> float | None:
        return self.remaining


@pytest.mark.parametrize(
    ("remaining", "error", "expected"),
    [
        (None, None, grpc.StatusCode.OK),
        (None, asyncio.CancelledError(), grpc.StatusCode.CANCELLED),
        (5.0, asyncio.CancelledError(), grpc.StatusCode.CANCELLED),
        (0.01, asyncio.CancelledError(), grpc.StatusCode.DEADLINE_EXCEEDED),
        (-0.2, GeneratorExit(), grpc.StatusCode.DEADLINE_EXCEEDED),
        (None, RuntimeError(), grpc.StatusCode.UNKNOWN),
    ],
)
def test_a_call_ended_without_a_status_is_counted_by_what_ended_it(
    remaining: float | None, error: BaseException | None, expected: grpc.StatusCode
) -> None:
    context: Any = _Ended(remaining)
    assert front_door._final_code(context, error) == expected


async def test_without_calls_the_door_does_no_metric_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """No recorder is asked for and the door's clock is never read: a node
    without metrics_port pays nothing per call (the clock raising would fail
    the call with INTERNAL)."""

    def no_clock() -> float:
        raise AssertionError("the door read its clock with metrics off")

    monkeypatch.setattr(front_door, "_clock", no_clock)
    async with serving(None) as s:
        await produce(s)
        assert [m async for m in s.stub.StreamFetch(log_pb2.StreamFetchRequest(topic="t"), metadata=KEY)]
        assert await code_of(produce(s, metadata=())) == grpc.StatusCode.UNAUTHENTICATED
        assert s.recorders == []


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


async def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not recorded in time"
        await asyncio.sleep(0.02)
