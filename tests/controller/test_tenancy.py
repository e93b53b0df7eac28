"""Quotas and key scopes in the controller state: how defaults, overrides
and the built-ins combine, the count quotas a CreateTopic is held to, what
authentication answers for scoped and expiring keys, and the invariants
that guard them."""

from __future__ import annotations

import pytest

from cluster.controller.api_keys import issue_api_key
from cluster.controller.commands import CreateTenant, DeleteTenant, DeleteTopic, SetApiKeyExpiry, SetQuota
from cluster.controller.model import (
    ADMIN_SCOPE,
    MAX_TENANT_PARTITIONS,
    OPERATOR_SCOPE,
    ApiKeyRecord,
    KeyScope,
    Principal,
    check_key_scope,
    key_expired,
)
from cluster.controller.quotas import BUILT_IN_DEFAULTS, QUOTA_FIELDS, QuotaLimits, check_quota, overlay
from cluster.controller.results import Rejected, RejectReason
from cluster.controller.state import ControllerState, InconsistentState
from cluster.controller.tenancy import INTERNAL_TENANT
from cluster.groups.group_logs import SYSTEM_TENANT
from tests.controller.harness import Log, cluster, create_topic

# --- quotas --------------------------------------------------------------------------


def test_quota_fields_are_the_eight_names_in_wire_order() -> None:
    assert QUOTA_FIELDS == (
        "produce_bytes_s",
        "fetch_bytes_s",
        "requests_s",
        "storage_bytes",
        "partitions",
        "topics",
        "groups",
        "streams",
    )
    assert QuotaLimits(partitions=MAX_TENANT_PARTITIONS) == BUILT_IN_DEFAULTS


def test_overlay_lets_the_override_s_set_fields_win() -> None:
    base = QuotaLimits(produce_bytes_s=10, partitions=5, topics=3)
    override = QuotaLimits(partitions=0, groups=7)
    assert overlay(base, override) == QuotaLimits(produce_bytes_s=10, partitions=0, topics=3, groups=7)
    assert overlay(base, QuotaLimits()) == base


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        (QuotaLimits(), None),
        (QuotaLimits(partitions=0, storage_bytes=2**63 - 1), None),
        (QuotaLimits(streams=-1), "quota streams must be 0 or more"),
        (QuotaLimits(topics=2**63), "quota topics"),
        (QuotaLimits(groups=True), "quota groups"),
    ],
)
def test_check_quota(limits: QuotaLimits, problem: str | None) -> None:
    found = check_quota(limits)
    assert found == problem if problem is None else (found is not None and problem in found)


def test_effective_quota_is_built_ins_then_cluster_defaults_then_the_tenant_s_overrides() -> None:
    log = cluster(1, tenants=["acme", "beta"])
    state = log.state
    assert state.quota_defaults() == BUILT_IN_DEFAULTS
    assert state.effective_quota("acme") == BUILT_IN_DEFAULTS
    assert state.tenant_quota("acme") == QuotaLimits()
    log.ok(SetQuota("", QuotaLimits(produce_bytes_s=1_000_000, topics=10)))
    defaults = QuotaLimits(produce_bytes_s=1_000_000, partitions=MAX_TENANT_PARTITIONS, topics=10)
    assert state.quota_defaults() == defaults
    assert state.applied_quota_defaults() == QuotaLimits(produce_bytes_s=1_000_000, topics=10)
    log.ok(SetQuota("acme", QuotaLimits(produce_bytes_s=5, partitions=20)))
    assert state.tenant_quota("acme") == QuotaLimits(produce_bytes_s=5, partitions=20)
    assert state.effective_quota("acme") == QuotaLimits(produce_bytes_s=5, partitions=20, topics=10)
    assert state.effective_quota("beta") == defaults
    assert state.quota_overrides() == (("acme", QuotaLimits(produce_bytes_s=5, partitions=20)),)
    # A SetQuota replaces the whole record; all None removes it.
    log.ok(SetQuota("acme", QuotaLimits(groups=3)))
    assert state.tenant_quota("acme") == QuotaLimits(groups=3)
    log.ok(SetQuota("acme", QuotaLimits()))
    assert state.quota_overrides() == ()
    assert state.effective_quota("acme") == defaults
    # And the defaults go back to the built-ins the same way.
    log.ok(SetQuota("", QuotaLimits()))
    assert state.quota_defaults() == BUILT_IN_DEFAULTS


