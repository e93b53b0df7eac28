"""Experiments on a real 3-node cluster: ``ExperimentService`` (create, start,
stop, list, results) on a flag node whose ``LiveFlags`` routes ``@experiment/``
records to an ``ExperimentRegistry``, exposures and tracking events written
with ``client.Producer`` in the documented formats, the analyzer reading them
from the offsets recorded at start, the results JSON's exact fields, a second
server recomputing the same results from the log, and ``raftlog experiment``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from client.admin import Admin
from client.producer import Producer
from flags.admin_errors import reason_of
from flags.changes import Change, Kind
from flags.experiments.admin_rpcs import register_experiments
from flags.experiments.analyzer import EXPOSURES_TOPIC, TRACKING_TOPIC, ExperimentAnalyzer
from flags.experiments.attribution import Attribution, parse_exposure, parse_tracking
from flags.experiments.model import Offsets, State
from flags.experiments.results import results_document
from flags.follower import Follower
from flags.live import LiveFlags
from flags.model import validate_flag
from flags.store import Accepted
from flags.tenant_keys import TenantKeys
from flags.writer import FlagWriter
from harness.local_cluster import LocalCluster
from raftlog.flags.v1 import flags_pb2, flags_pb2_grpc
from tests.flags.experiment_fixtures import RESULT_ROW_FIELDS, experiment, exposure_value, tracking_value
from tests.flags.log_nodes import ENV, WHO, bootstrap, env_create, new_tenant, now_ms, started_cluster

pytestmark = pytest.mark.timeout(240)

FLAG = "new-checkout"
CHECKOUT = {
    "state": "ENABLED",
    "variants": {"off": False, "on": True},
    "defaultVariant": "off",
    "targeting": {"fractional": [["off", 50], ["on", 50]]},
}


@dataclass
class Node:
    live: LiveFlags
    writer: FlagWriter
    analyzer: ExperimentAnalyzer
    stub: flags_pb2_grpc.ExperimentServiceStub
    address: str
    tenant: str
    operator_key: str

    async def call(self, method: str, request: Any) -> Any:
        metadata = (("authorization", f"Bearer {self.operator_key}"), ("raftlog-tenant", self.tenant))
        return await getattr(self.stub, method)(request, metadata=metadata, timeout=20)

    async def refused(self, method: str, request: Any) -> tuple[grpc.StatusCode | None, str]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.call(method, request)
        details = reason_of(caught.value)
        return details.code, details.reason

    async def results(self, name: str = "checkout") -> dict[str, Any]:
        answer = await self.call(
            "GetExperimentResults", flags_pb2.GetExperimentResultsRequest(environment=ENV, name=name)
        )
        document: dict[str, Any] = json.loads(answer.results_json)
        return document


@contextlib.asynccontextmanager
async def node(cluster: LocalCluster, tenant: str) -> AsyncIterator[Node]:
    live = LiveFlags()
    follower = Follower(live, bootstrap(cluster), cluster.api_key, discovery_interval_s=0.3)
    writer = FlagWriter(live, follower, bootstrap(cluster), cluster.api_key)
    keys = TenantKeys(bootstrap(cluster))
    analyzer = ExperimentAnalyzer(live.experiments, bootstrap(cluster), cluster.api_key)
    server = grpc.aio.server()
    register_experiments(
        server,
        live=live,
        registry=live.experiments,
        writer=writer,
        follower=follower,
        keys=keys,
        analyzer=analyzer,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    tasks = [asyncio.create_task(follower.run()), asyncio.create_task(analyzer.run())]
    try:
        assert await follower.wait_ready(30)
        yield Node(
            live,
            writer,
            analyzer,
            flags_pb2_grpc.ExperimentServiceStub(channel),
            f"127.0.0.1:{port}",
            tenant,
            cluster.api_key,
        )
    finally:
        await channel.close()
        await server.stop(grace=None)
        await analyzer.close()
        await writer.close()
        await follower.close()
        await keys.close()
        for task in tasks:
            assert task.done()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with started_cluster(tmp_path_factory.mktemp("experiments")) as c:
        yield c


async def produce(cluster: LocalCluster, tenant: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    async with Producer(bootstrap(cluster), api_key=cluster.api_key, tenant=tenant) as producer:
        futures = [await producer.send(topic, value, key=key.encode(), partition=0) for key, value in records]
        await producer.flush()
        for future in futures:
            await future


async def settled(n: Node, exposures_end: int, tracking_end: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """The results once the analysis has read both topics up to the given ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        document = await n.results()
        analysis = document["analysis"]
        if analysis["exposures_read_to"] >= exposures_end and analysis["tracking_read_to"] >= tracking_end:
            return document
        if loop.time() > deadline:
            pytest.fail(f"analysis did not reach {exposures_end}/{tracking_end}: {analysis}")
        await asyncio.sleep(0.1)


