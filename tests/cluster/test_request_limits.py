"""Requests are checked before any work is done for them (issue 14):

- a new topic's partitions against the per-topic, per-tenant and cluster
  caps before placement runs (an attacker's ``partitions = 2**32 - 1`` once
  stalled the controller leader in placement), by the same rule the state
  applies; replication factor, retention and names too, so every value a
  command carries fits its encoding;
- request bytes that do not decode: ``INVALID_ARGUMENT MALFORMED_REQUEST``
  on every public method (unary and streaming), and the handler never runs;
- error texts quote at most a short prefix of a client-supplied name;
- no API key, the operator's included, writes an internal topic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from cluster.controller import Principal
from cluster.controller.commands import CreateTopic
from cluster.controller.model import (
    MAX_PARTITIONS,
    MAX_TENANT_PARTITIONS,
    SHOWN_MAX,
    check_partitions,
    shown,
)
from cluster.controller.results import Rejected, RejectReason
from cluster.controller.state import ControllerState
from cluster.frontend.admin_service import AdminService
from cluster.frontend.forwarding import Forwarder
from cluster.frontend.front_door import PUBLIC_SERVICES, Caller, acting_as
from cluster.frontend.grpc_errors import ServiceError, error_info
from cluster.frontend.log_service import LogService
from cluster.groups.group_logs import OFFSETS_TOPIC, SYSTEM_TENANT
from raftlog.v1 import admin_pb2, groups_pb2, log_pb2
from raftlog.v1.reasons import Reason
from tests.cluster.test_front_door import (
    OPERATOR_KEY,
    TENANT_KEY,
    Served,
    bearer,
    methods,
    path,
    served,  # noqa: F401  (a fixture)
)
from tests.controller.harness import Log, cluster, create_topic
from tests.groups.test_service import harness

pytestmark = pytest.mark.timeout(60)

ACME = Caller(Principal("k-acme", "acme"), "acme")
OPERATOR_IN_SYSTEM = Caller(Principal("k-op", None), SYSTEM_TENANT)
OPERATOR_IN_ACME = Caller(Principal("k-op", None), "acme")
HUGE = "x" * 100_000


class LeaderController:
    """The controller replica on its leader: proposals apply to a real state."""

    is_leader = True
    leader_address = ""

    def __init__(self, log: Log) -> None:
        self.log = log

    @property
    def state(self) -> ControllerState:
        return self.log.state

    async def submit(self, data: bytes) -> Any:
        return self.log.state.apply(self.log.next_index, data)


class Context:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def time_remaining(self) -> float | None:
        return 5.0

    def set_trailing_metadata(self, metadata: object) -> None:
        pass


def admin_over(log: Log) -> AdminService:
    controller: Any = LeaderController(log)
    return AdminService(1, controller, lambda group: 0, Forwarder())


@pytest.fixture
def no_placement(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Placement that records it ran and places nothing: a check after it is too late."""
    ran: list[int] = []

    def place(state: object, partitions: int, replication_factor: int) -> tuple[tuple[int, ...], ...]:
        ran.append(partitions)
        raise AssertionError(f"placement ran for {partitions} partitions before the limits were checked")

    monkeypatch.setattr("cluster.frontend.admin_service.place_partitions", place)
    return ran


async def refusal(call: Awaitable[object], caller: Caller = ACME) -> ServiceError:
    with acting_as(caller), pytest.raises(ServiceError) as caught:
        await call
    return caught.value


# --- partition caps, before placement ----------------------------------------------------


@pytest.mark.parametrize("partitions", [2**32 - 1, MAX_PARTITIONS + 1])
async def test_a_topic_too_wide_for_any_cap_is_refused_before_placement(
    partitions: int, no_placement: list[int]
) -> None:
    admin = admin_over(cluster(1, tenants=["acme"]))
    request = admin_pb2.CreateTopicRequest(name="wide", partitions=partitions)
    error = await refusal(admin.CreateTopic(request, Context()))
    assert (error.code, error.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_PARTITIONS)
    assert no_placement == []


