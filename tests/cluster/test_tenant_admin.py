"""AdminService's tenant calls (issue 18), in-process over a real controller
state on its leader: SetTenantQuota and DescribeTenant, API keys with
scopes and expiry (create, revoke, list, rotate), and who may do which —
every refusal with its status and reason, and nothing changed by it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pytest

from cluster.controller import Principal, issue_api_key
from cluster.controller.model import MAX_TENANT_PARTITIONS, KeyScope
from cluster.controller.quotas import QUOTA_FIELDS, QuotaLimits
from cluster.frontend.admin_service import AdminService
from cluster.frontend.forwarding import Forwarder
from cluster.frontend.front_door import OPERATOR_METHODS, Caller, acting_as
from cluster.frontend.grpc_errors import ServiceError
from raftlog.v1 import admin_pb2
from raftlog.v1.reasons import Reason
from tests.cluster.test_request_limits import Context, LeaderController
from tests.controller.harness import Log, cluster, create_topic

pytestmark = pytest.mark.timeout(30)

C = grpc.StatusCode
Q = admin_pb2.QuotaSettings
OPERATOR = Caller(Principal("00000000000000aa", None), "default")


@dataclass
class World:
    log: Log
    service: AdminService
    admin: Caller  # acme's admin key
    client: Caller  # acme's client key
    beta_key: str  # beta's admin key id
    operator_key: str


class FixedUsage:
    def __init__(self, figures: dict[str, int] | Exception) -> None:
        self.figures = figures
        self.asked: list[str] = []

    async def usage(self, tenant: str) -> dict[str, int]:
        self.asked.append(tenant)
        if isinstance(self.figures, Exception):
            raise self.figures
        return self.figures


def world(usage: Any = None) -> World:
    log = cluster(3, tenants=["acme", "beta"])
    create_topic(log, "acme", "orders", partitions=3)
    create_topic(log, "acme", "audit", partitions=2)
    keys = {}
    for name, tenant, scope in (
        ("admin", "acme", None),
        ("client", "acme", KeyScope("client", ("orders",), ("orders",))),
        ("beta", "beta", None),
        ("operator", None, None),
    ):
        command = issue_api_key(tenant).command
        if scope is not None:
            command = type(command)(command.key_id, tenant, command.salt, command.digest, scope)
        log.ok(command)
        keys[name] = command.key_id
    controller: Any = LeaderController(log)
    service = AdminService(1, controller, lambda group: 0, Forwarder(), usage=usage)
    client_key = log.state.api_key(keys["client"])
    assert client_key is not None
    return World(
        log,
        service,
        Caller(Principal(keys["admin"], "acme"), "acme"),
        Caller(Principal(keys["client"], "acme", client_key.scope), "acme"),
        keys["beta"],
        keys["operator"],
    )


async def call(caller: Caller, method: Any, request: Any) -> Any:
    with acting_as(caller):
        return await method(request, Context())


@contextmanager
def unchanged(w: World) -> Iterator[None]:
    before = w.log.state.snapshot()
    yield
    assert w.log.state.snapshot() == before, "a refused call changed the metadata"


async def refused(w: World, caller: Caller, method: Any, request: Any) -> ServiceError:
    with unchanged(w), pytest.raises(ServiceError) as caught:
        await call(caller, method, request)
    return caught.value


def status(error: ServiceError) -> tuple[grpc.StatusCode, str]:
    return error.code, error.info.reason


# --- SetTenantQuota --------------------------------------------------------------------


async def test_set_quota_sets_resets_and_keeps_the_other_fields() -> None:
    w = world()
    set_quota = w.service.SetTenantQuota
    first = await call(
        OPERATOR,
        set_quota,
        admin_pb2.SetTenantQuotaRequest(tenant="acme", quota=Q(produce_bytes_s=5_000_000, topics=0)),
    )
    assert w.log.state.tenant_quota("acme") == QuotaLimits(produce_bytes_s=5_000_000, topics=0)
    assert first.overrides == Q(produce_bytes_s=5_000_000, topics=0)
    assert first.effective == Q(produce_bytes_s=5_000_000, topics=0, partitions=MAX_TENANT_PARTITIONS)
    # A second change merges: produce stays, topics goes back to the default, streams is new.
    second = await call(
        OPERATOR, set_quota, admin_pb2.SetTenantQuotaRequest(tenant="acme", quota=Q(topics=-1, streams=4))
    )
    assert w.log.state.tenant_quota("acme") == QuotaLimits(produce_bytes_s=5_000_000, streams=4)
    assert second.overrides == Q(produce_bytes_s=5_000_000, streams=4)
    assert w.log.state.tenant_quota("beta") == QuotaLimits()
    # Resetting everything removes the record.
    everything = Q(**dict.fromkeys(QUOTA_FIELDS, -1))
    await call(OPERATOR, set_quota, admin_pb2.SetTenantQuotaRequest(tenant="acme", quota=everything))
    assert w.log.state.tenant_quota("acme") == QuotaLimits()
    assert w.log.state.quota_overrides() == ()


@pytest.mark.parametrize("field", QUOTA_FIELDS)
async def test_a_negative_quota_is_invalid_naming_the_field(field: str) -> None:
    w = world()
    request = admin_pb2.SetTenantQuotaRequest(tenant="acme", quota=Q(**{"topics": 1, field: -2}))
    error = await refused(w, OPERATOR, w.service.SetTenantQuota, request)
    assert status(error) == (C.INVALID_ARGUMENT, Reason.INVALID_QUOTA)
    assert field in error.info.message and "nothing was changed" in error.info.message


@pytest.mark.parametrize("tenant", ["nobody", "", "BAD NAME", "x" * 10_000])
async def test_set_quota_for_an_unknown_tenant_is_not_found(tenant: str) -> None:
    w = world()
    request = admin_pb2.SetTenantQuotaRequest(tenant=tenant, quota=Q(topics=3))
    error = await refused(w, OPERATOR, w.service.SetTenantQuota, request)
    assert status(error) == (C.NOT_FOUND, Reason.UNKNOWN_TENANT)
    assert len(error.info.message) < 300


def test_who_the_door_lets_call_what() -> None:
    admin = "/raftlog.v1.AdminService/"
    assert admin + "SetTenantQuota" in OPERATOR_METHODS
    for method in ("CreateApiKey", "RevokeApiKey", "ListApiKeys", "RotateApiKey", "DescribeTenant"):
        assert admin + method not in OPERATOR_METHODS, method


async def test_topic_quotas_bind_create_topic_and_a_raised_quota_lets_more_in() -> None:
    w = world()
    set_quota = w.service.SetTenantQuota
    await call(OPERATOR, set_quota, admin_pb2.SetTenantQuotaRequest(tenant="acme", quota=Q(topics=2)))
    create = admin_pb2.CreateTopicRequest(name="more", partitions=1, replication_factor=1)
    error = await refused(w, w.admin, w.service.CreateTopic, create)
    assert (
        status(error) == (C.RESOURCE_EXHAUSTED, Reason.QUOTA_EXCEEDED)
        and "2 of its 2 topics" in error.info.message
    )
    await call(
        OPERATOR, set_quota, admin_pb2.SetTenantQuotaRequest(tenant="acme", quota=Q(topics=-1, partitions=6))
    )
    error = await refused(
        w, w.admin, w.service.CreateTopic, admin_pb2.CreateTopicRequest(name="more", partitions=2)
    )
    assert (
        status(error) == (C.RESOURCE_EXHAUSTED, Reason.QUOTA_EXCEEDED) and "5 of its 6" in error.info.message
    )
    # Above the built-in per-tenant cap once the quota says so (checked before placement too).
    big = MAX_TENANT_PARTITIONS + 100
    await call(
        OPERATOR, set_quota, admin_pb2.SetTenantQuotaRequest(tenant="acme", quota=Q(partitions=big + 5))
    )
    request = admin_pb2.CreateTopicRequest(name="big", partitions=big, replication_factor=1)
    created = await call(w.admin, w.service.CreateTopic, request)
    assert created.topic.partitions == big


# --- DescribeTenant --------------------------------------------------------------------


async def test_describe_reports_quotas_and_counts_and_nothing_unmeasured() -> None:
    w = world()
    await call(
        OPERATOR, w.service.SetTenantQuota, admin_pb2.SetTenantQuotaRequest(tenant="acme", quota=Q(groups=7))
    )
    described = await call(OPERATOR, w.service.DescribeTenant, admin_pb2.DescribeTenantRequest(tenant="acme"))
    assert described.tenant == "acme"
    assert described.overrides == Q(groups=7)
    assert described.effective == Q(groups=7, partitions=MAX_TENANT_PARTITIONS)
    assert described.usage == admin_pb2.TenantUsage(partitions=5, topics=2)
    for field in ("groups", "storage_bytes", "produce_bytes_s", "fetch_bytes_s", "requests_s", "streams"):
        assert not described.usage.HasField(field), field


async def test_describe_adds_what_the_usage_source_measured() -> None:
    source = FixedUsage({"storage_bytes": 123, "produce_bytes_s": 9, "partitions": 999, "bogus": 1})
    w = world(source)
    described = await call(w.admin, w.service.DescribeTenant, admin_pb2.DescribeTenantRequest())
    assert source.asked == ["acme"]
    # The metadata's counts win; names the message does not have are dropped.
    assert described.usage == admin_pb2.TenantUsage(
        partitions=5, topics=2, storage_bytes=123, produce_bytes_s=9
    )


async def test_a_failing_usage_source_leaves_the_counts() -> None:
    w = world(FixedUsage(RuntimeError("node down")))
    described = await call(w.admin, w.service.DescribeTenant, admin_pb2.DescribeTenantRequest(tenant="acme"))
    assert described.usage == admin_pb2.TenantUsage(partitions=5, topics=2)


async def test_describe_refusals() -> None:
    w = world()
    describe = w.service.DescribeTenant
    for tenant in ("beta", "nobody"):  # another tenant's looks like a missing one
        error = await refused(w, w.admin, describe, admin_pb2.DescribeTenantRequest(tenant=tenant))
        assert status(error) == (C.NOT_FOUND, Reason.UNKNOWN_TENANT)
    error = await refused(w, OPERATOR, describe, admin_pb2.DescribeTenantRequest(tenant="nobody"))
    assert status(error) == (C.NOT_FOUND, Reason.UNKNOWN_TENANT)
    error = await refused(w, w.client, describe, admin_pb2.DescribeTenantRequest())
    assert status(error) == (C.PERMISSION_DENIED, Reason.KEY_SCOPE)


# --- CreateApiKey ----------------------------------------------------------------------


async def test_a_tenant_admin_makes_a_scoped_expiring_key_for_its_tenant() -> None:
    w = world()
    request = admin_pb2.CreateApiKeyRequest(
        role="client",
        produce_prefixes=["orders.", "audit"],
        consume_prefixes=[""],
        group_prefixes=["billing-"],
        ttl_seconds=3600,
    )
    before = int(time.time() * 1000)
    key = (await call(w.admin, w.service.CreateApiKey, request)).api_key
    after = int(time.time() * 1000)
    assert (key.tenant, key.role, key.operator) == ("acme", "client", False)
    assert list(key.produce_prefixes) == ["audit", "orders."] and list(key.group_prefixes) == ["billing-"]
    assert before + 3_600_000 <= key.expires_at_ms <= after + 3_600_000
    principal = w.log.state.authenticate(key.clear_text)
    assert principal is not None and principal.tenant == "acme"
    assert principal.scope == KeyScope("client", ("orders.", "audit"), ("",), ("billing-",))
    assert principal.expires_at_ms == key.expires_at_ms
    # The default: an admin key that never expires.
    plain = (
        await call(w.admin, w.service.CreateApiKey, admin_pb2.CreateApiKeyRequest(tenant="acme"))
    ).api_key
    assert (plain.role, plain.expires_at_ms) == ("admin", 0)


async def test_an_operator_makes_operator_and_any_tenants_keys() -> None:
    w = world()
    key = (await call(OPERATOR, w.service.CreateApiKey, admin_pb2.CreateApiKeyRequest(operator=True))).api_key
    assert (key.operator, key.role, key.tenant) == (True, "operator", "")
    beta = await call(
        OPERATOR,
        w.service.CreateApiKey,
        admin_pb2.CreateApiKeyRequest(tenant="beta", role="client", consume_prefixes=["x"]),
    )
    assert (beta.api_key.tenant, beta.api_key.role) == ("beta", "client")


async def test_who_may_not_make_which_key() -> None:
    w = world()
    create = w.service.CreateApiKey
    error = await refused(w, w.admin, create, admin_pb2.CreateApiKeyRequest(tenant="beta"))
    assert status(error) == (C.NOT_FOUND, Reason.UNKNOWN_TENANT)
    error = await refused(w, w.admin, create, admin_pb2.CreateApiKeyRequest(operator=True))
    assert status(error) == (C.PERMISSION_DENIED, Reason.OPERATOR_KEY_REQUIRED)
    error = await refused(
        w, w.client, create, admin_pb2.CreateApiKeyRequest(role="client", produce_prefixes=["orders"])
    )
    assert status(error) == (C.PERMISSION_DENIED, Reason.KEY_SCOPE)
    error = await refused(w, OPERATOR, create, admin_pb2.CreateApiKeyRequest(tenant="nobody"))
    assert status(error) == (C.NOT_FOUND, Reason.UNKNOWN_TENANT)


async def test_a_key_never_outlives_the_expiring_tenant_key_that_made_it() -> None:
    w = world()
    soon = int(time.time() * 1000) + 600_000  # the admin key expires in 10 minutes
    expiring = Caller(replace(w.admin.principal, expires_at_ms=soon), "acme")
    create, rotate = w.service.CreateApiKey, w.service.RotateApiKey
    for ttl_seconds in (0, 86_400):  # "never", and longer than the creator: its expiry
        made = await call(expiring, create, admin_pb2.CreateApiKeyRequest(ttl_seconds=ttl_seconds))
        assert made.api_key.expires_at_ms == soon, ttl_seconds
        stored = w.log.state.authenticate(made.api_key.clear_text)
        assert stored is not None and stored.expires_at_ms == soon
    shorter = await call(expiring, create, admin_pb2.CreateApiKeyRequest(ttl_seconds=60))
    assert 0 < shorter.api_key.expires_at_ms < soon  # as asked
    # Rotating (itself or another key) gives a key that expires with it too.
    for key_id in (expiring.principal.key_id, w.client.principal.key_id):
        rotated = await call(expiring, rotate, admin_pb2.RotateApiKeyRequest(key_id=key_id, grace_seconds=60))
        assert rotated.api_key.expires_at_ms == soon, key_id
    # An admin key that never expires, and an operator key, are not capped.
    plain = await call(w.admin, create, admin_pb2.CreateApiKeyRequest())
    assert plain.api_key.expires_at_ms == 0
    operator = Caller(replace(OPERATOR.principal, expires_at_ms=soon), "default")
    renewed = await call(operator, create, admin_pb2.CreateApiKeyRequest(tenant="acme"))
    assert renewed.api_key.expires_at_ms == 0


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        (admin_pb2.CreateApiKeyRequest(role="client"), "at least one"),
        (admin_pb2.CreateApiKeyRequest(role="operator"), "operator"),
        (admin_pb2.CreateApiKeyRequest(role="admin", produce_prefixes=["a"]), "only a client key"),
        (admin_pb2.CreateApiKeyRequest(role="client", produce_prefixes=["a/b"]), "a/b"),
        (admin_pb2.CreateApiKeyRequest(role="client", group_prefixes=["x" * 300]), "group prefix"),
        (
            admin_pb2.CreateApiKeyRequest(role="client", consume_prefixes=[f"p{i}" for i in range(33)]),
            "at most 32",
        ),
        (admin_pb2.CreateApiKeyRequest(role="root"), "root"),
        (admin_pb2.CreateApiKeyRequest(operator=True, role="client", produce_prefixes=["a"]), "operator"),
        (admin_pb2.CreateApiKeyRequest(ttl_seconds=-1), "ttl_seconds"),
        (admin_pb2.CreateApiKeyRequest(ttl_seconds=2**40), "ttl_seconds"),
    ],
)
async def test_a_bad_scope_is_invalid_and_nothing_is_made(
    request_: admin_pb2.CreateApiKeyRequest, named: str
) -> None:
    w = world()
    error = await refused(w, OPERATOR, w.service.CreateApiKey, request_)
    assert status(error) == (C.INVALID_ARGUMENT, Reason.INVALID_KEY_SCOPE)
    assert named in error.info.message


# --- RevokeApiKey, ListApiKeys ---------------------------------------------------------


async def test_a_tenant_admin_revokes_only_its_own_tenants_keys() -> None:
    w = world()
    revoke = w.service.RevokeApiKey
    for key_id in (w.beta_key, w.operator_key, "0123456789abcdef", "not-a-key-id"):
        error = await refused(w, w.admin, revoke, admin_pb2.RevokeApiKeyRequest(key_id=key_id))
        assert status(error) == (C.NOT_FOUND, Reason.UNKNOWN_API_KEY), key_id
    error = await refused(
        w, w.client, revoke, admin_pb2.RevokeApiKeyRequest(key_id=w.client.principal.key_id)
    )
    assert status(error) == (C.PERMISSION_DENIED, Reason.KEY_SCOPE)
    await call(w.admin, revoke, admin_pb2.RevokeApiKeyRequest(key_id=w.client.principal.key_id))
    assert w.log.state.api_key(w.client.principal.key_id) is None
    await call(OPERATOR, revoke, admin_pb2.RevokeApiKeyRequest(key_id=w.beta_key))
    assert w.log.state.api_key(w.beta_key) is None


async def test_listing_shows_scopes_and_only_the_callers_tenant() -> None:
    w = world()
    listed = await call(w.admin, w.service.ListApiKeys, admin_pb2.ListApiKeysRequest())
    by_id = {k.key_id: k for k in listed.api_keys}
    assert set(by_id) == {w.admin.principal.key_id, w.client.principal.key_id}
    client = by_id[w.client.principal.key_id]
    assert (client.role, list(client.produce_prefixes), list(client.consume_prefixes)) == (
        "client",
        ["orders"],
        ["orders"],
    )
    assert by_id[w.admin.principal.key_id].role == "admin"
    operators = await call(OPERATOR, w.service.ListApiKeys, admin_pb2.ListApiKeysRequest(operator=True))
    assert [(k.key_id, k.role) for k in operators.api_keys] == [(w.operator_key, "operator")]
    for request, expected in (
        (admin_pb2.ListApiKeysRequest(tenant="beta"), (C.NOT_FOUND, Reason.UNKNOWN_TENANT)),
        (admin_pb2.ListApiKeysRequest(operator=True), (C.PERMISSION_DENIED, Reason.OPERATOR_KEY_REQUIRED)),
    ):
        assert status(await refused(w, w.admin, w.service.ListApiKeys, request)) == expected
    error = await refused(w, w.client, w.service.ListApiKeys, admin_pb2.ListApiKeysRequest())
    assert status(error) == (C.PERMISSION_DENIED, Reason.KEY_SCOPE)


# --- RotateApiKey ----------------------------------------------------------------------


async def test_rotation_keeps_tenant_and_scope_and_both_keys_work_for_the_grace() -> None:
    w = world()
    old_id = w.client.principal.key_id
    before = int(time.time() * 1000)
    rotated = await call(
        w.admin, w.service.RotateApiKey, admin_pb2.RotateApiKeyRequest(key_id=old_id, grace_seconds=600)
    )
    new = rotated.api_key
    assert new.key_id != old_id and (new.tenant, new.role, list(new.produce_prefixes)) == (
        "acme",
        "client",
        ["orders"],
    )
    principal = w.log.state.authenticate(new.clear_text)
    assert (
        principal is not None and principal.scope == w.client.principal.scope and principal.expires_at_ms == 0
    )
    old = w.log.state.api_key(old_id)
    assert old is not None and old.expires_at_ms == rotated.old_expires_at_ms
    assert before + 600_000 <= old.expires_at_ms <= int(time.time() * 1000) + 600_000
    old_principal = Principal(old_id, "acme", old.scope, old.expires_at_ms)
    assert not w.log.state.key_expired(old_principal, old.expires_at_ms - 1)
    assert w.log.state.key_expired(old_principal, old.expires_at_ms)
    # Rotating again with a longer grace never lengthens the old key's life.
    again = await call(
        w.admin,
        w.service.RotateApiKey,
        admin_pb2.RotateApiKeyRequest(key_id=old_id, grace_seconds=86_400, ttl_seconds=60),
    )
    assert again.old_expires_at_ms == old.expires_at_ms
    assert 0 < again.api_key.expires_at_ms <= int(time.time() * 1000) + 60_000


async def test_rotation_refusals() -> None:
    w = world()
    rotate = w.service.RotateApiKey
    for key_id in (w.beta_key, w.operator_key, "0123456789abcdef"):
        error = await refused(
            w, w.admin, rotate, admin_pb2.RotateApiKeyRequest(key_id=key_id, grace_seconds=60)
        )
        assert status(error) == (C.NOT_FOUND, Reason.UNKNOWN_API_KEY)
    error = await refused(
        w, w.admin, rotate, admin_pb2.RotateApiKeyRequest(key_id=w.admin.principal.key_id, grace_seconds=-1)
    )
    assert (
        status(error) == (C.INVALID_ARGUMENT, Reason.INVALID_ARGUMENT)
        and "grace_seconds" in error.info.message
    )
    error = await refused(
        w, w.client, rotate, admin_pb2.RotateApiKeyRequest(key_id=w.client.principal.key_id)
    )
    assert status(error) == (C.PERMISSION_DENIED, Reason.KEY_SCOPE)
    # An operator rotates an operator key; grace 0 stops the old one now.
    rotated = await call(OPERATOR, rotate, admin_pb2.RotateApiKeyRequest(key_id=w.operator_key))
    assert rotated.api_key.operator and rotated.old_expires_at_ms <= int(time.time() * 1000)
