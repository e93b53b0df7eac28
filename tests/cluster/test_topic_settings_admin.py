"""AdminService topic settings and compaction, in-process over a real
controller state: create with each policy, alter (merge, reset, race),
invalid values refused with nothing changed, CompactTopic's checks and its
fan-out to the leaders."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from cluster.controller.model import TopicConfig
from cluster.frontend.admin_service import AdminService
from cluster.frontend.compaction import LeaderAsker
from cluster.frontend.forwarding import Forwarder
from cluster.frontend.front_door import acting_as
from cluster.frontend.grpc_errors import ServiceError
from raftlog.internal.v1 import node_admin_pb2
from raftlog.v1 import admin_pb2
from raftlog.v1.reasons import Reason
from tests.cluster.test_request_limits import ACME, Context, LeaderController
from tests.controller.harness import cluster, create_topic

pytestmark = pytest.mark.timeout(30)


class LocalLeader:
    """This node's NodeAdmin: leads every group, cleans to the target at once."""

    def __init__(self) -> None:
        self.asked: list[list[int]] = []

    async def compact(self, groups: list[int], wait_s: float = 0.0) -> node_admin_pb2.CompactResponse:
        self.asked.append(groups)
        return node_admin_pb2.CompactResponse(
            groups=[
                node_admin_pb2.GroupCompaction(group=g, leader=1, target_offset=10 * g, cleaned_offset=10 * g)
                for g in groups
            ]
        )

    def snapshot(self, request: node_admin_pb2.StatsRequest) -> node_admin_pb2.NodeStats:
        return node_admin_pb2.NodeStats(
            node_id=1,
            partitions=[
                node_admin_pb2.ReplicaStats(group=g, role="LEADER", cleaned_offset=g, compacted_bytes=100 * g)
                for g in request.groups
            ],
        )


def admin(leader_of: Any = lambda group: 1) -> tuple[AdminService, Any, LocalLeader]:
    log = cluster(3, tenants=["acme"])
    create_topic(log, "acme", "plain", partitions=2)
    create_topic(log, "acme", "latest", partitions=2, cleanup_policy="compact")
    local = LocalLeader()
    asker = LeaderAsker(1, local, lambda method: (), lambda node: "")
    service = AdminService(1, LeaderController(log), leader_of, Forwarder(), leaders=asker)  # type: ignore[arg-type]
    return service, log, local


async def call(method: Any, request: Any) -> Any:
    with acting_as(ACME):
        return await method(request, Context())


async def refused(method: Any, request: Any) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        await call(method, request)
    return caught.value


@pytest.mark.parametrize("policy", ["delete", "compact", "compact,delete"])
async def test_a_topic_is_created_with_its_settings(policy: str) -> None:
    service, log, _ = admin()
    request = admin_pb2.CreateTopicRequest(
        name="t", partitions=1, replication_factor=1, cleanup_policy=policy, min_compaction_lag_ms=7
    )
    described = (await call(service.CreateTopic, request)).topic
    assert (described.cleanup_policy, described.min_compaction_lag_ms) == (policy, 7)
    assert described.delete_retention_ms == 86_400_000 and not described.HasField("max_compaction_lag_ms")
    topic = log.state.topic("acme", "t")
    assert topic.config == TopicConfig(None, None, policy, 7, 86_400_000, None)


