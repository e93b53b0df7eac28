"""The OFREP port (flags/ofrep.py, flags/ofrep_values.py) with httpx requests as
mobile and web SDKs make them: bulk with ETag revalidation (304, change -> 200
with a new ETag), the single-flag endpoint, every refusal (status and body,
nothing evaluated or written), CORS, rate limits that keep one tenant's flood
from starving another; and key kinds (client keys on OFREP only)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from flags.live import LiveFlags, Scope
from flags.ofrep import EVENTS_PATH, OfrepLimits, ofrep_app
from flags.ofrep_values import canonical_json, etag_of
from flags.rate_limit import Rate
from flags.sdk_keys import KeyKind, issue_sdk_key, parse_clear_key, parse_sdk_key
from tests.flags.flagd_harness import FLAG_SET, FlagLog, Ready

pytestmark = pytest.mark.timeout(30)

BULK = "/ofrep/v1/evaluate/flags"
SET_METADATA = {"flagSetId": "test-set", "version": "7"}
"""flagd answers every flag with the flag set's metadata under its own."""
UNLIMITED = OfrepLimits(per_key=Rate.unlimited(), per_address=Rate.unlimited())


@dataclass
class Exposures:
    seen: list[tuple[Any, ...]] = field(default_factory=list)

    def record(self, *args: Any) -> None:
        self.seen.append(args)


@dataclass
class Setup:
    live: LiveFlags
    log: FlagLog
    other: FlagLog
    server_key: str
    client_key: str
    http: httpx.AsyncClient
    ready: Ready
    exposures: Exposures
    clock: list[float]

    async def post(
        self, path: str, body: Any = None, key: str | None = None, **headers: str
    ) -> httpx.Response:
        sent = {"Content-Type": "application/json"}
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        content = body if isinstance(body, bytes) else json.dumps({} if body is None else body).encode()
        return await self.http.post(path, content=content, headers=sent)


def client_key(log: FlagLog, env: str) -> str:
    issued = issue_sdk_key(env, f"{env} app", "tester", 1, KeyKind.CLIENT)
    log.append(issued.record_key, issued.record_value)
    log.keys[issued.clear_key] = issued.key_id
    return issued.clear_key


def events_route(app: web.Application) -> None:
    async def events(_request: web.Request) -> web.Response:
        return web.Response(text="")

    app.router.add_get(EVENTS_PATH, events)


