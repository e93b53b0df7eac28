"""``raftlog.flags.v1.FlagAdminService``: environments, flags, history, SDK keys.

Every call: the caller's cluster API key -> ``Caller`` (``TenantKeys``); the
tenant is the caller's, and every read and write names it, so a tenant never
sees or touches another's environments, flags or keys (another tenant's
environment reads exactly like one that does not exist). Reads come from
``LiveFlags``; writes go through ``FlagWriter`` (one change = one record of the
tenant's ``__flags`` topic); history is read back from the log
(flags/admin_history.py over flags/history.py).

Invariants:

- Nothing is written for a refused request: names, JSON, definitions
  (``validate_flag``/``validate_flag_set``: messages name the field), the
  flag set's size (``MAX_SET_BYTES``, 1 MiB of canonical JSON, after the
  change), existence, and the expected version are checked here, then
  ``check_change`` by the writer on the live view; a stale expected version
  that slips past is refused when the record is applied, and reported the same
  way (``VERSION_CONFLICT`` with the current version in the metadata).
- "who" in every record is the caller's key id, never the key.
- A write with no expected version takes the current one and, if another
  write wins the race, tries again from fresh state (``UNSET_ATTEMPTS``):
  last writer wins. With one, a conflict is the caller's to resolve.
- Errors are ``AdminError`` (flags/admin_errors.py); the writer's
  ``FlagLogError`` is ``UNAVAILABLE LOG_UNAVAILABLE``; until the follower
  has read the log, every call is ``UNAVAILABLE NOT_READY``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import grpc

from flags.admin_calls import admin_call
from flags.admin_errors import AdminError, shown
from flags.admin_evaluate import evaluate
from flags.admin_history import history_page, rollback_change, rollback_definition
from flags.admin_offline import evaluate_all, key_info_message, requested_kind, snapshot
from flags.admin_requests import (
    bad_request,
    check_set_size,
    definition_message,
    env_name,
    expected_or,
    flag_key,
    invalid_definition,
    list_token,
    page_size,
    parse_json,
    refused,
    token_after,
    too_large,
    unknown_env,
    unknown_flag,
)
from flags.changes import Change, Kind
from flags.follower import Follower
from flags.live import LiveFlags, SdkKeyInfo
from flags.model import (
    MAX_SET_BYTES,
    Flag,
    FlagSet,
    FlagState,
    InvalidDefinition,
    validate_flag,
    validate_flag_set,
)
from flags.sdk_keys import MalformedSdkKeyRecord, issue_sdk_key, parse_clear_key, revoke_record
from flags.store import Accepted, ApplyResult
from flags.tenant_keys import Caller, TenantKeys
from flags.writer import FlagLogError, FlagWriter
from raftlog.flags.v1 import flags_pb2, flags_pb2_grpc

__all__ = ["FlagAdmin", "register_admin"]

C = grpc.StatusCode
UNSET_ATTEMPTS = 3


def register_admin(
    server: grpc.aio.Server, live: LiveFlags, writer: FlagWriter, follower: Follower, keys: TenantKeys
) -> None:
    flags_pb2_grpc.add_FlagAdminServiceServicer_to_server(FlagAdmin(live, writer, follower, keys), server)


_handled = admin_call(
    (FlagLogError,), "the change may or may not have been made, and its expected version makes a retry safe"
)


def _requested(request: Any) -> int | None:
    """The expected version a write request names, or None (take the current one)."""
    return int(request.expected_version) if request.HasField("expected_version") else None


class FlagAdmin(flags_pb2_grpc.FlagAdminServiceServicer):
    def __init__(
        self,
        live: LiveFlags,
        writer: FlagWriter,
        follower: Follower,
        keys: TenantKeys,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._live = live
        self._writer = writer
        self._follower = follower
        self._keys = keys
        self._clock = clock

    # --- plumbing ----------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _existing_env(self, tenant: str, env: str) -> str:
        env_name(env)
        if not self._live.store.has_environment(tenant, env):
            raise unknown_env(env)
        return env

    async def _append(self, tenant: str, change: Change) -> Accepted:
        result: ApplyResult = await self._writer.append(tenant, change)
        if isinstance(result, Accepted):
            return result
        raise refused(change, result)

    async def _write(
        self, caller: Caller, explicit: bool, make: Callable[[int], Change]
    ) -> tuple[Change, Accepted]:
        """Append ``make(now_ms)``; without an explicit expected version, a
        conflict means another write won the race: make it again from fresh
        state (``make`` reads the current version each time)."""
        for attempt in range(UNSET_ATTEMPTS):
            change = make(self._now_ms())
            try:
                return change, await self._append(caller.tenant, change)
            except AdminError as error:
                if explicit or error.reason != "VERSION_CONFLICT" or attempt == UNSET_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write_one(
        self,
        caller: Caller,
        kind: Kind,
        env: str,
        key: str | None,
        *,
        requested: int | None,
        current: Callable[[], int],
        definition: Flag | FlagSet | None = None,
    ) -> Accepted:
        """Append one ``kind`` change expecting ``requested`` (the request's
        expected version) or, without one, ``current()``, read afresh at each
        attempt (``_write``)."""

        def make(now: int) -> Change:
            expected = current() if requested is None else requested
            return Change(kind, env, key, caller.key_id, now, expected=expected, definition=definition)

        _, accepted = await self._write(caller, requested is not None, make)
        return accepted

    def _environment(self, tenant: str, env: str) -> flags_pb2.Environment:
        store = self._live.store
        flag_set = store.flag_set(tenant, env)
        return flags_pb2.Environment(
            name=env,
            version=store.env_version(tenant, env),
            set_version=store.set_version(tenant, env),
            flags=0 if flag_set is None else len(flag_set.flags),
        )

    # --- environments ------------------------------------------------------------------

    @_handled
    async def CreateEnvironment(
        self, request: flags_pb2.CreateEnvironmentRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.CreateEnvironmentResponse:
        env = env_name(request.name)
        store = self._live.store
        if store.has_environment(caller.tenant, env):
            raise AdminError(
                C.ALREADY_EXISTS,
                "ENVIRONMENT_EXISTS",
                f"environment {shown(env)} exists",
                {"environment": env},
            )
        accepted = await self._write_one(
            caller,
            Kind.ENV_CREATE,
            env,
            None,
            requested=None,
            current=lambda: store.set_version(caller.tenant, env),
        )
        return flags_pb2.CreateEnvironmentResponse(
            environment=self._environment(caller.tenant, env), version=accepted.version
        )

    @_handled
    async def DeleteEnvironment(
        self, request: flags_pb2.DeleteEnvironmentRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.DeleteEnvironmentResponse:
        env = self._existing_env(caller.tenant, request.name)
        store = self._live.store
        accepted = await self._write_one(
            caller,
            Kind.ENV_DELETE,
            env,
            None,
            requested=_requested(request),
            current=lambda: store.set_version(caller.tenant, env),
        )
        # Its SDK keys stop working with it (LiveFlags); revoking them keeps them
        # from serving an environment of the same name created later.
        for key in self._live.sdk_keys(caller.tenant, env):
            if not key.revoked:
                record_key, value = revoke_record(key.id, env, caller.key_id, self._now_ms())
                await self._writer.append_record(caller.tenant, record_key, value)
        return flags_pb2.DeleteEnvironmentResponse(version=accepted.version)

    @_handled
    async def ListEnvironments(
        self, request: flags_pb2.ListEnvironmentsRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.ListEnvironmentsResponse:
        size = page_size(request.page_size)
        names = list(self._live.store.environments(caller.tenant))
        if request.page_token:
            (after,) = token_after(request.page_token, "envs")[:1]
            names = [name for name in names if name > after]
        chosen = names[:size]
        token = list_token("envs", chosen[-1]) if len(names) > size else ""
        return flags_pb2.ListEnvironmentsResponse(
            environments=[self._environment(caller.tenant, name) for name in chosen], next_page_token=token
        )

    # --- flags -------------------------------------------------------------------------

    @_handled
    async def ImportFlags(
        self, request: flags_pb2.ImportFlagsRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.ImportFlagsResponse:
        env = self._existing_env(caller.tenant, request.environment)
        document = parse_json(request.flags_json, "flags_json")
        if isinstance(document, dict):
            size = len(
                json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            )
            if size > MAX_SET_BYTES:
                raise too_large(size)
        try:
            flag_set = validate_flag_set(document)
        except InvalidDefinition as error:
            raise invalid_definition(error) from None
        check_set_size(flag_set)
        store = self._live.store
        accepted = await self._write_one(
            caller,
            Kind.IMPORT,
            env,
            None,
            requested=_requested(request),
            current=lambda: store.set_version(caller.tenant, env),
            definition=flag_set,
        )
        return flags_pb2.ImportFlagsResponse(version=accepted.version, flags=len(flag_set.flags))

    @_handled
    async def PutFlag(
        self, request: flags_pb2.PutFlagRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.PutFlagResponse:
        env = self._existing_env(caller.tenant, request.environment)
        key = flag_key(request.flag)
        store = self._live.store
        document = parse_json(request.definition_json, "definition_json")
        current_set = store.flag_set(caller.tenant, env) or FlagSet()
        try:
            flag = validate_flag(key, document, current_set.evaluators)
        except InvalidDefinition as error:
            raise invalid_definition(error) from None
        check_set_size(dataclasses.replace(current_set, flags={**current_set.flags, key: flag}))
        explicit = request.HasField("expected_version")
        if explicit and request.expected_version == 0 and store.flag(caller.tenant, env, key) is not None:
            raise AdminError(
                C.ALREADY_EXISTS,
                "FLAG_EXISTS",
                f"flag {shown(key)} exists in {shown(env)} (expected version 0 means create only); "
                "send its current version to replace it",
                {"current_version": str(store.flag_version(caller.tenant, env, key))},
            )
        created = False

        def make(now: int) -> Change:
            nonlocal created
            created = store.flag(caller.tenant, env, key) is None
            current = store.flag_version(caller.tenant, env, key)
            # Expected 0 is "must not exist": an absent flag's version is its
            # environment's set version (or its delete's), which is what the store expects.
            create_only = explicit and request.expected_version == 0
            expected = (
                current
                if create_only and created
                else expected_or(explicit, request.expected_version, current)
            )
            kind = Kind.CREATE if created else Kind.UPDATE
            return Change(kind, env, key, caller.key_id, now, expected=expected, definition=flag)

        _, accepted = await self._write(caller, explicit, make)
        return flags_pb2.PutFlagResponse(version=accepted.version, created=created)

    def _existing_flag(self, tenant: str, env: str, key: str) -> Flag:
        self._existing_env(tenant, env)
        flag_key(key)
        view = self._live.store.flag(tenant, env, key)
        if view is None:
            raise unknown_flag(env, key)
        return view.flag

    @_handled
    async def DeleteFlag(
        self, request: flags_pb2.DeleteFlagRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.DeleteFlagResponse:
        env, key = request.environment, request.flag
        self._existing_flag(caller.tenant, env, key)
        store = self._live.store
        accepted = await self._write_one(
            caller,
            Kind.DELETE,
            env,
            key,
            requested=_requested(request),
            current=lambda: store.flag_version(caller.tenant, env, key),
        )
        return flags_pb2.DeleteFlagResponse(version=accepted.version)

    @_handled
    async def SetFlagState(
        self, request: flags_pb2.SetFlagStateRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.SetFlagStateResponse:
        env, key = request.environment, request.flag
        flag = self._existing_flag(caller.tenant, env, key)
        store = self._live.store
        explicit = request.HasField("expected_version")
        current = store.flag_version(caller.tenant, env, key)
        if flag.enabled == request.enabled and (not explicit or request.expected_version == current):
            return flags_pb2.SetFlagStateResponse(version=current, changed=False)
        state = FlagState.ENABLED if request.enabled else FlagState.DISABLED
        kind = Kind.ENABLE if request.enabled else Kind.DISABLE

        def make(now: int) -> Change:
            latest = store.flag(caller.tenant, env, key)
            base = flag if latest is None else latest.flag
            expected = expected_or(
                explicit, request.expected_version, store.flag_version(caller.tenant, env, key)
            )
            definition = dataclasses.replace(base, state=state)
            return Change(kind, env, key, caller.key_id, now, expected=expected, definition=definition)

        _, accepted = await self._write(caller, explicit, make)
        return flags_pb2.SetFlagStateResponse(version=accepted.version, changed=True)

    def _definition(self, tenant: str, env: str, key: str) -> flags_pb2.FlagDefinition:
        view = self._live.store.flag(tenant, env, key)
        if view is None:
            raise unknown_flag(env, key)
        return definition_message(key, view.version, view.flag)

    @_handled
    async def GetFlag(
        self, request: flags_pb2.GetFlagRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.GetFlagResponse:
        env = self._existing_env(caller.tenant, request.environment)
        return flags_pb2.GetFlagResponse(flag=self._definition(caller.tenant, env, flag_key(request.flag)))

    @_handled
    async def ListFlags(
        self, request: flags_pb2.ListFlagsRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.ListFlagsResponse:
        env = self._existing_env(caller.tenant, request.environment)
        store = self._live.store
        try:
            listed = store.list_flags(caller.tenant, env, page_size(request.page_size), request.page_token)
        except ValueError:
            raise bad_request(
                "INVALID_PAGE_TOKEN", "this page token belongs to another listing; start from page 1"
            ) from None
        return flags_pb2.ListFlagsResponse(
            flags=[definition_message(v.key, v.version, v.flag) for v in listed.items],
            next_page_token=listed.next_page_token,
            environment_version=store.env_version(caller.tenant, env),
            set_version=store.set_version(caller.tenant, env),
        )

    # --- history (flags/admin_history.py) ----------------------------------------------

    @_handled
    async def GetHistory(
        self, request: flags_pb2.GetHistoryRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.GetHistoryResponse:
        return await history_page(self._live, self._writer, caller.tenant, request)

    @_handled
    async def Rollback(
        self, request: flags_pb2.RollbackRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.RollbackResponse:
        env = self._existing_env(caller.tenant, request.environment)
        key = flag_key(request.flag)
        to = request.to_version
        flag = await rollback_definition(self._live, self._writer, caller.tenant, env, key, to)
        expected = _requested(request)
        make = rollback_change(self._live, caller, env, key, flag, to, expected)
        _, accepted = await self._write(caller, expected is not None, make)
        return flags_pb2.RollbackResponse(version=accepted.version)

    # --- SDK keys ----------------------------------------------------------------------

    @_handled
    async def CreateSdkKey(
        self, request: flags_pb2.CreateSdkKeyRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.CreateSdkKeyResponse:
        env = self._existing_env(caller.tenant, request.environment)
        kind = requested_kind(request.kind)
        try:
            issued = issue_sdk_key(env, request.name, caller.key_id, self._now_ms(), kind)
        except MalformedSdkKeyRecord as error:
            raise bad_request("INVALID_NAME", f"invalid SDK key name: {error}") from None
        await self._writer.append_record(caller.tenant, issued.record_key, issued.record_value)
        info = self._key_info(caller.tenant, issued.key_id)
        return flags_pb2.CreateSdkKeyResponse(clear_key=issued.clear_key, key=key_info_message(info))

    def _key_info(self, tenant: str, key_id: str) -> SdkKeyInfo:
        for info in self._live.sdk_keys(tenant):
            if info.id == key_id:
                return info
        raise AdminError(
            C.NOT_FOUND, "UNKNOWN_SDK_KEY", f"no SDK key {shown(key_id)} in this tenant; list the keys"
        )

    @_handled
    async def ListSdkKeys(
        self, request: flags_pb2.ListSdkKeysRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.ListSdkKeysResponse:
        env = self._existing_env(caller.tenant, request.environment) if request.environment else None
        size = page_size(request.page_size)
        keys = sorted(
            (k for k in self._live.sdk_keys(caller.tenant, env) if request.include_revoked or not k.revoked),
            key=lambda k: (k.env, k.id),
        )
        if request.page_token:
            after_env, after_id = (*token_after(request.page_token, "keys"), "")[:2]
            keys = [k for k in keys if (k.env, k.id) > (after_env, after_id)]
        chosen = keys[:size]
        token = list_token("keys", chosen[-1].env, chosen[-1].id) if len(keys) > size else ""
        return flags_pb2.ListSdkKeysResponse(
            keys=[key_info_message(k) for k in chosen], next_page_token=token
        )

    @_handled
    async def RevokeSdkKey(
        self, request: flags_pb2.RevokeSdkKeyRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.RevokeSdkKeyResponse:
        parsed = parse_clear_key(request.key_id)
        info = self._key_info(caller.tenant, parsed[1] if parsed else request.key_id)
        if not info.revoked:
            record_key, value = revoke_record(info.id, info.env, caller.key_id, self._now_ms())
            await self._writer.append_record(caller.tenant, record_key, value)
            info = self._key_info(caller.tenant, info.id)
        return flags_pb2.RevokeSdkKeyResponse(key=key_info_message(info))

    # --- evaluation --------------------------------------------------------------------

    @_handled
    async def Evaluate(
        self, request: flags_pb2.EvaluateRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.EvaluateResponse:
        env = self._existing_env(caller.tenant, request.environment)
        key = flag_key(request.flag)
        context_doc = parse_json(request.context_json, "context_json") if request.context_json else {}
        if not isinstance(context_doc, dict):
            raise bad_request(
                "INVALID_CONTEXT", 'context_json is a JSON object, e.g. {"targetingKey": "user-1"}'
            )
        return evaluate(self._live, caller.tenant, env, key, context_doc)

    # --- offline (flags/admin_offline.py) --------------------------------------------

    @_handled
    async def GetSnapshot(
        self, request: flags_pb2.GetSnapshotRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.GetSnapshotResponse:
        return snapshot(self._live, caller.tenant, self._existing_env(caller.tenant, request.environment))

    @_handled
    async def EvaluateAll(
        self, request: flags_pb2.EvaluateAllRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.EvaluateAllResponse:
        env = self._existing_env(caller.tenant, request.environment)
        return evaluate_all(self._live, caller.tenant, env, request.context_json)
