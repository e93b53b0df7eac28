"""The front door (``cluster.frontend.front_door``) on a loopback ``grpc.aio``
server: every public method is authenticated (found from the services'
descriptors, not listed by hand), operator-only methods refuse tenant keys,
health and the internal services pass untouched, errors become statuses with
reasons (an unexpected one without leaking anything), handlers see the
authenticated caller, stages run around the call. Then the pieces the door
serves: a LogService without a replica of the partition forwards to the
leader ``leader_of`` names, and the forwarded answer names the leader.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cluster.controller import Assignment, Node, Principal, Topic
from cluster.frontend.admin_service import AdminService
from cluster.frontend.forwarding import Forwarder
from cluster.frontend.front_door import (
    INTERNAL_SERVICES,
    OPERATOR_METHODS,
    PUBLIC_SERVICES,
    Caller,
    FrontDoor,
    acting_as,
    current_caller,
)
from cluster.frontend.grpc_errors import ServiceError, error_info
from cluster.frontend.log_service import LogService
from cluster.frontend.metadata_service import MetadataService
from partitions.replica_errors import NotLeaderError
from partitions.state_machine import OffsetOutOfRange
from raftlog.internal.v1 import join_pb2, node_admin_pb2, transport_pb2
from raftlog.v1 import admin_pb2, groups_pb2, headers, log_pb2, log_pb2_grpc, metadata_pb2
from raftlog.v1.reasons import Reason

pytestmark = pytest.mark.timeout(60)

TENANT_KEY = "tenant-key"
OPERATOR_KEY = "operator-key"
TENANT_CALLER = Caller(Principal("k-tenant", "acme"), "acme")
OPERATOR_CALLER = Caller(Principal("k-op", None), "default")
PUBLIC_MODULES = (log_pb2, metadata_pb2, admin_pb2, groups_pb2)


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return ((headers.AUTHORIZATION, f"{headers.BEARER_PREFIX}{key}"),)


async def identify(context: grpc.aio.ServicerContext) -> Caller:
    """Two keys, as an Authenticator would know them."""
    for key, value in context.invocation_metadata() or ():
        if key == headers.AUTHORIZATION:
            known = {f"Bearer {TENANT_KEY}": TENANT_CALLER, f"Bearer {OPERATOR_KEY}": OPERATOR_CALLER}
            if value in known:
                return known[value]
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, Reason.INVALID_API_KEY, "unknown key")
    raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, Reason.MISSING_API_KEY, "no key")


def methods(services: frozenset[str]) -> list[MethodDescriptor]:
    pool = descriptor_pool.Default()
    return [m for name in sorted(services) for m in pool.FindServiceByName(name).methods]


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def message(descriptor: Any) -> Any:
    return message_factory.GetMessageClass(descriptor)


Behaviour = Callable[[MethodDescriptor, Any, grpc.aio.ServicerContext], Any]


@dataclass
class Probe:
    """A stand-in servicer for every method of the given services: records
    who it saw, then does ``behaviour`` (default: an empty answer)."""

    seen: list[tuple[str, Caller | None]] = field(default_factory=list)
    behaviour: Behaviour | None = None

    def handler(self, service: ServiceDescriptor) -> grpc.GenericRpcHandler:
        handlers = {}
        for method in service.methods:
            handlers[method.name] = self._method_handler(method)
        return grpc.method_handlers_generic_handler(service.full_name, handlers)

    def _caller(self) -> Caller | None:
        try:
            return current_caller()
        except RuntimeError:
            return None

    def _method_handler(self, method: MethodDescriptor) -> grpc.RpcMethodHandler:
        request_type, response_type = message(method.input_type), message(method.output_type)

        async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.seen.append((path(method), self._caller()))
            if self.behaviour is not None:
                return await self.behaviour(method, request, context)
            return response_type()

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            self.seen.append((path(method), self._caller()))
            if self.behaviour is not None:
                await self.behaviour(method, request, context)
            yield response_type()

        decode, encode = request_type.FromString, response_type.SerializeToString
        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(stream, decode, encode)
        return grpc.unary_unary_rpc_method_handler(answer, decode, encode)


@dataclass
class Served:
    channel: grpc.aio.Channel
    probe: Probe
    health: health.aio.HealthServicer

    async def call(self, method: MethodDescriptor, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
        """Call ``method`` with an empty request; a stream's first message."""
        request_type, response_type = message(method.input_type), message(method.output_type)
        serialize, deserialize = request_type.SerializeToString, response_type.FromString
        if method.server_streaming:
            stream = self.channel.unary_stream(path(method), serialize, deserialize)
            return await stream(request_type(), metadata=metadata, timeout=5).read()
        unary = self.channel.unary_unary(path(method), serialize, deserialize)
        return await unary(request_type(), metadata=metadata, timeout=5)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    probe = Probe()
    server = grpc.aio.server(interceptors=[FrontDoor(identify, lambda node: f"node-{node}:7000")])
    pool = descriptor_pool.Default()
    for name in sorted(PUBLIC_SERVICES | (INTERNAL_SERVICES - {transport_service()})):
        server.add_generic_rpc_handlers((probe.handler(pool.FindServiceByName(name)),))
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(channel, probe, checker)
    finally:
        await channel.close()
        await server.stop(grace=None)