async def make_setup(limits: OfrepLimits, **kw: Any) -> AsyncIterator[Setup]:
    live = LiveFlags()
    log = FlagLog(live)
    log.import_set("prod", FLAG_SET)
    log.import_set("staging", {"flags": {"only-staging": FLAG_SET["flags"]["bool-flag"]}})
    other = FlagLog(live, tenant="globex")
    other.import_set("prod", {"flags": {"bool-flag": FLAG_SET["flags"]["bool-zero"]}})
    ready = Ready()
    exposures = Exposures()
    clock = [1000.0]
    app = ofrep_app(
        live,
        limits=limits,
        is_ready=ready,
        exposures=exposures,
        clock=lambda: clock[0],
        extra_routes=[events_route],
        **kw,
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with httpx.AsyncClient(base_url=str(server.make_url("/"))) as http:
        try:
            yield Setup(
                live,
                log,
                other,
                log.issue_key("prod"),
                client_key(log, "prod"),
                http,
                ready,
                exposures,
                clock,
            )
        finally:
            await server.close()


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    async for s in make_setup(UNLIMITED):
        yield s


def flags_by_key(response: httpx.Response) -> dict[str, dict[str, Any]]:
    return {entry["key"]: entry for entry in response.json()["flags"]}


# --- bulk -------------------------------------------------------------------------------


async def test_bulk_answers_every_flag_with_ofreps_shapes(setup: Setup) -> None:
    response = await setup.post(BULK, {"context": {"targetingKey": "user-1", "age": 30}}, setup.client_key)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    got = flags_by_key(response)
    assert list(got) == sorted(FLAG_SET["flags"])  # every flag, by key
    meta = {"metadata": SET_METADATA}
    assert got["bool-flag"] == {
        "key": "bool-flag",
        "value": True,
        "variant": "on",
        "reason": "STATIC",
        **meta,
    }
    assert got["adult"] == {
        "key": "adult",
        "value": "adult",
        "variant": "yes",
        "reason": "TARGETING_MATCH",
        **meta,
    }
    assert got["int-zero"]["value"] == 0 and got["string-zero"]["value"] == ""
    # A float flag's value is a JSON float, whatever its variant's spelling.
    assert (
        '"key":"float-zero","metadata":{"flagSetId":"test-set","version":"7"},"reason":"STATIC",'
        in response.text
    )
    assert '"value":0.0,"variant":"zero"' in response.text
    flag_metadata = {"owner": "team-a", "ticket": 42, "beta": True, "ratio": 0.5}
    assert got["with-metadata"]["metadata"] == {**SET_METADATA, **flag_metadata}
    # Code defaults: no value, variant present as null (the Python provider reads it).
    assert got["disabled"] == {"key": "disabled", "reason": "DISABLED", "variant": None, **meta}
    assert got["no-default"] == {"key": "no-default", "reason": "DEFAULT", "variant": None, **meta}
    assert body["metadata"] == {"flagSetId": "test-set", "version": "7"}
    assert body["eventStreams"] == [
        {
            "type": "sse",
            "endpoint": {"requestUri": f"/ofrep/v1/events?key={setup.client_key}"},
            "inactivityDelaySec": 120,
        }
    ]
    # Strong ETag, the digest of the canonical body.
    assert response.headers["ETag"] == etag_of(response.content)
    assert response.content == canonical_json(body)


async def test_a_flag_whose_rule_fails_is_an_error_entry_in_bulk(setup: Setup) -> None:
    setup.log.put("prod", "broken", {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a",
                                      "targeting": {"var": "pick"}})  # fmt: skip
    response = await setup.post(BULK, {"context": {"targetingKey": "u", "pick": "nope"}}, setup.server_key)
    assert response.status_code == 200
    broken = flags_by_key(response)["broken"]
    assert broken["errorCode"] == "GENERAL" and "nope" in broken["errorDetails"]
    assert "value" not in broken
    single = await setup.post(f"{BULK}/broken", {"context": {"pick": "nope"}}, setup.server_key)
    assert single.status_code == 400
    assert single.json()["errorCode"] == "GENERAL" and single.json()["key"] == "broken"


async def test_etag_revalidation_is_a_304_until_something_the_client_sees_changes(setup: Setup) -> None:
    context = {"context": {"targetingKey": "user-1", "email": "a@example.com"}}
    first = await setup.post(BULK, context, setup.client_key)
    etag = first.headers["ETag"]
    again = await setup.post(BULK, context, setup.client_key, If_None_Match=etag)
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    # A different context is a different body: 200.
    other = await setup.post(
        BULK, {"context": {"targetingKey": "user-2"}}, setup.client_key, If_None_Match=etag
    )
    assert other.status_code == 200 and other.headers["ETag"] != etag
    # A change in the environment: 200 with a new ETag and the new value.
    setup.log.put("prod", "bool-flag", {"state": "ENABLED", "variants": {"on": True, "off": False},
                                         "defaultVariant": "off"})  # fmt: skip
    changed = await setup.post(BULK, context, setup.client_key, If_None_Match=etag)
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert flags_by_key(changed)["bool-flag"]["value"] is False
    # Revalidating the new one: 304 again. Weak and listed forms match too.
    new = changed.headers["ETag"]
    for header in (new, f"W/{new}", f'"nope", {new}', "*"):
        assert (await setup.post(BULK, context, setup.client_key, If_None_Match=header)).status_code == 304
    # A change elsewhere in the environment that this context does not see still
    # changes the version: evaluated again, and the body is the same, so 304.
    setup.log.put("prod", "email-domain", FLAG_SET["flags"]["email-domain"])
    assert (await setup.post(BULK, context, setup.client_key, If_None_Match=new)).status_code == 304
    # Another key of the same environment gets its own stream URL: its own ETag.
    server_view = await setup.post(BULK, context, setup.server_key, If_None_Match=new)
    assert server_view.status_code == 200


async def test_time_dependent_rules_are_evaluated_on_every_revalidation(setup: Setup) -> None:
    setup.log.put("prod", "launch", {"state": "ENABLED", "variants": {"before": False, "after": True},
                                      "defaultVariant": "before",
                                      "targeting": {"if": [{">": [{"var": "$flagd.timestamp"}, 2000000000]},
                                                           "after", "before"]}})  # fmt: skip
    context = {"context": {"targetingKey": "u"}}
    first = await setup.post(BULK, context, setup.client_key)
    assert flags_by_key(first)["launch"]["value"] is False
    assert (
        await setup.post(BULK, context, setup.client_key, If_None_Match=first.headers["ETag"])
    ).status_code == 304
    # Time passes the launch: same flags, same version, but the answer changed.
    serving = setup.live.serving(Scope("acme", "prod"))
    assert serving is not None
    serving.evaluator._clock = lambda: 2_000_000_001.0
    later = await setup.post(BULK, context, setup.client_key, If_None_Match=first.headers["ETag"])
    assert later.status_code == 200 and flags_by_key(later)["launch"]["value"] is True


async def test_the_304_path_does_not_evaluate(setup: Setup) -> None:
    context = {"context": {"targetingKey": "user-1", "age": 20}}
    first = await setup.post(BULK, context, setup.client_key)
    serving = setup.live.serving(Scope("acme", "prod"))
    assert serving is not None

    def refuse(*_args: Any, **_kw: Any) -> Any:
        raise AssertionError("evaluated on a revalidation")

    for name in ("resolve_boolean_value", "resolve_string_value", "resolve_integer_value",
                 "resolve_float_value", "resolve_object_value", "evaluate"):  # fmt: skip
        setattr(serving.evaluator, name, refuse)
    again = await setup.post(BULK, context, setup.client_key, If_None_Match=first.headers["ETag"])
    assert again.status_code == 304


async def test_exposures_are_recorded_for_answers_with_a_variant_and_a_targeting_key(setup: Setup) -> None:
    await setup.post(f"{BULK}/adult", {"context": {"targetingKey": "u-1", "age": 40}}, setup.client_key)
    await setup.post(f"{BULK}/adult", {"context": {"age": 40}}, setup.client_key)  # no targeting key
    await setup.post(f"{BULK}/disabled", {"context": {"targetingKey": "u-1"}}, setup.client_key)  # no variant
    version = setup.live.store.flag("acme", "prod", "adult").version  # type: ignore[union-attr]
    assert setup.exposures.seen == [
        (Scope("acme", "prod"), "adult", "yes", "TARGETING_MATCH", "u-1", version, "ofrep")
    ]
    setup.exposures.seen.clear()
    await setup.post(BULK, {"context": {"targetingKey": "u-2"}}, setup.client_key)
    flags_seen = {entry[1] for entry in setup.exposures.seen}
    assert "bool-flag" in flags_seen and "disabled" not in flags_seen and "no-default" not in flags_seen


# --- single flag -------------------------------------------------------------------------


async def test_single_flag_answers_and_not_found(setup: Setup) -> None:
    response = await setup.post(
        f"{BULK}/email-domain", {"context": {"email": "x@example.com"}}, setup.server_key
    )
    assert response.status_code == 200
    assert response.json() == {
        "key": "email-domain",
        "value": True,
        "variant": "staff",
        "reason": "TARGETING_MATCH",
        "metadata": SET_METADATA,
    }
    missing = await setup.post(f"{BULK}/nope", {"context": {}}, setup.client_key)
    assert missing.status_code == 404
    assert missing.json()["errorCode"] == "FLAG_NOT_FOUND" and missing.json()["key"] == "nope"
    # Another environment's flag is not found through this key.
    assert (await setup.post(f"{BULK}/only-staging", {}, setup.client_key)).status_code == 404


# --- refusals ----------------------------------------------------------------------------


async def test_bad_bodies_are_refused_with_ofrep_codes(setup: Setup) -> None:
    key = setup.client_key
    cases: list[tuple[bytes, int, str]] = [
        (b"{not json", 400, "PARSE_ERROR"),
        (b"[1, 2]", 400, "PARSE_ERROR"),
        (b'{"context": [1]}', 400, "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": 42}}', 400, "INVALID_CONTEXT"),
        (b"[" * 50_000 + b"]" * 50_000, 413, "INVALID_CONTEXT"),
        (json.dumps({"context": {"blob": "x" * 70_000}}).encode(), 413, "INVALID_CONTEXT"),
    ]
    for path in (BULK, f"{BULK}/bool-flag"):
        for body, status, code in cases:
            response = await setup.post(path, body, key)
            assert (response.status_code, response.json()["errorCode"]) == (status, code), (path, body[:40])
            assert response.json()["errorDetails"]
    # Deep nesting within the size limit is a parse error, not a crash.
    deep = b'{"context": {"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}}"
    assert (await setup.post(BULK, deep, key)).json()["errorCode"] == "PARSE_ERROR"
    wrong_type = await setup.http.post(
        BULK, content=b"context=1", headers={"Authorization": f"Bearer {key}",
                                             "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert wrong_type.status_code == 415 and wrong_type.json()["errorCode"] == "PARSE_ERROR"
    no_type = await setup.http.post(BULK, content=b"{}", headers={"Authorization": f"Bearer {key}"})
    assert no_type.status_code == 415
    assert setup.exposures.seen == []


async def test_keys_are_checked(setup: Setup) -> None:
    body = {"context": {"targetingKey": "u"}}
    missing = await setup.post(BULK, body)
    assert missing.status_code == 401 and "missing SDK key" in missing.json()["errorDetails"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await setup.post(BULK, body, "rlc_" + "0" * 16 + "_" + "A" * 43)).status_code == 401
    cluster = await setup.post(BULK, body, "rlk_something")
    assert cluster.status_code == 401 and "cluster API key" in cluster.json()["errorDetails"]
    basic = await setup.http.post(BULK, json=body, headers={"Authorization": "Basic abc"})
    assert basic.status_code == 401
    # X-API-Key works like Bearer.
    x_api = await setup.http.post(BULK, json=body, headers={"X-API-Key": setup.client_key})
    assert x_api.status_code == 200
    # A client key's secret spelled as a server key is no key.
    parsed = parse_clear_key(setup.client_key)
    assert parsed is not None
    promoted = "rlf_" + setup.client_key[4:]
    assert parse_sdk_key(promoted) is not None
    assert (await setup.post(BULK, body, promoted)).status_code == 401
    # The selector may name the key's own environment, nothing else.
    assert (await setup.post(BULK, body, setup.client_key, flagd_selector="prod")).status_code == 200
    other_env = await setup.post(BULK, body, setup.client_key, flagd_selector="staging")
    assert other_env.status_code == 403 and "environment" in other_env.json()["errorDetails"]
    # Revoked: refused at once (the cached answer is dropped by the key epoch).
    setup.exposures.seen.clear()
    setup.log.revoke(setup.client_key, "prod")
    assert (await setup.post(BULK, body, setup.client_key)).status_code == 401
    assert (await setup.post(f"{BULK}/bool-flag", body, setup.client_key)).status_code == 401
    assert setup.exposures.seen == []


async def test_a_key_reads_only_its_own_tenant_and_environment(setup: Setup) -> None:
    globex = client_key(setup.other, "prod")
    mine = flags_by_key(await setup.post(BULK, {}, setup.client_key))
    theirs = flags_by_key(await setup.post(BULK, {}, globex))
    assert list(theirs) == ["bool-flag"] and theirs["bool-flag"]["value"] is False
    assert mine["bool-flag"]["value"] is True
    staging = client_key(setup.log, "staging")
    assert list(flags_by_key(await setup.post(BULK, {}, staging))) == ["only-staging"]
    # A deleted environment's keys stop at once.
    setup.log.delete_env("staging")
    assert (await setup.post(BULK, {}, staging)).status_code == 401


async def test_not_ready_is_503_with_retry_after(setup: Setup) -> None:
    setup.ready.ready = False
    response = await setup.post(BULK, {}, setup.client_key)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"


# --- CORS --------------------------------------------------------------------------------


async def test_cors_preflight_and_headers(setup: Setup) -> None:
    preflight = await setup.http.options(
        BULK,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,if-none-match",
        },
    )
    assert preflight.status_code == 204
    allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "if-none-match", "x-api-key"} <= allowed
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    for response in (
        await setup.post(BULK, {}, setup.client_key, Origin="https://app.example"),
        await setup.post(BULK, {}, None, Origin="https://app.example"),
    ):
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "ETag" in response.headers["Access-Control-Expose-Headers"]


