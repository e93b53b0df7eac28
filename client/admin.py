"""``Admin``: tenants, API keys, topics, nodes (and what each is doing),
cluster status, and a look at consumer groups.

Any node answers (it forwards changes to the metadata controller's leader);
``Admin`` sends every call through the SDK's call path
(client/leader_calls.py, ``NodeRoute``): the node that answered last, else
the bootstrap nodes in turn (a node that timed out or was unreachable
last), moving on from one that fails with a retriable error after
``max(backoff, retry_after)``, until ``timeout_s``; each attempt waits at
most ``request_timeout_s``.
Answers are the ``raftlog.v1.admin_pb2`` messages (documented in
proto/raftlog/v1/admin.proto); list methods walk every page. The group
calls are the exception: ``describe_group`` goes to the group's coordinator
(following ``NOT_COORDINATOR``), ``list_groups`` asks every node; they
answer ``raftlog.v1.groups_pb2`` messages.

Invariants:

- Only retriable failures (UNAVAILABLE, NO_CONTROLLER, BACKPRESSURE,
  timeouts) are tried again, on the next node; everything else is raised at once as the
  ``RaftlogError`` the server's reason maps to (client/errors.py).
- A change whose answer was lost (the node went away mid-call) may have
  happened: retrying a create then reports ``AlreadyExistsError``.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from client.auth import call_metadata
from client.errors import RaftlogError, UnavailableError, from_rpc_error
from client.group_member import GroupRpc
from client.leader_calls import LeaderCalls, NodeRoute, UnaryCall
from client.metadata import Backoff, ChannelPool, MetadataCache, parse_bootstrap
from raftlog.v1 import admin_pb2, admin_pb2_grpc, groups_pb2, metadata_pb2

__all__ = ["Admin"]

T = TypeVar("T")
PAGE_SIZE = 500
QUOTA_RESET = -1
"""In a ``SetTenantQuota`` request: this quota goes back to the cluster default."""
# GetMetadata answers with every node and the topics asked for, all of them
# when none is named; a name no topic has ("") asks for the nodes only.
_NODES_ONLY = metadata_pb2.GetMetadataRequest(topics=[""])


class Admin:
    """``async with Admin(bootstrap, api_key=...) as admin: ...``"""

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        api_key: str | None = None,
        tenant: str | None = None,
        timeout_s: float = 30.0,
        request_timeout_s: float = 10.0,
        address_map: Mapping[str, str] | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
    ) -> None:
        self._addresses = parse_bootstrap(bootstrap)
        # tls_ca: the cluster CA (None: $RAFTLOG_TLS_CA or plaintext; client/auth.py).
        self._pool = ChannelPool(api_key=api_key, tenant=tenant, address_map=address_map, tls_ca=tls_ca)
        self._timeout_s = timeout_s
        self._request_timeout_s = request_timeout_s
        # Only its candidate list is used: the bootstrap nodes, suspects last.
        self._nodes = MetadataCache(self._addresses, self._pool, request_timeout_s=request_timeout_s)
        self._calls = LeaderCalls(self._nodes, Backoff(0.05, 1.0), attempt_timeout_s=request_timeout_s)
        self._route = NodeRoute(self._nodes)
        self._group_rpc = GroupRpc(self._pool, self._calls)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._pool.close()

    async def _call(
        self, method: Callable[[admin_pb2_grpc.AdminServiceStub], Callable[..., UnaryCall[T]]], request: Any
    ) -> T:
        def invoke(address: str, timeout: float) -> UnaryCall[T]:
            return method(self._pool.admin(address))(request, timeout=timeout)

        try:
            return await self._calls.call(
                self._route, invoke, deadline=asyncio.get_running_loop().time() + self._timeout_s
            )
        except RaftlogError as error:
            if not error.retriable:
                raise
            raise UnavailableError(
                f"no node could answer within {self._timeout_s:.0f}s (asked {', '.join(self._addresses)}); "
                f"last error: {error}",
                code=error.code,
            ) from None

    async def _list(
        self,
        method: Callable[[admin_pb2_grpc.AdminServiceStub], Callable[..., UnaryCall[Any]]],
        request_type: Callable[..., Any],
        items: Callable[[Any], Iterable[T]],
    ) -> list[T]:
        """Every item of a paginated list call: one ``request_type(page_size,
        page_token)`` per page, ``items(response)`` its items."""
        found: list[T] = []
        token = ""
        while True:
            response: Any = await self._call(method, request_type(page_size=PAGE_SIZE, page_token=token))
            found.extend(items(response))
            token = response.next_page_token
            if not token:
                return found

    # --- tenants and keys --------------------------------------------------------

    async def create_tenant(self, name: str) -> admin_pb2.CreateTenantResponse:
        """Create a tenant; the answer carries its first API key in clear."""
        return await self._call(lambda s: s.CreateTenant, admin_pb2.CreateTenantRequest(name=name))

    async def delete_tenant(self, name: str) -> None:
        await self._call(lambda s: s.DeleteTenant, admin_pb2.DeleteTenantRequest(name=name))

    async def list_tenants(self) -> list[admin_pb2.Tenant]:
        return await self._list(lambda s: s.ListTenants, admin_pb2.ListTenantsRequest, lambda r: r.tenants)

    async def set_tenant_quota(
        self,
        tenant: str,
        *,
        produce_bytes_s: int | None = None,
        fetch_bytes_s: int | None = None,
        requests_s: int | None = None,
        storage_bytes: int | None = None,
        partitions: int | None = None,
        topics: int | None = None,
        groups: int | None = None,
        streams: int | None = None,
        reset: Iterable[str] = (),
    ) -> admin_pb2.SetTenantQuotaResponse:
        """Change ``tenant``'s quotas (operator key): the limits given are
        set (0 allows nothing), the names in ``reset`` (e.g.
        ``"storage_bytes"``) go back to the cluster default, the rest stay.
        Rates are cluster-wide per second. Answers the tenant's resulting
        ``effective`` quota (unset: no limit) and its ``overrides``. Raises
        ``InvalidRequestError`` (``INVALID_QUOTA``) for a negative value,
        ``NotFoundError`` (``UNKNOWN_TENANT``); nothing changes then."""
        given = {
            "produce_bytes_s": produce_bytes_s,
            "fetch_bytes_s": fetch_bytes_s,
            "requests_s": requests_s,
            "storage_bytes": storage_bytes,
            "partitions": partitions,
            "topics": topics,
            "groups": groups,
            "streams": streams,
        }
        quota = admin_pb2.QuotaSettings(**{k: v for k, v in given.items() if v is not None})
        for name in reset:
            if name not in given:
                raise ValueError(f"reset: no quota named {name!r}; one of {', '.join(given)}")
            if given[name] is not None:
                raise ValueError(f"quota {name} is both set and reset")
            setattr(quota, name, QUOTA_RESET)
        request = admin_pb2.SetTenantQuotaRequest(tenant=tenant, quota=quota)
        response: admin_pb2.SetTenantQuotaResponse = await self._call(lambda s: s.SetTenantQuota, request)
        return response

    async def describe_tenant(self, tenant: str = "") -> admin_pb2.DescribeTenantResponse:
        """A tenant's quotas (``effective``, ``overrides``) and ``usage``
        ("": the caller's tenant). An operator key may ask about any tenant,
        a tenant admin key about its own."""
        response: admin_pb2.DescribeTenantResponse = await self._call(
            lambda s: s.DescribeTenant, admin_pb2.DescribeTenantRequest(tenant=tenant)
        )
        return response

    async def create_api_key(
        self,
        tenant: str | None,
        *,
        role: str = "",
        produce_prefixes: Iterable[str] = (),
        consume_prefixes: Iterable[str] = (),
        group_prefixes: Iterable[str] = (),
        ttl_seconds: int = 0,
    ) -> admin_pb2.ApiKey:
        """A new key for ``tenant`` (None: an operator key; "": the caller's
        tenant), with its clear text. ``role`` "admin" (the default for a
        tenant key) manages the tenant; "client" may only produce to the
        topics starting with one of ``produce_prefixes``, consume those of
        ``consume_prefixes`` and use the groups of ``group_prefixes`` ("" in
        a list: every name). ``ttl_seconds``: the key expires that long after
        it is made (0: never). A tenant admin key may make keys for its own
        tenant. Raises ``InvalidRequestError`` (``INVALID_KEY_SCOPE``) for a
        scope that does not fit the role."""
        request = admin_pb2.CreateApiKeyRequest(
            tenant=tenant or "",
            operator=tenant is None,
            role=role,
            produce_prefixes=list(produce_prefixes),
            consume_prefixes=list(consume_prefixes),
            group_prefixes=list(group_prefixes),
            ttl_seconds=ttl_seconds,
        )
        response: admin_pb2.CreateApiKeyResponse = await self._call(lambda s: s.CreateApiKey, request)
        return response.api_key

    async def list_api_keys(self, tenant: str | None = "") -> list[admin_pb2.ApiKey]:
        """Keys (ids, roles, prefixes, expiry; never the keys): ``tenant``'s
        ("": the caller's), None: the operator keys (operator key). A tenant
        key always lists its own tenant's."""
        return await self._list(
            lambda s: s.ListApiKeys,
            functools.partial(admin_pb2.ListApiKeysRequest, tenant=tenant or "", operator=tenant is None),
            lambda r: r.api_keys,
        )

    async def revoke_api_key(self, key_id: str) -> None:
        await self._call(lambda s: s.RevokeApiKey, admin_pb2.RevokeApiKeyRequest(key_id=key_id))

    async def rotate_api_key(
        self, key_id: str, grace_seconds: int = 3600, *, ttl_seconds: int = 0
    ) -> admin_pb2.RotateApiKeyResponse:
        """A new key (``api_key``, with its clear text) with ``key_id``'s
        tenant and scope, expiring ``ttl_seconds`` after it is made (0:
        never); the old key keeps working ``grace_seconds`` more
        (``old_expires_at_ms``), never longer than it already would."""
        request = admin_pb2.RotateApiKeyRequest(
            key_id=key_id, grace_seconds=grace_seconds, ttl_seconds=ttl_seconds
        )
        response: admin_pb2.RotateApiKeyResponse = await self._call(lambda s: s.RotateApiKey, request)
        return response

    # --- topics ------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int = 0,
        *,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
        cleanup_policy: str | None = None,
        min_compaction_lag_ms: int | None = None,
        delete_retention_ms: int | None = None,
        max_compaction_lag_ms: int | None = None,
    ) -> admin_pb2.TopicDescription:
        """Create a topic in the caller's tenant (replication factor 0:
        three, or every live node if there are fewer). A setting left None
        takes its default: ``cleanup_policy`` "delete" ("compact" or
        "compact,delete" for a compacted topic), ``min_compaction_lag_ms``
        0, ``delete_retention_ms`` 24 h, no ``max_compaction_lag_ms``."""
        request = admin_pb2.CreateTopicRequest(
            name=name,
            partitions=partitions,
            replication_factor=replication_factor,
            retention_ms=retention_ms,
            retention_bytes=retention_bytes,
            cleanup_policy=cleanup_policy,
            min_compaction_lag_ms=min_compaction_lag_ms,
            delete_retention_ms=delete_retention_ms,
            max_compaction_lag_ms=max_compaction_lag_ms,
        )
        response: admin_pb2.CreateTopicResponse = await self._call(lambda s: s.CreateTopic, request)
        return response.topic

    async def delete_topic(self, name: str) -> None:
        await self._call(lambda s: s.DeleteTopic, admin_pb2.DeleteTopicRequest(name=name))

    async def list_topics(self) -> list[admin_pb2.TopicDescription]:
        return await self._list(lambda s: s.ListTopics, admin_pb2.ListTopicsRequest, lambda r: r.topics)

    async def describe_topic(self, name: str) -> admin_pb2.TopicDescription:
        response: admin_pb2.DescribeTopicResponse = await self._call(
            lambda s: s.DescribeTopic, admin_pb2.DescribeTopicRequest(name=name)
        )
        return response.topic

    async def alter_topic_config(
        self,
        name: str,
        *,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
        cleanup_policy: str | None = None,
        min_compaction_lag_ms: int | None = None,
        delete_retention_ms: int | None = None,
        max_compaction_lag_ms: int | None = None,
        reset: Iterable[str] = (),
    ) -> admin_pb2.TopicDescription:
        """Change the settings given (None: keep); ``reset`` names settings
        to return to their defaults (e.g. ``"retention_ms"``: keep forever).
        Returns the topic with its new settings. Raises
        ``InvalidRequestError`` (``INVALID_TOPIC_CONFIG``,
        ``INVALID_RETENTION``) for a bad value: nothing changed then."""
        request = admin_pb2.AlterTopicConfigRequest(
            name=name,
            retention_ms=retention_ms,
            retention_bytes=retention_bytes,
            cleanup_policy=cleanup_policy,
            min_compaction_lag_ms=min_compaction_lag_ms,
            delete_retention_ms=delete_retention_ms,
            max_compaction_lag_ms=max_compaction_lag_ms,
            reset=list(reset),
        )
        response: admin_pb2.AlterTopicConfigResponse = await self._call(lambda s: s.AlterTopicConfig, request)
        return response.topic

    async def compact_topic(self, name: str, *, wait: bool = False) -> list[admin_pb2.PartitionCompaction]:
        """Ask every partition's leader to run a compaction pass now. With
        ``wait``, the answer comes once each leader's own copy is cleaned up
        to its pass's target (``done``), or, at the latest, shortly before
        the request timeout (``done`` False for the partitions not there
        yet). Raises ``PreconditionFailedError`` (``NOT_COMPACTED``) for a
        topic whose policy is "delete"; ``UnavailableError``
        (``COMPACTION_UNAVAILABLE``) when a partition's leader could not be
        reached (retry: a pass is harmless to repeat)."""
        response: admin_pb2.CompactTopicResponse = await self._call(
            lambda s: s.CompactTopic, admin_pb2.CompactTopicRequest(name=name, wait=wait)
        )
        return list(response.partitions)

    # --- nodes and cluster -------------------------------------------------------

    async def list_nodes(self) -> list[admin_pb2.NodeDescription]:
        return await self._list(lambda s: s.ListNodes, admin_pb2.ListNodesRequest, lambda r: r.nodes)

    async def decommission_node(self, node_id: int) -> None:
        await self._call(lambda s: s.DecommissionNode, admin_pb2.DecommissionNodeRequest(node_id=node_id))

    async def cluster_status(self) -> admin_pb2.GetClusterStatusResponse:
        return await self._call(lambda s: s.GetClusterStatus, admin_pb2.GetClusterStatusRequest())

    async def who_am_i(
        self, *, api_key: str | None = None, tenant: str | None = None
    ) -> admin_pb2.WhoAmIResponse:
        """Who a key is: its id, whether it is an operator key, and the
        tenant its calls act in (an operator key's: ``tenant``, else
        ``default``). Any key may ask. By default the key this ``Admin`` was
        made with; ``api_key`` (and ``tenant``) ask about another key for
        this one call, so a service checking its own callers' keys needs one
        ``Admin`` for all of them. An unknown or revoked key raises
        ``AuthenticationError``; a tenant key naming another tenant,
        ``NotFoundError`` (``UNKNOWN_TENANT``)."""
        metadata = call_metadata(api_key, tenant) if api_key else None
        return await self._call(
            lambda s: functools.partial(s.WhoAmI, metadata=metadata), admin_pb2.WhoAmIRequest()
        )

    async def get_node_stats(self, node_ids: Iterable[int] = ()) -> list[admin_pb2.NodeStats]:
        """What each node is doing (replicas, leaders, CPU, memory, Raft
        counters), by node id: those named, or every registered node. The
        node answering asks each node with a short timeout, so a node that
        is down or paused comes back with ``reachable`` False rather than
        failing the call (operator key)."""
        wanted = sorted(set(node_ids))
        return await self._list(
            lambda s: s.GetNodeStats,
            functools.partial(admin_pb2.GetNodeStatsRequest, node_ids=wanted),
            lambda r: r.nodes,
        )

    # --- consumer groups ---------------------------------------------------------

    async def describe_group(self, group: str) -> groups_pb2.DescribeGroupResponse:
        """The group as its coordinator sees it (members, assignments, epochs).
        Routed as the consumer's group calls are (client/group_member.py:
        ``NOT_COORDINATOR`` answers are followed), retried until ``timeout_s``."""
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        return await self._group_rpc.describe(groups_pb2.DescribeGroupRequest(group=group), deadline=deadline)

    async def _node_addresses(self) -> list[str]:
        """Every node's address, from a node that answers; the bootstrap
        list when none does (or it lists no node)."""

        def invoke(address: str, timeout: float) -> UnaryCall[metadata_pb2.GetMetadataResponse]:
            call: UnaryCall[metadata_pb2.GetMetadataResponse] = self._pool.metadata(address).GetMetadata(
                _NODES_ONLY, timeout=timeout
            )
            return call

        try:
            answer = await self._calls.call(
                self._route, invoke, deadline=asyncio.get_running_loop().time() + self._timeout_s
            )
        except RaftlogError as error:
            if not error.retriable:
                raise
            return list(self._addresses)
        return [n.address for n in answer.nodes] or list(self._addresses)

    async def list_groups(self) -> list[groups_pb2.GroupSummary]:
        """Every group of the caller's tenant: each node lists the groups it
        coordinates, so every node is asked and the answers merged."""
        groups: dict[str, groups_pb2.GroupSummary] = {}
        for address in await self._node_addresses():
            stub = self._pool.groups(address)
            token = ""
            while True:
                try:
                    page: groups_pb2.ListGroupsResponse = await stub.ListGroups(
                        groups_pb2.ListGroupsRequest(page_size=PAGE_SIZE, page_token=token),
                        timeout=self._request_timeout_s,
                    )
                except grpc.aio.AioRpcError as exc:
                    error = from_rpc_error(exc)
                    if not error.retriable:
                        raise error from None
                    break  # that node is down: its groups move to other coordinators
                for summary in page.groups:
                    groups[summary.group] = summary
                token = page.next_page_token
                if not token:
                    break
        return [groups[name] for name in sorted(groups)]
