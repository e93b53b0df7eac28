"""``raftlog.v1.MetadataService`` for a static cluster: nodes and topics from
the cluster file, leaders as this node's replicas know them.

Invariant: a leader is reported only as this node currently knows it (0 when
it hosts no replica of the partition or an election is under way); clients
treat it as a hint and follow NOT_LEADER answers. Unknown topic names are
left out of the answer rather than failing the call, like Kafka's metadata
request without auto-creation.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from cluster.static_config import StaticCluster
from partitions.replica import Replica
from raftlog.v1 import metadata_pb2, metadata_pb2_grpc


class StaticMetadataService(metadata_pb2_grpc.MetadataServiceServicer):
    def __init__(
        self, node_id: int, cluster: StaticCluster, replica_of: Callable[[int], Replica | None]
    ) -> None:
        self._node_id = node_id
        self._cluster = cluster
        self._replica_of = replica_of
        self._nodes = [metadata_pb2.NodeInfo(node_id=n.id, address=n.address) for n in cluster.nodes]

    async def GetMetadata(
        self, request: metadata_pb2.GetMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb2.GetMetadataResponse:
        wanted = set(request.topics)
        response = metadata_pb2.GetMetadataResponse(nodes=self._nodes, node_id=self._node_id)
        topics: dict[str, metadata_pb2.TopicInfo] = {}
        for ref in self._cluster.partitions():
            if wanted and ref.topic not in wanted:
                continue
            topic = topics.get(ref.topic)
            if topic is None:
                topic = topics[ref.topic] = response.topics.add(name=ref.topic, revision=1)
            replica = self._replica_of(ref.group)
            topic.partitions.add(
                partition=ref.partition, leader=replica.leader if replica else 0, replicas=ref.replicas
            )
        return response
