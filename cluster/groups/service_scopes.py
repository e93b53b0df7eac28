"""The gRPC face of ``raftlog.v1.GroupService``: who is calling and what
their key may touch, then the handler.

``GroupServiceMethods`` is the base of ``GroupService`` (cluster/groups/service.py).
It implements the gRPC methods (``JoinGroup``, ``Heartbeat``...); each checks
the caller's key, obtains the caller's tenant and hands both the tenant and
the request to the handler of the same name (``join_group(tenant,
request)``...), which ``GroupService`` implements over the coordinator.

Invariants:

- Handlers take the caller's tenant as a parameter; the gRPC methods obtain
  it with ``tenant_of(context)``, by default the tenant of the caller the
  front door admitted (``front_door.caller_tenant``). A test serving the
  servicer on its own may pass another.
- A client key (cluster/frontend/key_scope.py) is checked here, before the
  handler runs and so before any coordinator partition is loaded: the group
  must match its group prefixes, and the topics it subscribes to or commits
  for its consume prefixes (by name: a subscription may name a topic not
  created yet), else ``PERMISSION_DENIED KEY_SCOPE`` and nothing changes.
  ``ListGroups`` shows only the groups it may use,
  ``FetchCommittedOffsets`` of a whole group only the topics it may consume,
  and ``DescribeGroup`` only those topics of each member's subscription,
  assignment, revoking and target lists (other members, keyed otherwise,
  may consume topics this key may not even name).
  The key comes from ``principal_of()``, by default the caller the front
  door admitted (``door_principal``).
- Nothing here touches a coordinator: a refused call has changed nothing.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from cluster.controller.model import Principal
from cluster.frontend.front_door import current_caller
from cluster.frontend.key_scope import TopicAction, check_group, check_topics_by_name
from raftlog.v1 import groups_pb2, groups_pb2_grpc

__all__ = ["GroupServiceMethods", "TenantOf", "door_principal"]

T = TypeVar("T")
Request = TypeVar("Request")

TenantOf = Callable[[grpc.aio.ServicerContext], Awaitable[str]]
"""The caller's tenant, or a ``ServiceError``."""


def door_principal() -> Principal:
    """The key of the call being handled, as the front door admitted it."""
    return current_caller().principal


def _keep_topics(member: groups_pb2.MemberDescription, may_consume: Callable[[str], bool]) -> None:
    """Drop from ``member``'s subscription and partition lists every topic
    ``may_consume`` refuses (a client key learns nothing of the topics its
    consume prefixes do not cover, not even their names)."""
    kept = [t for t in member.topics if may_consume(t)]
    del member.topics[:]
    member.topics.extend(kept)
    for listed in (member.assignment, member.revoking, member.target):
        visible = [p for p in listed if may_consume(p.topic)]
        del listed[:]
        listed.extend(visible)


class GroupServiceMethods(groups_pb2_grpc.GroupServiceServicer, metaclass=abc.ABCMeta):
    """The gRPC methods: the caller's key scope and tenant, then the handler."""

    def __init__(self, tenant_of: TenantOf, principal_of: Callable[[], Principal]) -> None:
        self._tenant_of = tenant_of
        self._principal_of = principal_of

    # --- the handlers (GroupService) ------------------------------------------------------

    @abc.abstractmethod
    async def join_group(
        self, tenant: str, request: groups_pb2.JoinGroupRequest
    ) -> groups_pb2.JoinGroupResponse: ...

    @abc.abstractmethod
    async def heartbeat(
        self, tenant: str, request: groups_pb2.HeartbeatRequest
    ) -> groups_pb2.HeartbeatResponse: ...

    @abc.abstractmethod
    async def leave_group(
        self, tenant: str, request: groups_pb2.LeaveGroupRequest
    ) -> groups_pb2.LeaveGroupResponse: ...

    @abc.abstractmethod
    async def commit_offsets(
        self, tenant: str, request: groups_pb2.CommitOffsetsRequest
    ) -> groups_pb2.CommitOffsetsResponse: ...

    @abc.abstractmethod
    async def fetch_committed_offsets(
        self, tenant: str, request: groups_pb2.FetchCommittedOffsetsRequest
    ) -> groups_pb2.FetchCommittedOffsetsResponse: ...

    @abc.abstractmethod
    async def list_groups(
        self,
        tenant: str,
        request: groups_pb2.ListGroupsRequest,
        visible: Callable[[str], bool] = lambda _group: True,
    ) -> groups_pb2.ListGroupsResponse: ...

    @abc.abstractmethod
    async def describe_group(
        self, tenant: str, request: groups_pb2.DescribeGroupRequest
    ) -> groups_pb2.DescribeGroupResponse: ...

    # --- gRPC methods: the caller's key and tenant, then the handler ---------------------

    async def JoinGroup(
        self, request: groups_pb2.JoinGroupRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.JoinGroupResponse:
        principal = self._in_scope(request.group)
        check_topics_by_name(principal, request.topics, TopicAction.CONSUME)
        return await self._serve(context, self.join_group, request)

    async def Heartbeat(
        self, request: groups_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.HeartbeatResponse:
        principal = self._in_scope(request.group)
        if request.HasField("subscription"):
            check_topics_by_name(principal, request.subscription.topics, TopicAction.CONSUME)
        return await self._serve(context, self.heartbeat, request)

    async def LeaveGroup(
        self, request: groups_pb2.LeaveGroupRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.LeaveGroupResponse:
        self._in_scope(request.group)
        return await self._serve(context, self.leave_group, request)

    async def CommitOffsets(
        self, request: groups_pb2.CommitOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.CommitOffsetsResponse:
        principal = self._in_scope(request.group)
        check_topics_by_name(principal, (o.topic for o in request.offsets), TopicAction.CONSUME)
        return await self._serve(context, self.commit_offsets, request)

    async def FetchCommittedOffsets(
        self, request: groups_pb2.FetchCommittedOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.FetchCommittedOffsetsResponse:
        principal = self._in_scope(request.group)
        check_topics_by_name(principal, (p.topic for p in request.partitions), TopicAction.CONSUME)
        answer = await self._serve(context, self.fetch_committed_offsets, request)
        if principal.scope.is_client:  # the whole group asked for: only what the key may read
            kept = [o for o in answer.offsets if principal.scope.may_consume(o.topic)]
            del answer.offsets[:]
            answer.offsets.extend(kept)
        return answer

    async def ListGroups(
        self, request: groups_pb2.ListGroupsRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.ListGroupsResponse:
        scope = self._principal_of().scope
        tenant = await self._tenant_of(context)
        return await self.list_groups(tenant, request, visible=scope.may_use_group)

    async def DescribeGroup(
        self, request: groups_pb2.DescribeGroupRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.DescribeGroupResponse:
        principal = self._in_scope(request.group)
        answer = await self._serve(context, self.describe_group, request)
        if principal.scope.is_client:  # other members' topics: only those the key may read
            for member in answer.members:
                _keep_topics(member, principal.scope.may_consume)
        return answer

    def _in_scope(self, group: str) -> Principal:
        """The caller's key, once it may use ``group`` (``KEY_SCOPE``)."""
        principal = self._principal_of()
        check_group(principal, group)
        return principal

    async def _serve(
        self,
        context: grpc.aio.ServicerContext,
        handler: Callable[[str, Request], Awaitable[T]],
        request: Request,
    ) -> T:
        return await handler(await self._tenant_of(context), request)
