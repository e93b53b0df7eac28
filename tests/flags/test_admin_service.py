"""The flag admin API (``raftlog.flags.v1``) on a loopback gRPC server, over a
real ``LiveFlags`` and a fake writer that appends to an in-memory log (the
``FlagWriter`` contract: check_change first, refusals write nothing, records
applied in offset order). Tenant keys come from a fake WhoAmI.

Each group: what a tenant can do, and that bad input (unknown environment or
flag, invalid definitions, oversize sets, stale versions, wrong or another
tenant's key) is refused with a reason and writes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from client.errors import AuthenticationError, UnknownTenantError
from client.fetcher import ConsumerRecord
from flags.admin_errors import AdminError, reason_of
from flags.admin_service import FlagAdmin
from flags.changes import Change, encode
from flags.history import apply_json_diff, json_diff
from flags.live import FLAGS_TOPIC, LiveFlags
from flags.model import MAX_SET_BYTES
from flags.store import ApplyResult
from flags.tenant_keys import TenantKeys
from raftlog.flags.v1 import flags_pb2, flags_pb2_grpc
from raftlog.v1 import admin_pb2

pytestmark = pytest.mark.timeout(30)

KEYS = {
    "rlk_acme": admin_pb2.WhoAmIResponse(tenant="acme", key_id="kid-acme", operator=False),
    "rlk_globex": admin_pb2.WhoAmIResponse(tenant="globex", key_id="kid-globex", operator=False),
    "rlk_op": admin_pb2.WhoAmIResponse(tenant="default", key_id="kid-op", operator=True),
}

BOOL_FLAG = {
    "state": "ENABLED",
    "variants": {"on": True, "off": False},
    "defaultVariant": "off",
    "targeting": {"if": [{"ends_with": [{"var": "email"}, "@acme.com"]}, "on", None]},
}


class FakeWriter:
    """An in-memory ``__flags`` log per tenant, applied to ``live`` at once."""

    def __init__(self, live: LiveFlags) -> None:
        self.live = live
        self.log: dict[str, list[tuple[str, bytes]]] = {}

    def written(self, tenant: str) -> int:
        return len(self.log.get(tenant, []))

    async def append(self, tenant: str, change: Change, timeout_s: float = 10.0) -> ApplyResult:
        refusal = self.live.store.check_change(tenant, change)
        if refusal is not None:
            return refusal
        offset = await self.append_record(tenant, change.key, encode(change))
        result = self.live.result(tenant, offset)
        assert result is not None
        return result

    async def append_record(self, tenant: str, key: str, value: bytes, timeout_s: float = 10.0) -> int:
        records = self.log.setdefault(tenant, [])
        records.append((key, value))
        self.live.apply(tenant, len(records) - 1, key, value)
        return len(records) - 1

    async def read_records(self, tenant: str, offsets: Sequence[int]) -> list[ConsumerRecord]:
        records = self.log.get(tenant, [])
        return [
            ConsumerRecord(FLAGS_TOPIC, 0, o, 0, records[o][0].encode(), records[o][1])
            for o in sorted(set(offsets))
            if 0 <= o < len(records)
        ]


class ReadyFollower:
    ready = True

    def is_ready(self) -> bool:
        return self.ready


@dataclass
class Api:
    stub: flags_pb2_grpc.FlagAdminServiceStub
    writer: FakeWriter
    live: LiveFlags
    follower: ReadyFollower
    asked: list[str]

    async def call(self, method: str, request: Any, key: str = "rlk_acme", tenant: str | None = None) -> Any:
        metadata = [("authorization", f"Bearer {key}")]
        if tenant:
            metadata.append(("raftlog-tenant", tenant))
        return await getattr(self.stub, method)(request, metadata=metadata, timeout=5)

    async def refused(
        self, method: str, request: Any, **kw: Any
    ) -> tuple[grpc.StatusCode | None, str, str, dict[str, str]]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.call(method, request, **kw)
        details = reason_of(caught.value)
        return details.code, details.reason, details.message, dict(details.metadata)

    async def env(self, name: str = "prod", **kw: Any) -> None:
        await self.call("CreateEnvironment", flags_pb2.CreateEnvironmentRequest(name=name), **kw)

    async def put(self, flag: str, definition: Any, env: str = "prod", **kw: Any) -> Any:
        request = flags_pb2.PutFlagRequest(environment=env, flag=flag, definition_json=json.dumps(definition))
        if "expected" in kw:
            request.expected_version = kw.pop("expected")
        return await self.call("PutFlag", request, **kw)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    live = LiveFlags()
    writer = FakeWriter(live)
    follower = ReadyFollower()
    asked: list[str] = []

    async def who_am_i(key: str, tenant: str | None) -> admin_pb2.WhoAmIResponse:
        asked.append(key)
        if key not in KEYS:
            raise AuthenticationError("unknown key")
        answer = KEYS[key]
        if tenant and not answer.operator and tenant != answer.tenant:
            raise UnknownTenantError("no such tenant")
        return admin_pb2.WhoAmIResponse(
            tenant=tenant or answer.tenant, key_id=answer.key_id, operator=answer.operator
        )

    keys = TenantKeys("127.0.0.1:1", who_am_i=who_am_i)
    server = grpc.aio.server()
    admin = FlagAdmin(live, writer, follower, keys)  # type: ignore[arg-type]
    flags_pb2_grpc.add_FlagAdminServiceServicer_to_server(admin, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Api(flags_pb2_grpc.FlagAdminServiceStub(channel), writer, live, follower, asked)
    finally:
        await channel.close()
        await server.stop(grace=None)


# --- environments and tenants ------------------------------------------------------------


async def test_environments_are_created_listed_and_deleted_per_tenant(api: Api) -> None:
    await api.env("prod")
    await api.env("staging")
    await api.env("prod", key="rlk_globex")
    listed = await api.call("ListEnvironments", flags_pb2.ListEnvironmentsRequest(page_size=1))
    assert [e.name for e in listed.environments] == ["prod"] and listed.next_page_token
    rest = await api.call(
        "ListEnvironments", flags_pb2.ListEnvironmentsRequest(page_token=listed.next_page_token)
    )
    assert [e.name for e in rest.environments] == ["staging"] and not rest.next_page_token
    code, reason, _, _ = await api.refused(
        "CreateEnvironment", flags_pb2.CreateEnvironmentRequest(name="prod")
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "ENVIRONMENT_EXISTS")
    await api.call("DeleteEnvironment", flags_pb2.DeleteEnvironmentRequest(name="staging"))
    listed = await api.call("ListEnvironments", flags_pb2.ListEnvironmentsRequest())
    assert [e.name for e in listed.environments] == ["prod"]
    globex = await api.call("ListEnvironments", flags_pb2.ListEnvironmentsRequest(), key="rlk_globex")
    assert [e.name for e in globex.environments] == ["prod"]


async def test_another_tenants_environment_reads_as_unknown_and_nothing_is_written(api: Api) -> None:
    await api.env("secret-env", key="rlk_globex")
    await api.put("f", BOOL_FLAG, env="secret-env", key="rlk_globex")
    before = api.writer.written("acme"), api.writer.written("globex")
    get = flags_pb2.GetFlagRequest(environment="secret-env", flag="f")
    assert (await api.refused("GetFlag", get))[:2] == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_ENVIRONMENT")
    request = flags_pb2.PutFlagRequest(
        environment="secret-env", flag="f", definition_json=json.dumps(BOOL_FLAG)
    )
    assert (await api.refused("PutFlag", request))[1] == "UNKNOWN_ENVIRONMENT"
    history = flags_pb2.GetHistoryRequest(environment="secret-env")
    assert (await api.refused("GetHistory", history))[1] == "UNKNOWN_ENVIRONMENT"
    # A tenant key naming another tenant: refused like a tenant that does not exist.
    code, reason, _, _ = await api.refused("GetFlag", get, tenant="globex")
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_TENANT")
    assert (api.writer.written("acme"), api.writer.written("globex")) == before


async def test_keys_are_checked_and_operators_name_their_tenant(api: Api) -> None:
    request = flags_pb2.ListEnvironmentsRequest()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.stub.ListEnvironments(request, timeout=5)
    assert reason_of(caught.value).reason == "MISSING_API_KEY"
    assert (await api.refused("ListEnvironments", request, key="rlk_nope"))[:2] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_API_KEY",
    )
    sdk_key = "rlf_" + "0" * 16 + "_" + "A" * 43
    _, reason, message, _ = await api.refused("ListEnvironments", request, key=sdk_key)
    assert reason == "INVALID_API_KEY" and "SDK key" in message and sdk_key not in message
    assert (await api.refused("ListEnvironments", request, key="rlk_op"))[:2] == (
        grpc.StatusCode.PERMISSION_DENIED,
        "TENANT_REQUIRED",
    )
    await api.env("ops-env", key="rlk_op", tenant="acme")
    listed = await api.call("ListEnvironments", request)
    assert [e.name for e in listed.environments] == ["ops-env"]
    who = json.loads(api.writer.log["acme"][0][1])["who"]
    assert who == "kid-op"


async def test_a_server_still_reading_the_log_answers_not_ready(api: Api) -> None:
    api.follower.ready = False
    code, reason, _, _ = await api.refused("ListEnvironments", flags_pb2.ListEnvironmentsRequest())
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "NOT_READY")


async def test_tenant_keys_are_cached_by_hash_for_a_few_seconds() -> None:
    asked: list[str] = []
    now = [100.0]

    async def who_am_i(key: str, tenant: str | None) -> admin_pb2.WhoAmIResponse:
        asked.append(key)
        return KEYS[key]

    keys = TenantKeys("127.0.0.1:1", cache_s=5.0, who_am_i=who_am_i, clock=lambda: now[0])
    metadata = [("authorization", "Bearer rlk_acme")]
    assert (await keys.caller(metadata)).tenant == "acme"
    now[0] += 4.9
    assert (await keys.caller(metadata)).key_id == "kid-acme"
    assert asked == ["rlk_acme"]
    now[0] += 0.2
    await keys.caller(metadata)
    assert asked == ["rlk_acme", "rlk_acme"]
    assert all("rlk_acme" not in repr(k) for k in keys._cache), "the cache holds the key in clear"


async def test_sdk_keys_are_refused_without_asking_the_cluster() -> None:
    asked: list[str] = []

    async def who_am_i(key: str, tenant: str | None) -> admin_pb2.WhoAmIResponse:
        asked.append(key)
        return KEYS["rlk_acme"]

    keys = TenantKeys("127.0.0.1:1", who_am_i=who_am_i)
    secret = "0" * 16 + "_" + "A" * 43
    expected = {
        "rlc_": "a client key (rlc_…) is for OFREP evaluation and tracking only; "
        "the admin API needs a tenant API key (rlk_…)",
        "rlf_": "SDK key (rlf_...)",
    }
    for prefix, words in expected.items():
        with pytest.raises(AdminError) as caught:
            await keys.caller([("authorization", f"Bearer {prefix}{secret}"), ("raftlog-tenant", "acme")])
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert caught.value.reason == "INVALID_API_KEY"
        assert words in caught.value.message and secret not in caught.value.message
    assert asked == []


# --- flags -------------------------------------------------------------------------------


async def test_put_get_list_and_versions(api: Api) -> None:
    await api.env()
    created = await api.put("new-welcome", BOOL_FLAG, expected=0)
    assert created.created and created.version == 2
    got = await api.call("GetFlag", flags_pb2.GetFlagRequest(environment="prod", flag="new-welcome"))
    assert got.flag.version == 2 and got.flag.variant_type == "boolean" and got.flag.enabled
    assert json.loads(got.flag.definition_json)["targeting"] == BOOL_FLAG["targeting"]
    updated = await api.put("new-welcome", {**BOOL_FLAG, "defaultVariant": "on"}, expected=2)
    assert (updated.created, updated.version) == (False, 3)
    for i in range(3):
        await api.put(f"f{i}", BOOL_FLAG)
    page = await api.call("ListFlags", flags_pb2.ListFlagsRequest(environment="prod", page_size=2))
    assert [f.flag for f in page.flags] == ["f0", "f1"] and page.next_page_token
    assert page.environment_version == api.live.store.env_version("acme", "prod")


async def test_a_stale_expected_version_is_a_conflict_naming_the_current_one(api: Api) -> None:
    await api.env()
    await api.put("f", BOOL_FLAG)
    await api.put("f", {**BOOL_FLAG, "defaultVariant": "on"})
    written = api.writer.written("acme")
    request = flags_pb2.PutFlagRequest(
        environment="prod", flag="f", definition_json=json.dumps(BOOL_FLAG), expected_version=2
    )
    code, reason, _, metadata = await api.refused("PutFlag", request)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_CONFLICT")
    assert metadata == {"current_version": "3", "expected_version": "2"}
    request.expected_version = 0
    assert (await api.refused("PutFlag", request))[1] == "FLAG_EXISTS"
    delete = flags_pb2.DeleteFlagRequest(environment="prod", flag="f", expected_version=1)
    assert (await api.refused("DeleteFlag", delete))[1] == "VERSION_CONFLICT"
    assert api.writer.written("acme") == written


async def test_invalid_definitions_name_the_field_and_write_nothing(api: Api) -> None:
    await api.env()
    written = api.writer.written("acme")
    bad = {**BOOL_FLAG, "targeting": {"if": [True, "blu", "off"]}}
    code, reason, message, _ = await api.refused(
        "PutFlag",
        flags_pb2.PutFlagRequest(environment="prod", flag="new-welcome", definition_json=json.dumps(bad)),
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DEFINITION")
    assert "flags.new-welcome.targeting" in message and "blu" in message
    not_json = flags_pb2.PutFlagRequest(environment="prod", flag="f", definition_json="{nope")
    assert (await api.refused("PutFlag", not_json))[1] == "INVALID_JSON"
    bad_key = flags_pb2.PutFlagRequest(environment="prod", flag="a/b", definition_json=json.dumps(BOOL_FLAG))
    assert (await api.refused("PutFlag", bad_key))[1] == "INVALID_NAME"
    bad_set = flags_pb2.ImportFlagsRequest(
        environment="prod", flags_json=json.dumps({"flags": {"x": {"state": "ON"}}})
    )
    code, reason, message, _ = await api.refused("ImportFlags", bad_set)
    assert reason == "INVALID_DEFINITION" and "flags.x" in message
    missing = flags_pb2.GetFlagRequest(environment="prod", flag="nope")
    assert (await api.refused("GetFlag", missing))[:2] == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_FLAG")
    assert api.writer.written("acme") == written


async def test_oversize_flag_sets_are_refused_with_the_limit(api: Api) -> None:
    await api.env()
    written = api.writer.written("acme")
    big = {
        "flags": {
            f"flag-{i}": {**BOOL_FLAG, "metadata": {"note": "x" * 1000}} for i in range(MAX_SET_BYTES // 1000)
        }
    }
    code, reason, message, metadata = await api.refused(
        "ImportFlags", flags_pb2.ImportFlagsRequest(environment="prod", flags_json=json.dumps(big))
    )
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "FLAG_SET_TOO_LARGE")
    assert metadata["limit_bytes"] == str(MAX_SET_BYTES) and "1 MiB" in message
    half = {"flags": dict(list(big["flags"].items())[: len(big["flags"]) // 2 + 10])}
    await api.call(
        "ImportFlags", flags_pb2.ImportFlagsRequest(environment="prod", flags_json=json.dumps(half))
    )
    written = api.writer.written("acme")
    # One more flag of the same size fits; adding the rest one by one crosses the limit.
    for i in range(len(half["flags"]), len(big["flags"])):
        try:
            await api.put(f"flag-{i}", big["flags"][f"flag-{i}"])
        except grpc.aio.AioRpcError as error:
            assert reason_of(error).reason == "FLAG_SET_TOO_LARGE"
            break
    else:
        pytest.fail("the flag set grew past the limit one flag at a time")
    assert api.writer.written("acme") == written + (i - len(half["flags"]))


async def test_import_replaces_the_set_and_checks_the_set_version(api: Api) -> None:
    await api.env()
    await api.put("old", BOOL_FLAG)
    document = {
        "flags": {"a": BOOL_FLAG, "b": {**BOOL_FLAG, "state": "DISABLED"}},
        "metadata": {"flagSetId": "s"},
    }
    request = flags_pb2.ImportFlagsRequest(
        environment="prod", flags_json=json.dumps(document), expected_version=0
    )
    assert (await api.refused("ImportFlags", request))[1] == "VERSION_CONFLICT"
    request.expected_version = 1  # the env-create's version: the set version
    answer = await api.call("ImportFlags", request)
    assert answer.flags == 2 and answer.version == 3
    listed = await api.call("ListFlags", flags_pb2.ListFlagsRequest(environment="prod"))
    assert [f.flag for f in listed.flags] == ["a", "b"] and listed.set_version == 3


async def test_the_kill_switch_disables_and_enables(api: Api) -> None:
    await api.env()
    await api.put("f", BOOL_FLAG)
    off = await api.call(
        "SetFlagState", flags_pb2.SetFlagStateRequest(environment="prod", flag="f", enabled=False)
    )
    assert off.changed and off.version == 3
    again = await api.call(
        "SetFlagState", flags_pb2.SetFlagStateRequest(environment="prod", flag="f", enabled=False)
    )
    assert (again.changed, again.version) == (False, 3)
    result = await api.call(
        "Evaluate",
        flags_pb2.EvaluateRequest(environment="prod", flag="f", context_json='{"email": "a@acme.com"}'),
    )
    assert result.reason == "DISABLED"
    await api.call("SetFlagState", flags_pb2.SetFlagStateRequest(environment="prod", flag="f", enabled=True))
    result = await api.call(
        "Evaluate",
        flags_pb2.EvaluateRequest(environment="prod", flag="f", context_json='{"email": "a@acme.com"}'),
    )
    assert (json.loads(result.value_json), result.variant, result.reason) == (True, "on", "TARGETING_MATCH")
    missing = await api.call("Evaluate", flags_pb2.EvaluateRequest(environment="prod", flag="nope"))
    assert (missing.reason, missing.error_code) == ("ERROR", "FLAG_NOT_FOUND")
    bad = flags_pb2.EvaluateRequest(environment="prod", flag="f", context_json="[1]")
    assert (await api.refused("Evaluate", bad))[1] == "INVALID_CONTEXT"


# --- history and rollback ----------------------------------------------------------------


async def test_history_is_newest_first_with_who_diffs_and_pages(api: Api) -> None:
    await api.env()
    await api.put("f", BOOL_FLAG)  # version 2
    await api.put("f", {**BOOL_FLAG, "defaultVariant": "on"})  # 3
    await api.put("g", BOOL_FLAG)  # 4
    await api.call("DeleteFlag", flags_pb2.DeleteFlagRequest(environment="prod", flag="f"))  # 5
    page = await api.call(
        "GetHistory", flags_pb2.GetHistoryRequest(environment="prod", flag="f", page_size=2)
    )
    assert [(e.kind, e.version) for e in page.entries] == [("delete", 5), ("update", 3)]
    update = page.entries[1]
    assert update.who == "kid-acme" and update.outcome == "accepted"
    assert json.loads(update.diff_json) == [{"op": "replace", "path": "/defaultVariant", "value": "on"}]
    assert (
        '-  "defaultVariant": "off"' in update.diff_text and '+  "defaultVariant": "on"' in update.diff_text
    )
    rest = await api.call(
        "GetHistory",
        flags_pb2.GetHistoryRequest(environment="prod", flag="f", page_token=page.next_page_token),
    )
    assert [(e.kind, e.version) for e in rest.entries] == [("create", 2), ("env-create", 1)]
    assert not rest.next_page_token
    # In one flag's history, an environment-level change shows that flag only.
    assert (rest.entries[1].diff_json, rest.entries[1].diff_text) == ("[]", "")
    everything = await api.call("GetHistory", flags_pb2.GetHistoryRequest(environment="prod"))
    assert [e.version for e in everything.entries] == [5, 4, 3, 2, 1]
    wrong = flags_pb2.GetHistoryRequest(environment="prod", flag="g", page_token=page.next_page_token)
    assert (await api.refused("GetHistory", wrong))[1] == "INVALID_PAGE_TOKEN"


async def test_rollback_restores_an_earlier_definition(api: Api) -> None:
    await api.env()
    await api.put("f", BOOL_FLAG)  # 2
    await api.put("f", {**BOOL_FLAG, "defaultVariant": "on", "targeting": {}})  # 3
    back = await api.call("Rollback", flags_pb2.RollbackRequest(environment="prod", flag="f", to_version=2))
    got = await api.call("GetFlag", flags_pb2.GetFlagRequest(environment="prod", flag="f"))
    assert got.flag.version == back.version == 4
    assert json.loads(got.flag.definition_json)["targeting"] == BOOL_FLAG["targeting"]
    history = await api.call(
        "GetHistory", flags_pb2.GetHistoryRequest(environment="prod", flag="f", page_size=1)
    )
    assert (history.entries[0].kind, history.entries[0].rollback_to) == ("rollback", 2)
    written = api.writer.written("acme")
    for to in (0, 1, 99):  # never, the env-create (no flag yet), not in the history
        request = flags_pb2.RollbackRequest(environment="prod", flag="f", to_version=to)
        assert (await api.refused("Rollback", request))[:2] == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_VERSION")
    stale = flags_pb2.RollbackRequest(environment="prod", flag="f", to_version=3, expected_version=3)
    assert (await api.refused("Rollback", stale))[1] == "VERSION_CONFLICT"
    assert api.writer.written("acme") == written


async def test_rollback_brings_a_deleted_flag_back_and_takes_an_expected_version(api: Api) -> None:
    await api.env()
    await api.put("f", BOOL_FLAG)  # 2
    await api.call("DeleteFlag", flags_pb2.DeleteFlagRequest(environment="prod", flag="f"))  # 3
    request = flags_pb2.RollbackRequest(environment="prod", flag="f", to_version=2, expected_version=3)
    back = await api.call("Rollback", request)
    got = await api.call("GetFlag", flags_pb2.GetFlagRequest(environment="prod", flag="f"))
    assert got.flag.version == back.version == 4
    assert json.loads(got.flag.definition_json)["targeting"] == BOOL_FLAG["targeting"]
    history = await api.call("GetHistory", flags_pb2.GetHistoryRequest(environment="prod", flag="f"))
    assert [e.kind for e in history.entries][:3] == ["create", "delete", "create"]


def test_json_diff_turns_before_into_after() -> None:
    cases = [
        ({"a": 1, "b": {"c": [1, 2]}}, {"a": 1, "b": {"c": [2]}, "d/e~": None}),
        ({"x": True}, {"x": 1}),
        ({"keep": 1, "gone": {"deep": 2}, "nested": {"out": 1, "in": 2}}, {"keep": 1, "nested": {"in": 3}}),
        (None, {"a": 1}),
        ({"a": 1}, None),
        ({"a": {"b": 1}}, {"a": {"b": 1}}),
    ]
    for before, after in cases:
        ops = json_diff(before, after)
        assert apply_json_diff(before, ops) == after, (before, after, ops)
    assert json_diff({"a": {"b": 1}}, {"a": {"b": 1}}) == []
    assert json_diff({"x": True}, {"x": 1}) == [{"op": "replace", "path": "/x", "value": 1}]


# --- SDK keys ----------------------------------------------------------------------------


async def test_sdk_keys_are_created_once_listed_and_revoked_per_tenant(api: Api) -> None:
    await api.env()
    created = await api.call("CreateSdkKey", flags_pb2.CreateSdkKeyRequest(environment="prod", name="ios"))
    assert created.clear_key.startswith("rlf_") and created.key.key_id in created.clear_key
    assert (created.key.environment, created.key.name, created.key.created_by) == ("prod", "ios", "kid-acme")
    scope = api.live.authenticate(created.clear_key)
    assert scope is not None and (scope.tenant, scope.env) == ("acme", "prod")
    listed = await api.call("ListSdkKeys", flags_pb2.ListSdkKeysRequest())
    assert [k.key_id for k in listed.keys] == [created.key.key_id]
    assert not (await api.call("ListSdkKeys", flags_pb2.ListSdkKeysRequest(), key="rlk_globex")).keys
    revoke = flags_pb2.RevokeSdkKeyRequest(key_id=created.key.key_id)
    assert (await api.refused("RevokeSdkKey", revoke, key="rlk_globex"))[1] == "UNKNOWN_SDK_KEY"
    assert api.live.authenticate(created.clear_key) is not None
    revoked = await api.call("RevokeSdkKey", revoke)
    assert revoked.key.revoked and api.live.authenticate(created.clear_key) is None
    assert not (await api.call("ListSdkKeys", flags_pb2.ListSdkKeysRequest())).keys
    everything = await api.call("ListSdkKeys", flags_pb2.ListSdkKeysRequest(include_revoked=True))
    assert [k.revoked for k in everything.keys] == [True]
    unknown_env = flags_pb2.CreateSdkKeyRequest(environment="nope")
    assert (await api.refused("CreateSdkKey", unknown_env))[1] == "UNKNOWN_ENVIRONMENT"


async def test_deleting_an_environment_revokes_its_sdk_keys(api: Api) -> None:
    await api.env()
    created = await api.call("CreateSdkKey", flags_pb2.CreateSdkKeyRequest(environment="prod"))
    await api.call("DeleteEnvironment", flags_pb2.DeleteEnvironmentRequest(name="prod"))
    await api.env()  # the same name again: the old key must not serve it
    assert api.live.authenticate(created.clear_key) is None
