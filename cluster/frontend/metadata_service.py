"""``raftlog.v1.MetadataService``: nodes, and the caller's topics with their
partitions' replicas and leaders, from this node's applied metadata.

Invariants: only the caller's tenant's topics are ever listed (another
tenant's names are simply absent, as unknown ones are, like Kafka's
metadata request without auto-creation). A leader is reported as this node
currently knows it (``leader_of``: 0 when unknown, e.g. an election is
under way); clients treat it as a hint and follow NOT_LEADER answers. The
caller is the one the front door admitted (front_door.py).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from cluster.controller_replica import ControllerReplica
from cluster.frontend.front_door import current_caller
from raftlog.v1 import metadata_pb2, metadata_pb2_grpc


class MetadataService(metadata_pb2_grpc.MetadataServiceServicer):
    def __init__(
        self,
        node_id: int,
        controller: ControllerReplica,
        leader_of: Callable[[int], int],
    ) -> None:
        self._node_id = node_id
        self._controller = controller
        self._leader_of = leader_of

    async def GetMetadata(
        self, request: metadata_pb2.GetMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb2.GetMetadataResponse:
        caller = current_caller()
        state = self._controller.state
        response = metadata_pb2.GetMetadataResponse(node_id=self._node_id)
        for node in state.nodes():
            response.nodes.add(node_id=node.node_id, address=node.address, zone=node.zone)
        if request.topics:
            found = (state.topic(caller.tenant, name) for name in dict.fromkeys(request.topics))
            topics = [t for t in found if t is not None]
        else:
            topics = list(state.topics_for(caller.tenant))
        for topic in topics:
            info = response.topics.add(name=topic.name, revision=topic.revision)
            for partition, group in enumerate(topic.groups):
                assignment = state.assignment(group)
                info.partitions.add(
                    partition=partition,
                    leader=self._leader_of(group),
                    replicas=assignment.replicas if assignment else (),
                )
        return response