def test_deleting_a_tenant_forgets_its_quota() -> None:
    log = cluster(1, tenants=["acme"])
    log.ok(SetQuota("acme", QuotaLimits(topics=1)))
    log.ok(DeleteTenant("acme"))
    assert log.state.quota_overrides() == ()
    log.ok(CreateTenant("acme"))
    assert log.state.effective_quota("acme") == BUILT_IN_DEFAULTS


def test_the_cluster_s_own_tenant_is_not_held_to_the_cluster_defaults() -> None:
    assert INTERNAL_TENANT == SYSTEM_TENANT
    log = cluster(1, tenants=[INTERNAL_TENANT, "acme"])
    log.ok(SetQuota("", QuotaLimits(topics=0, partitions=0)))
    assert log.state.effective_quota(INTERNAL_TENANT) == BUILT_IN_DEFAULTS
    create_topic(log, INTERNAL_TENANT, "__consumer_offsets", partitions=3)
    result = log.apply(SetQuota(INTERNAL_TENANT, QuotaLimits(topics=1)))
    assert not isinstance(result, Rejected)
    assert log.state.effective_quota(INTERNAL_TENANT).topics == 1
    assert log.state.effective_quota("acme").topics == 0


def test_a_new_topic_must_fit_the_partition_and_topic_quotas() -> None:
    log = cluster(1, tenants=["acme", "beta"])
    create_topic(log, "acme", "a", partitions=8)
    log.ok(SetQuota("acme", QuotaLimits(partitions=10, topics=2)))
    refused = log.state.check_new_topic("acme", 4)
    assert refused == Rejected(
        RejectReason.QUOTA_EXCEEDED,
        "tenant 'acme' has 8 of its 10 partitions; 4 more do not fit (delete topics or ask an operator "
        "to raise the quota: raftlog tenant quota set acme --partitions N)",
    )
    assert log.state.check_new_topic("acme", 2) is None
    create_topic(log, "acme", "b", partitions=1)
    refused = log.state.check_new_topic("acme", 1)
    assert refused is not None and refused.reason is RejectReason.QUOTA_EXCEEDED
    assert "has 2 of its 2 topics" in refused.message and "--topics N" in refused.message
    # Another tenant is not charged for acme's topics.
    assert log.state.check_new_topic("beta", 10) is None


def test_lowering_a_quota_leaves_existing_topics_and_stops_new_ones() -> None:
    log = cluster(1, tenants=["acme"])
    create_topic(log, "acme", "a", partitions=6)
    log.ok(SetQuota("acme", QuotaLimits(partitions=2)))
    assert log.state.topic("acme", "a") is not None
    assert log.state.check_new_topic("acme", 1) is not None
    log.ok(DeleteTopic("acme", "a"))
    create_topic(log, "acme", "small", partitions=2)
    assert log.state.topic_count("acme") == 1


# --- key scopes and expiry -----------------------------------------------------------


def test_key_scope_prefixes_match_names_and_other_roles_match_everything() -> None:
    client = KeyScope(
        "client", produce_prefixes=("orders.",), consume_prefixes=("", "x"), group_prefixes=("g-",)
    )
    assert client.may_produce("orders.eu") and not client.may_produce("payments")
    assert client.may_consume("anything")
    assert client.may_use_group("g-1") and not client.may_use_group("h")
    nothing = KeyScope("client", group_prefixes=("g",))
    assert not nothing.may_produce("a") and not nothing.may_consume("a")
    for scope in (ADMIN_SCOPE, OPERATOR_SCOPE):
        assert scope.may_produce("a") and scope.may_consume("a") and scope.may_use_group("g")


