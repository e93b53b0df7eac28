"""``raftlog.v1.AdminService``: tenants, API keys, topics, nodes, status.

Reads are answered from this node's applied metadata. Changes are proposed
to the metadata controller (group 0) by its leader: a node that is not the
leader forwards the call there (one hop, caller's identity and deadline
kept, forwarding.py), and answers ``UNAVAILABLE NO_CONTROLLER`` while there
is no leader.

Invariants:

- Every call reaches a handler through the front door (front_door.py): the
  caller is authenticated, and the door refuses a tenant key on the
  operator-only methods (tenants, keys, nodes, node stats, cluster status:
  ``front_door.OPERATOR_METHODS``) before any hop; topics are always the
  caller's tenant's (``current_caller()``).
- Whatever needs judgement or randomness (replica placement, key material)
  is chosen here on the leader before proposing; the command is checked
  again when applied, and a ``Rejected`` result becomes a gRPC error with
  the same reason (``REJECT_CODES``), so a failed change changed nothing.
- Every request is checked before any work is done for it (no placement,
  no proposal, no forward): names against the model's rules, a new topic's
  partitions against the per-topic, per-tenant and cluster caps
  (``model.check_partitions``, the rule the state applies again), the
  replication factor and retention against their bounds. So a request
  cannot make the leader do unbounded work, and every value a command
  carries fits its encoding (an oversized name would otherwise fail there,
  as ``INTERNAL``).
- ``GetNodeStats`` asks every node listed with this node's own proof,
  concurrently and with a short timeout each, and lists a node that does
  not answer as unreachable instead of failing (node_stats.py).
- Internal topics are never created or deleted through this service
  (internal_topics.py), and a tenant name starting with ``__`` is reserved.
- A clear API key is returned once, in the answer to the call that made it,
  and never logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc

from cluster.controller import (
    ApplyResult,
    CreateTenant,
    CreateTopic,
    DecommissionNode,
    DeleteTenant,
    DeleteTopic,
    PlacementError,
    Rejected,
    RejectReason,
    RevokeApiKey,
    Topic,
    encode_command,
    issue_api_key,
    place_partitions,
)
from cluster.controller.api_keys import check_key_id
from cluster.controller.commands import Command
from cluster.controller.model import (
    check_partitions,
    check_replication_factor,
    check_retention,
    check_tenant_name,
    check_topic_name,
)
from cluster.controller_replica import ControllerReplica
from cluster.frontend.auth import unknown_tenant
from cluster.frontend.forwarding import Forwarder, may_forward
from cluster.frontend.front_door import current_caller
from cluster.frontend.grpc_errors import ServiceError, shown
from cluster.frontend.internal_topics import INTERNAL_PREFIX, check_writable
from cluster.frontend.node_stats import NodeStatsGatherer, nodes_page
from partitions.replica_errors import ReplicaError
from raftlog.v1 import admin_pb2, admin_pb2_grpc, headers
from raftlog.v1.reasons import Reason

METADATA_INDEX_KEY = headers.METADATA_INDEX
"""Trailing metadata of a metadata change: the controller index it was
applied at (read-your-writes, see ``AdminService._change``)."""
READ_YOUR_WRITES_WAIT_S = 5.0

T = TypeVar("T")
R = RejectReason
C = grpc.StatusCode

REJECT_CODES: dict[RejectReason, grpc.StatusCode] = {
    R.INVALID_COMMAND: C.INVALID_ARGUMENT,
    R.INVALID_NAME: C.INVALID_ARGUMENT,
    R.INVALID_API_KEY: C.INVALID_ARGUMENT,
    R.INVALID_PARTITIONS: C.INVALID_ARGUMENT,
    R.TOO_MANY_PARTITIONS: C.FAILED_PRECONDITION,
    R.INVALID_REPLICATION_FACTOR: C.INVALID_ARGUMENT,
    R.INVALID_RETENTION: C.INVALID_ARGUMENT,
    R.INVALID_ASSIGNMENT: C.INVALID_ARGUMENT,
    R.INVALID_NODE: C.INVALID_ARGUMENT,
    R.INVALID_POSITION: C.INVALID_ARGUMENT,
    R.TENANT_EXISTS: C.ALREADY_EXISTS,
    R.API_KEY_EXISTS: C.ALREADY_EXISTS,
    R.TOPIC_EXISTS: C.ALREADY_EXISTS,
    R.ADDRESS_IN_USE: C.ALREADY_EXISTS,
    R.ALREADY_REPLICA: C.ALREADY_EXISTS,
    R.UNKNOWN_TENANT: C.NOT_FOUND,
    R.UNKNOWN_API_KEY: C.NOT_FOUND,
    R.UNKNOWN_TOPIC: C.NOT_FOUND,
    R.UNKNOWN_NODE: C.NOT_FOUND,
    R.UNKNOWN_GROUP: C.NOT_FOUND,
}
"""Every other reason is FAILED_PRECONDITION: the request is well formed but
the cluster's state does not allow it now."""

