"""``raftlog.v1.AdminService``: tenants, API keys, topics, nodes, status.

Reads are answered from this node's applied metadata. Changes are proposed
to the metadata controller (group 0) by its leader: a node that is not the
leader forwards the call there (one hop, caller's identity and deadline
kept, forwarding.py), and answers ``UNAVAILABLE NO_CONTROLLER`` while there
is no leader.

Invariants:

- Every call reaches a handler through the front door (front_door.py): the
  caller is authenticated, and the door refuses a tenant key on the
  operator-only methods (tenants and their quotas, nodes, node stats,
  cluster status: ``front_door.OPERATOR_METHODS``) before any hop; topics
  are always the caller's tenant's (``current_caller()``). API keys and
  ``DescribeTenant`` are tenant_admin.py's: a tenant admin key manages its
  own tenant's keys, and it checks who may touch which key.
- Whatever needs judgement or randomness (replica placement, key material)
  is chosen here on the leader before proposing; the command is checked
  again when applied, and a ``Rejected`` result becomes a gRPC error with
  the same reason (``REJECT_CODES``), so a failed change changed nothing.
- Every request is checked before any work is done for it (no placement,
  no proposal, no forward): names against the model's rules, a new topic's
  partitions against the per-topic bounds, then on the leader against the
  tenant's partition and topic quotas and the cluster cap
  (``ControllerState.check_new_topic``, the rule the state applies again;
  ``QUOTA_EXCEEDED`` is ``RESOURCE_EXHAUSTED`` with no retry-after), the
  replication factor and retention against their bounds. So a request
  cannot make the leader do unbounded work, and every value a command
  carries fits its encoding (an oversized name would otherwise fail there,
  as ``INTERNAL``).
- Topic settings have one rule (``model.check_topic_config``), applied to
  the request before it goes anywhere and to the command at apply
  (topic_settings.py). ``AlterTopicConfig`` merges the request into the
  settings the leader has and proposes them with the ``config_revision``
  it read; a change that raced it is retried from fresh settings.
- ``CompactTopic`` and the compaction figures of ``DescribeTopic`` are
  answered by the node that takes the call, asking each partition's
  leader's NodeAdmin with its own proof (compaction.py), after checking
  here that the topic is the caller's and compacted (``NOT_COMPACTED``).
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

from cluster.audit.call_notes import note_created_key
from cluster.controller import (
    AlterTopicConfig,
    ApplyResult,
    CreateTenant,
    CreateTopic,
    DecommissionNode,
    DeleteTenant,
    DeleteTopic,
    PlacementError,
    Rejected,
    RejectReason,
    Topic,
    encode_command,
    issue_api_key,
    place_partitions,
)
from cluster.controller.commands import Command
from cluster.controller.model import (
    check_partitions,
    check_replication_factor,
    check_tenant_name,
    check_topic_name,
)
from cluster.controller_replica import ControllerReplica
from cluster.frontend.auth import unknown_tenant
from cluster.frontend.compaction import LeaderAsker
from cluster.frontend.forwarding import Forwarder, may_forward
from cluster.frontend.front_door import current_caller
from cluster.frontend.grpc_errors import ServiceError, shown
from cluster.frontend.internal_topics import INTERNAL_PREFIX, check_writable
from cluster.frontend.node_stats import NodeStatsGatherer, nodes_page
from cluster.frontend.tenant_admin import TenantAdmin, TenantUsageSource
from cluster.frontend.topic_settings import (
    altered_config,
    check_alter_request,
    config_from_create,
    describe_settings,
)
from cluster.frontend.who_am_i import who_am_i
from partitions.replica_errors import ReplicaError
from raftlog.v1 import admin_pb2, admin_pb2_grpc, headers
from raftlog.v1.reasons import Reason

METADATA_INDEX_KEY = headers.METADATA_INDEX
"""Trailing metadata of a metadata change: the controller index it was
applied at (read-your-writes, see ``AdminService._change``)."""
READ_YOUR_WRITES_WAIT_S = 5.0
ALTER_ATTEMPTS = 3
"""Proposals an alter makes when concurrent changes keep beating it."""
MAX_COMPACT_WAIT_S = 60.0
"""CompactTopic with wait and no deadline waits this long at most."""
DEADLINE_MARGIN_S = 0.5

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
    R.INVALID_QUOTA: C.INVALID_ARGUMENT,
    R.INVALID_KEY_SCOPE: C.INVALID_ARGUMENT,
    R.QUOTA_EXCEEDED: C.RESOURCE_EXHAUSTED,
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
        leaders: LeaderAsker | None = None,
        usage: TenantUsageSource | None = None,
    ) -> None:
        """``node_stats``: how ``GetNodeStats`` asks the nodes; ``leaders``:
        how ``CompactTopic`` and ``DescribeTopic`` reach partition leaders
        (a node always gives both; without ``node_stats`` the call answers
        ``UNAVAILABLE``, without ``leaders`` compaction is unavailable and
        descriptions carry no compaction figures); ``usage``: what
        ``DescribeTenant`` reports beyond the metadata's counts (none:
        counts only)."""
        self._node_id = node_id
        self._controller = controller
        self._leader_of = leader_of
        self._forwarder = forwarder
        self._node_stats = node_stats
        self._leaders = leaders
        self._tenants = TenantAdmin(controller, self._change, self._propose, usage)

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
            note_created_key(issued.key_id)
            return admin_pb2.CreateTenantResponse(
                tenant=admin_pb2.Tenant(name=request.name),
                api_key=admin_pb2.ApiKey(
                    key_id=issued.key_id, tenant=request.name, clear_text=issued.clear_text
                ),
            )

        answer = await self._change(context, "CreateTenant", request, work)
        note_created_key(answer.api_key.key_id)  # forwarded: the leader's work noted nothing here
        return answer

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

    # --- quotas and API keys (tenant_admin.py) -----------------------------------

    async def SetTenantQuota(
        self, request: admin_pb2.SetTenantQuotaRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetTenantQuotaResponse:
        return await self._tenants.set_tenant_quota(request, context)

    async def DescribeTenant(
        self, request: admin_pb2.DescribeTenantRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeTenantResponse:
        return await self._tenants.describe_tenant(request, context)

    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateApiKeyResponse:
        return await self._tenants.create_api_key(request, context)

    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RevokeApiKeyResponse:
        return await self._tenants.revoke_api_key(request, context)

    async def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListApiKeysResponse:
        return await self._tenants.list_api_keys(request, context)

    async def RotateApiKey(
        self, request: admin_pb2.RotateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RotateApiKeyResponse:
        return await self._tenants.rotate_api_key(request, context)

    # --- topics ----------------------------------------------------------------

    def _describe(self, topic: Topic, *, assignments: bool) -> admin_pb2.TopicDescription:
        described = admin_pb2.TopicDescription(
            name=topic.name,
            partitions=topic.partitions,
            replication_factor=topic.replication_factor,
            revision=topic.revision,
        )
        describe_settings(described, topic)
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
        # The request's own shape, before the call goes anywhere.
        if problem := check_topic_name(request.name):
            raise _bad(Reason.INVALID_NAME, problem)
        check_writable(current_caller().tenant, request.name, current_caller().is_operator)
        if request.partitions < 1:
            raise _bad(Reason.INVALID_PARTITIONS, "a topic needs at least 1 partition (--partitions N)")
        # The count's own bounds only: the tenant's quota is weighed on the leader.
        if rejected := check_partitions(request.partitions, 0, 0, tenant_limit=None):
            raise rejected_error(rejected)
        if request.replication_factor and (problem := check_replication_factor(request.replication_factor)):
            raise _bad(Reason.INVALID_REPLICATION_FACTOR, problem)
        config = config_from_create(request)

        async def work() -> admin_pb2.CreateTopicResponse:
            caller = current_caller()
            state = self._controller.state
            if state.topic(caller.tenant, request.name) is not None:
                raise ServiceError(
                    C.ALREADY_EXISTS,
                    Reason.TOPIC_EXISTS,
                    f"topic {shown(request.name)} already exists in this tenant",
                )
            # The tenant's quota and the cluster cap before placement:
            # placement's work grows with the partition count, and the
            # state applies the same rule again.
            if rejected := state.check_new_topic(caller.tenant, request.partitions):
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
                    config.retention_ms,
                    config.retention_bytes,
                    assignment,
                    config.cleanup_policy,
                    config.min_compaction_lag_ms,
                    config.delete_retention_ms,
                    config.max_compaction_lag_ms,
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
        check_writable(current_caller().tenant, request.name, current_caller().is_operator)

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
        described = self._describe(topic, assignments=True)
        if topic.config.compacted and self._leaders is not None:
            leaders = {a.raft_group: a.leader for a in described.assignments}
            figures = await self._leaders.figures(leaders)
            for a in described.assignments:
                reported = figures.get(a.raft_group)
                if reported is not None and reported.cleaned_offset >= 0:
                    a.cleaned_offset = reported.cleaned_offset
                    a.compacted_bytes = reported.compacted_bytes
        return admin_pb2.DescribeTopicResponse(topic=described)

    async def AlterTopicConfig(
        self, request: admin_pb2.AlterTopicConfigRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.AlterTopicConfigResponse:
        if check_topic_name(request.name):  # no such name can exist
            raise _not_found_topic(request.name)
        check_writable(current_caller().tenant, request.name, current_caller().is_operator)
        check_alter_request(request)

        async def work() -> admin_pb2.AlterTopicConfigResponse:
            tenant = current_caller().tenant
            for attempt in range(ALTER_ATTEMPTS):
                topic = self._controller.state.topic(tenant, request.name)
                if topic is None:
                    raise _not_found_topic(request.name)
                config = altered_config(topic.config, request)
                command = AlterTopicConfig(tenant, topic.name, topic.revision, topic.config_revision, config)
                result = await self._controller.submit(encode_command(command))
                if isinstance(result, Rejected):
                    # Another change won the race: merge into its settings.
                    if result.reason is R.STALE_REVISION and attempt + 1 < ALTER_ATTEMPTS:
                        continue
                    raise rejected_error(result)
                break
            altered = self._controller.state.topic(tenant, request.name)
            assert altered is not None
            return admin_pb2.AlterTopicConfigResponse(topic=self._describe(altered, assignments=False))

        return await self._change(context, "AlterTopicConfig", request, work)

    async def CompactTopic(
        self, request: admin_pb2.CompactTopicRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CompactTopicResponse:
        # Answered here from this node's metadata and routing: the passes
        # are the partition leaders' business, not the controller's.
        topic = self._controller.state.topic(current_caller().tenant, request.name)
        if topic is None:
            raise _not_found_topic(request.name)
        if not topic.config.compacted:
            raise ServiceError(
                C.FAILED_PRECONDITION,
                Reason.NOT_COMPACTED,
                f"topic {shown(request.name)} has cleanup_policy {topic.cleanup_policy!r}: only a compacted "
                "topic compacts; alter it to cleanup_policy compact (or compact,delete) first",
                metadata={"cleanup_policy": topic.cleanup_policy},
            )
        if self._leaders is None:
            raise ServiceError(
                C.UNAVAILABLE,
                Reason.COMPACTION_UNAVAILABLE,
                "this node cannot reach the leaders; ask another",
            )
        wait_s = 0.0
        if request.wait:
            remaining = context.time_remaining()
            wait_s = MAX_COMPACT_WAIT_S if remaining is None else min(MAX_COMPACT_WAIT_S, remaining)
            wait_s = max(0.0, wait_s - DEADLINE_MARGIN_S)
        answers = await self._leaders.compact({g: self._leader_of(g) for g in topic.groups}, wait_s)
        failed = [(p, answers[g]) for p, g in enumerate(topic.groups) if answers[g].error]
        if failed:
            listed = ", ".join(f"{p} ({a.error})" for p, a in failed[:10])
            raise ServiceError(
                C.UNAVAILABLE,
                Reason.COMPACTION_UNAVAILABLE,
                f"no compaction pass started on partition(s) {listed} of {shown(request.name)}: "
                "no leader known or it did not answer; retry (passes that did start run on)",
                metadata={"partitions": ",".join(str(p) for p, _ in failed)},
            )
        response = admin_pb2.CompactTopicResponse()
        for partition, group in enumerate(topic.groups):
            a = answers[group]
            response.partitions.add(
                partition=partition,
                leader=a.leader,
                target_offset=a.target_offset,
                cleaned_offset=a.cleaned_offset,
                done=a.nothing_to_compact or a.cleaned_offset >= a.target_offset,
                nothing_to_compact=a.nothing_to_compact,
            )
        return response

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

    async def WhoAmI(
        self, request: admin_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.WhoAmIResponse:
        return who_am_i(current_caller())
