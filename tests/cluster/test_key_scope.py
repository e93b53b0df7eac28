"""Key scopes (cluster/frontend/key_scope.py) where they are enforced: the
method table at the front door (every public method has a row; each role ×
method admitted or refused with the right status and reason), prefix
matching, and the topic checks of the log and metadata services — a client
key outside its prefixes gets ``PERMISSION_DENIED KEY_SCOPE`` for its own
tenant's topics and exactly the ``NOT_FOUND`` a missing name gets for
another tenant's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health
from hypothesis import given
from hypothesis import strategies as st

from cluster.controller import Assignment, Node, Principal, Topic
from cluster.controller.model import KeyScope
from cluster.controller_replica import ControllerReplica
from cluster.frontend import front_door, key_scope
from cluster.frontend.front_door import OPERATOR_METHODS, PUBLIC_SERVICES, Caller, FrontDoor, acting_as
from cluster.frontend.grpc_errors import ServiceError
from cluster.frontend.key_scope import (
    METHOD_ACCESS,
    Access,
    TopicAction,
    check_group,
    check_topic,
    check_topics_by_name,
    may_use_topic,
)
from cluster.frontend.log_service import LogService
from cluster.frontend.metadata_service import MetadataService
from partitions.replica import ProduceResult, ReadResult, Replica
from raftlog.v1 import log_pb2, metadata_pb2
from raftlog.v1.reasons import Reason
from tests.cluster.test_front_door import Probe, Served, bearer, methods, path
from tests.cluster.test_front_door import refused as door_refused

pytestmark = pytest.mark.timeout(60)

CLIENT_SCOPE = KeyScope(
    "client",
    produce_prefixes=("orders.",),
    consume_prefixes=("orders.", "audit."),
    group_prefixes=("billing-",),
)
OPERATOR = Principal("k-op", None)
ADMIN = Principal("k-admin", "acme")
CLIENT = Principal("k-client", "acme", CLIENT_SCOPE)
READER = Principal("k-reader", "acme", KeyScope("client", consume_prefixes=("",)))
KEYS = {"op": OPERATOR, "admin": ADMIN, "client": CLIENT}

PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND

CLIENT_METHODS = {
    "/raftlog.v1.LogService/Produce",
    "/raftlog.v1.LogService/Fetch",
    "/raftlog.v1.LogService/StreamFetch",
    "/raftlog.v1.LogService/ListOffsets",
    "/raftlog.v1.LogService/InitProducer",
    "/raftlog.v1.MetadataService/GetMetadata",
    "/raftlog.v1.GroupService/JoinGroup",
    "/raftlog.v1.GroupService/Heartbeat",
    "/raftlog.v1.GroupService/LeaveGroup",
    "/raftlog.v1.GroupService/CommitOffsets",
    "/raftlog.v1.GroupService/FetchCommittedOffsets",
    "/raftlog.v1.GroupService/ListGroups",
    "/raftlog.v1.GroupService/DescribeGroup",
    "/raftlog.v1.AdminService/WhoAmI",
}
"""Written out here, apart from the table: what the issue lets a client key do."""


# --- the method table --------------------------------------------------------------------


def test_every_public_method_has_a_row_and_every_row_a_method() -> None:
    every = {path(m) for m in methods(PUBLIC_SERVICES)}
    assert set(METHOD_ACCESS) == every, (
        f"rows missing: {sorted(every - set(METHOD_ACCESS))}; rows for no method: {sorted(set(METHOD_ACCESS) - every)}"
    )


def test_the_operator_rows_are_the_doors_operator_methods_and_clients_get_only_the_data_path() -> None:
    assert {m for m, a in METHOD_ACCESS.items() if a is Access.OPERATOR} == set(OPERATOR_METHODS)
    assert {m for m, a in METHOD_ACCESS.items() if a is Access.CLIENT} == CLIENT_METHODS
    # One source of truth: the door's list is the table's, not a copy of it.
    assert OPERATOR_METHODS is key_scope.OPERATOR_METHODS


async def test_the_door_checks_the_method_once_with_check_method(
    door: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The door's only decision about the method is ``check_method`` (one
    call per call): with it standing aside, a tenant key reaches even an
    operator method's handler, so no second list decides behind it."""
    checked: list[tuple[str, str]] = []
    monkeypatch.setattr(front_door, "check_method", lambda m, p: checked.append((m, p.key_id)))
    operator_method = next(m for m in methods(PUBLIC_SERVICES) if path(m) in OPERATOR_METHODS)
    await door.call(operator_method, metadata=bearer("admin"))
    assert checked == [(path(operator_method), "k-admin")]
    assert [p for p, _ in door.probe.seen] == [path(operator_method)]