# --- rate limits -------------------------------------------------------------------------


@pytest.fixture
async def limited() -> AsyncIterator[Setup]:
    async for s in make_setup(OfrepLimits(per_key=Rate(10, 20), per_address=Rate(5, 10))):
        yield s


async def test_one_tenants_flood_gets_429s_while_another_tenant_is_served(limited: Setup) -> None:
    flooder = limited.client_key
    other = client_key(limited.other, "prod")
    statuses = [(await limited.post(BULK, {}, flooder)).status_code for _ in range(30)]
    assert statuses[:10] == [200] * 10 and set(statuses[10:]) == {429}
    refused = await limited.post(BULK, {}, flooder)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["errorCode"] == "GENERAL" and "rate limit" in refused.json()["errorDetails"]
    assert refused.headers["Access-Control-Allow-Origin"] == "*"
    # The other tenant, same client address, same moment: served.
    assert [(await limited.post(BULK, {}, other)).status_code for _ in range(10)] == [200] * 10
    # Time passes: the flooder is served again (no debt from its refused requests).
    limited.clock[0] += 1.0
    assert (await limited.post(BULK, {}, flooder)).status_code == 200


async def test_requests_without_a_valid_key_are_limited_per_address(limited: Setup) -> None:
    statuses = [(await limited.post(BULK, {}, "rlc_bogus")).status_code for _ in range(15)]
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}
    # Valid keys from the same address keep their own budget.
    assert (await limited.post(BULK, {}, limited.client_key)).status_code == 200


