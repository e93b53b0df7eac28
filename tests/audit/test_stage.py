"""The audit stage (cluster/audit/stage.py) behind a real front door on a
loopback gRPC server, one test per kind of outcome: done, refused by the
handler, refused at the door for the key, relayed from a forwarded call,
cancelled; and what is not recorded: read-only calls, calls another node
forwarded here with its proof. No event holds a secret."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory

from cluster.audit.call_notes import note_created_key
from cluster.audit.events import CREATED_KEY_ID, AuditEvent
from cluster.audit.stage import AuditStage
from cluster.controller import Principal
from cluster.frontend.forwarding import FORWARDED_CHANGE_PROOF
from cluster.frontend.front_door import Caller, FrontDoor
from cluster.frontend.grpc_errors import ServiceError, abort, error_info
from cluster.internal.node_auth import NodeCredentials
from raftlog.v1 import admin_pb2, admin_pb2_grpc, headers
from raftlog.v1.reasons import Reason

pytestmark = pytest.mark.timeout(30)

SECRET = bytes(range(32))
CLEAR_KEY = "rlk_0123456789abcdef_THIS-IS-THE-SECRET-PART-OF-THE-KEY-0000000"
NEW_KEY_ID = "0123456789abcdef"
CALLERS = {
    "op": Caller(Principal("k-op", None), "acme"),
    "tenant": Caller(Principal("k-tenant", "acme"), "acme"),
}
ADMIN = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]
Behaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


async def identify(context: grpc.aio.ServicerContext) -> Caller:
    for key, value in context.invocation_metadata() or ():
        if key == headers.AUTHORIZATION:
            return CALLERS[value.removeprefix(headers.BEARER_PREFIX)]
    raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, Reason.MISSING_API_KEY, "no key")


class Recorded:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record(self, event: AuditEvent) -> bool:
        self.events.append(event)
        return True

    def record_door_refusal(self, event: AuditEvent) -> None:
        self.events.append(event)


def behaviours() -> dict[str, Behaviour]:
    async def create_api_key(request: Any, context: grpc.aio.ServicerContext) -> Any:
        note_created_key(NEW_KEY_ID)  # what the real handler tells the audit
        return admin_pb2.CreateApiKeyResponse(
            api_key=admin_pb2.ApiKey(key_id=NEW_KEY_ID, tenant=request.tenant, clear_text=CLEAR_KEY)
        )

    async def rotate_api_key(request: Any, context: grpc.aio.ServicerContext) -> Any:
        # The new key stored, then the old key's expiry refused.
        note_created_key(NEW_KEY_ID)
        raise ServiceError(grpc.StatusCode.UNAVAILABLE, Reason.NO_CONTROLLER, "the leader changed")

    async def delete_topic(request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise ServiceError(grpc.StatusCode.NOT_FOUND, Reason.UNKNOWN_TOPIC, f"no topic {request.name}")

    async def create_tenant(request: Any, context: grpc.aio.ServicerContext) -> Any:
        # What a node that forwarded the call does with the leader's refusal
        # (forwarding.relay_error): ends the call itself.
        refusal = ServiceError(grpc.StatusCode.ALREADY_EXISTS, Reason.TENANT_EXISTS, "tenant exists")
        await abort(context, refusal)

    async def decommission(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await asyncio.sleep(30)

    return {
        "CreateApiKey": create_api_key,
        "RotateApiKey": rotate_api_key,
        "DeleteTopic": delete_topic,
        "CreateTenant": create_tenant,
        "DecommissionNode": decommission,
    }


@pytest.fixture
async def served() -> AsyncIterator[tuple[admin_pb2_grpc.AdminServiceStub, Recorded, NodeCredentials]]:
    recorded = Recorded()
    credentials = NodeCredentials(SECRET, 2)
    stage = AuditStage(7, recorded, credentials.checker())
    door = FrontDoor(identify, lambda _n: "", stages=[stage], refused=stage.refused_at_door)
    server = grpc.aio.server(interceptors=[door])
    table = behaviours()
    handlers = {}
    for method in ADMIN.methods:
        reply = message_factory.GetMessageClass(method.output_type)
        decode = message_factory.GetMessageClass(method.input_type).FromString

        def make(name: str, reply: Any = reply) -> Behaviour:
            async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if name in table:
                    return await table[name](request, context)
                return reply()

            return answer

        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            make(method.name), decode, lambda m: m.SerializeToString()
        )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(ADMIN.full_name, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield admin_pb2_grpc.AdminServiceStub(channel), recorded, credentials
    finally:
        await channel.close()
        await server.stop(None)


def key(who: str) -> tuple[tuple[str, str], ...]:
    return ((headers.AUTHORIZATION, f"{headers.BEARER_PREFIX}{who}"),)


async def test_a_change_that_is_done_is_recorded_with_who_what_when_where(served: Any) -> None:
    stub, recorded, _ = served
    await stub.CreateTopic(
        admin_pb2.CreateTopicRequest(name="orders", partitions=3, replication_factor=2), metadata=key("op")
    )
    [event] = recorded.events
    assert (event.method, event.outcome, event.code, event.reason) == ("CreateTopic", "ok", "OK", "")
    assert (event.key_id, event.key_tenant, event.tenant, event.node) == ("k-op", None, "acme", 7)
    assert event.target == {"name": "orders", "partitions": 3, "replication_factor": 2}
    assert event.peer.startswith("ipv") and "127.0.0.1" in event.peer
    assert event.time_ms > 1_600_000_000_000 and len(event.id) == 32


async def test_a_created_key_is_recorded_without_its_clear_text(served: Any) -> None:
    stub, recorded, _ = served
    answer = await stub.CreateApiKey(admin_pb2.CreateApiKeyRequest(tenant="acme"), metadata=key("op"))
    assert answer.api_key.clear_text == CLEAR_KEY
    [event] = recorded.events
    # The id the handler noted, beside the request's fields; never the clear text.
    assert event.method == "CreateApiKey" and event.target == {"tenant": "acme", CREATED_KEY_ID: NEW_KEY_ID}
    assert "SECRET" not in repr(event)


async def test_a_key_created_by_a_refused_call_is_still_named(served: Any) -> None:
    stub, recorded, _ = served
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.RotateApiKey(admin_pb2.RotateApiKeyRequest(key_id="00000000000000aa"), metadata=key("op"))
    [event] = recorded.events
    assert (event.outcome, event.reason) == ("refused", "NO_CONTROLLER")
    assert event.target == {"key_id": "00000000000000aa", CREATED_KEY_ID: NEW_KEY_ID}
    # Notes belong to their call: the next one starts without them.
    await stub.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id="00000000000000aa"), metadata=key("op"))
    assert recorded.events[1].target == {"key_id": "00000000000000aa"}


def test_no_request_has_a_field_named_like_the_created_key_entry() -> None:
    for method in ADMIN.methods:
        assert CREATED_KEY_ID not in method.input_type.fields_by_name, method.name


async def test_a_refusal_by_the_handler_is_recorded_with_its_reason(served: Any) -> None:
    stub, recorded, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name="nope"), metadata=key("tenant"))
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND  # the audit changes no answer
    [event] = recorded.events
    assert (event.outcome, event.code, event.reason) == ("refused", "NOT_FOUND", "UNKNOWN_TOPIC")
    assert (event.key_id, event.key_tenant, event.target) == ("k-tenant", "acme", {"name": "nope"})
    assert event.message == "no topic nope"


async def test_a_key_refused_at_the_door_is_recorded(served: Any) -> None:
    stub, recorded, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateTenant(admin_pb2.CreateTenantRequest(name="evil"), metadata=key("tenant"))
    info = error_info(refused.value)
    assert info is not None and info.reason == Reason.OPERATOR_KEY_REQUIRED
    [event] = recorded.events
    assert (event.method, event.outcome, event.reason) == ("CreateTenant", "refused", "OPERATOR_KEY_REQUIRED")
    assert event.key_id == "k-tenant" and event.target == {}  # the door refuses before decoding


async def test_a_relayed_refusal_is_recorded_with_the_leaders_reason(served: Any) -> None:
    stub, recorded, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateTenant(admin_pb2.CreateTenantRequest(name="acme"), metadata=key("op"))
    assert refused.value.code() is grpc.StatusCode.ALREADY_EXISTS
    [event] = recorded.events
    assert (event.outcome, event.code, event.reason) == ("refused", "ALREADY_EXISTS", "TENANT_EXISTS")
    assert event.target == {"name": "acme"}


async def test_a_call_the_client_gave_up_on_is_recorded_as_unknown(served: Any) -> None:
    stub, recorded, _ = served
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.DecommissionNode(
            admin_pb2.DecommissionNodeRequest(node_id=3), metadata=key("op"), timeout=0.3
        )
    for _ in range(100):
        if recorded.events:
            break
        await asyncio.sleep(0.02)
    [event] = recorded.events
    assert (event.outcome, event.code, event.target) == ("unknown", "CANCELLED", {"node_id": "3"})


async def test_read_only_calls_are_not_recorded(served: Any) -> None:
    stub, recorded, _ = served
    await stub.ListTopics(admin_pb2.ListTopicsRequest(), metadata=key("op"))
    await stub.DescribeTopic(admin_pb2.DescribeTopicRequest(name="orders"), metadata=key("op"))
    await stub.WhoAmI(admin_pb2.WhoAmIRequest(), metadata=key("tenant"))
    assert recorded.events == []


async def test_a_call_forwarded_by_a_node_is_left_to_that_node(served: Any) -> None:
    stub, recorded, credentials = served
    forwarded = (*key("op"), (headers.NO_FORWARD, "1"), *credentials.metadata(FORWARDED_CHANGE_PROOF))
    await stub.CreateTopic(admin_pb2.CreateTopicRequest(name="a", partitions=1), metadata=forwarded)
    assert recorded.events == []
    # A client's own no-forward header, or a proof made without the secret,
    # hides nothing.
    forged = NodeCredentials(bytes(32), 2).metadata(FORWARDED_CHANGE_PROOF)
    await stub.CreateTopic(
        admin_pb2.CreateTopicRequest(name="b", partitions=1), metadata=(*key("op"), (headers.NO_FORWARD, "1"))
    )
    await stub.CreateTopic(
        admin_pb2.CreateTopicRequest(name="c", partitions=1), metadata=(*key("op"), *forged)
    )
    # A proof is good once: replayed, it is no proof.
    await stub.CreateTopic(admin_pb2.CreateTopicRequest(name="d", partitions=1), metadata=forwarded)
    assert [e.target["name"] for e in recorded.events] == ["b", "c", "d"]