async def test_the_tenant_cap_is_checked_before_placement_and_again_at_apply(
    no_placement: list[int],
) -> None:
    log = cluster(1, tenants=["acme", "beta"])
    create_topic(log, "acme", "most", partitions=MAX_TENANT_PARTITIONS - 1, replication_factor=1)
    admin = admin_over(log)
    request = admin_pb2.CreateTopicRequest(name="two", partitions=2)
    error = await refusal(admin.CreateTopic(request, Context()))
    # The tenant's cap is its partition quota (built-in default
    # MAX_TENANT_PARTITIONS): a count quota, so no retry-after.
    assert (error.code, error.info.reason, error.info.retry_after_ms) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        Reason.QUOTA_EXCEEDED,
        0,
    )
    assert no_placement == []
    # The same rule at apply (a command proposed past the check).
    result = log.apply(CreateTopic("acme", "two", 2, 1, None, None, ((1,), (1,))))
    assert isinstance(result, Rejected) and result.reason == RejectReason.QUOTA_EXCEEDED
    # Another tenant is not charged for acme's partitions.
    assert check_partitions(2, *log.state.partition_counts("beta")) is None


async def test_the_cluster_cap_counts_every_tenant(
    no_placement: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cluster.controller.model.MAX_CLUSTER_PARTITIONS", 5)
    log = cluster(1, tenants=["acme", "beta"])
    create_topic(log, "beta", "four", partitions=4, replication_factor=1)
    error = await refusal(
        admin_over(log).CreateTopic(admin_pb2.CreateTopicRequest(name="two", partitions=2), Context())
    )
    assert error.info.reason == Reason.TOO_MANY_PARTITIONS and "cluster" in error.info.message
    assert no_placement == []
    result = log.apply(CreateTopic("acme", "two", 2, 1, None, None, ((1,), (1,))))
    assert isinstance(result, Rejected) and result.reason == RejectReason.TOO_MANY_PARTITIONS


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"replication_factor": 2**32 - 1}, Reason.INVALID_REPLICATION_FACTOR),
        ({"retention_ms": 0}, Reason.INVALID_RETENTION),
        ({"retention_ms": -(2**63)}, Reason.INVALID_RETENTION),
        ({"retention_bytes": -1}, Reason.INVALID_RETENTION),
        ({"name": HUGE}, Reason.INVALID_NAME),
        ({"name": "bad name\n"}, Reason.INVALID_NAME),
    ],
)
async def test_other_topic_fields_are_checked_before_placement(
    request_fields: dict[str, Any], reason: Reason, no_placement: list[int]
) -> None:
    fields: dict[str, Any] = {"name": "t", "partitions": 1, **request_fields}
    admin = admin_over(cluster(1, tenants=["acme"]))
    error = await refusal(admin.CreateTopic(admin_pb2.CreateTopicRequest(**fields), Context()))
    assert (error.code, error.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert no_placement == []


AdminCall = Callable[[AdminService], Awaitable[object]]


@pytest.mark.parametrize(
    ("call", "code", "reason"),
    [
        (
            lambda a: a.CreateTenant(admin_pb2.CreateTenantRequest(name=HUGE), Context()),
            grpc.StatusCode.INVALID_ARGUMENT,
            Reason.INVALID_NAME,
        ),
        (
            lambda a: a.DeleteTenant(admin_pb2.DeleteTenantRequest(name=HUGE), Context()),
            grpc.StatusCode.NOT_FOUND,
            Reason.UNKNOWN_TENANT,
        ),
        (
            lambda a: a.CreateApiKey(admin_pb2.CreateApiKeyRequest(tenant=HUGE), Context()),
            grpc.StatusCode.NOT_FOUND,
            Reason.UNKNOWN_TENANT,
        ),
        (
            lambda a: a.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=HUGE), Context()),
            grpc.StatusCode.NOT_FOUND,
            Reason.UNKNOWN_API_KEY,
        ),
        (
            lambda a: a.DeleteTopic(admin_pb2.DeleteTopicRequest(name=HUGE), Context()),
            grpc.StatusCode.NOT_FOUND,
            Reason.UNKNOWN_TOPIC,
        ),
        (
            lambda a: a.DescribeTopic(admin_pb2.DescribeTopicRequest(name=HUGE), Context()),
            grpc.StatusCode.NOT_FOUND,
            Reason.UNKNOWN_TOPIC,
        ),
    ],
)
async def test_a_huge_name_gets_a_short_answer_and_changes_nothing(
    call: AdminCall, code: grpc.StatusCode, reason: Reason
) -> None:
    """A name longer than any command field holds (65,535 bytes) once failed
    in the encoder, as INTERNAL; now the answer says what is wrong, briefly."""
    log = cluster(1, tenants=["acme"])
    before = log.state.snapshot()
    error = await refusal(call(admin_over(log)), Caller(Principal("k-op", None), "acme"))
    assert (error.code, error.info.reason) == (code, reason)
    assert_short(error)
    assert log.state.snapshot() == before