def transport_service() -> str:
    return transport_pb2.DESCRIPTOR.services_by_name["RaftTransportService"].full_name


async def refused(served: Served, method: MethodDescriptor, **kw: Any) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.call(method, **kw)
    info = error_info(caught.value)
    return caught.value.code(), info.reason if info else "", caught.value.details() or ""


# --- which services pass the door ------------------------------------------------------


def test_every_raftlog_v1_service_is_public_and_every_internal_one_is_not() -> None:
    public = {s.full_name for m in PUBLIC_MODULES for s in m.DESCRIPTOR.services_by_name.values()}
    internal = {
        s.full_name
        for m in (join_pb2, node_admin_pb2, transport_pb2)
        for s in m.DESCRIPTOR.services_by_name.values()
    }
    assert public == PUBLIC_SERVICES
    assert internal == INTERNAL_SERVICES
    assert all(name.startswith("raftlog.v1.") for name in PUBLIC_SERVICES)
    assert all(name.startswith("raftlog.internal.v1.") for name in INTERNAL_SERVICES)
    assert {m.rsplit("/", 1)[0].lstrip("/") for m in OPERATOR_METHODS} <= PUBLIC_SERVICES
    assert {path(m) for m in methods(PUBLIC_SERVICES)} >= OPERATOR_METHODS, "a misspelt operator method"


async def test_every_public_method_without_a_key_is_unauthenticated(served: Served) -> None:
    every = methods(PUBLIC_SERVICES)
    assert len(every) >= 25 and any(m.server_streaming for m in every)
    for method in every:
        code, reason, _ = await refused(served, method)
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_API_KEY"), path(method)
        code, reason, _ = await refused(served, method, metadata=bearer("stolen"))
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY"), path(method)
    assert served.probe.seen == [], "a handler ran for an unauthenticated call"


async def test_a_tenant_key_on_an_operator_method_is_permission_denied(served: Served) -> None:
    for method in methods(PUBLIC_SERVICES):
        if path(method) in OPERATOR_METHODS:
            code, reason, _ = await refused(served, method, metadata=bearer(TENANT_KEY))
            assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_KEY_REQUIRED")
            await served.call(method, metadata=bearer(OPERATOR_KEY))
        else:
            await served.call(method, metadata=bearer(TENANT_KEY))
    seen = served.probe.seen
    assert not [p for p, caller in seen if p in OPERATOR_METHODS and caller == TENANT_CALLER]
    assert len(seen) == len(methods(PUBLIC_SERVICES))


