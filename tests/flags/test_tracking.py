"""Tracking and reported exposures over HTTP on a real 3-node cluster, on the
OFREP app as the flag server serves them: 202 only once the events are
readable from ``__tracking``; bad input gets a 4xx with a clear body and
writes nothing (a bad last event stops the whole batch); keys (through the
OFREP gate): server keys, client keys, unknown and revoked ones; a flood is
rate limited (429, nothing written) without touching other tenants; a log
that cannot be written answers 503."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from flags.exposures import EXPOSURES_TOPIC, TRACKING_TOPIC, ExposureSink
from flags.live import LiveFlags
from flags.ofrep import OfrepLimits, ofrep_app
from flags.rate_limit import Rate
from flags.sdk_keys import KeyKind
from flags.store import FlagStore
from flags.tracking import (
    EXPOSURES_PATH,
    MAX_EXPOSURES,
    TRACK_PATH,
    InvalidBody,
    _parse_exposures_in_full,
    _plainly_valid_exposures,
    add_tracking_routes,
    parse_exposures,
)
from harness.local_cluster import LocalCluster
from tests.flags.events_support import canonical, end_offset, env_and_key, read_topic, revoke
from tests.flags.log_nodes import ENV, FlagNode, bootstrap, create, flag_node, new_tenant, started_cluster

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with started_cluster(tmp_path_factory.mktemp("tracking")) as c:
        yield c


class Served:
    def __init__(self, node: FlagNode, sink: ExposureSink, http: TestClient[Any, Any]) -> None:
        self.node, self.sink, self.http = node, sink, http


@pytest.fixture
async def served(cluster: LocalCluster) -> AsyncIterator[Served]:
    async with flag_node(cluster) as node:
        sink = ExposureSink(bootstrap(cluster), cluster.api_key, wall_ms=lambda: 1_700_000_000_123)
        app = tracking_app(node.live, sink)
        async with TestClient(TestServer(app)) as http:
            yield Served(node, sink, http)
        await sink.close()


def tracking_app(live: LiveFlags, sink: ExposureSink, **options: Any) -> web.Application:
    """The OFREP app with the tracking routes, as ``raftlog flags serve`` builds it."""
    return ofrep_app(live, extra_routes=[lambda app: add_tracking_routes(app, live, sink)], **options)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_202_means_the_events_are_readable(cluster: LocalCluster, served: Served) -> None:
    tenant = await new_tenant(cluster, "track-ok")
    key, _ = await env_and_key(served.node, tenant)
    events = [
        {
            "name": "purchase",
            "targetingKey": "user-1",
            "value": 12.5,
            "attributes": {"sku": "a", "n": [1, 2]},
        },
        {"name": "signup.done", "targetingKey": "ünï"},
        {"name": "clicks", "targetingKey": "user-1", "value": 3, "attributes": None},
    ]
    response = await served.http.post(TRACK_PATH, json={"events": events}, headers=bearer(key))
    assert response.status == 202, await response.text()
    assert await response.json() == {"accepted": 3}
    # Durable before the answer: readable at once, in the documented format.
    assert await end_offset(cluster, tenant, TRACKING_TOPIC) == 3
    records = await read_topic(cluster, tenant, TRACKING_TOPIC, 3)
    base = {"format": 1, "env": ENV, "ts": 1_700_000_000_123}
    assert [(r.key, r.value) for r in records] == [
        (
            b"user-1",
            canonical(
                base
                | {
                    "name": "purchase",
                    "targetingKey": "user-1",
                    "value": 12.5,
                    "attributes": {"sku": "a", "n": [1, 2]},
                }
            ),
        ),
        (
            "ünï".encode(),
            canonical(base | {"name": "signup.done", "targetingKey": "ünï", "value": None, "attributes": {}}),
        ),
        (
            b"user-1",
            canonical(base | {"name": "clicks", "targetingKey": "user-1", "value": 3.0, "attributes": {}}),
        ),
    ]
    # X-API-Key works too.
    response = await served.http.post(TRACK_PATH, json={"events": [events[1]]}, headers={"X-API-Key": key})
    assert response.status == 202


GOOD = {"name": "purchase", "targetingKey": "user-1", "value": 1.0}

BAD_BATCHES: list[tuple[str, Any, str]] = [
    ("not an object", [GOOD], "events"),
    ("no events", {"events": []}, "non-empty"),
    ("extra top-level field", {"events": [GOOD], "x": 1}, "one field"),
    ("too many", {"events": [GOOD] * 101}, "at most 100"),
    ("unknown field", {"events": [GOOD | {"vaule": 1}]}, "unknown field"),
    ("name missing", {"events": [{"targetingKey": "u"}]}, "events[0].name"),
    ("bad name", {"events": [GOOD | {"name": "has space"}]}, "not an event name"),
    ("long name", {"events": [GOOD | {"name": "a" * 129}]}, "at most 128"),
    ("no targeting key", {"events": [{"name": "purchase"}]}, "targetingKey"),
    ("string value", {"events": [GOOD | {"value": "1"}]}, "finite number"),
    ("bool value", {"events": [GOOD | {"value": True}]}, "finite number"),
    ("huge int value", {"events": [GOOD | {"value": 2**60}]}, "too large"),
    ("attributes a list", {"events": [GOOD | {"attributes": [1]}]}, "attributes must be an object"),
    ("attributes too big", {"events": [GOOD | {"attributes": {"a": "x" * 5000}}]}, "at most 4096"),
    ("attributes too deep", {"events": [GOOD | {"attributes": {"a": [[[[[[[[[1]]]]]]]]]}}]}, "deeper"),
    ("the last event is bad", {"events": [GOOD, GOOD, GOOD | {"value": None, "name": ""}]}, "events[2].name"),
]


async def test_bad_input_is_refused_and_nothing_is_written(cluster: LocalCluster, served: Served) -> None:
    tenant = await new_tenant(cluster, "track-bad")
    key, _ = await env_and_key(served.node, tenant)
    for label, body, words in BAD_BATCHES:
        response = await served.http.post(TRACK_PATH, json=body, headers=bearer(key))
        answer = await response.json()
        assert (response.status, answer["errorCode"]) == (400, "INVALID_EVENT"), label
        assert words in answer["errorDetails"], (label, answer)
    raw = [
        (b"{not json", "application/json", 400, "PARSE_ERROR"),
        (b'{"events":[{"name":"p","targetingKey":"u","value":NaN}]}', "application/json", 400, "PARSE_ERROR"),
        (json.dumps({"events": [GOOD]}).encode(), "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b'{"events":"' + b"x" * 300_000 + b'"}', "application/json", 413, "PAYLOAD_TOO_LARGE"),
    ]
    for data, content_type, status, code in raw:
        headers = bearer(key) | {"Content-Type": content_type}
        response = await served.http.post(TRACK_PATH, data=data, headers=headers)
        assert (response.status, (await response.json())["errorCode"]) == (status, code), data[:40]
    # Nothing reached the log: the topic was never even created.
    assert await end_offset(cluster, tenant, TRACKING_TOPIC) == 0
    assert served.sink.stats.tracked == 0


async def test_keys_unknown_revoked_and_client(cluster: LocalCluster, served: Served) -> None:
    tenant = await new_tenant(cluster, "track-keys")
    key, key_id = await env_and_key(served.node, tenant)
    body = {"events": [GOOD]}
    for headers in ({}, bearer("rlf_0000000000000000_" + "A" * 43), {"Authorization": f"Basic {key}"}):
        response = await served.http.post(TRACK_PATH, json=body, headers=headers)
        answer = await response.json()
        assert (response.status, answer["errorCode"]) == (401, "GENERAL")  # the OFREP gate's refusal
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert key not in json.dumps(answer)
    assert (await served.http.post(TRACK_PATH, json=body, headers=bearer(key))).status == 202
    await revoke(served.node, tenant, key_id)
    response = await served.http.post(TRACK_PATH, json=body, headers=bearer(key))
    assert response.status == 401
    assert await end_offset(cluster, tenant, TRACKING_TOPIC) == 1
    client_key, _ = await env_and_key(served.node, tenant, kind=KeyKind.CLIENT)
    assert client_key.startswith("rlc_")
    assert (await served.http.post(TRACK_PATH, json=body, headers=bearer(client_key))).status == 202
    exposure = {"exposures": [{"flag": "f", "variant": "on", "reason": "SPLIT", "targetingKey": "u"}]}
    response = await served.http.post(EXPOSURES_PATH, json=exposure, headers=bearer(client_key))
    answer = await response.json()
    assert (response.status, answer["errorCode"]) == (403, "GENERAL")
    assert "server key" in answer["errorDetails"]
    assert served.sink.stats.recorded == 0


async def test_a_flood_is_rate_limited_and_writes_nothing(cluster: LocalCluster) -> None:
    async with flag_node(cluster) as node:
        flooding = await new_tenant(cluster, "track-flood")
        calm = await new_tenant(cluster, "track-calm")
        flood_key, _ = await env_and_key(node, flooding)
        calm_key, _ = await env_and_key(node, calm)
        sink = ExposureSink(bootstrap(cluster), cluster.api_key)
        now = [1000.0]  # the gate's clock stands still: no token comes back during the flood
        limits = OfrepLimits(per_key=Rate(10.0, 5.0), per_address=Rate(10.0, 5.0))
        app = tracking_app(node.live, sink, limits=limits, clock=lambda: now[0])
        async with TestClient(TestServer(app)) as http:
            statuses = []
            for _ in range(20):
                response = await http.post(TRACK_PATH, json={"events": [GOOD]}, headers=bearer(flood_key))
                statuses.append(response.status)
                if response.status == 429:
                    assert response.headers["Retry-After"] == "1"
                    assert (await response.json())["errorCode"] == "GENERAL"
            assert statuses == [202] * 5 + [429] * 15
            assert await end_offset(cluster, flooding, TRACKING_TOPIC) == 5  # the refused wrote nothing
            # Another tenant from the same address keeps its whole budget.
            for _ in range(5):
                response = await http.post(TRACK_PATH, json={"events": [GOOD]}, headers=bearer(calm_key))
                assert response.status == 202
            now[0] += 0.1  # one token back
            response = await http.post(TRACK_PATH, json={"events": [GOOD]}, headers=bearer(flood_key))
            assert response.status == 202
        assert await end_offset(cluster, calm, TRACKING_TOPIC) == 5
        assert await end_offset(cluster, flooding, TRACKING_TOPIC) == 6
        await sink.close()


async def test_reported_exposures_reach_the_log(cluster: LocalCluster, served: Served) -> None:
    tenant = await new_tenant(cluster, "track-exposures")
    key, _ = await env_and_key(served.node, tenant)
    version = served.node.live.store.flag_version(tenant, ENV, "banner")
    body = {
        "exposures": [
            {"flag": "banner", "variant": "on", "reason": "TARGETING_MATCH", "targetingKey": "user-1"},
            {"flag": "banner", "variant": "on", "reason": "TARGETING_MATCH", "targetingKey": "user-1"},
            {"flag": "banner", "variant": "off", "targetingKey": "user-2"},
        ]
    }
    response = await served.http.post(EXPOSURES_PATH, json=body, headers=bearer(key))
    assert response.status == 202 and await response.json() == {"recorded": 3}
    await served.sink.flush(20)
    records = await read_topic(cluster, tenant, EXPOSURES_TOPIC, 2)
    docs = [json.loads(r.value or b"") for r in records]
    assert [(d["targetingKey"], d["variant"], d["reason"], d["source"], d["version"]) for d in docs] == [
        ("user-1", "on", "TARGETING_MATCH", "hook", version),
        ("user-2", "off", "UNKNOWN", "hook", version),
    ]
    bad = {"exposures": [body["exposures"][0], {"flag": "banner", "targetingKey": "user-3"}]}
    response = await served.http.post(EXPOSURES_PATH, json=bad, headers=bearer(key))
    answer = await response.json()
    assert (response.status, answer["errorCode"]) == (400, "INVALID_EXPOSURE")
    assert "exposures[1].variant" in answer["errorDetails"]
    assert served.sink.stats.recorded == 2


async def test_an_unwritable_log_answers_503(cluster: LocalCluster) -> None:
    async with flag_node(cluster) as node:
        tenant = await new_tenant(cluster, "track-503")
        key, _ = await env_and_key(node, tenant)
        sink = ExposureSink(["127.0.0.1:1"], cluster.api_key, admin_timeout_s=0.3)
        app = web.Application()
        add_tracking_routes(app, node.live, sink, track_timeout_s=1.0)
        async with TestClient(TestServer(app)) as http:
            response = await http.post(TRACK_PATH, json={"events": [GOOD]}, headers=bearer(key))
            answer = await response.json()
            assert (response.status, answer["errorCode"]) == (503, "UNAVAILABLE")
            assert response.headers["Retry-After"] == "1"
        await sink.close(timeout_s=0.1)


async def test_grpc_track(cluster: LocalCluster) -> None:
    import grpc

    from flags.events_service import register_events
    from raftlog.flags.v1 import flags_pb2, flags_pb2_grpc

    async with flag_node(cluster) as node:
        tenant = await new_tenant(cluster, "track-grpc")
        key, _ = await env_and_key(node, tenant)
        sink = ExposureSink(bootstrap(cluster), cluster.api_key)
        server = grpc.aio.server()
        register_events(server, node.live, sink)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = flags_pb2_grpc.FlagEventsServiceStub(channel)
                auth = (("authorization", f"Bearer {key}"),)
                good = flags_pb2.TrackEvent(
                    name="purchase", targeting_key="user-1", value=2.5, attributes_json='{"a":1}'
                )
                bad = flags_pb2.TrackEvent(name="bad name", targeting_key="user-1")
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Track(flags_pb2.TrackRequest(events=[good, bad]), metadata=auth)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "events[1].name" in (refused.value.details() or "")
                with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                    await stub.Track(flags_pb2.TrackRequest(events=[good]))
                assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert await end_offset(cluster, tenant, TRACKING_TOPIC) == 0
                answer = await stub.Track(flags_pb2.TrackRequest(events=[good]), metadata=auth)
                assert answer.accepted == 1
                assert await end_offset(cluster, tenant, TRACKING_TOPIC) == 1
                (record,) = await read_topic(cluster, tenant, TRACKING_TOPIC, 1)
                doc = json.loads(record.value or b"")
                assert (doc["name"], doc["targetingKey"], doc["value"], doc["attributes"]) == (
                    "purchase",
                    "user-1",
                    2.5,
                    {"a": 1},
                )
        finally:
            await server.stop(0)
            await sink.close()


# --- the exposures batch: the flat pass takes exactly what the full rules take ------------

# Text near every limit, and lone surrogates (json.loads makes them from "\\ud800").
_TEXT = st.one_of(
    st.sampled_from(
        ["", "on", "f" * 64, "f" * 65, "k" * 256, "k" * 257, "v" * 1024, "v" * 1025, "\ud800", "ü✓"]
    ),
    st.text(max_size=8),
)
_VALUE = st.one_of(_TEXT, st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=1))
_FIELD = st.sampled_from(["flag", "variant", "reason", "targetingKey", "extra"])
_ITEM = st.one_of(
    st.fixed_dictionaries(
        {"flag": _TEXT, "variant": _TEXT, "targetingKey": _TEXT}, optional={"reason": _TEXT}
    ),
    st.dictionaries(_FIELD, _VALUE, max_size=5),
    _VALUE,
)
_BODY = st.one_of(
    st.builds(lambda items: {"exposures": items}, st.lists(_ITEM, max_size=4)),
    st.dictionaries(st.sampled_from(["exposures", "events"]), st.lists(_ITEM, max_size=2), max_size=2),
    _VALUE,
)


def _outcome(parse: Any, body: Any) -> Any:
    try:
        return parse(body)
    except InvalidBody as error:
        return (error.code, error.details)


@settings(max_examples=600, deadline=None)
@given(_BODY)
def test_the_flat_pass_agrees_with_the_full_rules(body: Any) -> None:
    full = _outcome(_parse_exposures_in_full, body)
    assert _outcome(parse_exposures, body) == full
    flat = _plainly_valid_exposures(body)
    assert flat is None or flat == full


def test_plain_batches_take_the_flat_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    items = [
        {"flag": f"flag-{i % 10}", "variant": "on", "reason": "SPLIT", "targetingKey": f"user-{i}ü"}
        for i in range(MAX_EXPOSURES)
    ]
    del items[3]["reason"]  # defaults to UNKNOWN
    body = json.loads(json.dumps({"exposures": items}))
    flat = _plainly_valid_exposures(body)
    assert flat is not None and flat == _parse_exposures_in_full(body)
    assert flat[3] == ("flag-3", "on", "UNKNOWN", "user-3ü")
    with monkeypatch.context() as patched:  # parse_exposures does not look field by field
        patched.setattr("flags.tracking._parse_exposures_in_full", None)
        assert parse_exposures(body) == flat
    too_many = {"exposures": items + items[:1]}
    assert _plainly_valid_exposures(too_many) is None
    assert _outcome(parse_exposures, too_many)[0] == "INVALID_EXPOSURE"


async def test_reported_exposures_carry_each_flags_own_version(
    cluster: LocalCluster, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await new_tenant(cluster, "track-versions")
    key, _ = await env_and_key(served.node, tenant)
    store = served.node.live.store
    await served.node.writer.append(tenant, create("checkout", store.flag_version(tenant, ENV, "checkout")))
    versions = {flag: store.flag_version(tenant, ENV, flag) for flag in ("banner", "checkout")}
    assert versions["banner"] != versions["checkout"]
    flags = ["banner", "checkout", "checkout", "banner"]
    body = {
        "exposures": [
            {"flag": flag, "variant": "on", "targetingKey": f"user-{i}"} for i, flag in enumerate(flags)
        ]
    }
    asked: list[str] = []
    flag_version = FlagStore.flag_version

    def counted(self: FlagStore, tenant: str, env: str, flag: str) -> int:
        asked.append(flag)
        return flag_version(self, tenant, env, flag)

    with monkeypatch.context() as patched:
        patched.setattr(FlagStore, "flag_version", counted)
        response = await served.http.post(EXPOSURES_PATH, json=body, headers=bearer(key))
    assert response.status == 202
    assert sorted(asked) == ["banner", "checkout"], "each flag's version asked once per request"
    await served.sink.flush(20)
    records = await read_topic(cluster, tenant, EXPOSURES_TOPIC, 4)
    docs = [json.loads(r.value or b"") for r in records]
    assert [(d["flag"], d["version"]) for d in docs] == [(flag, versions[flag]) for flag in flags]
