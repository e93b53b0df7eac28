"""``raftlog.v1.MetadataService``: nodes, and the caller's topics with their
partitions' replicas and leaders, from this node's applied metadata.

Invariants: only the caller's tenant's topics are ever listed (another
tenant's names are simply absent, as unknown ones are, like Kafka's
metadata request without auto-creation). A client key sees only the topics
it may produce to or consume from (key_scope.py): the full listing leaves
the others out, and naming one of its tenant's other topics is
``PERMISSION_DENIED KEY_SCOPE`` (a name that does not exist, or is another
tenant's, stays absent), so the SDK says why instead of "no such topic". A leader is reported as this node
currently knows it (``leader_of``: 0 when unknown, e.g. an election is
under way); clients treat it as a hint and follow NOT_LEADER answers. The
caller is the one the front door admitted (front_door.py).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from cluster.controller_replica import ControllerReplica
from cluster.frontend.front_door import current_caller
from cluster.frontend.key_scope import TopicAction, check_topic, may_use_topic
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
            found = [state.topic(caller.tenant, name) for name in dict.fromkeys(request.topics)]
            topics = [t for t in found if t is not None]
            for topic in topics:
                check_topic(caller.principal, topic.name, TopicAction.USE, exists=True)
        else:
            topics = [t for t in state.topics_for(caller.tenant) if may_use_topic(caller.principal, t.name)]
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
