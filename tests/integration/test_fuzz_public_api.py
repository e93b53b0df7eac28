"""Fuzzing every public ``raftlog.v1`` method against one real node (issue 14).

One node process (a single-node cluster, ``harness.local_cluster``) is sent,
for every method of every public service (found from the descriptors, so a
new method is fuzzed without a change here), with a tenant key or the
operator key and deadlines from 1 ms to 2 s:

(b) request bytes that do not decode as the method's request message
    (random bytes, and valid messages cut short or with an invalid tag
    appended, each checked locally not to parse): every answer is
    ``INVALID_ARGUMENT MALFORMED_REQUEST`` (or a refusal of the key, or a
    deadline), and nothing changes: the tenant, topic and partition counts
    and every partition's high watermark are the same before and after;
(a) valid messages with values drawn from the field types: integers at
    their bounds, negative and huge, long and odd strings, random bytes or
    real record batches in ``batch`` fields, repeated and nested fields.

Properties, for every answer: OK or a status in ``ALLOWED`` (``UNAVAILABLE``
only with a "no controller right now" reason), never ``UNKNOWN`` or
``INTERNAL``; after each example the node process is alive and its health
check answers ``SERVING`` within 5 s (a request that stalls the node's event
loop fails there).

``make test`` runs a short, derandomized version (``FUZZ_EXAMPLES`` examples
per property); ``make fuzz`` sets ``RAFTLOG_FUZZ_EXAMPLES`` to thousands,
with random seeds. A failure prints the method and the request (hypothesis
shrinks it) and the node's log tail.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.frontend.front_door import PUBLIC_SERVICES
from cluster.frontend.grpc_errors import error_info
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.v1 import admin_pb2, admin_pb2_grpc, headers, log_pb2, log_pb2_grpc
from raftlog.v1.reasons import Reason
from raftlog.v1.record_batch import Record, encode_batch

pytestmark = pytest.mark.timeout(600)

FUZZ_EXAMPLES = int(os.environ.get("RAFTLOG_FUZZ_EXAMPLES", "0"))
"""0: the short version ``make test`` runs (derandomized, few examples)."""
SHORT = FUZZ_EXAMPLES == 0
MALFORMED_EXAMPLES = FUZZ_EXAMPLES or 300
VALID_EXAMPLES = FUZZ_EXAMPLES or 1000

C = grpc.StatusCode
ALLOWED = frozenset(
    {
        C.OK,
        C.INVALID_ARGUMENT,
        C.NOT_FOUND,
        C.ALREADY_EXISTS,
        C.FAILED_PRECONDITION,
        C.PERMISSION_DENIED,
        C.UNAUTHENTICATED,
        C.OUT_OF_RANGE,
        C.DEADLINE_EXCEEDED,
        C.CANCELLED,
        C.RESOURCE_EXHAUSTED,
    }
)
UNAVAILABLE_REASONS = frozenset({Reason.NO_CONTROLLER})
"""``UNAVAILABLE`` is an answer only while the controller has no leader."""
DEADLINES_S = (0.001, 0.005, 0.05, 0.5, 2.0)
STREAM_READ_S = 0.5
"""A stream is read for at most this long (one response), then cancelled."""


def _settings(examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples,
        derandomize=SHORT,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


# --- the node -----------------------------------------------------------------------------


@dataclass
class Node:
    cluster: LocalCluster
    channel: grpc.Channel
    keys: dict[str, str]
    """"tenant" and "operator" -> API key."""

    @property
    def address(self) -> str:
        return self.cluster.addresses[1]

    def assert_alive(self) -> None:
        code = self.cluster.processes[1].poll()
        assert code is None, f"the node exited ({code}):\n{self.cluster.log_tail(1, 60)}"

    def assert_serving(self) -> None:
        """Alive, and its event loop answers a health check in time (a loop
        stalled in some request's work does not)."""
        self.assert_alive()
        answer = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def auth(key: str, tenant: str = "") -> tuple[tuple[str, str], ...]:
    metadata = ((headers.AUTHORIZATION, f"{headers.BEARER_PREFIX}{key}"),)
    return (*metadata, (headers.TENANT, tenant)) if tenant else metadata


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    cluster = LocalCluster(tmp_path_factory.mktemp("fuzz"), nodes=1, topics=[TopicSpec("t", partitions=2)])
    cluster.start_all()
    channel = grpc.insecure_channel(cluster.addresses[1])
    try:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        operator = auth(cluster.api_key)
        created = _retrying(
            lambda: admin.CreateTenant(
                admin_pb2.CreateTenantRequest(name="fuzz"), metadata=operator, timeout=10
            )
        )
        tenant_key = created.api_key.clear_text
        _retrying(
            lambda: admin.CreateTopic(
                admin_pb2.CreateTopicRequest(name="t", partitions=1), metadata=auth(tenant_key), timeout=10
            )
        )
        yield Node(cluster, channel, {"tenant": tenant_key, "operator": cluster.api_key})
    finally:
        channel.close()
        cluster.close()


def _retrying(call: Callable[[], Any], attempts: int = 100) -> Any:
    """A call of the test's own, retried while the node settles (no
    controller yet, a partition's first election under way)."""
    for attempt in range(attempts):
        try:
            return call()
        except grpc.RpcError as error:
            settling = error.code() == C.UNAVAILABLE or (
                (info := error_info(error)) is not None and info.reason == Reason.NOT_LEADER
            )
            if not settling or attempt == attempts - 1:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


# --- the methods and their messages ---------------------------------------------------------


def public_methods() -> list[MethodDescriptor]:
    pool = descriptor_pool.Default()
    return [m for name in sorted(PUBLIC_SERVICES) for m in pool.FindServiceByName(name).methods]


METHODS = {f"/{m.containing_service.full_name}/{m.name}": m for m in public_methods()}
"""gRPC path -> method: examples draw the path, so a failure names it."""


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


F = FieldDescriptor
_INT_BOUNDS = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
NAMES = ("t", "fuzz", "default", "g", "", ".", "..", "__consumer_offsets", "__system", "a/b", "ü")
"""Names that exist on the node, and ones the rules treat specially."""


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted({low, high, 0, 1, 2, high - 1, low + 1, -1 if low < 0 else high, 1000, 1001, 2**31 - 1})
    return st.one_of(
        st.sampled_from([e for e in edges if low <= e <= high]), st.integers(0, 5), st.integers(low, high)
    )


def strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(NAMES),
        st.text(max_size=12),
        st.text(alphabet="abcdefghij._-", min_size=240, max_size=260),
        # Past the 64 characters an error may quote, past every name rule,
        # and past the 65,535 bytes a controller command's text field holds.
        st.one_of(st.sampled_from((65, 250, 65_536, 70_000)), st.integers(64, 70_000)).map(lambda n: "x" * n),
    )


