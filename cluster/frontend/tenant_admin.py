"""AdminService's tenant calls: quotas (``SetTenantQuota``,
``DescribeTenant``) and API keys with their scopes (``CreateApiKey``,
``RevokeApiKey``, ``ListApiKeys``, ``RotateApiKey``).

``AdminService`` (admin_service.py) delegates these methods here and lends
its plumbing: ``change`` runs a proposal on the metadata controller's
leader or forwards the call there, with read-your-writes
(``AdminService._change``), and ``propose`` turns a ``Rejected`` into the
gRPC error of the same reason.

Who may do what (the caller is ``current_caller()``; on a forwarded call
the leader's front door authenticated it again):

- an operator key: everything, every tenant;
- a tenant *admin* key: its own tenant's keys (create, revoke, rotate,
  list) and its own ``DescribeTenant``. Another tenant's name is
  ``NOT_FOUND UNKNOWN_TENANT`` and another tenant's key or an operator key
  is ``NOT_FOUND UNKNOWN_API_KEY`` — the answers for names that do not
  exist, so nothing leaks; asking for an operator key is
  ``PERMISSION_DENIED OPERATOR_KEY_REQUIRED``;
- a *client* key: none of these (``PERMISSION_DENIED KEY_SCOPE``; the door
  refuses it first by its method table, this is the handler's own check);
- ``SetTenantQuota``: operator keys only (the door's ``OPERATOR_METHODS``).

Invariants:

- A refused request changes nothing: the request's shape (quota values,
  scope, ttl, grace) is checked before the call goes anywhere, ownership
  and existence again on the leader before anything is proposed, and the
  state applies its own rules once more (``check_quota``,
  ``check_key_scope``).
- A quota change merges the request into the tenant's override record and
  proposes the whole record (``SetQuota`` replaces it); merges are
  serialised on the leader (``_quota_lock``), so two concurrent changes to
  different fields both land.
- Rotation never lengthens the old key's life: its expiry becomes
  ``min(its expiry, now + grace)``. The new key is stored before the old
  one's expiry is set, so a failure between the two leaves two working
  keys, never none.
- ``DescribeTenant`` usage: partitions and topics come from this node's
  metadata; groups, storage, rates and streams only from a
  ``TenantUsageSource`` (the quota service, when the node has one), asked
  with a short timeout. A figure nobody measured is left unset, never
  reported as 0.
- A call that issues a key tells the audit its id (``note_created_key``,
  cluster/audit/call_notes.py): on the leader as soon as the key is
  stored, on a node that forwarded the call from the leader's answer. The
  clear text goes only into the response.
- Expiry times come from this (the leader's) clock: ``ttl_seconds`` and
  ``grace_seconds`` are durations so that clients' clocks do not matter.
- A key never outlives the tenant key that made it: a key created or
  rotated by a tenant key that expires expires at the latest when that key
  does (``capped_expiry``; a ttl of 0 then means "when the creator does"),
  so an expiring admin key cannot mint, or rotate itself into, a key that
  never expires. An operator key's keys are not capped: renewing a tenant's
  access past its admin key's expiry is an operator's call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import grpc

from cluster.audit.call_notes import note_created_key
from cluster.controller import ApplyResult, Principal, RevokeApiKey, issue_api_key
from cluster.controller.api_keys import check_key_id
from cluster.controller.commands import Command, SetApiKeyExpiry, SetQuota
from cluster.controller.model import ROLES, ApiKeyInfo, KeyScope, check_key_scope, check_tenant_name
from cluster.controller.quotas import QUOTA_FIELDS, QuotaLimits
from cluster.controller_replica import ControllerReplica
from cluster.frontend.auth import unknown_tenant
from cluster.frontend.front_door import Caller, current_caller, operator_required
from cluster.frontend.grpc_errors import ServiceError, shown
from raftlog.v1 import admin_pb2
from raftlog.v1.reasons import Reason

__all__ = [
    "MAX_DURATION_S",
    "QUOTA_RESET",
    "TenantAdmin",
    "TenantUsageSource",
    "capped_expiry",
    "quota_settings",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
C = grpc.StatusCode

QUOTA_RESET = -1
"""A ``SetTenantQuota`` value: back to the cluster default."""
MAX_DURATION_S = 100 * 365 * 86_400
"""The longest ttl or grace period (a century; beyond it a value is a typo,
and the expiry stays far from the i64 limit)."""
USAGE_TIMEOUT_S = 2.0
"""How long ``DescribeTenant`` waits for the measured figures."""
MEASURED_USAGE = ("groups", "storage_bytes", "produce_bytes_s", "fetch_bytes_s", "requests_s", "streams")
"""``TenantUsage`` fields a ``TenantUsageSource`` reports (the counts of
partitions and topics are the metadata's)."""

Change = Callable[[grpc.aio.ServicerContext, str, Any, Callable[[], Awaitable[T]]], Awaitable[T]]
Propose = Callable[[Command], Awaitable[ApplyResult]]


class TenantUsageSource(Protocol):
    """What a tenant uses now, as the nodes measure it: ``usage(tenant)``
    maps names of ``MEASURED_USAGE`` to figures (bytes, per-second rates
    over the last few seconds, counts). A name left out is not measured.
    The quota service (cluster/quotas/) implements it."""

    async def usage(self, tenant: str) -> dict[str, int]: ...


# --- messages -------------------------------------------------------------------------


def quota_settings(limits: QuotaLimits) -> admin_pb2.QuotaSettings:
    """``limits`` on the wire: a None field is left unset."""
    return admin_pb2.QuotaSettings(
        **{
            name: value
            for name, value in zip(QUOTA_FIELDS, limits.values(), strict=True)
            if value is not None
        }
    )


def api_key_message(info: ApiKeyInfo, clear_text: str = "") -> admin_pb2.ApiKey:
    scope = info.scope
    return admin_pb2.ApiKey(
        key_id=info.key_id,
        tenant=info.tenant or "",
        operator=info.tenant is None,
        clear_text=clear_text,
        role=scope.role,
        produce_prefixes=scope.produce_prefixes,
        consume_prefixes=scope.consume_prefixes,
        group_prefixes=scope.group_prefixes,
        expires_at_ms=info.expires_at_ms,
    )


# --- refusals -------------------------------------------------------------------------


def _invalid(reason: Reason, message: str, **metadata: str) -> ServiceError:
    return ServiceError(C.INVALID_ARGUMENT, reason, f"{message}; nothing was changed", metadata=metadata)


def _unknown_key(key_id: str) -> ServiceError:
    return ServiceError(
        C.NOT_FOUND,
        Reason.UNKNOWN_API_KEY,
        f"API key {shown(key_id)} does not exist (or is not this tenant's); list keys to see which do",
        metadata={"key_id": shown(key_id)},
    )


def _check_key_manager(caller: Caller) -> None:
    """Only operator and tenant admin keys manage keys."""
    if caller.is_operator or caller.principal.scope.role == "admin":
        return
    raise ServiceError(
        C.PERMISSION_DENIED,
        Reason.KEY_SCOPE,
        f"API key {caller.principal.key_id} is a {caller.principal.scope.role} key: only a tenant admin "
        "key (or an operator key) manages keys and reads the tenant's quotas",
        metadata={"key_id": caller.principal.key_id},
    )


def _own_tenant(caller: Caller, tenant: str) -> None:
    """A tenant key names only its own tenant: any other is unknown."""
    if not caller.is_operator and tenant != caller.principal.tenant:
        raise unknown_tenant(tenant)


def _check_duration(name: str, seconds: int, reason: Reason) -> None:
    if not 0 <= seconds <= MAX_DURATION_S:
        raise _invalid(reason, f"{name} must be 0 to {MAX_DURATION_S} seconds, got {seconds}", field=name)


def _quota_changes(quota: admin_pb2.QuotaSettings) -> dict[str, int | None]:
    """The fields a request sets: a limit, or None (``QUOTA_RESET``)."""
    changes: dict[str, int | None] = {}
    for name in QUOTA_FIELDS:
        if not quota.HasField(name):
            continue
        value = getattr(quota, name)
        if value < QUOTA_RESET:
            raise _invalid(
                Reason.INVALID_QUOTA,
                f"quota {name} is {value}: give 0 or more (0 allows nothing), or -1 for the cluster default",
                field=name,
            )
        changes[name] = None if value == QUOTA_RESET else value
    return changes


def _requested_scope(request: admin_pb2.CreateApiKeyRequest, tenant: str | None) -> KeyScope:
    role = request.role or ("operator" if tenant is None else "admin")
    if role not in ROLES:
        raise _invalid(
            Reason.INVALID_KEY_SCOPE, f"role {shown(role)}: use one of {', '.join(ROLES)}", field="role"
        )
    lists = (request.produce_prefixes, request.consume_prefixes, request.group_prefixes)
    scope = KeyScope(role, *(tuple(prefixes) for prefixes in lists))
    if problem := check_key_scope(tenant, scope):
        raise _invalid(Reason.INVALID_KEY_SCOPE, problem)
    return scope


def _now_ms() -> int:
    return int(time.time() * 1000)


def capped_expiry(expires_at_ms: int, creator: Principal) -> int:
    """A new key's expiry (Unix ms, 0: never) as stored: ``expires_at_ms``,
    but no later than ``creator``'s when that is a tenant key that expires
    (the module docstring's rule)."""
    limit = creator.expires_at_ms
    if creator.is_operator or limit == 0:
        return expires_at_ms
    return limit if expires_at_ms == 0 else min(expires_at_ms, limit)


class TenantAdmin:
    """The handlers (see the module docstring); ``AdminService`` calls them."""

    def __init__(
        self,
        controller: ControllerReplica,
        change: Change[Any],
        propose: Propose,
        usage: TenantUsageSource | None = None,
        now_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._controller = controller
        self._change = change
        self._propose = propose
        self._usage = usage
        self._now_ms = now_ms
        self._quota_lock = asyncio.Lock()

    # --- quotas -------------------------------------------------------------------

    async def set_tenant_quota(
        self, request: admin_pb2.SetTenantQuotaRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetTenantQuotaResponse:
        tenant = request.tenant
        if not tenant:
            raise ServiceError(
                C.NOT_FOUND,
                Reason.UNKNOWN_TENANT,
                "give a tenant: the cluster's default quotas are set in the [quotas] section of the "
                "cluster file, not here",
                metadata={"tenant": ""},
            )
        if check_tenant_name(tenant):  # no such name can exist
            raise unknown_tenant(tenant)
        changes = _quota_changes(request.quota)

        async def work() -> admin_pb2.SetTenantQuotaResponse:
            async with self._quota_lock:
                state = self._controller.state
                if state.tenant(tenant) is None:
                    raise unknown_tenant(tenant)
                merged = replace(state.tenant_quota(tenant), **changes)
                if merged != state.tenant_quota(tenant):
                    await self._propose(SetQuota(tenant, merged))
            state = self._controller.state
            return admin_pb2.SetTenantQuotaResponse(
                effective=quota_settings(state.effective_quota(tenant)),
                overrides=quota_settings(state.tenant_quota(tenant)),
            )

        answer: admin_pb2.SetTenantQuotaResponse = await self._change(
            context, "SetTenantQuota", request, work
        )
        return answer

    async def describe_tenant(
        self, request: admin_pb2.DescribeTenantRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeTenantResponse:
        caller = current_caller()
        _check_key_manager(caller)
        tenant = request.tenant or caller.tenant
        _own_tenant(caller, tenant)
        state = self._controller.state
        if state.tenant(tenant) is None:
            raise unknown_tenant(tenant)
        usage = admin_pb2.TenantUsage(
            partitions=state.partition_counts(tenant)[0], topics=state.topic_count(tenant)
        )
        for name, value in (await self._measured(tenant, context)).items():
            setattr(usage, name, value)
        return admin_pb2.DescribeTenantResponse(
            tenant=tenant,
            effective=quota_settings(state.effective_quota(tenant)),
            overrides=quota_settings(state.tenant_quota(tenant)),
            usage=usage,
        )

    async def _measured(self, tenant: str, context: grpc.aio.ServicerContext) -> Mapping[str, int]:
        """The usage source's figures, those it did not report left out; none
        when there is no source or it fails or is slow (the counts still
        answer)."""
        if self._usage is None:
            return {}
        remaining = context.time_remaining()
        timeout = USAGE_TIMEOUT_S if remaining is None else max(0.0, min(USAGE_TIMEOUT_S, remaining - 0.1))
        try:
            reported = await asyncio.wait_for(self._usage.usage(tenant), timeout)
        except Exception:  # a measurement is never worth failing the description
            log.warning("tenant usage for %s unavailable; describing counts only", tenant, exc_info=True)
            return {}
        return {name: max(0, int(value)) for name, value in reported.items() if name in MEASURED_USAGE}

    # --- keys ---------------------------------------------------------------------

    def _visible_key(self, caller: Caller, key_id: str) -> ApiKeyInfo:
        """``key_id``'s record if the caller may manage it, else the same
        ``NOT_FOUND`` as for a key that does not exist."""
        info = self._controller.state.api_key(key_id)
        if info is None or (not caller.is_operator and info.tenant != caller.principal.tenant):
            raise _unknown_key(key_id)
        return info

    async def create_api_key(
        self, request: admin_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateApiKeyResponse:
        caller = current_caller()
        _check_key_manager(caller)
        if request.operator and request.tenant:
            raise _invalid(Reason.INVALID_ARGUMENT, "give a tenant or operator = true, not both")
        tenant = None if request.operator else (request.tenant or caller.tenant)
        if tenant is None and not caller.is_operator:
            raise operator_required()
        if tenant is not None:
            _own_tenant(caller, tenant)
            if check_tenant_name(tenant):  # no such name can exist
                raise unknown_tenant(tenant)
        scope = _requested_scope(request, tenant)
        _check_duration("ttl_seconds", request.ttl_seconds, Reason.INVALID_KEY_SCOPE)

        async def work() -> admin_pb2.CreateApiKeyResponse:
            if tenant is not None and self._controller.state.tenant(tenant) is None:
                raise unknown_tenant(tenant)
            asked = self._now_ms() + request.ttl_seconds * 1000 if request.ttl_seconds else 0
            expires_at_ms = capped_expiry(asked, current_caller().principal)
            issued = issue_api_key(tenant, scope, expires_at_ms)
            await self._propose(issued.command)
            note_created_key(issued.key_id)
            info = ApiKeyInfo(issued.key_id, tenant, 0, scope, expires_at_ms)
            return admin_pb2.CreateApiKeyResponse(api_key=api_key_message(info, issued.clear_text))

        answer: admin_pb2.CreateApiKeyResponse = await self._change(context, "CreateApiKey", request, work)
        note_created_key(answer.api_key.key_id)  # forwarded: the leader's work noted nothing here
        return answer

    async def revoke_api_key(
        self, request: admin_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RevokeApiKeyResponse:
        _check_key_manager(current_caller())
        if check_key_id(request.key_id):  # no such id can exist
            raise _unknown_key(request.key_id)

        async def work() -> admin_pb2.RevokeApiKeyResponse:
            self._visible_key(current_caller(), request.key_id)
            await self._propose(RevokeApiKey(request.key_id))
            return admin_pb2.RevokeApiKeyResponse()

        answer: admin_pb2.RevokeApiKeyResponse = await self._change(context, "RevokeApiKey", request, work)
        return answer

    async def list_api_keys(
        self, request: admin_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListApiKeysResponse:
        caller = current_caller()
        _check_key_manager(caller)
        if request.operator and request.tenant:
            raise _invalid(Reason.INVALID_ARGUMENT, "give a tenant or operator = true, not both")
        if request.operator and not caller.is_operator:
            raise operator_required()
        tenant = None if request.operator else (request.tenant or caller.tenant)
        if tenant is not None:
            _own_tenant(caller, tenant)
        page = self._controller.state.list_api_keys(tenant, request.page_size, request.page_token)
        return admin_pb2.ListApiKeysResponse(
            api_keys=[api_key_message(k) for k in page.items], next_page_token=page.next_page_token
        )

    async def rotate_api_key(
        self, request: admin_pb2.RotateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RotateApiKeyResponse:
        _check_key_manager(current_caller())
        if check_key_id(request.key_id):  # no such id can exist
            raise _unknown_key(request.key_id)
        _check_duration("grace_seconds", request.grace_seconds, Reason.INVALID_ARGUMENT)
        _check_duration("ttl_seconds", request.ttl_seconds, Reason.INVALID_KEY_SCOPE)

        async def work() -> admin_pb2.RotateApiKeyResponse:
            old = self._visible_key(current_caller(), request.key_id)
            now = self._now_ms()
            old_expires = now + request.grace_seconds * 1000
            if old.expires_at_ms:
                old_expires = min(old.expires_at_ms, old_expires)  # never lengthen its life
            asked = now + request.ttl_seconds * 1000 if request.ttl_seconds else 0
            expires_at_ms = capped_expiry(asked, current_caller().principal)
            issued = issue_api_key(old.tenant, old.scope, expires_at_ms)
            # The new key first: a failure before the second step leaves two keys, not none.
            await self._propose(issued.command)
            note_created_key(issued.key_id)  # audited even if the second step fails
            if old_expires != old.expires_at_ms:
                await self._propose(SetApiKeyExpiry(old.key_id, old_expires))
            new = ApiKeyInfo(issued.key_id, old.tenant, 0, old.scope, expires_at_ms)
            return admin_pb2.RotateApiKeyResponse(
                api_key=api_key_message(new, issued.clear_text), old_expires_at_ms=old_expires
            )

        answer: admin_pb2.RotateApiKeyResponse = await self._change(context, "RotateApiKey", request, work)
        note_created_key(answer.api_key.key_id)  # forwarded: the leader's work noted nothing here
        return answer