def test_how_far_past_the_stop_a_reader_got_does_not_show_in_the_results() -> None:
    """A reader's last batch may or may not reach past a stopped experiment's
    window (server A read its window before a late exposure was written,
    server B read it with the late one in the same batch): both answer the
    same document, ``*_read_to`` included."""
    stopped = experiment(state=State.STOPPED, start=Offsets(1, 0), stop=Offsets(3, 2))
    exposures = [parse_exposure(exposure_value(f"u{i}", "on", 1_000)) for i in range(6)]
    events = [parse_tracking(tracking_value(f"u{i}", "purchase", 2_000)) for i in range(5)]
    documents = []
    for read_exposures, read_events in ((3, 2), (6, 5), (4, 3)):
        attribution = Attribution(stopped)
        for offset in range(read_exposures):
            attribution.add_exposure(offset, exposures[offset])
        for offset in range(read_events):
            attribution.add_tracking(offset, events[offset])
        assert attribution.complete()
        documents.append(results_document(stopped, attribution, None))
    assert documents[0]["analysis"]["exposures_read_to"] == 3
    assert documents[0]["analysis"]["tracking_read_to"] == 2
    assert documents[1] == documents[0] == documents[2]


def metric_request(event: str, kind: str) -> flags_pb2.ExperimentMetric:
    return flags_pb2.ExperimentMetric(event=event, type=kind)


