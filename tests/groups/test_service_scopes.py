"""Client keys on consumer groups (cluster/groups/service_scopes.py with
cluster/frontend/key_scope.py), over real gRPC behind the front door: a
group outside the key's group prefixes, or a subscription or commit naming
a topic outside its consume prefixes, is ``PERMISSION_DENIED KEY_SCOPE``
and changes nothing; listings show only what the key may use."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from cluster.controller import Principal
from cluster.controller.model import KeyScope
from cluster.frontend.front_door import Caller, FrontDoor
from cluster.frontend.grpc_errors import ServiceError, error_info
from cluster.groups.service import GroupService
from raftlog.v1 import groups_pb2, groups_pb2_grpc
from raftlog.v1.reasons import Reason
from tests.groups.test_service import CONFIG, MemoryLogs

pytestmark = pytest.mark.timeout(60)

TOPICS = {("acme", "orders.eu"): 2, ("acme", "payments"): 1}
KEYS = {
    "admin": Principal("k-admin", "acme"),
    "client": Principal(
        "k-client", "acme", KeyScope("client", consume_prefixes=("orders.",), group_prefixes=("billing-",))
    ),
}


async def identify(context: grpc.aio.ServicerContext) -> Caller:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return Caller(KEYS[value.removeprefix("Bearer ")], "acme")
    raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, Reason.MISSING_API_KEY, "no key")


def key(role: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {role}"),)


@pytest.fixture
async def stub() -> AsyncIterator[tuple[groups_pb2_grpc.GroupServiceStub, MemoryLogs]]:
    logs = MemoryLogs()
    service = GroupService(logs, lambda tenant, topic: TOPICS.get((tenant, topic), 0), config=CONFIG)
    server = grpc.aio.server(interceptors=[FrontDoor(identify, lambda node: "")])
    groups_pb2_grpc.add_GroupServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield groups_pb2_grpc.GroupServiceStub(channel), logs
    finally:
        await server.stop(grace=None)
        await service.close()


async def scope_refusal(call: object) -> str:
    """The refused call's message, once its status is PERMISSION_DENIED KEY_SCOPE."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    info = error_info(caught.value)
    assert info is not None
    assert (caught.value.code(), info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "KEY_SCOPE")
    return info.message


def records(logs: MemoryLogs) -> int:
    return sum(len(log.records) for log in logs.logs.values())


async def test_a_client_key_uses_only_its_groups_and_topics(
    stub: tuple[groups_pb2_grpc.GroupServiceStub, MemoryLogs],
) -> None:
    groups, logs = stub
    client = key("client")
    # Outside the group prefixes: every group call, before anything is loaded.
    other = "analytics"
    calls = [
        groups.JoinGroup(groups_pb2.JoinGroupRequest(group=other, topics=["orders.eu"]), metadata=client),
        groups.Heartbeat(groups_pb2.HeartbeatRequest(group=other, member_id="m"), metadata=client),
        groups.LeaveGroup(groups_pb2.LeaveGroupRequest(group=other, member_id="m"), metadata=client),
        groups.CommitOffsets(groups_pb2.CommitOffsetsRequest(group=other), metadata=client),
        groups.FetchCommittedOffsets(groups_pb2.FetchCommittedOffsetsRequest(group=other), metadata=client),
        groups.DescribeGroup(groups_pb2.DescribeGroupRequest(group=other), metadata=client),
    ]
    for call in calls:
        assert "consumer group 'analytics'" in await scope_refusal(call)
    assert records(logs) == 0, "a refused call loaded or wrote a coordinator partition"
    # In its group, subscribing to a topic outside its consume prefixes (existing or not).
    for topic in ("payments", "not-created-yet"):
        join = groups_pb2.JoinGroupRequest(group="billing-1", topics=["orders.eu", topic])
        assert f"consume from topic '{topic}'" in await scope_refusal(groups.JoinGroup(join, metadata=client))
    assert records(logs) == 0
    # Its own group and topics work.
    joined = await groups.JoinGroup(
        groups_pb2.JoinGroupRequest(group="billing-1", topics=["orders.eu"]), metadata=client
    )
    assert joined.member_epoch > 0
    change = groups_pb2.HeartbeatRequest(
        group="billing-1",
        member_id=joined.member_id,
        member_epoch=joined.member_epoch,
        subscription=groups_pb2.Subscription(topics=["payments"]),
    )
    await scope_refusal(groups.Heartbeat(change, metadata=client))
    commit = groups_pb2.CommitOffsetsRequest(
        group="billing-1",
        member_id=joined.member_id,
        member_epoch=joined.member_epoch,
        offsets=[groups_pb2.OffsetToCommit(topic="payments", partition=0, offset=1)],
    )
    await scope_refusal(groups.CommitOffsets(commit, metadata=client))
    fetch = groups_pb2.FetchCommittedOffsetsRequest(
        group="billing-1", partitions=[groups_pb2.TopicPartitions(topic="payments", partitions=[0])]
    )
    await scope_refusal(groups.FetchCommittedOffsets(fetch, metadata=client))