def batches() -> st.SearchStrategy[bytes]:
    records = st.lists(st.binary(max_size=32), min_size=1, max_size=4)
    return st.one_of(
        st.binary(max_size=128),
        records.map(lambda values: encode_batch([Record(value=v) for v in values])),
    )


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in _INT_BOUNDS:
        return integers(*_INT_BOUNDS[field.type])
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type == F.TYPE_STRING:
        return strings()
    if field.type == F.TYPE_BYTES:
        return batches() if field.name == "batch" else st.binary(max_size=128)
    if field.type == F.TYPE_ENUM:
        assert field.enum_type is not None
        return st.one_of(
            st.sampled_from([v.number for v in field.enum_type.values]), integers(-(2**31), 2**31 - 1)
        )
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32 if field.type == F.TYPE_FLOAT else 64)
    raise AssertionError(f"{field.full_name}: no strategy for field type {field.type}")


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor`` with every field set or not, drawn from its type."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.message_type is not None:
            if depth >= 2:
                continue
            value = messages(field.message_type, depth + 1)
        else:
            value = scalar(field)
        fields[field.name] = st.lists(value, max_size=4) if field.is_repeated else value

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = message_class(descriptor)()
        for name, strategy in fields.items():
            if not draw(st.booleans()):
                continue
            value = draw(strategy)
            field = descriptor.fields_by_name[name]
            if field.is_repeated:
                getattr(message, name).extend(value)
            elif field.message_type is not None:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return build()


def decodes(method: MethodDescriptor, data: bytes) -> bool:
    try:
        message_class(method.input_type).FromString(data)
    except DecodeError:
        return False
    return True


@st.composite
def malformed(draw: st.DrawFn, method: MethodDescriptor) -> bytes:
    """Bytes that do not decode as ``method``'s request (checked here)."""
    valid = draw(messages(method.input_type)).SerializeToString()
    data = draw(
        st.one_of(
            st.binary(min_size=1, max_size=96),
            st.just(valid[:-1]) if valid else st.just(b"\x0a"),
            st.binary(min_size=1, max_size=8).map(lambda tail: valid + b"\xff" + tail),
            st.just(valid + b"\x0a\x7f"),  # a field whose length runs past the end
        )
    )
    if decodes(method, data):
        data += b"\x0a\x7f"  # appended at the top level: the message cannot end there
    assert not decodes(method, data)
    return data


# --- one call -------------------------------------------------------------------------------


def identity(data: bytes) -> bytes:
    return data


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    reason: str
    details: str

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.details[:300]}"