async def test_health_and_internal_services_need_no_key(served: Served) -> None:
    await served.health.set("", health_pb2.HealthCheckResponse.SERVING)
    answer = await health_pb2_grpc.HealthStub(served.channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    internal = [m for m in methods(INTERNAL_SERVICES) if not m.client_streaming]
    assert internal
    for method in internal:
        await served.call(method)  # no key, yet the handler answers
    # ... and runs outside the door: no caller.
    assert served.probe.seen == [(path(m), None) for m in internal]


async def test_the_handler_sees_the_authenticated_caller(served: Served) -> None:
    produce = log_pb2.DESCRIPTOR.services_by_name["LogService"].methods_by_name["Produce"]
    stream = log_pb2.DESCRIPTOR.services_by_name["LogService"].methods_by_name["StreamFetch"]
    await served.call(produce, metadata=bearer(TENANT_KEY))
    await served.call(stream, metadata=bearer(OPERATOR_KEY))
    assert served.probe.seen == [(path(produce), TENANT_CALLER), (path(stream), OPERATOR_CALLER)]


# --- errors ------------------------------------------------------------------------------


def raising(error: Exception) -> Behaviour:
    async def behaviour(method: MethodDescriptor, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise error

    return behaviour


PRODUCE = log_pb2.DESCRIPTOR.services_by_name["LogService"].methods_by_name["Produce"]
STREAM = log_pb2.DESCRIPTOR.services_by_name["LogService"].methods_by_name["StreamFetch"]


@pytest.mark.parametrize("method", [PRODUCE, STREAM], ids=["unary", "stream"])
async def test_an_unexpected_exception_is_internal_with_a_reason_and_logged_once(
    served: Served, method: MethodDescriptor, caplog: pytest.LogCaptureFixture
) -> None:
    served.probe.behaviour = raising(KeyError("secret-internal-detail"))
    with caplog.at_level(logging.ERROR, logger="cluster.frontend.front_door"):
        code, reason, details = await refused(served, method, metadata=bearer(TENANT_KEY))
    assert (code, reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")
    assert "secret" not in details and "Traceback" not in details and "KeyError" not in details
    assert path(method) in details and "error id" in details
    logged = [r for r in caplog.records if r.name == "cluster.frontend.front_door"]
    assert len(logged) == 1 and logged[0].exc_info is not None
    error_id = details.split("error id ")[1].split(",")[0]
    assert error_id in logged[0].getMessage()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ServiceError(grpc.StatusCode.NOT_FOUND, Reason.UNKNOWN_TOPIC, "no such topic"),
            (grpc.StatusCode.NOT_FOUND, "UNKNOWN_TOPIC", ""),
        ),
        (NotLeaderError(7, 3), (grpc.StatusCode.FAILED_PRECONDITION, "NOT_LEADER", "node-3:7000")),
        (NotLeaderError(7, 0), (grpc.StatusCode.FAILED_PRECONDITION, "NOT_LEADER", "")),
        (OffsetOutOfRange(9, 0, 5), (grpc.StatusCode.OUT_OF_RANGE, "OFFSET_OUT_OF_RANGE", "")),
    ],
)
@pytest.mark.parametrize("method", [PRODUCE, STREAM], ids=["unary", "stream"])
async def test_expected_errors_map_once_at_the_door(
    served: Served, method: MethodDescriptor, error: Exception, expected: tuple[grpc.StatusCode, str, str]
) -> None:
    served.probe.behaviour = raising(error)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.call(method, metadata=bearer(TENANT_KEY))
    info = error_info(caught.value)
    assert info is not None
    assert (caught.value.code(), info.reason, info.leader_address) == expected


async def test_a_call_the_handler_aborted_keeps_its_status(served: Served) -> None:
    async def abort(method: MethodDescriptor, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.ABORTED, "relayed", trailing_metadata=((headers.LEADER, "x:1"),))

    served.probe.behaviour = abort
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.call(PRODUCE, metadata=bearer(TENANT_KEY))
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.ABORTED, "relayed")
    assert (headers.LEADER, "x:1") in tuple(caught.value.trailing_metadata() or ())


# --- stages ------------------------------------------------------------------------------


async def test_stages_run_around_the_handler_and_may_refuse_a_call() -> None:
    events: list[tuple[str, str, Caller]] = []

    @asynccontextmanager
    async def counting(method: str, caller: Caller, request: Any, context: Any) -> AsyncIterator[None]:
        assert request is not None and context is not None  # a unary request reaches the stage decoded
        events.append(("enter", method, caller))
        try:
            yield
        finally:
            events.append(("exit", method, caller))

    @asynccontextmanager
    async def quota(method: str, caller: Caller, request: Any, context: Any) -> AsyncIterator[None]:
        if caller.tenant == "acme":
            raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.BACKPRESSURE, "over quota")
        yield

    probe = Probe()
    server = grpc.aio.server(interceptors=[FrontDoor(identify, lambda node: "", stages=[counting, quota])])
    server.add_generic_rpc_handlers(
        (probe.handler(descriptor_pool.Default().FindServiceByName(PRODUCE.containing_service.full_name)),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            served = Served(channel, probe, health.aio.HealthServicer())
            await served.call(PRODUCE, metadata=bearer(OPERATOR_KEY))
            code, reason, _ = await refused(served, PRODUCE, metadata=bearer(TENANT_KEY))
    finally:
        await server.stop(grace=None)
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "BACKPRESSURE")
    assert probe.seen == [(path(PRODUCE), OPERATOR_CALLER)]  # the refused call never ran
    assert events == [
        ("enter", path(PRODUCE), OPERATOR_CALLER),
        ("exit", path(PRODUCE), OPERATOR_CALLER),
        ("enter", path(PRODUCE), TENANT_CALLER),
        ("exit", path(PRODUCE), TENANT_CALLER),
    ]


# --- what the door serves: routing to the leader -----------------------------------------


class Leader(log_pb2_grpc.LogServiceServicer):
    """The node that leads the partition: answers Produce, or fails it."""

    def __init__(self) -> None:
        self.fail = False

    async def Produce(self, request: Any, context: grpc.aio.ServicerContext) -> log_pb2.ProduceResponse:
        if self.fail:
            error = ServiceError(grpc.StatusCode.FAILED_PRECONDITION, Reason.INVALID_PRODUCER_EPOCH, "fenced")
            await context.abort(error.code, error.info.message, trailing_metadata=error.trailer())
        return log_pb2.ProduceResponse(base_offset=41, last_offset=41)


def _locate(tenant: str, topic: str, partition: int) -> Assignment | None:
    if (tenant, topic, partition) != ("acme", "t", 0):
        return None
    return Assignment(7, "acme", "t", 1, 0, (2, 3, 4), (), 1)


@asynccontextmanager
async def serving(
    *servicers: tuple[Any, Callable[[Any, grpc.aio.Server], None]],
    address_of: Callable[[int], str] = lambda node: "",
) -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[FrontDoor(identify, address_of)])
    for servicer, add in servicers:
        add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