# --- what an error may quote -----------------------------------------------------------


def assert_short(error: ServiceError) -> None:
    assert len(error.info.message) < 300, error.info.message[:400]
    for value in error.info.metadata.values():
        assert len(value) < 100, value[:200]


def test_shown_quotes_a_short_escaped_prefix_and_the_length() -> None:
    assert shown("events") == "'events'"
    assert shown("a\nb") == "'a\\nb'"
    long = shown("é" * 10_000)
    assert long.startswith(repr("é" * SHOWN_MAX)) and "10000 characters" in long
    assert len(long) < SHOWN_MAX + 40


async def test_an_unknown_huge_topic_is_quoted_briefly_by_the_log_service() -> None:
    service = LogService(lambda tenant, topic, partition: None, lambda group: None, lambda g: 0, str)
    request = log_pb2.FetchRequest(topic=HUGE, partition=0)
    error = await refusal(service._fetch(request, Context()))
    assert error.info.reason == Reason.UNKNOWN_TOPIC_OR_PARTITION
    assert_short(error)


@pytest.mark.parametrize(
    "request_",
    [
        groups_pb2.DescribeGroupRequest(group=HUGE),
        groups_pb2.DescribeGroupRequest(group="bad group " * 20),
        groups_pb2.HeartbeatRequest(group="g", member_id=HUGE, member_epoch=1),
        groups_pb2.JoinGroupRequest(group="g", member_id=HUGE, topics=["a"]),
        groups_pb2.JoinGroupRequest(group="g", topics=[HUGE]),
    ],
)
async def test_group_requests_quote_names_briefly(request_: Any) -> None:
    service = harness().service
    handlers: dict[str, Callable[[str, Any], Awaitable[object]]] = {
        "DescribeGroupRequest": service.describe_group,
        "HeartbeatRequest": service.heartbeat,
        "JoinGroupRequest": service.join_group,
    }
    handler = handlers[type(request_).__name__]
    with pytest.raises(ServiceError) as caught:
        await handler("acme", request_)
    assert (caught.value.code, caught.value.info.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_NAME,
    )
    assert_short(caught.value)


# --- internal topics ---------------------------------------------------------------------


def _never_located(tenant: str, topic: str, partition: int) -> None:
    raise AssertionError("an internal topic was looked up for a produce")


@pytest.mark.parametrize(
    ("caller", "topic"),
    [
        (OPERATOR_IN_SYSTEM, OFFSETS_TOPIC),
        (OPERATOR_IN_SYSTEM, "other"),
        (ACME, "__consumer_offsets"),
        # The flag service's topic: only operator keys, only in a tenant.
        (ACME, "__flags"),
        (OPERATOR_IN_SYSTEM, "__flags"),
        (OPERATOR_IN_ACME, "__other"),
    ],
)
async def test_no_key_produces_to_an_internal_topic(caller: Caller, topic: str) -> None:
    service = LogService(_never_located, lambda group: None, lambda g: 0, str)
    request = log_pb2.ProduceRequest(topic=topic, partition=0, batch=b"")
    error = await refusal(service._produce(request, Context()), caller)
    assert (error.code, error.info.reason) == (grpc.StatusCode.PERMISSION_DENIED, Reason.INTERNAL_TOPIC)