@pytest.mark.parametrize(
    ("settings", "reason", "named"),
    [
        ({"cleanup_policy": "compaction"}, Reason.INVALID_TOPIC_CONFIG, "cleanup_policy"),
        ({"min_compaction_lag_ms": -1}, Reason.INVALID_TOPIC_CONFIG, "min_compaction_lag_ms"),
        ({"delete_retention_ms": -1}, Reason.INVALID_TOPIC_CONFIG, "delete_retention_ms"),
        (
            {"min_compaction_lag_ms": 10, "max_compaction_lag_ms": 5},
            Reason.INVALID_TOPIC_CONFIG,
            "max_compaction",
        ),
        ({"retention_ms": 0}, Reason.INVALID_RETENTION, "retention_ms"),
    ],
)
async def test_invalid_settings_are_refused_and_nothing_changes(
    settings: dict[str, Any], reason: Reason, named: str
) -> None:
    service, log, _ = admin()
    before = log.state.snapshot()
    error = await refused(
        service.CreateTopic, admin_pb2.CreateTopicRequest(name="t", partitions=1, **settings)
    )
    assert (error.code, error.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert named in error.info.message and "nothing was changed" in error.info.message
    error = await refused(
        service.AlterTopicConfig, admin_pb2.AlterTopicConfigRequest(name="plain", **settings)
    )
    assert (error.code, error.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert log.state.snapshot() == before


async def test_alter_changes_what_it_names_resets_and_keeps_the_rest() -> None:
    service, log, _ = admin()
    request = admin_pb2.AlterTopicConfigRequest(name="latest", retention_ms=5000, delete_retention_ms=1000)
    described = (await call(service.AlterTopicConfig, request)).topic
    assert (described.cleanup_policy, described.retention_ms, described.delete_retention_ms) == (
        "compact",
        5000,
        1000,
    )
    assert described.config_revision == log.state.applied_index
    reset = admin_pb2.AlterTopicConfigRequest(name="latest", reset=["retention_ms", "cleanup_policy"])
    await call(service.AlterTopicConfig, reset)
    topic = log.state.topic("acme", "latest")
    assert (topic.retention_ms, topic.cleanup_policy, topic.delete_retention_ms) == (None, "delete", 1000)
    # Judged against the topic's settings once merged: the topic's min lag.
    await call(
        service.AlterTopicConfig, admin_pb2.AlterTopicConfigRequest(name="latest", min_compaction_lag_ms=50)
    )
    error = await refused(
        service.AlterTopicConfig, admin_pb2.AlterTopicConfigRequest(name="latest", max_compaction_lag_ms=20)
    )
    assert error.info.reason == Reason.INVALID_TOPIC_CONFIG


@pytest.mark.parametrize(
    "request_fields",
    [{}, {"reset": ["bogus"]}, {"retention_ms": 5, "reset": ["retention_ms"]}],
    ids=["nothing", "unknown reset", "set and reset"],
)
async def test_alter_requests_that_make_no_sense_are_refused(request_fields: dict[str, Any]) -> None:
    service, log, _ = admin()
    before = log.state.snapshot()
    error = await refused(
        service.AlterTopicConfig, admin_pb2.AlterTopicConfigRequest(name="plain", **request_fields)
    )
    assert error.info.reason == Reason.INVALID_TOPIC_CONFIG
    assert log.state.snapshot() == before


async def test_alter_of_an_unknown_topic_is_not_found() -> None:
    service, _, _ = admin()
    error = await refused(
        service.AlterTopicConfig, admin_pb2.AlterTopicConfigRequest(name="nope", cleanup_policy="compact")
    )
    assert (error.code, error.info.reason) == (grpc.StatusCode.NOT_FOUND, Reason.UNKNOWN_TOPIC)


async def test_an_alter_that_loses_a_race_is_merged_into_the_winner() -> None:
    """Another change commits between reading the settings and applying:
    the first proposal is stale, the retry keeps the winner's change."""
    service, log, _ = admin()
    controller = service._controller
    submit = controller.submit
    raced = False

    async def racing_submit(data: bytes) -> Any:
        nonlocal raced
        if not raced:
            raced = True
            await call(
                service.AlterTopicConfig, admin_pb2.AlterTopicConfigRequest(name="latest", retention_ms=99)
            )
        return await submit(data)

    controller.submit = racing_submit  # type: ignore[method-assign,assignment]
    await call(
        service.AlterTopicConfig, admin_pb2.AlterTopicConfigRequest(name="latest", delete_retention_ms=5)
    )
    topic = log.state.topic("acme", "latest")
    assert (topic.retention_ms, topic.delete_retention_ms) == (99, 5)


async def test_compact_refuses_a_delete_topic_and_an_unknown_one() -> None:
    service, _, local = admin()
    error = await refused(service.CompactTopic, admin_pb2.CompactTopicRequest(name="plain"))
    assert (error.code, error.info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, Reason.NOT_COMPACTED)
    assert "compact" in error.info.message
    error = await refused(service.CompactTopic, admin_pb2.CompactTopicRequest(name="nope"))
    assert error.info.reason == Reason.UNKNOWN_TOPIC
    assert local.asked == []


async def test_compact_asks_every_partitions_leader() -> None:
    service, log, local = admin()
    groups = log.state.topic("acme", "latest").groups
    answer = await call(service.CompactTopic, admin_pb2.CompactTopicRequest(name="latest", wait=True))
    assert local.asked == [list(groups)]
    assert [(p.partition, p.target_offset, p.done) for p in answer.partitions] == [
        (p, 10 * g, True) for p, g in enumerate(groups)
    ]


async def test_compact_with_no_leader_known_fails_clearly() -> None:
    service, _, _ = admin(leader_of=lambda group: 0)
    error = await refused(service.CompactTopic, admin_pb2.CompactTopicRequest(name="latest"))
    assert (error.code, error.info.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.COMPACTION_UNAVAILABLE)
    assert "NO_LEADER" in error.info.message


async def test_describe_shows_the_settings_and_the_leaders_figures() -> None:
    service, log, _ = admin()
    groups = log.state.topic("acme", "latest").groups
    described = (await call(service.DescribeTopic, admin_pb2.DescribeTopicRequest(name="latest"))).topic
    assert described.cleanup_policy == "compact"
    assert [(a.cleaned_offset, a.compacted_bytes) for a in described.assignments] == [
        (g, 100 * g) for g in groups
    ]
    plain = (await call(service.DescribeTopic, admin_pb2.DescribeTopicRequest(name="plain"))).topic
    assert plain.cleanup_policy == "delete"
    assert not any(a.HasField("cleaned_offset") for a in plain.assignments)