async def test_a_node_without_a_replica_forwards_to_the_leader_it_knows_and_names_it() -> None:
    leader = Leader()
    forwarder = Forwarder()
    add = log_pb2_grpc.add_LogServiceServicer_to_server
    async with serving((leader, add)) as leader_address:
        # This node holds no replica of group 7; leader_of says node 2 leads it.
        def address_of(node: int) -> str:
            return leader_address if node == 2 else ""

        outsider = LogService(_locate, lambda group: None, lambda group: 2, address_of, forwarder)
        async with (
            serving((outsider, add), address_of=address_of) as address,
            grpc.aio.insecure_channel(address) as channel,
        ):
            stub = log_pb2_grpc.LogServiceStub(channel)
            request = log_pb2.ProduceRequest(topic="t", partition=0)
            call = stub.Produce(request, metadata=bearer(TENANT_KEY), timeout=5)
            assert (await call).base_offset == 41
            assert (headers.LEADER, leader_address) in tuple(await call.trailing_metadata())
            # The leader's refusal is relayed as it is, naming the leader too.
            leader.fail = True
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Produce(request, metadata=bearer(TENANT_KEY), timeout=5)
            info = error_info(caught.value)
            assert info is not None and info.reason == "INVALID_PRODUCER_EPOCH"
            assert (headers.LEADER, leader_address) in tuple(caught.value.trailing_metadata() or ())
            # Asked not to forward: NOT_LEADER with the leader's address.
            no_forward = (*bearer(TENANT_KEY), (headers.NO_FORWARD, "1"))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Produce(request, metadata=no_forward, timeout=5)
            info = error_info(caught.value)
            assert info is not None and (info.reason, info.leader_address) == ("NOT_LEADER", leader_address)
    await forwarder.close()


async def test_a_node_without_a_replica_and_no_known_leader_answers_not_leader() -> None:
    forwarder = Forwarder()
    outsider = LogService(_locate, lambda group: None, lambda group: 0, lambda node: "", forwarder)
    async with (
        serving((outsider, log_pb2_grpc.add_LogServiceServicer_to_server)) as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await log_pb2_grpc.LogServiceStub(channel).Produce(
                log_pb2.ProduceRequest(topic="t", partition=0), metadata=bearer(TENANT_KEY), timeout=5
            )
    info = error_info(caught.value)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info is not None and (info.reason, info.leader_address) == ("NOT_LEADER", "")
    await forwarder.close()


# --- leaders reported by metadata: leader_of, not the local replica ----------------------


class _State:
    """The part of ControllerState the metadata and describe paths read."""

    topic_t = Topic("acme", "t", 2, 3, None, None, 5, (7, 8))

    def nodes(self) -> tuple[Node, ...]:
        return (Node(1, "n1:7000", "z", True),)

    def topic(self, tenant: str, name: str) -> Topic | None:
        return self.topic_t if (tenant, name) == ("acme", "t") else None

    def topics_for(self, tenant: str) -> tuple[Topic, ...]:
        return (self.topic_t,) if tenant == "acme" else ()

    def assignment(self, group: int) -> Assignment:
        return Assignment(group, "acme", "t", 5, group - 7, (2, 3, 4), (), 5)


class _Controller:
    state = _State()


async def test_metadata_and_describe_report_the_leader_leader_of_names() -> None:
    """This node holds no replica of either partition (as in the routing
    acceptance test); ``leader_of`` is what it knows: 3 leads group 7, the
    leader of group 8 is unknown."""
    leaders = {7: 3}
    controller: Any = _Controller()
    metadata = MetadataService(1, controller, lambda group: leaders.get(group, 0))
    admin = AdminService(1, controller, lambda group: leaders.get(group, 0), Forwarder())
    with acting_as(TENANT_CALLER):
        answer = await metadata.GetMetadata(metadata_pb2.GetMetadataRequest(), None)
        described = await admin.DescribeTopic(admin_pb2.DescribeTopicRequest(name="t"), None)
    assert [(p.partition, p.leader) for p in answer.topics[0].partitions] == [(0, 3), (1, 0)]
    assert [(a.partition, a.leader) for a in described.topic.assignments] == [(0, 3), (1, 0)]
