"""flagd.evaluation.v1 and v2 over gRPC (flags/flagd_evaluation.py, flags/sdk_auth.py):
answers, statuses, SDK keys and EventStream, against an in-process server and a
LiveFlags fed records directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2 as v1_pb2
from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2_grpc as v1_grpc
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2 as v2_pb2
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc

from flags.evaluator import FlagdEvaluator
from flags.live import LiveFlags, Scope, Serving
from flags.sdk_auth import MISSING_KEY_MESSAGE, NOT_READY_MESSAGE
from tests.flags.flagd_harness import FLAG_SET, FlagLog, Servers, bearer, eventually, flagd_servers, selector

SCOPE = Scope("acme", "prod")


@dataclass
class Setup:
    live: LiveFlags
    log: FlagLog
    key: str
    servers: Servers
    v1: Any
    v2: Any
    channel: grpc.aio.Channel


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    live = LiveFlags()
    log = FlagLog(live)
    log.import_set("prod", FLAG_SET)
    key = log.issue_key("prod")
    async with (
        flagd_servers(live, keep_alive_s=0.3) as servers,
        grpc.aio.insecure_channel(servers.eval_target) as channel,
    ):
        yield Setup(
            live, log, key, servers, v1_grpc.ServiceStub(channel), v2_grpc.ServiceStub(channel), channel
        )


def context(**attributes: Any) -> Struct:
    struct = Struct()
    struct.update(attributes)
    return struct


# (rpc, flag, value, variant, reason)
STATIC_ANSWERS = [
    ("ResolveBoolean", "bool-flag", True, "on", "STATIC"),
    ("ResolveBoolean", "bool-zero", False, "off", "STATIC"),
    ("ResolveString", "string-flag", "alpha", "a", "STATIC"),
    ("ResolveString", "string-zero", "", "none", "STATIC"),
    ("ResolveInt", "int-flag", 9007199254740991, "big", "STATIC"),
    ("ResolveInt", "int-zero", 0, "zero", "STATIC"),
    ("ResolveFloat", "float-flag", 3.25, "pi", "STATIC"),
    ("ResolveFloat", "float-zero", 0.0, "zero", "STATIC"),
    ("ResolveFloat", "int-flag", 9007199254740991.0, "big", "STATIC"),
    (
        "ResolveObject",
        "object-flag",
        {"n": 1.0, "nested": {"list": [1.0, "x", True, None]}},
        "full",
        "STATIC",
    ),
    ("ResolveObject", "object-zero", {}, "empty", "STATIC"),
]


def request_of(pb2: Any, rpc: str, flag: str, ctx: Struct | None = None) -> Any:
    request = getattr(pb2, f"{rpc}Request")(flag_key=flag)
    if ctx is not None:
        request.context.CopyFrom(ctx)
    return request


def value_of(response: Any, rpc: str) -> Any:
    if rpc == "ResolveObject":
        return MessageToDict(response.value)
    return response.value


@pytest.mark.parametrize(("rpc", "flag", "value", "variant", "reason"), STATIC_ANSWERS)
async def test_every_type_v1_and_v2(
    setup: Setup, rpc: str, flag: str, value: Any, variant: str, reason: str
) -> None:
    for pb2, stub in ((v2_pb2, setup.v2), (v1_pb2, setup.v1)):
        response = await getattr(stub, rpc)(request_of(pb2, rpc, flag), metadata=bearer(setup.key))
        assert value_of(response, rpc) == value
        assert type(value_of(response, rpc)) is type(value)
        assert (response.variant, response.reason) == (variant, reason)
        if pb2 is v2_pb2:
            assert response.HasField("value") and response.HasField("variant")  # zero values are values
        assert MessageToDict(response.metadata) == {"flagSetId": "test-set", "version": "7"}


async def test_disabled_and_no_default_variant_leave_value_and_variant_unset(setup: Setup) -> None:
    for flag, reason in (("disabled", "DISABLED"), ("no-default", "DEFAULT")):
        v2 = await setup.v2.ResolveBoolean(
            v2_pb2.ResolveBooleanRequest(flag_key=flag), metadata=bearer(setup.key)
        )
        assert v2.reason == reason
        assert not v2.HasField("value") and not v2.HasField("variant")
        v1 = await setup.v1.ResolveBoolean(
            v1_pb2.ResolveBooleanRequest(flag_key=flag), metadata=bearer(setup.key)
        )
        assert (v1.value, v1.variant, v1.reason) == (False, "", reason)
    obj = await setup.v2.ResolveObject(
        v2_pb2.ResolveObjectRequest(flag_key="disabled"), metadata=bearer(setup.key)
    )
    assert not obj.HasField("value")


async def test_metadata_flag_over_flag_set(setup: Setup) -> None:
    response = await setup.v2.ResolveBoolean(
        v2_pb2.ResolveBooleanRequest(flag_key="with-metadata"), metadata=bearer(setup.key)
    )
    assert MessageToDict(response.metadata) == {
        "flagSetId": "test-set",
        "version": "7",
        "owner": "team-a",
        "ticket": 42.0,
        "beta": True,
        "ratio": 0.5,
    }


async def test_targeting_reads_the_context(setup: Setup) -> None:
    async def string(flag: str, ctx: Struct) -> Any:
        return await setup.v2.ResolveString(
            v2_pb2.ResolveStringRequest(flag_key=flag, context=ctx), metadata=bearer(setup.key)
        )

    adult = await string("adult", context(targetingKey="u1", age=30))
    assert (adult.value, adult.variant, adult.reason) == ("adult", "yes", "TARGETING_MATCH")
    minor = await string("adult", context(targetingKey="u1", age=12))
    assert (minor.value, minor.variant, minor.reason) == ("minor", "no", "DEFAULT")
    # A context number arrives as a double; flagd and in-process read 2, not 2.0, as a variant name.
    level = await string("level-name", context(level=2))
    assert (level.value, level.variant) == ("two", "2")
    staff = await setup.v2.ResolveBoolean(
        v2_pb2.ResolveBooleanRequest(flag_key="email-domain", context=context(email="a@example.com")),
        metadata=bearer(setup.key),
    )
    assert (staff.value, staff.reason) == (True, "TARGETING_MATCH")


async def test_fractional_matches_a_local_evaluator(setup: Setup) -> None:
    local = FlagdEvaluator()
    local.set_flags(setup.live.serving(SCOPE).configuration)  # type: ignore[union-attr]
    from openfeature.evaluation_context import EvaluationContext

    seen = set()
    for n in range(40):
        key = f"user-{n}"
        response = await setup.v2.ResolveString(
            v2_pb2.ResolveStringRequest(flag_key="split", context=context(targetingKey=key)),
            metadata=bearer(setup.key),
        )
        expected = local.resolve_string_value("split", "", EvaluationContext(key))
        assert (response.value, response.variant) == (expected.value, expected.variant)
        seen.add(response.variant)
    assert seen == {"red", "green", "blue"}


@pytest.mark.parametrize(
    ("rpc", "flag", "ctx", "code"),
    [
        ("ResolveBoolean", "no-such-flag", None, grpc.StatusCode.NOT_FOUND),
        ("ResolveInt", "string-flag", None, grpc.StatusCode.INVALID_ARGUMENT),
        ("ResolveBoolean", "string-flag", None, grpc.StatusCode.INVALID_ARGUMENT),
        ("ResolveInt", "float-flag", None, grpc.StatusCode.INVALID_ARGUMENT),
        ("ResolveObject", "bool-flag", None, grpc.StatusCode.INVALID_ARGUMENT),
        # targeting names a variant that does not exist: GENERAL, never a retried status
        ("ResolveString", "level-name", {"level": 3}, grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_errors_map_to_the_statuses_the_provider_reads(
    setup: Setup, rpc: str, flag: str, ctx: dict[str, Any] | None, code: grpc.StatusCode
) -> None:
    for pb2, stub in ((v2_pb2, setup.v2), (v1_pb2, setup.v1)):
        request = request_of(pb2, rpc, flag, None if ctx is None else context(**ctx))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(stub, rpc)(request, metadata=bearer(setup.key))
        assert caught.value.code() == code, caught.value.details()


async def test_invalid_targeting_is_data_loss(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    # Validated definitions never carry an unknown operation; an evaluator loaded
    # directly can, which is how the evaluator's PARSE_ERROR reaches the wire.
    evaluator = FlagdEvaluator()
    evaluator.set_flags(
        '{"flags":{"bad":{"state":"ENABLED","variants":{"a":true},"defaultVariant":"a",'
        '"targeting":{"no_such_op":[1]}}}}'
    )
    monkeypatch.setattr(setup.live, "serving", lambda scope: Serving(scope, 1, "{}", evaluator))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await setup.v2.ResolveBoolean(
            v2_pb2.ResolveBooleanRequest(flag_key="bad"), metadata=bearer(setup.key)
        )
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS


async def test_resolve_all_v1(setup: Setup) -> None:
    response = await setup.v1.ResolveAll(
        v1_pb2.ResolveAllRequest(context=context(targetingKey="u1", age=40, level=3)),
        metadata=bearer(setup.key),
    )
    flags = response.flags
    assert "disabled" not in flags  # as flagd
    assert (flags["bool-zero"].bool_value, flags["bool-zero"].reason) == (False, "STATIC")
    assert flags["int-flag"].double_value == 9007199254740991.0
    assert flags["float-flag"].double_value == 3.25
    assert flags["string-zero"].WhichOneof("value") == "string_value"
    assert MessageToDict(flags["object-zero"].object_value) == {}
    assert flags["object-zero"].HasField("object_value")
    assert (flags["adult"].string_value, flags["adult"].variant) == ("adult", "yes")
    assert flags["no-default"].WhichOneof("value") is None and flags["no-default"].reason == "DEFAULT"
    assert MessageToDict(flags["with-metadata"].metadata)["owner"] == "team-a"
    assert MessageToDict(response.metadata) == {"flagSetId": "test-set", "version": "7"}
    # level-name fails for level 3 (no variant "3"): left out, the rest still served
    assert "level-name" not in flags and len(flags) == len(FLAG_SET["flags"]) - 2


# --- SDK keys ---------------------------------------------------------------------------


async def refused(setup: Setup, metadata: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await setup.v2.ResolveBoolean(v2_pb2.ResolveBooleanRequest(flag_key="bool-flag"), metadata=metadata)
    return caught.value


async def test_key_as_bearer_or_selector(setup: Setup) -> None:
    for metadata in (
        bearer(setup.key),
        selector(setup.key),
        bearer(setup.key) + selector("prod"),
        bearer(setup.key) + selector(setup.key),
        (("authorization", f"bearer   {setup.key}"),),
    ):
        response = await setup.v2.ResolveBoolean(
            v2_pb2.ResolveBooleanRequest(flag_key="bool-flag"), metadata=metadata
        )
        assert response.value is True


async def test_refusals(setup: Setup) -> None:
    missing = await refused(setup, ())
    assert (missing.code(), missing.details()) == (grpc.StatusCode.UNAUTHENTICATED, MISSING_KEY_MESSAGE)
    assert (await refused(setup, selector("prod"))).code() == grpc.StatusCode.UNAUTHENTICATED
    forged = setup.key[:-4] + ("AAAA" if not setup.key.endswith("AAAA") else "BBBB")
    wrong = await refused(setup, bearer(forged))
    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED and forged not in wrong.details()
    cluster_key = await refused(setup, bearer("rlk_" + "0" * 60))
    assert cluster_key.code() == grpc.StatusCode.UNAUTHENTICATED and "rlf_" in cluster_key.details()
    basic = await refused(setup, (("authorization", "Basic dXNlcg=="),))
    assert basic.code() == grpc.StatusCode.UNAUTHENTICATED and "'Basic'" in basic.details()
    bare = await refused(setup, (("authorization", setup.key),))
    assert bare.code() == grpc.StatusCode.UNAUTHENTICATED and setup.key not in bare.details()
    other_env = await refused(setup, bearer(setup.key) + selector("staging"))
    assert other_env.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'prod'" in other_env.details() and "'staging'" in other_env.details()
    staging_key = setup.log.issue_key("prod")
    other_key = await refused(setup, bearer(setup.key) + selector(staging_key))
    assert other_key.code() == grpc.StatusCode.PERMISSION_DENIED and staging_key not in other_key.details()
    setup.log.revoke(setup.key, "prod")
    assert (await refused(setup, bearer(setup.key))).code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await refused(setup, selector(setup.key))).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_not_ready_is_unavailable(setup: Setup) -> None:
    setup.servers.ready.ready = False
    error = await refused(setup, bearer(setup.key))
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAVAILABLE, NOT_READY_MESSAGE)


async def test_a_key_reads_its_own_tenant_and_environment_only(setup: Setup) -> None:
    other = FlagLog(setup.live, tenant="globex")
    other.import_set(
        "prod",
        {"flags": {"bool-flag": {"state": "ENABLED", "variants": {"x": False}, "defaultVariant": "x"}}},
    )
    setup.log.import_set(
        "staging",
        {"flags": {"only-staging": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x"}}},
    )
    globex_key = other.issue_key("prod")
    ours = await setup.v2.ResolveBoolean(
        v2_pb2.ResolveBooleanRequest(flag_key="bool-flag"), metadata=bearer(setup.key)
    )
    theirs = await setup.v2.ResolveBoolean(
        v2_pb2.ResolveBooleanRequest(flag_key="bool-flag"), metadata=bearer(globex_key)
    )
    assert (ours.value, theirs.value) == (True, False)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await setup.v2.ResolveInt(
            v2_pb2.ResolveIntRequest(flag_key="only-staging"), metadata=bearer(setup.key)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# --- EventStream ----------------------------------------------------------------------


async def next_event(stream: Any, timeout_s: float = 2.0) -> Any:
    return await asyncio.wait_for(stream.read(), timeout_s)


def changed(event: Any) -> dict[str, str]:
    data = MessageToDict(event.data)
    return {key: value["type"] for key, value in data["flags"].items()}


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_event_stream_ready_changes_keep_alive_and_release(setup: Setup, version: str) -> None:
    pb2, stub = (v1_pb2, setup.v1) if version == "v1" else (v2_pb2, setup.v2)
    stream = stub.EventStream(pb2.EventStreamRequest(), metadata=selector(setup.key))
    assert (await next_event(stream)).type == "provider_ready"
    assert setup.live.watcher_count(SCOPE) == 1
    flag = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}
    setup.log.put("prod", "bool-flag", flag)
    event = await next_event(stream)
    assert (event.type, changed(event)) == ("configuration_change", {"bool-flag": "update"})
    setup.log.put("prod", "brand-new", flag)
    setup.log.delete_flag("prod", "bool-zero")
    events = [await next_event(stream)]
    while sum(len(changed(e)) for e in events) < 2:  # the two may arrive coalesced or apart
        events.append(await next_event(stream))
    assert {k: v for e in events for k, v in changed(e).items()} == {
        "brand-new": "write",
        "bool-zero": "delete",
    }
    # Another environment's changes are not ours.
    setup.log.import_set("staging", {"flags": {"x": flag}})
    assert (await next_event(stream)).type == "keep_alive"
    stream.cancel()
    await eventually(lambda: setup.live.watcher_count(SCOPE) == 0)


async def test_event_stream_refused_without_a_key_and_when_not_ready(setup: Setup) -> None:
    stream = setup.v2.EventStream(v2_pb2.EventStreamRequest())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await next_event(stream)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    setup.servers.ready.ready = False
    stream = setup.v2.EventStream(v2_pb2.EventStreamRequest(), metadata=bearer(setup.key))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await next_event(stream)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert setup.live.watcher_count(SCOPE) == 0


async def test_event_stream_ends_when_the_key_is_revoked(setup: Setup) -> None:
    stream = setup.v2.EventStream(v2_pb2.EventStreamRequest(), metadata=bearer(setup.key))
    assert (await next_event(stream)).type == "provider_ready"
    setup.log.revoke(setup.key, "prod")
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # at the next keep-alive at the latest
        while True:
            await next_event(stream)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await eventually(lambda: setup.live.watcher_count(SCOPE) == 0)


async def test_event_stream_survives_a_deleted_environment(setup: Setup) -> None:
    stream = setup.v2.EventStream(v2_pb2.EventStreamRequest(), metadata=bearer(setup.key))
    assert (await next_event(stream)).type == "provider_ready"
    setup.log.delete_env("prod")
    event = await next_event(stream)
    assert set(changed(event).values()) == {"delete"} and len(changed(event)) == len(FLAG_SET["flags"])
    assert (await next_event(stream)).type == "keep_alive"  # still open, serving the empty set
    setup.log.import_set("prod", {"flags": {"back": FLAG_SET["flags"]["bool-flag"]}})
    assert changed(await next_event(stream)) == {"back": "write"}
    stream.cancel()


async def test_server_stop_releases_watchers() -> None:
    live = LiveFlags()
    log = FlagLog(live)
    log.import_set("prod", FLAG_SET)
    key = log.issue_key("prod")
    async with flagd_servers(live) as servers:
        channel = grpc.aio.insecure_channel(servers.eval_target)
        stream = v2_grpc.ServiceStub(channel).EventStream(v2_pb2.EventStreamRequest(), metadata=bearer(key))
        assert (await next_event(stream)).type == "provider_ready"
        assert live.watcher_count(SCOPE) == 1
    await eventually(lambda: live.watcher_count(SCOPE) == 0)
    await channel.close()


# --- what is encoded once and shared ------------------------------------------------------


async def test_kept_answers_follow_every_change_and_context_answers_are_never_kept(setup: Setup) -> None:
    async def boolean(flag: str, ctx: Struct | None = None) -> Any:
        request = v2_pb2.ResolveBooleanRequest(flag_key=flag)
        if ctx is not None:
            request.context.CopyFrom(ctx)
        return await setup.v2.ResolveBoolean(request, metadata=bearer(setup.key))

    for _ in range(3):  # the second and third come from the kept answer
        assert ((await boolean("bool-flag")).value, (await boolean("disabled")).reason) == (True, "DISABLED")
    flip = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}
    setup.log.put("prod", "bool-flag", flip)
    setup.log.put("prod", "disabled", flip)
    answer = await boolean("bool-flag")
    assert (answer.value, answer.variant, answer.reason) == (False, "off", "STATIC")
    assert (await boolean("disabled")).reason == "STATIC"
    setup.log.delete_flag("prod", "bool-flag")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await boolean("bool-flag")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # The same flag over v1 is its own message (zero values), not v2's bytes.
    v1 = await setup.v1.ResolveBoolean(
        v1_pb2.ResolveBooleanRequest(flag_key="bool-zero"), metadata=bearer(setup.key)
    )
    v2 = await boolean("bool-zero")
    assert (v1.value, v1.reason, v2.HasField("value")) == (False, "STATIC", True)
    # Answers that read the context are evaluated per call.
    for email, value in [("a@example.com", True), ("a@other.org", False), ("b@example.com", True)]:
        assert (await boolean("email-domain", context(email=email))).value is value


async def test_a_cached_key_is_refused_on_the_first_call_after_its_revoke(setup: Setup) -> None:
    for metadata in (bearer(setup.key), selector(setup.key)):
        for _ in range(3):
            await setup.v2.ResolveBoolean(
                v2_pb2.ResolveBooleanRequest(flag_key="bool-flag"), metadata=metadata
            )
    setup.log.revoke(setup.key, "prod")
    assert (await refused(setup, bearer(setup.key))).code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await refused(setup, selector(setup.key))).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_event_streams_end_as_soon_as_their_key_is_revoked() -> None:
    live = LiveFlags()
    log = FlagLog(live)
    log.import_set("prod", FLAG_SET)
    revoked, kept = log.issue_key("prod"), log.issue_key("prod")
    async with (
        flagd_servers(live, keep_alive_s=60.0) as servers,  # no keep-alive comes to the rescue
        grpc.aio.insecure_channel(servers.eval_target) as channel,
    ):
        v1, v2 = v1_grpc.ServiceStub(channel), v2_grpc.ServiceStub(channel)
        ending = [v2.EventStream(v2_pb2.EventStreamRequest(), metadata=bearer(revoked)) for _ in range(3)]
        ending.append(v1.EventStream(v1_pb2.EventStreamRequest(), metadata=selector(revoked)))
        staying = v2.EventStream(v2_pb2.EventStreamRequest(), metadata=bearer(kept))
        for stream in (*ending, staying):
            assert (await next_event(stream)).type == "provider_ready"
        log.revoke(revoked, "prod")  # and no change to any flag
        for stream in ending:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await next_event(stream, timeout_s=1.0)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await eventually(lambda: live.watcher_count(SCOPE) == 1)
        log.put("prod", "after", FLAG_SET["flags"]["bool-flag"])
        assert changed(await next_event(staying)) == {"after": "write"}
        staying.cancel()


async def test_every_stream_sees_every_change(setup: Setup) -> None:
    # v1 and v2 streams share encoded messages: each still gets each change, in order.
    streams = [
        (setup.v1 if n % 2 else setup.v2).EventStream(
            (v1_pb2 if n % 2 else v2_pb2).EventStreamRequest(), metadata=bearer(setup.key)
        )
        for n in range(24)
    ]
    for stream in streams:
        assert (await next_event(stream)).type == "provider_ready"
    flag = {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "on"}
    for n in range(6):
        setup.log.put("prod", f"f{n}", flag)
        if n % 2:  # sometimes a second change before anyone reads: coalesced, never lost
            setup.log.put("prod", f"g{n}", flag)
        await asyncio.sleep(0)
    wanted = {f"f{n}" for n in range(6)} | {f"g{n}" for n in range(1, 6, 2)}
    for stream in streams:
        seen: set[str] = set()
        while seen != wanted:
            event = await next_event(stream)
            if event.type == "keep_alive":
                continue
            assert event.type == "configuration_change" and set(changed(event)) <= wanted
            assert not seen & set(changed(event))  # nothing twice
            seen |= set(changed(event))
    for stream in streams:
        stream.cancel()


async def test_keep_alives_come_after_each_silence_and_changes_postpone_them(setup: Setup) -> None:
    loop = asyncio.get_running_loop()
    stream = setup.v2.EventStream(v2_pb2.EventStreamRequest(), metadata=bearer(setup.key))
    assert (await next_event(stream)).type == "provider_ready"
    last = loop.time()
    for _ in range(3):  # the one timer re-arms: one keep-alive per 0.3 s of silence
        assert (await next_event(stream, timeout_s=1.0)).type == "keep_alive"
        now = loop.time()
        assert now - last >= 0.25
        last = now
    flag = {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "on"}
    await asyncio.sleep(0.2)
    setup.log.put("prod", "postpones", flag)  # 0.2 s into a silence
    while (await next_event(stream)).type != "configuration_change":
        pass  # a keep-alive that fell due first (a slow machine)
    changed_at = loop.time()
    assert (await next_event(stream, timeout_s=1.0)).type == "keep_alive"
    assert loop.time() - changed_at >= 0.25  # counted from the change, not from the last keep-alive
    stream.cancel()
    await eventually(lambda: setup.live.watcher_count(SCOPE) == 0)


class Exposures:
    """An ``ExposureRecorder`` that keeps what it is given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, str, str, str, int, str]] = []

    def record(
        self,
        scope: Scope,
        flag: str,
        variant: str,
        reason: str,
        targeting_key: str,
        version: int,
        source: str,
    ) -> None:
        self.seen.append((scope.tenant, scope.env, flag, variant, reason, targeting_key, version, source))


