"""What the SDK's producer and consumer tests share: in-process gRPC servers
standing in for nodes (unit tests), and a module's ``LocalCluster`` of real
node processes (integration tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import grpc
import pytest

from cluster.controller import Principal
from cluster.frontend.auth import Caller
from cluster.frontend.front_door import FrontDoor
from cluster.frontend.grpc_errors import ServiceError, abort
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.v1 import groups_pb2_grpc, log_pb2_grpc, metadata_pb2, metadata_pb2_grpc
from raftlog.v1.reasons import Reason

ANYONE = Caller(Principal("fake-nodes", None), "default")


async def _anyone(context: grpc.aio.ServicerContext) -> Caller:
    """Fake nodes never checked keys: every caller is let in."""
    return ANYONE


async def start_fake_nodes(
    make_node: Callable[[int], Any],
    count: int,
    make_groups: Callable[[int], groups_pb2_grpc.GroupServiceServicer] | None = None,
) -> tuple[list[grpc.aio.Server], list[str]]:
    """Serve ``make_node(i)`` (a LogService and MetadataService servicer),
    and ``make_groups(i)`` as its GroupService when given, on ``count``
    loopback ports; returns the servers and their addresses. Like a node,
    each serves behind the front door (which maps a handler's errors to
    statuses), but one that lets every caller in."""
    servers: list[grpc.aio.Server] = []
    addresses: list[str] = []
    for index in range(count):
        server = grpc.aio.server(interceptors=[FrontDoor(_anyone, lambda node: "")])
        node = make_node(index)
        log_pb2_grpc.add_LogServiceServicer_to_server(node, server)
        metadata_pb2_grpc.add_MetadataServiceServicer_to_server(node, server)
        if make_groups is not None:
            groups_pb2_grpc.add_GroupServiceServicer_to_server(make_groups(index), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
    return servers, addresses


class FakeNodes:
    """What in-process nodes share: ``topics`` (name -> partition count),
    their addresses, and which node leads every partition. Subclasses hold
    the data and say which servicer each node runs (``make_node``)."""

    def __init__(self, topics: dict[str, int]) -> None:
        self.topics = topics
        self.addresses: list[str] = []
        self.leader = 0  # index of the node that leads every partition
        self.metadata_leader: int | None = None  # what GetMetadata reports (default: the leader)
        self._servers: list[grpc.aio.Server] = []

    def make_node(self, index: int) -> FakeNode[Any]:
        raise NotImplementedError

    async def start(
        self, nodes: int = 2, groups: Callable[[int], groups_pb2_grpc.GroupServiceServicer] | None = None
    ) -> None:
        """Start ``nodes`` nodes; ``groups(i)``, when given, is node i's
        GroupService."""
        servers, addresses = await start_fake_nodes(self.make_node, nodes, groups)
        self._servers.extend(servers)
        self.addresses.extend(addresses)

    async def stop(self) -> None:
        for server in self._servers:
            await server.stop(grace=None)


F = TypeVar("F", bound=FakeNodes)


class FakeNode(log_pb2_grpc.LogServiceServicer, metadata_pb2_grpc.MetadataServiceServicer, Generic[F]):
    """Node ``index`` of ``fake``: answers ``GetMetadata`` from the shared
    state; subclasses serve the LogService calls they need."""

    def __init__(self, fake: F, index: int) -> None:
        self.fake = fake
        self.index = index

    async def abort_unless_leader(self, context: grpc.aio.ServicerContext) -> None:
        """``NOT_LEADER`` naming the leader, as the server answers, unless
        this node leads."""
        if self.index != self.fake.leader:
            await abort(
                context,
                ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    Reason.NOT_LEADER,
                    "ask the leader",
                    leader_address=self.fake.addresses[self.fake.leader],
                ),
            )

    async def GetMetadata(
        self, request: metadata_pb2.GetMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb2.GetMetadataResponse:
        fake = self.fake
        leader = fake.leader if fake.metadata_leader is None else fake.metadata_leader
        response = metadata_pb2.GetMetadataResponse(node_id=self.index + 1)
        for i, address in enumerate(fake.addresses):
            response.nodes.add(node_id=i + 1, address=address)
        for name, count in fake.topics.items():
            if request.topics and name not in request.topics:
                continue
            topic = response.topics.add(name=name, revision=1)
            for p in range(count):
                topic.partitions.add(partition=p, leader=leader + 1, replicas=[1, 2])
        return response


def run_local_cluster(
    tmp_path_factory: pytest.TempPathFactory, name: str, topics: Sequence[TopicSpec]
) -> Iterator[LocalCluster]:
    """The body of a module's ``cluster`` fixture: three real nodes serving
    ``topics``, killed afterwards."""
    cluster = LocalCluster(tmp_path_factory.mktemp(name), topics=topics)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.close()


def bootstrap(cluster: LocalCluster) -> list[str]:
    return list(cluster.addresses.values())