# --- key kinds ---------------------------------------------------------------------------


def test_client_keys_authenticate_for_ofrep_only() -> None:
    live = LiveFlags()
    log = FlagLog(live)
    log.import_set("prod", FLAG_SET)
    server = log.issue_key("prod")
    client = client_key(log, "prod")
    assert client.startswith("rlc_") and server.startswith("rlf_")
    scope = Scope("acme", "prod")
    assert live.authenticate(server) == scope
    assert live.authenticate(client) is None  # the flagd protocols take server keys only
    assert live.authenticate_ofrep(server) == (scope, KeyKind.SERVER)
    assert live.authenticate_ofrep(client) == (scope, KeyKind.CLIENT)
    assert live.authenticate_ofrep("rlc_" + server[4:]) is None
    assert live.authenticate_ofrep("rlf_" + client[4:]) is None
    kinds = {info.id: info.kind for info in live.sdk_keys("acme")}
    assert sorted(k.value for k in kinds.values()) == ["client", "server"]
    log.revoke(client, "prod")
    assert live.authenticate_ofrep(client) is None


def test_a_client_key_record_says_so_and_server_records_keep_their_bytes() -> None:
    from flags.sdk_keys import decode_record, encode_record

    client = issue_sdk_key("prod", "web", "tester", 5, KeyKind.CLIENT)
    server = issue_sdk_key("prod", "web", "tester", 5)
    assert b'"keyKind":"client"' in client.record_value
    assert b"keyKind" not in server.record_value
    decoded = decode_record(client.record_key, client.record_value)
    assert decoded.key_kind is KeyKind.CLIENT  # type: ignore[union-attr]
    assert encode_record(decoded) == client.record_value
    # "server" spelled out is not canonical (absent means server).
    spelled = server.record_value.replace(b'"kind"', b'"keyKind":"server","kind"')
    with pytest.raises(ValueError):
        decode_record(server.record_key, spelled)
    with pytest.raises(ValueError):
        decode_record(client.record_key, client.record_value.replace(b'"client"', b'"admin"'))