async def identify(context: grpc.aio.ServicerContext) -> Caller:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            principal = KEYS[value.removeprefix("Bearer ")]
            return Caller(principal, principal.tenant or "acme")
    raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, Reason.MISSING_API_KEY, "no key")


@pytest.fixture
async def door() -> AsyncIterator[Served]:
    probe = Probe()
    server = grpc.aio.server(interceptors=[FrontDoor(identify, lambda node: "")])
    for name in sorted(PUBLIC_SERVICES):
        server.add_generic_rpc_handlers((probe.handler(descriptor_pool.Default().FindServiceByName(name)),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(channel, probe, health.aio.HealthServicer())
    finally:
        await channel.close()
        await server.stop(grace=None)


async def test_each_role_calls_what_its_row_allows_and_is_refused_the_rest(door: Served) -> None:
    expected_refusal = {
        ("admin", Access.OPERATOR): (PERMISSION_DENIED, "OPERATOR_KEY_REQUIRED"),
        ("client", Access.OPERATOR): (PERMISSION_DENIED, "OPERATOR_KEY_REQUIRED"),
        ("client", Access.ADMIN): (PERMISSION_DENIED, "KEY_SCOPE"),
    }
    admitted: list[tuple[str, str]] = []
    for method in methods(PUBLIC_SERVICES):
        access = METHOD_ACCESS[path(method)]
        for role in KEYS:
            refusal = expected_refusal.get((role, access))
            if refusal is None:
                await door.call(method, metadata=bearer(role))
                admitted.append((path(method), role))
                continue
            code, reason, details = await door_refused(door, method, metadata=bearer(role))
            assert (code, reason) == refusal, (path(method), role)
            if reason == "KEY_SCOPE":
                assert "client key" in details and "k-client" in details
    # The handler ran exactly for the admitted calls, with the caller's key.
    seen = [(p, caller.principal.key_id if caller else "") for p, caller in door.probe.seen]
    assert seen == [(p, KEYS[role].key_id) for p, role in admitted]
    assert {p for p, role in admitted if role == "client"} == CLIENT_METHODS


# --- prefix matching ---------------------------------------------------------------------

NAMES = st.text(alphabet="ab.-_", max_size=6)
PREFIXES = st.lists(NAMES, max_size=3)


def _refusal(call: Callable[[], None]) -> tuple[grpc.StatusCode, str] | None:
    try:
        call()
    except ServiceError as error:
        return error.code, error.info.reason
    return None


@given(produce=PREFIXES, consume=PREFIXES, groups=PREFIXES, name=NAMES, exists=st.booleans())
def test_a_client_key_is_refused_exactly_outside_its_prefixes(
    produce: list[str], consume: list[str], groups: list[str], name: str, exists: bool
) -> None:
    scope = KeyScope("client", tuple(produce), tuple(consume), tuple(groups))
    key = Principal("k", "acme", scope)
    denied = (PERMISSION_DENIED, "KEY_SCOPE")
    in_produce = any(name.startswith(p) for p in produce)
    in_consume = any(name.startswith(p) for p in consume)
    in_groups = any(name.startswith(p) for p in groups)
    produce_answer = _refusal(lambda: check_topic(key, name, TopicAction.PRODUCE, exists=exists))
    consume_answer = _refusal(lambda: check_topic(key, name, TopicAction.CONSUME, exists=exists))
    assert produce_answer == (None if in_produce or not exists else denied)
    assert consume_answer == (None if in_consume or not exists else denied)
    # By name: whether the topic exists does not matter.
    assert _refusal(lambda: check_topics_by_name(key, [name], TopicAction.CONSUME)) == (
        None if in_consume else denied
    )
    assert _refusal(lambda: check_group(key, name)) == (None if in_groups else denied)
    assert may_use_topic(key, name) == (in_produce or in_consume)
    # Operator and admin keys pass every name check.
    for other in (OPERATOR, ADMIN):
        assert _refusal(lambda: check_topic(other, name, TopicAction.PRODUCE, exists=True)) is None  # noqa: B023
        assert _refusal(lambda: check_group(other, name)) is None  # noqa: B023
        assert may_use_topic(other, name)


def test_the_empty_prefix_matches_every_name_and_the_refusal_says_what_the_key_has() -> None:
    everything = Principal("k", "acme", KeyScope("client", consume_prefixes=("",)))
    check_topic(everything, "any.thing", TopicAction.CONSUME, exists=True)
    with pytest.raises(ServiceError) as caught:
        check_topic(everything, "any.thing", TopicAction.PRODUCE, exists=True)
    assert (
        "produce to topic 'any.thing'" in caught.value.info.message
        and "are none" in caught.value.info.message
    )
    with pytest.raises(ServiceError) as caught:
        check_topic(CLIENT, "payments", TopicAction.CONSUME, exists=True)
    assert "'audit.', 'orders.'" in caught.value.info.message
    assert dict(caught.value.info.metadata) == {"key_id": "k-client", "topic": "'payments'"}


# --- the log service ---------------------------------------------------------------------

GROUPS = {
    ("acme", "orders.eu"): 1,
    ("acme", "audit.log"): 2,
    ("acme", "payments"): 3,
    ("globex", "secret"): 4,
}


class FakeReplica:
    """A led partition with one record batch, enough for each log call."""

    is_leader = True
    leader = 0

    def __init__(self, group: int) -> None:
        self.group = group
        self.produced: list[bytes] = []

    async def produce(self, batch: bytes) -> ProduceResult:
        self.produced.append(batch)
        return ProduceResult(0, 0, 1)

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        return ReadResult([], 0, 0)

    async def wait_for_data(self, offset: int, timeout: float) -> bool:
        return False

    def status(self) -> Any:
        return type("Status", (), {"log_start_offset": 0, "high_watermark": 0})()


def locate(tenant: str, topic: str, partition: int) -> Assignment | None:
    group = GROUPS.get((tenant, topic))
    if group is None or partition != 0:
        return None
    return Assignment(group, tenant, topic, 1, 0, (1,), (), 1)


@dataclass
class Context:
    metadata: tuple[tuple[str, str], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return None


def log_service() -> tuple[LogService, dict[int, FakeReplica]]:
    replicas = {g: FakeReplica(g) for g in GROUPS.values()}
    replica_of = lambda group: cast(Replica, replicas.get(group))  # noqa: E731
    return LogService(locate, replica_of, lambda group: 0, lambda node: ""), replicas


def log_calls(service: LogService, topic: str, partition: int = 0) -> dict[str, Callable[[], Any]]:
    context = cast(grpc.aio.ServicerContext, Context())
    return {
        "produce": lambda: service.Produce(log_pb2.ProduceRequest(topic=topic, partition=partition), context),
        "fetch": lambda: service.Fetch(log_pb2.FetchRequest(topic=topic, partition=partition), context),
        "list_offsets": lambda: service.ListOffsets(
            log_pb2.ListOffsetsRequest(topic=topic, partition=partition), context
        ),
        "stream": lambda: service.StreamFetch(
            log_pb2.StreamFetchRequest(topic=topic, partition=partition), context
        ),
    }


async def answer(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, str] | None:
    """None when the call got past the checks (a stream: to its first write)."""
    try:
        await call()
    except ServiceError as error:
        return error.code, error.info.reason, error.info.message
    except AttributeError as error:  # the fake context has no write(): the stream was admitted
        assert "write" in str(error)
    return None


async def test_a_client_key_produces_and_reads_only_within_its_prefixes() -> None:
    service, replicas = log_service()
    with acting_as(Caller(CLIENT, "acme")):
        # produce orders.*, consume orders.* and audit.*
        for topic, allowed in (
            ("orders.eu", {"produce", "fetch", "list_offsets", "stream"}),
            ("audit.log", {"fetch", "list_offsets", "stream"}),
            ("payments", set()),
        ):
            for name, call in log_calls(service, topic).items():
                got = await answer(call)
                if name in allowed:
                    assert got is None, (topic, name, got)
                else:
                    assert got is not None and got[:2] == (PERMISSION_DENIED, "KEY_SCOPE"), (topic, name, got)
                    assert repr(topic) in got[2]
        # An existing topic of its own outside the prefixes: refused whatever the partition.
        got = await answer(log_calls(service, "payments", partition=9)["fetch"])
        assert got is not None and got[:2] == (PERMISSION_DENIED, "KEY_SCOPE")
    assert len(replicas[1].produced) == 1 and not replicas[2].produced and not replicas[3].produced


async def test_another_tenants_topic_gets_the_same_not_found_as_a_missing_one() -> None:
    service, _ = log_service()
    for principal in (CLIENT, ADMIN):
        with acting_as(Caller(principal, "acme")):
            for name in ("produce", "fetch", "list_offsets", "stream"):
                foreign = await answer(log_calls(service, "secret")[name])  # globex has it
                missing = await answer(log_calls(service, "nothing-here")[name])
                assert foreign is not None and missing is not None
                assert foreign[:2] == (NOT_FOUND, "UNKNOWN_TOPIC_OR_PARTITION")
                assert foreign == (missing[0], missing[1], missing[2].replace("nothing-here", "secret")), name


async def test_an_admin_and_an_operator_key_use_every_topic_of_the_tenant() -> None:
    service, _ = log_service()
    for principal in (ADMIN, OPERATOR):
        with acting_as(Caller(principal, "acme")):
            for topic in ("orders.eu", "audit.log", "payments"):
                for name, call in log_calls(service, topic).items():
                    assert await answer(call) is None, (principal, topic, name)


async def test_init_producer_needs_some_produce_prefix() -> None:
    service, _ = log_service()
    context = cast(grpc.aio.ServicerContext, Context())
    with acting_as(Caller(CLIENT, "acme")):
        assert (await service.InitProducer(log_pb2.InitProducerRequest(), context)).producer_id >= 0
    with acting_as(Caller(READER, "acme")), pytest.raises(ServiceError) as caught:
        await service.InitProducer(log_pb2.InitProducerRequest(), context)
    assert (caught.value.code, caught.value.info.reason) == (PERMISSION_DENIED, "KEY_SCOPE")


# --- the metadata service ----------------------------------------------------------------


class FakeState:
    def nodes(self) -> list[Node]:
        return []

    def _topic(self, tenant: str, name: str) -> Topic:
        return Topic(tenant, name, 1, 1, None, None, 1, (GROUPS[(tenant, name)],))

    def topic(self, tenant: str, name: str) -> Topic | None:
        return self._topic(tenant, name) if (tenant, name) in GROUPS else None

    def topics_for(self, tenant: str) -> tuple[Topic, ...]:
        return tuple(self._topic(t, n) for t, n in sorted(GROUPS) if t == tenant)

    def assignment(self, group: int) -> Assignment | None:
        return None


def metadata_service() -> MetadataService:
    controller = cast(ControllerReplica, type("Controller", (), {"state": FakeState()})())
    return MetadataService(1, controller, lambda group: 0)


async def metadata(principal: Principal, *topics: str) -> list[str]:
    with acting_as(Caller(principal, "acme")):
        context = cast(grpc.aio.ServicerContext, Context())
        response = await metadata_service().GetMetadata(
            metadata_pb2.GetMetadataRequest(topics=topics), context
        )
    return [t.name for t in response.topics]


async def test_metadata_lists_only_the_topics_a_client_key_may_use() -> None:
    assert await metadata(ADMIN) == ["audit.log", "orders.eu", "payments"]
    assert await metadata(CLIENT) == ["audit.log", "orders.eu"]
    assert await metadata(READER) == ["audit.log", "orders.eu", "payments"]
    # Named: missing and foreign names are absent, as for any key ...
    assert await metadata(CLIENT, "orders.eu", "secret", "nothing-here") == ["orders.eu"]
    assert await metadata(ADMIN, "secret", "nothing-here") == []
    # ... and a topic of its own tenant outside its prefixes is refused, saying so.
    with pytest.raises(ServiceError) as caught:
        await metadata(CLIENT, "orders.eu", "payments")
    assert (caught.value.code, caught.value.info.reason) == (PERMISSION_DENIED, "KEY_SCOPE")
    assert "'payments'" in caught.value.info.message
