"""The in-process OpenFeature side on a real 3-node cluster: ``ExposureHook``
reports evaluations as exposures that reach ``__exposures`` (source "hook"),
``client.track()`` reaches ``__tracking`` through ``enable_tracking``, and an
unreachable flag server never slows evaluation down (reports drop, counted)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from openfeature.track import TrackingEventDetails

from flags.exposures import EXPOSURES_TOPIC, TRACKING_TOPIC, ExposureSink
from flags.openfeature_hook import EventReporter, ExposureHook, enable_tracking
from flags.tracking import add_tracking_routes
from harness.local_cluster import LocalCluster
from tests.flags.events_support import env_and_key, read_topic
from tests.flags.log_nodes import ENV, bootstrap, flag_node, new_tenant, started_cluster

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with started_cluster(tmp_path_factory.mktemp("openfeature-hook")) as c:
        yield c


def in_process_client(domain: str, reporter: EventReporter) -> OpenFeatureClient:
    """An OpenFeature client over an in-memory provider (standing in for
    in-process flagd evaluation) with the hook and tracking installed."""
    provider = InMemoryProvider(
        {
            "banner": InMemoryFlag("on", {"on": "ON", "off": "OFF"}),
            "no-variant": InMemoryFlag("on", {"on": "ON"}),
        }
    )
    api.set_provider(enable_tracking(provider, reporter), domain)
    client = api.get_client(domain)
    client.add_hooks([ExposureHook(reporter)])
    return client


@pytest.fixture
async def server_url(cluster: LocalCluster) -> AsyncIterator[tuple[str, str, str]]:
    """(base URL, server key, tenant) of a flag server's HTTP side."""
    async with flag_node(cluster) as node:
        tenant = await new_tenant(cluster, f"hook-{time.monotonic_ns() % 10**9}")
        key, _ = await env_and_key(node, tenant)
        sink = ExposureSink(bootstrap(cluster), cluster.api_key)
        app = web.Application()
        add_tracking_routes(app, node.live, sink)
        async with TestServer(app) as server:
            yield str(server.make_url("")), key, tenant
            await sink.flush(20)
        await sink.close()


async def test_hook_exposures_and_track_reach_the_log(
    cluster: LocalCluster, server_url: tuple[str, str, str]
) -> None:
    base_url, key, tenant = server_url
    reporter = EventReporter(base_url, key, interval_s=0.1)
    try:
        client = in_process_client("hook-log", reporter)
        user = EvaluationContext(targeting_key="user-1")
        for _ in range(3):  # repeats: one exposure (the server deduplicates)
            assert client.get_string_value("banner", "x", user) == "ON"
        client.get_string_value("banner", "x", EvaluationContext())  # no targeting key: not an exposure
        client.get_string_value("banner", "x", EvaluationContext(targeting_key="ünï-2"))
        client.track("purchase", user, TrackingEventDetails(value=9.5, attributes={"sku": "a"}))
        client.track("signup", EvaluationContext(targeting_key="ünï-2"))
        client.track("anonymous", EvaluationContext())  # no targeting key: dropped, counted
        assert await asyncio.to_thread(reporter.flush, 10.0)
        stats = reporter.stats
        assert (stats.sent, stats.dropped, stats.rejected, stats.failed) == (6, 1, 0, 0), stats
    finally:
        await asyncio.to_thread(reporter.close, 1.0)
        await api.clear_providers() if asyncio.iscoroutinefunction(
            api.clear_providers
        ) else api.clear_providers()
    exposures = [json.loads(r.value or b"") for r in await read_topic(cluster, tenant, EXPOSURES_TOPIC, 2)]
    assert [
        (e["targetingKey"], e["flag"], e["variant"], e["reason"], e["source"], e["env"]) for e in exposures
    ] == [
        ("user-1", "banner", "on", "STATIC", "hook", ENV),
        ("ünï-2", "banner", "on", "STATIC", "hook", ENV),
    ]
    events = [json.loads(r.value or b"") for r in await read_topic(cluster, tenant, TRACKING_TOPIC, 2)]
    assert [(e["name"], e["targetingKey"], e["value"], e["attributes"]) for e in events] == [
        ("purchase", "user-1", 9.5, {"sku": "a"}),
        ("signup", "ünï-2", None, {}),
    ]


async def test_a_bad_key_is_rejected_not_retried(server_url: tuple[str, str, str]) -> None:
    base_url, _, _ = server_url
    reporter = EventReporter(base_url, "rlf_0000000000000000_" + "A" * 43, interval_s=0.1)
    try:
        reporter.exposure("banner", "on", "STATIC", "user-1")
        reporter.event("purchase", "user-1", 1.0)
        assert await asyncio.to_thread(reporter.flush, 10.0)
        stats = reporter.stats
        assert (stats.sent, stats.rejected, stats.failed) == (0, 2, 0), stats
    finally:
        await asyncio.to_thread(reporter.close, 1.0)


def test_an_unreachable_server_never_slows_evaluation() -> None:
    calls: list[float] = []

    def hanging_post(path: str, body: bytes) -> int:
        calls.append(time.monotonic())
        time.sleep(0.5)  # a server that takes its time, then fails
        raise OSError("connection refused")

    reporter = EventReporter(
        "http://127.0.0.1:1", "k", max_queued=100, interval_s=0.01, retries=1, poster=hanging_post
    )
    try:
        client = in_process_client("hook-unreachable", reporter)
        started = time.perf_counter()
        for i in range(2000):
            client.get_string_value("banner", "x", EvaluationContext(targeting_key=f"user-{i}"))
        per_eval_us = (time.perf_counter() - started) / 2000 * 1e6
        stats = reporter.stats
        assert per_eval_us < 1000, per_eval_us  # the hook adds microseconds; a blocked post would add 0.5 s
        assert stats.dropped >= 1800 and stats.queued <= 100, stats
    finally:
        reporter.close(0.1)
        api.clear_providers()