def test_key_scope_keeps_one_spelling() -> None:
    assert KeyScope("client", ["b", "a", "b"]) == KeyScope("client", ("a", "b"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tenant", "scope"),
    [
        (None, OPERATOR_SCOPE),
        ("acme", ADMIN_SCOPE),
        ("acme", KeyScope("client", ("",))),
        ("acme", KeyScope("client", (), (), ("g.",))),
        ("acme", KeyScope("client", tuple(f"p{i:02}" for i in range(32)))),
    ],
)
def test_valid_scopes(tenant: str | None, scope: KeyScope) -> None:
    assert check_key_scope(tenant, scope) is None


def test_authenticate_answers_the_scope_and_expiry_even_after_expiry() -> None:
    log = cluster(1, tenants=["acme"])
    scope = KeyScope("client", ("orders.",))
    key = issue_api_key("acme", scope, expires_at_ms=1_000)
    log.ok(key.command)
    principal = log.state.authenticate(key.clear_text, now_ms=5_000)
    assert principal == Principal(key.key_id, "acme", scope, 1_000)
    assert log.state.authenticate(key.clear_text) == principal
    assert not key_expired(principal, 999) and key_expired(principal, 1_000)
    assert ControllerState.key_expired(principal, 1_001)
    info = log.state.api_key(key.key_id)
    assert info is not None and (info.scope, info.expires_at_ms) == (scope, 1_000)


def test_a_key_that_never_expires_never_does() -> None:
    assert not key_expired(Principal("k", "acme"), 2**62)
    assert Principal("k", "acme").scope == ADMIN_SCOPE and Principal("k", None).scope == OPERATOR_SCOPE


def test_set_api_key_expiry_sets_and_lifts_an_expiry() -> None:
    log = cluster(1, tenants=["acme"])
    key = issue_api_key("acme")
    log.ok(key.command)
    log.ok(SetApiKeyExpiry(key.key_id, 7_000))
    principal = log.state.authenticate(key.clear_text)
    assert principal is not None and principal.expires_at_ms == 7_000 and principal.scope == ADMIN_SCOPE
    log.ok(SetApiKeyExpiry(key.key_id, 0))
    principal = log.state.authenticate(key.clear_text)
    assert principal is not None and not key_expired(principal, 2**62)


# --- the invariant checker can fail ----------------------------------------------------


def _broken(what: str) -> Log:
    log = cluster(1, tenants=["acme"])
    key = issue_api_key("acme")
    log.ok(key.command)
    state = log.state
    record = state._api_keys[key.key_id]
    if what == "quota of no tenant":
        state._tenant_quotas["ghost"] = QuotaLimits(topics=1)
    elif what == "empty override":
        state._tenant_quotas["acme"] = QuotaLimits()
    elif what == "negative override":
        state._tenant_quotas["acme"] = QuotaLimits(topics=-1)
    elif what == "negative default":
        state._quota_defaults = QuotaLimits(streams=-1)
    elif what == "operator scope on a tenant key":
        state._api_keys[key.key_id] = ApiKeyRecord(
            record.key_id, "acme", record.salt, record.digest, record.created_index, OPERATOR_SCOPE
        )
    elif what == "negative expiry":
        state._api_keys[key.key_id] = ApiKeyRecord(
            record.key_id, "acme", record.salt, record.digest, record.created_index, record.scope, -5
        )
    return log


@pytest.mark.parametrize(
    "what",
    [
        "quota of no tenant",
        "empty override",
        "negative override",
        "negative default",
        "operator scope on a tenant key",
        "negative expiry",
    ],
)
def test_check_invariants_catches(what: str) -> None:
    with pytest.raises(InconsistentState):
        _broken(what).state.check_invariants()