def call(node: Node, method: MethodDescriptor, data: bytes, key: str, deadline_s: float) -> Answer:
    metadata = auth(node.keys[key])
    try:
        if method.server_streaming:
            stream = node.channel.unary_stream(path(method), identity, identity)(
                data, metadata=metadata, timeout=min(deadline_s, STREAM_READ_S)
            )
            try:
                next(stream)
            finally:
                stream.cancel()
        else:
            node.channel.unary_unary(path(method), identity, identity)(
                data, metadata=metadata, timeout=deadline_s
            )
    except grpc.RpcError as error:
        info = error_info(error)
        return Answer(error.code(), info.reason if info else "", error.details() or "")
    return Answer(C.OK, "", "")


def assert_allowed(answer: Answer, what: str) -> None:
    if answer.code == C.UNAVAILABLE:
        assert answer.reason in UNAVAILABLE_REASONS, f"{what}: {answer}"
        return
    assert answer.code in ALLOWED, f"{what}: {answer}"


# --- what must not change ------------------------------------------------------------------


AUDIT_TOPIC = ("__system", "__audit")


def observed(node: Node) -> dict[str, Any]:
    """Tenant, topic and partition counts, and every partition's high watermark."""
    operator = node.keys["operator"]
    admin = admin_pb2_grpc.AdminServiceStub(node.channel)
    log = log_pb2_grpc.LogServiceStub(node.channel)
    status = admin.GetClusterStatus(admin_pb2.GetClusterStatusRequest(), metadata=auth(operator), timeout=10)
    seen: dict[str, Any] = {"counts": (status.tenants, status.topics, status.partitions)}
    tenants = admin.ListTenants(
        admin_pb2.ListTenantsRequest(page_size=1000), metadata=auth(operator), timeout=10
    )
    for tenant in tenants.tenants:
        as_tenant = auth(operator, tenant.name)
        topics = admin.ListTopics(admin_pb2.ListTopicsRequest(page_size=1000), metadata=as_tenant, timeout=10)
        for topic in topics.topics:
            if (tenant.name, topic.name) == AUDIT_TOPIC:
                continue  # records every refused admin attempt by design (cluster/audit)
            for partition in range(topic.partitions):
                request = log_pb2.ListOffsetsRequest(topic=topic.name, partition=partition)
                offsets = _retrying(
                    lambda r=request, m=as_tenant: log.ListOffsets(r, metadata=m, timeout=10)  # type: ignore[misc]
                )
                seen[f"{tenant.name}/{topic.name}/{partition}"] = offsets.high_watermark
    return seen


# --- the properties -------------------------------------------------------------------------

KEYS = st.sampled_from(("tenant", "operator"))
DEADLINES = st.sampled_from(DEADLINES_S)


@st.composite
def malformed_calls(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(METHODS)))
    return name, draw(malformed(METHODS[name]))


def test_malformed_requests_are_refused_and_change_nothing(node: Node) -> None:
    before = observed(node)

    @_settings(MALFORMED_EXAMPLES)
    @given(call_=malformed_calls(), key=KEYS, deadline_s=DEADLINES)
    def malformed_request(call_: tuple[str, bytes], key: str, deadline_s: float) -> None:
        name, data = call_
        answer = call(node, METHODS[name], data, key, deadline_s)
        what = f"{name} with {key} key, {len(data)} malformed bytes {data[:40]!r}"
        if answer.code not in (C.DEADLINE_EXCEEDED, C.CANCELLED, C.PERMISSION_DENIED):
            # PERMISSION_DENIED: a tenant key on an operator method, refused first.
            assert (answer.code, answer.reason) == (C.INVALID_ARGUMENT, Reason.MALFORMED_REQUEST), (
                f"{what}: {answer}"
            )
        node.assert_serving()

    malformed_request()
    node.assert_serving()
    assert observed(node) == before


@st.composite
def valid_calls(draw: st.DrawFn) -> tuple[str, Message]:
    name = draw(st.sampled_from(sorted(METHODS)))
    return name, draw(messages(METHODS[name].input_type))


def test_valid_requests_with_random_values_get_an_allowed_answer(node: Node) -> None:
    @_settings(VALID_EXAMPLES)
    @given(call_=valid_calls(), key=KEYS, deadline_s=DEADLINES)
    def valid_request(call_: tuple[str, Message], key: str, deadline_s: float) -> None:
        name, request = call_
        answer = call(node, METHODS[name], request.SerializeToString(), key, deadline_s)
        assert_allowed(answer, f"{name} with {key} key: {str(request)[:500]}")
        node.assert_serving()

    valid_request()
    node.assert_serving()