async def test_no_key_creates_or_deletes_an_internal_topic(no_placement: list[int]) -> None:
    log = cluster(1, tenants=["acme", SYSTEM_TENANT])
    create_topic(log, SYSTEM_TENANT, OFFSETS_TOPIC, partitions=1, replication_factor=1)
    admin = admin_over(log)
    before = log.state.snapshot()
    calls = [
        (OPERATOR_IN_SYSTEM, admin.DeleteTopic(admin_pb2.DeleteTopicRequest(name=OFFSETS_TOPIC), Context())),
        (
            OPERATOR_IN_SYSTEM,
            admin.CreateTopic(admin_pb2.CreateTopicRequest(name="x", partitions=1), Context()),
        ),
        (ACME, admin.CreateTopic(admin_pb2.CreateTopicRequest(name="__x", partitions=1), Context())),
    ]
    for caller, call in calls:
        error = await refusal(call, caller)
        assert (error.code, error.info.reason) == (grpc.StatusCode.PERMISSION_DENIED, Reason.INTERNAL_TOPIC)
    assert log.state.snapshot() == before


async def test_only_an_operator_key_writes_a_tenants_flag_topic() -> None:
    """``__flags`` (internal_topics.SERVICE_TOPICS): the flag server, acting
    in a tenant with the operator key, creates and writes it; the tenant's
    own key reads it but cannot create it, write it or delete it."""
    log = cluster(1, tenants=["acme", SYSTEM_TENANT])
    admin = admin_over(log)
    before = log.state.snapshot()
    request = admin_pb2.CreateTopicRequest(name="__flags", partitions=1)
    error = await refusal(admin.CreateTopic(request, Context()), ACME)
    assert (error.code, error.info.reason) == (grpc.StatusCode.PERMISSION_DENIED, Reason.INTERNAL_TOPIC)
    assert "raftlog flags" in error.info.message
    assert log.state.snapshot() == before
    with acting_as(OPERATOR_IN_ACME):
        await admin.CreateTopic(request, Context())
    assert log.state.topic("acme", "__flags") is not None
    delete = admin_pb2.DeleteTopicRequest(name="__flags")
    error = await refusal(admin.DeleteTopic(delete, Context()), ACME)
    assert error.info.reason == Reason.INTERNAL_TOPIC
    assert log.state.topic("acme", "__flags") is not None


# --- malformed request bytes, through the door ------------------------------------------

MALFORMED = (b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08")
"""An invalid tag, a string field cut short, a varint cut short."""


async def _raw_call(door: Served, method: Any, data: bytes, key: str) -> grpc.aio.AioRpcError:
    identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    if method.server_streaming:
        stream = door.channel.unary_stream(path(method), identity, identity)
        call: Any = stream(data, metadata=bearer(key), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    else:
        unary = door.channel.unary_unary(path(method), identity, identity)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(data, metadata=bearer(key), timeout=5)
    return caught.value


async def test_malformed_request_bytes_are_invalid_argument_on_every_public_method(
    served: Served,  # noqa: F811
) -> None:
    every = methods(PUBLIC_SERVICES)
    assert any(m.server_streaming for m in every)
    for method in every:
        for data in MALFORMED:
            error = await _raw_call(served, method, data, OPERATOR_KEY)
            info = error_info(error)
            assert (error.code(), info.reason if info else "") == (
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.MALFORMED_REQUEST,
            ), (path(method), data, error.details())
    assert served.probe.seen == [], "no handler ran for a request that did not decode"
    # Authentication first: without a valid key the answer says only that.
    error = await _raw_call(served, every[0], MALFORMED[0], "nobody")
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # A tenant key on an operator method: refused as such, not as malformed.
    operator_only = next(m for m in every if m.name == "CreateTenant")
    assert (await _raw_call(served, operator_only, MALFORMED[0], TENANT_KEY)).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )
