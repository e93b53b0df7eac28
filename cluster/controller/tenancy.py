"""The tenant half of the controller's state: tenants, API keys (scope and
expiry) and quotas — applying their commands and answering questions,
including whether a tenant may create a topic (``check_new_topic``: its
partition and topic quotas, and the cluster's partition cap).

``ControllerState`` (state.py) is a ``TenancyTables``; the split is only
one of files (state.py keeps topics, nodes and assignments, and drives the
log). The same rules hold as there: pure and deterministic, every command
validated completely before anything changes, every listing sorted.

Invariants (``_check_tenancy``, run by ``ControllerState.check_invariants``):

- Every tenant API key's tenant exists; an operator key has no tenant; a
  key's scope fits its tenant (``model.check_key_scope``) and its expiry
  is 0 (never) or positive.
- Quota overrides exist only for existing tenants, are never all None
  (``SetQuota`` with all None removes them) and pass ``check_quota``; so do
  the cluster defaults. Deleting a tenant removes its overrides and keys.
- The cluster's own tenant (``INTERNAL_TENANT``) is held to the built-in
  defaults and its own overrides, never the cluster defaults: its topics
  are the cluster's (consumer offsets, audit), and a small default meant
  for customers must not stop the cluster from making them.
"""

from __future__ import annotations

from dataclasses import replace

from cluster.controller import api_keys
from cluster.controller.commands import (
    CreateApiKey,
    CreateTenant,
    DeleteTenant,
    RevokeApiKey,
    SetApiKeyExpiry,
    SetQuota,
)
from cluster.controller.model import (
    ApiKeyInfo,
    ApiKeyRecord,
    Assignment,
    Principal,
    Tenant,
    Topic,
    check_key_scope,
    check_partitions,
    check_tenant_name,
    key_expired,
    shown,
)
from cluster.controller.quotas import BUILT_IN_DEFAULTS, QuotaLimits, check_quota, check_topic_quota, overlay
from cluster.controller.results import Applied, ApplyResult, Rejected, RejectReason
from cluster.primitives.pagination import Listing, Page, paginate, text_key

__all__ = ["INTERNAL_TENANT", "InconsistentState", "TenancyTables"]

R = RejectReason

INTERNAL_TENANT = "__system"
"""The cluster's own tenant (cluster/groups/group_logs.SYSTEM_TENANT; a test
checks they agree: the controller must not import the groups package)."""


class InconsistentState(AssertionError):
    """A broken invariant: a bug, or a snapshot from a buggy writer."""


def _operator_scope(tenant: str | None) -> tuple[str, ...]:
    return ("operator",) if tenant is None else ("tenant", tenant)


class TenancyTables:
    """Tenants, keys and quotas (see the module docstring)."""

    __slots__ = ("_api_keys", "_quota_defaults", "_tenant_quotas", "_tenants")

    _topics: dict[str, dict[str, Topic]]
    """Owned by ``ControllerState``: every tenant has an entry."""
    _assignments: dict[int, Assignment]
    """Owned by ``ControllerState``: every partition's, by group."""

    def __init__(self) -> None:
        self._tenants: dict[str, Tenant] = {}
        self._api_keys: dict[str, ApiKeyRecord] = {}
        self._quota_defaults = QuotaLimits()
        """The applied cluster defaults (``SetQuota("")``), before the
        built-ins are laid under them."""
        self._tenant_quotas: dict[str, QuotaLimits] = {}
        """tenant -> its overrides; never all None."""

    # --- applying ---------------------------------------------------------------

    def _create_tenant(self, index: int, c: CreateTenant) -> ApplyResult:
        if problem := check_tenant_name(c.name):
            return Rejected(R.INVALID_NAME, problem)
        if c.name in self._tenants:
            return Rejected(R.TENANT_EXISTS, f"tenant {shown(c.name)} already exists")
        self._tenants[c.name] = Tenant(c.name, index)
        self._topics[c.name] = {}
        return Applied(index)

    def _delete_tenant(self, index: int, c: DeleteTenant) -> ApplyResult:
        if c.name not in self._tenants:
            return Rejected(R.UNKNOWN_TENANT, f"no tenant {shown(c.name)}")
        if topics := self._topics[c.name]:
            return Rejected(
                R.TENANT_NOT_EMPTY,
                f"tenant {shown(c.name)} still has {len(topics)} topic(s) (e.g. {shown(min(topics))}): delete them first",
            )
        del self._tenants[c.name]
        del self._topics[c.name]
        self._tenant_quotas.pop(c.name, None)
        for key_id in [k for k, record in self._api_keys.items() if record.tenant == c.name]:
            del self._api_keys[key_id]
        return Applied(index)

    def _create_api_key(self, index: int, c: CreateApiKey) -> ApplyResult:
        if problem := api_keys.check_key_shape(c.key_id, c.salt, c.digest):
            return Rejected(R.INVALID_API_KEY, problem)
        if c.tenant is not None and c.tenant not in self._tenants:
            return Rejected(R.UNKNOWN_TENANT, f"no tenant {shown(c.tenant)} to create an API key for")
        if problem := check_key_scope(c.tenant, c.scope) or _check_expiry(c.expires_at_ms):
            return Rejected(R.INVALID_KEY_SCOPE, f"API key {c.key_id}: {problem}")
        if c.key_id in self._api_keys:
            return Rejected(R.API_KEY_EXISTS, f"API key id {c.key_id} is taken: issue a new key")
        self._api_keys[c.key_id] = ApiKeyRecord(
            c.key_id, c.tenant, c.salt, c.digest, index, c.scope, c.expires_at_ms
        )
        return Applied(index)

    def _revoke_api_key(self, index: int, c: RevokeApiKey) -> ApplyResult:
        if c.key_id not in self._api_keys:
            return Rejected(R.UNKNOWN_API_KEY, f"no API key {shown(c.key_id)}")
        del self._api_keys[c.key_id]
        return Applied(index)

    def _set_api_key_expiry(self, index: int, c: SetApiKeyExpiry) -> ApplyResult:
        record = self._api_keys.get(c.key_id)
        if record is None:
            return Rejected(R.UNKNOWN_API_KEY, f"no API key {shown(c.key_id)}")
        if problem := _check_expiry(c.expires_at_ms):
            return Rejected(R.INVALID_KEY_SCOPE, f"API key {c.key_id}: {problem}")
        self._api_keys[c.key_id] = replace(record, expires_at_ms=c.expires_at_ms)
        return Applied(index)

    def _set_quota(self, index: int, c: SetQuota) -> ApplyResult:
        if c.tenant and c.tenant not in self._tenants:
            return Rejected(R.UNKNOWN_TENANT, f"no tenant {shown(c.tenant)} to set a quota for")
        if problem := check_quota(c.limits):
            return Rejected(R.INVALID_QUOTA, problem)
        if not c.tenant:
            self._quota_defaults = c.limits
        elif c.limits.is_empty:
            self._tenant_quotas.pop(c.tenant, None)
        else:
            self._tenant_quotas[c.tenant] = c.limits
        return Applied(index)

    # --- queries: auth ----------------------------------------------------------

    def authenticate(self, api_key: str, now_ms: int | None = None) -> Principal | None:
        """Who ``api_key`` (a clear key) belongs to, or None. The secret is
        compared in constant time (``hmac.compare_digest``), and an unknown
        key id costs the same hashing as a known one.

        An expired key still answers with its ``Principal`` (whatever
        ``now_ms``, accepted for callers that have the time at hand): the
        caller asks ``key_expired`` so that it can tell its owner the key
        expired instead of that it is unknown."""
        del now_ms  # the answer does not depend on it (see above)
        parsed = api_keys.parse_api_key(api_key)
        if parsed is None:
            return None
        key_id, secret = parsed
        record = self._api_keys.get(key_id)
        if record is None:
            api_keys.verify_unknown(secret)
            return None
        if not api_keys.verify_secret(record.salt, record.digest, secret):
            return None
        return Principal(record.key_id, record.tenant, record.scope, record.expires_at_ms)

    @staticmethod
    def key_expired(principal: Principal, now_ms: int) -> bool:
        """``0 < principal.expires_at_ms <= now_ms`` (``model.key_expired``)."""
        return key_expired(principal, now_ms)

    def api_key(self, key_id: str) -> ApiKeyInfo | None:
        record = self._api_keys.get(key_id)
        return None if record is None else record.info()

    def list_api_keys(self, tenant: str | None, page_size: int = 0, page_token: str = "") -> Page[ApiKeyInfo]:
        """``tenant``'s keys (None: the operator keys), by key id."""
        rows = [(text_key(k), r.info()) for k, r in sorted(self._api_keys.items()) if r.tenant == tenant]
        return paginate(Listing("api_keys", _operator_scope(tenant)), rows, page_size, page_token)

    # --- queries: tenants and quotas --------------------------------------------

    def tenant(self, name: str) -> Tenant | None:
        return self._tenants.get(name)

    def list_tenants(self, page_size: int = 0, page_token: str = "") -> Page[Tenant]:
        rows = [(text_key(name), self._tenants[name]) for name in sorted(self._tenants)]
        return paginate(Listing("tenants"), rows, page_size, page_token)

    def quota_defaults(self) -> QuotaLimits:
        """The cluster defaults in force: the built-ins overlaid with the
        applied ``SetQuota("")``."""
        return overlay(BUILT_IN_DEFAULTS, self._quota_defaults)

    def applied_quota_defaults(self) -> QuotaLimits:
        """The last ``SetQuota("")``'s limits as given (None: built-in)."""
        return self._quota_defaults

    def tenant_quota(self, tenant: str) -> QuotaLimits:
        """``tenant``'s own overrides only (all None: it has none)."""
        return self._tenant_quotas.get(tenant, QuotaLimits())

    def effective_quota(self, tenant: str) -> QuotaLimits:
        """What ``tenant`` may use: the defaults overlaid with its overrides
        (the internal tenant: the built-ins, see the module docstring)."""
        base = BUILT_IN_DEFAULTS if tenant == INTERNAL_TENANT else self.quota_defaults()
        return overlay(base, self.tenant_quota(tenant))

    def quota_overrides(self) -> tuple[tuple[str, QuotaLimits], ...]:
        """Every tenant's overrides, by tenant name."""
        return tuple((name, self._tenant_quotas[name]) for name in sorted(self._tenant_quotas))

    def partition_counts(self, tenant: str) -> tuple[int, int]:
        """``(tenant's partitions, every tenant's)``: what ``check_partitions``
        weighs a new topic against."""
        return sum(t.partitions for t in self._topics.get(tenant, {}).values()), len(self._assignments)

    def check_new_topic(self, tenant: str, partitions: int) -> Rejected | None:
        """Whether ``tenant`` may create a topic of ``partitions`` now: the
        per-topic bounds, its effective ``partitions`` and ``topics`` quota
        (``QUOTA_EXCEEDED``) and the cluster cap. The one rule the admin
        service checks before placing a topic and ``CreateTopic`` again at
        apply."""
        limits = self.effective_quota(tenant)
        tenant_partitions, cluster_partitions = self.partition_counts(tenant)
        if rejected := check_partitions(
            partitions, tenant_partitions, cluster_partitions, limits.partitions, tenant
        ):
            return rejected
        return check_topic_quota(tenant, limits, self.topic_count(tenant))

    def topic_count(self, tenant: str) -> int:
        """How many topics ``tenant`` has (0 for an unknown tenant)."""
        return len(self._topics.get(tenant, {}))

    # --- invariants -------------------------------------------------------------

    def _check_tenancy(self, applied: int) -> None:
        """Raise ``InconsistentState`` unless the module's invariants hold."""
        for name, tenant in self._tenants.items():
            if tenant.name != name or check_tenant_name(name) or tenant.created_index > applied:
                raise InconsistentState(f"tenant {name!r}")
        for key_id, key in self._api_keys.items():
            if key.key_id != key_id or api_keys.check_key_shape(key_id, key.salt, key.digest):
                raise InconsistentState(f"API key {key_id!r}")
            if (key.tenant is not None and key.tenant not in self._tenants) or key.created_index > applied:
                raise InconsistentState(f"API key {key_id!r} of tenant {key.tenant!r}")
            if check_key_scope(key.tenant, key.scope) or _check_expiry(key.expires_at_ms):
                raise InconsistentState(
                    f"API key {key_id!r}: scope {key.scope} or expiry {key.expires_at_ms}"
                )
        if check_quota(self._quota_defaults):
            raise InconsistentState(f"quota defaults {self._quota_defaults}")
        for name, limits in self._tenant_quotas.items():
            if name not in self._tenants or limits.is_empty or check_quota(limits):
                raise InconsistentState(f"quota overrides of tenant {name!r}: {limits}")


def _check_expiry(expires_at_ms: int) -> str | None:
    if expires_at_ms < 0:
        return f"expires_at_ms must be 0 (never) or a Unix time in milliseconds, got {expires_at_ms}"
    return None