async def test_answers_with_a_variant_to_a_targeting_key_are_exposures() -> None:
    """Every Resolve answer that names a variant, to a context with a
    targeting key, is recorded once (kept STATIC answers too, with the
    flag's version); no targeting key or no variant (disabled): none."""
    live = LiveFlags()
    log = FlagLog(live)
    log.import_set("prod", FLAG_SET)
    key = log.issue_key("prod")
    exposures = Exposures()
    async with (
        flagd_servers(live, exposures=exposures) as servers,
        grpc.aio.insecure_channel(servers.eval_target) as channel,
    ):
        stub = v2_grpc.ServiceStub(channel)
        for _ in range(2):  # the second answer is a kept one
            request = request_of(v2_pb2, "ResolveBoolean", "bool-flag", context(targetingKey="u1"))
            await stub.ResolveBoolean(request, metadata=bearer(key))
        request = request_of(
            v2_pb2, "ResolveBoolean", "email-domain", context(targetingKey="u2", email="a@example.com")
        )
        await stub.ResolveBoolean(request, metadata=bearer(key))
        await stub.ResolveBoolean(
            request_of(v2_pb2, "ResolveBoolean", "bool-flag", context()), metadata=bearer(key)
        )
        await stub.ResolveBoolean(request_of(v2_pb2, "ResolveBoolean", "bool-flag"), metadata=bearer(key))
        disabled = request_of(v2_pb2, "ResolveBoolean", "disabled", context(targetingKey="u3"))
        answer = await stub.ResolveBoolean(disabled, metadata=bearer(key))
        assert answer.reason == "DISABLED"
    tenant = live.tenants()[0]
    version = live.store.flag_version(tenant, "prod", "bool-flag")
    assert version > 0
    assert exposures.seen == [
        (tenant, "prod", "bool-flag", "on", "STATIC", "u1", version, "rpc"),
        (tenant, "prod", "bool-flag", "on", "STATIC", "u1", version, "rpc"),
        (tenant, "prod", "email-domain", "staff", "TARGETING_MATCH", "u2", version, "rpc"),
    ]