DEFAULT_REPLICATION_FACTOR = 3


def rejected_error(result: Rejected) -> ServiceError:
    # Every RejectReason is a Reason (tests/test_contract.py).
    code = REJECT_CODES.get(result.reason, C.FAILED_PRECONDITION)
    return ServiceError(code, Reason(result.reason), result.message)


def _bad(reason: Reason, message: str) -> ServiceError:
    return ServiceError(C.INVALID_ARGUMENT, reason, message)


def _not_found_topic(name: str) -> ServiceError:
    return ServiceError(
        C.NOT_FOUND,
        Reason.UNKNOWN_TOPIC,
        f"topic {shown(name)} does not exist in this tenant; list topics to see what does",
        metadata={"topic": shown(name)},
    )


def _check_new_tenant(name: str) -> None:
    if problem := check_tenant_name(name):
        raise _bad(Reason.INVALID_NAME, problem)
    if name.startswith(INTERNAL_PREFIX):
        raise _bad(Reason.INVALID_NAME, f"tenant names starting with '__' are reserved: {shown(name)}")


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        node_id: int,
        controller: ControllerReplica,
        leader_of: Callable[[int], int],
        forwarder: Forwarder,
        node_stats: NodeStatsGatherer | None = None,
    ) -> None:
        """``node_stats``: how ``GetNodeStats`` asks the nodes (a node
        always gives one; without it the call answers ``UNAVAILABLE``)."""
        self._node_id = node_id
        self._controller = controller
        self._leader_of = leader_of
        self._forwarder = forwarder
        self._node_stats = node_stats

    # --- plumbing --------------------------------------------------------------

    async def _change(
        self,
        context: grpc.aio.ServicerContext,
        name: str,
        request: Any,
        work: Callable[[], Awaitable[T]],
    ) -> T:
        """Run ``work`` if this node leads the controller; otherwise forward
        the call (method ``name``) to the leader.

        Read-your-writes on the node a client talks to: the leader answers
        with the metadata index its state had reached (trailing metadata
        ``METADATA_INDEX_KEY``), and a node that forwarded the change answers
        only once its own copy has applied that index (or
        ``READ_YOUR_WRITES_WAIT_S`` passed: the change is made either way,
        a lagging node's reads just lag)."""
        controller = self._controller
        if controller.is_leader:
            try:
                result = await work()
            except ReplicaError as error:  # leadership lost mid-way
                raise ServiceError(
                    C.UNAVAILABLE,
                    Reason.NO_CONTROLLER,
                    f"the metadata controller changed leader during the call ({error.reason}); "
                    "retry: the change may or may not have been made",
                ) from None
            context.set_trailing_metadata(((METADATA_INDEX_KEY, str(controller.state.applied_index)),))
            return result
        address = controller.leader_address
        if not address or not may_forward(context):
            raise ServiceError(
                C.UNAVAILABLE,
                Reason.NO_CONTROLLER,
                "the metadata controller has no leader right now; retry in a moment",
                leader_address=address,
            )
        response, trailing = await self._forwarder.forward_with_trailers(
            context, address, lambda ch: getattr(admin_pb2_grpc.AdminServiceStub(ch), name), request
        )
        index = next((int(value) for key, value in trailing if key == METADATA_INDEX_KEY), 0)
        remaining = context.time_remaining()
        wait_s = READ_YOUR_WRITES_WAIT_S if remaining is None else min(READ_YOUR_WRITES_WAIT_S, remaining)
        await self._controller.wait_applied(index, max(0.0, wait_s))
        return cast(T, response)

    async def _propose(self, command: Command) -> ApplyResult:
        result = await self._controller.submit(encode_command(command))
        if isinstance(result, Rejected):
            raise rejected_error(result)
        return result

    # --- tenants ---------------------------------------------------------------

    async def CreateTenant(
        self, request: admin_pb2.CreateTenantRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateTenantResponse:
        _check_new_tenant(request.name)

        async def work() -> admin_pb2.CreateTenantResponse:
            await self._propose(CreateTenant(request.name))
            issued = issue_api_key(request.name)
            await self._propose(issued.command)
            return admin_pb2.CreateTenantResponse(
                tenant=admin_pb2.Tenant(name=request.name),
                api_key=admin_pb2.ApiKey(
                    key_id=issued.key_id, tenant=request.name, clear_text=issued.clear_text
                ),
            )

        return await self._change(context, "CreateTenant", request, work)

    async def DeleteTenant(
        self, request: admin_pb2.DeleteTenantRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteTenantResponse:
        if check_tenant_name(request.name):  # no such name can exist
            raise unknown_tenant(request.name)

        async def work() -> admin_pb2.DeleteTenantResponse:
            await self._propose(DeleteTenant(request.name))
            return admin_pb2.DeleteTenantResponse()

        return await self._change(context, "DeleteTenant", request, work)

    async def ListTenants(
        self, request: admin_pb2.ListTenantsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListTenantsResponse:
        page = self._controller.state.list_tenants(request.page_size, request.page_token)
        return admin_pb2.ListTenantsResponse(
            tenants=[admin_pb2.Tenant(name=t.name) for t in page.items],
            next_page_token=page.next_page_token,
        )

    # --- API keys --------------------------------------------------------------

    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateApiKeyResponse:
        if request.operator == bool(request.tenant):
            raise _bad(
                Reason.INVALID_ARGUMENT, "give either a tenant or operator = true, not both or neither"
            )
        if not request.operator and check_tenant_name(request.tenant):
            raise unknown_tenant(request.tenant)

        async def work() -> admin_pb2.CreateApiKeyResponse:
            tenant = None if request.operator else request.tenant
            issued = issue_api_key(tenant)
            await self._propose(issued.command)
            return admin_pb2.CreateApiKeyResponse(
                api_key=admin_pb2.ApiKey(
                    key_id=issued.key_id,
                    tenant=tenant or "",
                    operator=tenant is None,
                    clear_text=issued.clear_text,
                )
            )

        return await self._change(context, "CreateApiKey", request, work)

    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RevokeApiKeyResponse:
        if problem := check_key_id(request.key_id):
            raise ServiceError(C.NOT_FOUND, Reason.UNKNOWN_API_KEY, f"no such API key: {problem}")

        async def work() -> admin_pb2.RevokeApiKeyResponse:
            await self._propose(RevokeApiKey(request.key_id))
            return admin_pb2.RevokeApiKeyResponse()

        return await self._change(context, "RevokeApiKey", request, work)

    async def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListApiKeysResponse:
        caller = current_caller()
        if caller.is_operator:
            tenant = None if request.operator else (request.tenant or caller.tenant)
        else:
            tenant = caller.tenant
        page = self._controller.state.list_api_keys(tenant, request.page_size, request.page_token)
        return admin_pb2.ListApiKeysResponse(
            api_keys=[
                admin_pb2.ApiKey(key_id=k.key_id, tenant=k.tenant or "", operator=k.tenant is None)
                for k in page.items
            ],
            next_page_token=page.next_page_token,
        )

    # --- topics ----------------------------------------------------------------

    def _describe(self, topic: Topic, *, assignments: bool) -> admin_pb2.TopicDescription:
        described = admin_pb2.TopicDescription(
            name=topic.name,
            partitions=topic.partitions,
            replication_factor=topic.replication_factor,
            revision=topic.revision,
        )
        if topic.retention_ms is not None:
            described.retention_ms = topic.retention_ms
        if topic.retention_bytes is not None:
            described.retention_bytes = topic.retention_bytes
        if assignments:
            state = self._controller.state
            for partition, group in enumerate(topic.groups):
                a = state.assignment(group)
                described.assignments.add(
                    partition=partition,
                    replicas=a.replicas if a else (),
                    learners=a.learners if a else (),
                    leader=self._leader_of(group),
                    raft_group=group,
                )
        return described

    async def CreateTopic(
        self, request: admin_pb2.CreateTopicRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateTopicResponse:
        retention_ms = request.retention_ms if request.HasField("retention_ms") else None
        retention_bytes = request.retention_bytes if request.HasField("retention_bytes") else None
        # The request's own shape, before the call goes anywhere.
        if problem := check_topic_name(request.name):
            raise _bad(Reason.INVALID_NAME, problem)
        check_writable(current_caller().tenant, request.name)
        if request.partitions < 1:
            raise _bad(Reason.INVALID_PARTITIONS, "a topic needs at least 1 partition (--partitions N)")
        if rejected := check_partitions(request.partitions, 0, 0):
            raise rejected_error(rejected)
        if request.replication_factor and (problem := check_replication_factor(request.replication_factor)):
            raise _bad(Reason.INVALID_REPLICATION_FACTOR, problem)
        if problem := check_retention(retention_ms, retention_bytes):
            raise _bad(Reason.INVALID_RETENTION, problem)

        async def work() -> admin_pb2.CreateTopicResponse:
            caller = current_caller()
            state = self._controller.state
            if state.topic(caller.tenant, request.name) is not None:
                raise ServiceError(
                    C.ALREADY_EXISTS,
                    Reason.TOPIC_EXISTS,
                    f"topic {shown(request.name)} already exists in this tenant",
                )
            # The caps before placement: placement's work grows with the
            # partition count, and the state applies the same rule again.
            if rejected := check_partitions(request.partitions, *state.partition_counts(caller.tenant)):
                raise rejected_error(rejected)
            live = len(state.live_nodes())
            rf = request.replication_factor or min(DEFAULT_REPLICATION_FACTOR, live)
            if rf > live:
                raise ServiceError(
                    C.FAILED_PRECONDITION,
                    Reason.REPLICATION_FACTOR_TOO_LARGE,
                    f"replication factor {rf} is more than the {live} live node(s); lower it or add nodes",
                    metadata={"live_nodes": str(live)},
                )
            try:
                assignment = place_partitions(state, request.partitions, rf)
            except PlacementError as exc:
                raise ServiceError(C.FAILED_PRECONDITION, Reason.PLACEMENT_FAILED, str(exc)) from None
            await self._propose(
                CreateTopic(
                    caller.tenant,
                    request.name,
                    request.partitions,
                    rf,
                    retention_ms,
                    retention_bytes,
                    assignment,
                )
            )
            created = self._controller.state.topic(caller.tenant, request.name)
            assert created is not None
            return admin_pb2.CreateTopicResponse(topic=self._describe(created, assignments=True))

        return await self._change(context, "CreateTopic", request, work)

    async def DeleteTopic(
        self, request: admin_pb2.DeleteTopicRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteTopicResponse:
        if check_topic_name(request.name):  # no such name can exist
            raise _not_found_topic(request.name)
        check_writable(current_caller().tenant, request.name)

        async def work() -> admin_pb2.DeleteTopicResponse:
            caller = current_caller()
            if self._controller.state.topic(caller.tenant, request.name) is None:
                raise _not_found_topic(request.name)
            await self._propose(DeleteTopic(caller.tenant, request.name))
            return admin_pb2.DeleteTopicResponse()

        return await self._change(context, "DeleteTopic", request, work)

    async def ListTopics(
        self, request: admin_pb2.ListTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListTopicsResponse:
        caller = current_caller()
        page = self._controller.state.list_topics(caller.tenant, request.page_size, request.page_token)
        return admin_pb2.ListTopicsResponse(
            topics=[self._describe(t, assignments=False) for t in page.items],
            next_page_token=page.next_page_token,
        )

    async def DescribeTopic(
        self, request: admin_pb2.DescribeTopicRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeTopicResponse:
        caller = current_caller()
        topic = self._controller.state.topic(caller.tenant, request.name)
        if topic is None:
            raise _not_found_topic(request.name)
        return admin_pb2.DescribeTopicResponse(topic=self._describe(topic, assignments=True))

    # --- nodes and the cluster -------------------------------------------------

    async def ListNodes(
        self, request: admin_pb2.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListNodesResponse:
        state = self._controller.state
        page = state.list_nodes(request.page_size, request.page_token)
        return admin_pb2.ListNodesResponse(
            nodes=[
                admin_pb2.NodeDescription(
                    node_id=n.node_id,
                    address=n.address,
                    zone=n.zone,
                    controller_eligible=n.controller_eligible,
                    alive=n.alive,
                    decommissioning=n.decommissioning,
                    replicas=len(state.assignments_for_node(n.node_id)),
                )
                for n in page.items
            ],
            next_page_token=page.next_page_token,
        )

    async def DecommissionNode(
        self, request: admin_pb2.DecommissionNodeRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DecommissionNodeResponse:
        async def work() -> admin_pb2.DecommissionNodeResponse:
            await self._propose(DecommissionNode(request.node_id))
            return admin_pb2.DecommissionNodeResponse()

        return await self._change(context, "DecommissionNode", request, work)

    async def GetClusterStatus(
        self, request: admin_pb2.GetClusterStatusRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetClusterStatusResponse:
        state = self._controller.state
        image = state.image()
        return admin_pb2.GetClusterStatusResponse(
            controller_leader=self._controller.leader,
            metadata_index=state.applied_index,
            nodes=len(image.nodes),
            live_nodes=len(state.live_nodes()),
            tenants=len(image.tenants),
            topics=len(image.topics),
            partitions=len(image.assignments),
            answering_node=self._node_id,
        )

    async def GetNodeStats(
        self, request: admin_pb2.GetNodeStatsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetNodeStatsResponse:
        # Answered here, from this node's metadata and the nodes' own
        # answers (node_stats.py): nothing to forward to the controller.
        nodes, next_token = nodes_page(self._controller.state, request)
        if self._node_stats is None:
            raise ServiceError(
                C.UNAVAILABLE, Reason.NODE_UNAVAILABLE, "this node cannot ask the nodes; ask another"
            )
        stats = await self._node_stats.gather(
            [(n.node_id, n.address) for n in nodes], context.time_remaining()
        )
        return admin_pb2.GetNodeStatsResponse(nodes=stats, next_page_token=next_token)