async def test_listings_show_a_client_key_only_what_it_may_use(
    stub: tuple[groups_pb2_grpc.GroupServiceStub, MemoryLogs],
) -> None:
    groups, _ = stub
    admin = key("admin")
    for group in ("billing-1", "analytics"):
        await groups.CommitOffsets(
            groups_pb2.CommitOffsetsRequest(
                group=group,
                offsets=[
                    groups_pb2.OffsetToCommit(topic="orders.eu", partition=0, offset=5),
                    groups_pb2.OffsetToCommit(topic="payments", partition=0, offset=7),
                ],
            ),
            metadata=admin,
        )
    listed = await groups.ListGroups(groups_pb2.ListGroupsRequest(), metadata=admin)
    assert sorted(g.group for g in listed.groups) == ["analytics", "billing-1"]
    listed = await groups.ListGroups(groups_pb2.ListGroupsRequest(), metadata=key("client"))
    assert [g.group for g in listed.groups] == ["billing-1"]
    whole = groups_pb2.FetchCommittedOffsetsRequest(group="billing-1")
    seen = await groups.FetchCommittedOffsets(whole, metadata=admin)
    assert sorted(o.topic for o in seen.offsets) == ["orders.eu", "payments"]
    seen = await groups.FetchCommittedOffsets(whole, metadata=key("client"))
    assert [(o.topic, o.offset) for o in seen.offsets] == [("orders.eu", 5)]


async def test_describe_shows_a_client_key_only_the_topics_it_may_consume(
    stub: tuple[groups_pb2_grpc.GroupServiceStub, MemoryLogs],
) -> None:
    groups, _ = stub
    # An admin key's member subscribes to a topic the client key may not read.
    joined = await groups.JoinGroup(
        groups_pb2.JoinGroupRequest(group="billing-1", topics=["orders.eu", "payments"]),
        metadata=key("admin"),
    )
    await groups.Heartbeat(
        groups_pb2.HeartbeatRequest(
            group="billing-1", member_id=joined.member_id, member_epoch=joined.member_epoch
        ),
        metadata=key("admin"),
    )

    def seen(answer: groups_pb2.DescribeGroupResponse) -> list[tuple[str, ...]]:
        (member,) = answer.members
        lists = (member.assignment, member.revoking, member.target)
        return [tuple(member.topics), *(tuple(sorted({p.topic for p in listed})) for listed in lists)]

    request = groups_pb2.DescribeGroupRequest(group="billing-1")
    everything = seen(await groups.DescribeGroup(request, metadata=key("admin")))
    assert everything[0] == ("orders.eu", "payments")
    assert "payments" in everything[1] + everything[3], "the member was never assigned the topic"
    shown_to_client = seen(await groups.DescribeGroup(request, metadata=key("client")))
    assert shown_to_client == [tuple(t for t in topics if t != "payments") for topics in everything]