async def test_an_experiment_from_create_to_results_on_a_real_cluster(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await new_tenant(cluster, "experiments")
    async with node(cluster, tenant) as a:
        env = await a.writer.append(tenant, env_create())
        assert isinstance(env, Accepted)
        flag = await a.writer.append(
            tenant,
            Change(
                Kind.CREATE,
                ENV,
                FLAG,
                WHO,
                now_ms(),
                expected=env.version,
                definition=validate_flag(FLAG, CHECKOUT),
            ),
        )
        assert isinstance(flag, Accepted)

        # Refusals write nothing.
        create = flags_pb2.CreateExperimentRequest(
            environment=ENV,
            name="checkout",
            flag=FLAG,
            control="off",
            metrics=[metric_request("purchase", "conversion"), metric_request("revenue", "value")],
        )
        applied = a.live.applied(tenant)
        for request, expected in (
            (
                flags_pb2.CreateExperimentRequest(
                    environment=ENV, name="x", flag="nope", control="off", metrics=[metric_request("p", "")]
                ),
                "UNKNOWN_FLAG",
            ),
            (
                flags_pb2.CreateExperimentRequest(
                    environment=ENV, name="x", flag=FLAG, control="blue", metrics=[metric_request("p", "")]
                ),
                "INVALID_EXPERIMENT",
            ),
            (
                flags_pb2.CreateExperimentRequest(environment=ENV, name="x", flag=FLAG, control="off"),
                "INVALID_EXPERIMENT",
            ),
            (
                flags_pb2.CreateExperimentRequest(
                    environment=ENV, name="Bad", flag=FLAG, control="off", metrics=[metric_request("p", "")]
                ),
                "INVALID_NAME",
            ),
            (
                flags_pb2.CreateExperimentRequest(
                    environment="nope", name="x", flag=FLAG, control="off", metrics=[metric_request("p", "")]
                ),
                "UNKNOWN_ENVIRONMENT",
            ),
        ):
            assert (await a.refused("CreateExperiment", request))[1] == expected
        assert a.live.applied(tenant) == applied

        created = (await a.call("CreateExperiment", create)).experiment
        assert (created.state, created.version) == ("draft", applied + 1)
        assert await a.refused("CreateExperiment", create) == (
            grpc.StatusCode.ALREADY_EXISTS,
            "EXPERIMENT_EXISTS",
        )
        results = flags_pb2.GetExperimentResultsRequest(environment=ENV, name="checkout")
        assert (await a.refused("GetExperimentResults", results))[1] == "EXPERIMENT_STATE"
        stop = flags_pb2.StopExperimentRequest(environment=ENV, name="checkout")
        assert (await a.refused("StopExperiment", stop))[1] == "EXPERIMENT_STATE"

        # Exposures before the start do not count; __tracking does not exist yet.
        async with Admin(bootstrap(cluster), api_key=cluster.api_key, tenant=tenant) as admin:
            await admin.create_topic(EXPOSURES_TOPIC, 1, cleanup_policy="delete")
        before = [(f"u{i}", exposure_value(f"u{i}", "on", 1_000)) for i in range(3)]
        await produce(cluster, tenant, EXPOSURES_TOPIC, before)

        started = (
            await a.call(
                "StartExperiment", flags_pb2.StartExperimentRequest(environment=ENV, name="checkout")
            )
        ).experiment
        assert started.state == "running"
        assert (started.start_offsets.exposures, started.start_offsets.tracking) == (3, 0)
        assert (
            await a.refused(
                "StartExperiment", flags_pb2.StartExperimentRequest(environment=ENV, name="checkout")
            )
        )[1] == "EXPERIMENT_STATE"

        # 40 users: even ones see "off", odd ones "on" (u1 later sees "off": still "on").
        # Conversions: users 0-9 of "off" (but u2) and 0-19 of "on" buy after their
        # exposure; u2 bought before its exposure (does not count). Revenue: 10.0 per buyer.
        exposures = [
            (f"u{i}", exposure_value(f"u{i}", "off" if i % 2 == 0 else "on", 2_000)) for i in range(40)
        ]
        exposures.append(("u1", exposure_value("u1", "off", 2_500)))
        exposures.append(("x1", exposure_value("x1", "on", 2_000, flag="other-flag")))
        buyers = [i for i in range(40) if (i % 2 == 0 and i < 10 and i != 2) or (i % 2 == 1 and i < 20)]
        tracking = [("u2", tracking_value("u2", "purchase", 1_500))]
        for i in buyers:
            tracking.append((f"u{i}", tracking_value(f"u{i}", "purchase", 3_000)))
            tracking.append((f"u{i}", tracking_value(f"u{i}", "revenue", 3_000, 10.0)))
        tracking.append(("u3", tracking_value("u3", "signup", 3_000)))
        # Tracking first: the analyzer must wait for the topic, then hold the events pending.
        async with Admin(bootstrap(cluster), api_key=cluster.api_key, tenant=tenant) as admin:
            await admin.create_topic(TRACKING_TOPIC, 1, cleanup_policy="delete")
        await produce(cluster, tenant, TRACKING_TOPIC, tracking)
        await produce(cluster, tenant, EXPOSURES_TOPIC, exposures)
        document = await settled(a, 3 + len(exposures), len(tracking))

        assert set(document) == {
            "experiment",
            "environment",
            "flag",
            "control",
            "state",
            "start_ms",
            "stop_ms",
            "users",
            "srm_p_value",
            "srm_warning",
            "weights",
            "metrics",
            "analysis",
        }
        assert (document["experiment"], document["state"], document["users"]) == ("checkout", "running", 40)
        assert document["weights"] == {"off": 50.0, "on": 50.0}
        assert document["srm_p_value"] == pytest.approx(1.0) and document["srm_warning"] is False
        purchase, revenue = document["metrics"]
        assert (purchase["event"], purchase["type"], revenue["event"], revenue["type"]) == (
            "purchase",
            "conversion",
            "revenue",
            "value",
        )
        for metric in (purchase, revenue):
            assert metric["srm_p_value"] == document["srm_p_value"]
            assert [row["variant"] for row in metric["variants"]] == ["off", "on"]
            for row in metric["variants"]:
                assert set(row) >= RESULT_ROW_FIELDS
        off, on = purchase["variants"]
        assert (off["users"], off["conversions"], off["rate"]) == (
            20,
            4,
            0.2,
        )  # u2's purchase was before its exposure
        assert (on["users"], on["conversions"], on["rate"]) == (20, 10, 0.5)
        assert off["lift"] is None and off["p_value"] is None and off["mean"] is None
        assert on["lift"] == pytest.approx(1.5) and 0 < on["p_value"] < 1 and on["mean"] is None
        assert on["lift_ci_low"] < on["lift"] < on["lift_ci_high"]
        assert 0.5 < on["chance_to_beat_control"] <= 1
        off_value, on_value = revenue["variants"]
        assert (off_value["mean"], on_value["mean"]) == (pytest.approx(40 / 20), pytest.approx(100 / 20))
        assert off_value["conversions"] is None and off_value["rate"] is None

        # Stop; exposures written afterwards do not count.
        stopped = (await a.call("StopExperiment", stop)).experiment
        assert (stopped.stop_offsets.exposures, stopped.stop_offsets.tracking) == (
            3 + len(exposures),
            len(tracking),
        )
        await produce(cluster, tenant, EXPOSURES_TOPIC, [("late", exposure_value("late", "on", 9_000))])
        final = await settled(a, 3 + len(exposures), len(tracking))
        assert final["analysis"]["complete"] is True and final["users"] == 40
        listed = (
            await a.call("ListExperiments", flags_pb2.ListExperimentsRequest(environment=ENV))
        ).experiments
        assert [(e.name, e.state) for e in listed] == [("checkout", "stopped")]

        # The CLI prints the same document.
        monkeypatch.setenv("RAFTLOG_API_KEY", cluster.api_key)
        monkeypatch.setenv("RAFTLOG_FLAGS", a.address)
        monkeypatch.setenv("RAFTLOG_TENANT", tenant)
        from cluster.cli import main

        capsys.readouterr()
        assert await asyncio.to_thread(main, ["experiment", "results", ENV, "checkout", "--json"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["metrics"] == final["metrics"] and printed["users"] == 40
        assert await asyncio.to_thread(main, ["experiment", "list", ENV]) == 0
        assert "checkout: stopped" in capsys.readouterr().out

    # Another server recomputes exactly the same results from the log.
    async with node(cluster, tenant) as b:
        again = await settled(b, 3 + len(exposures), len(tracking))
        assert again == final
