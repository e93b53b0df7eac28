"""Tenant usage between nodes: the NodeAdmin ``TenantUsage`` answer, and the
loop that asks every other node for it about once a second.

Storage and group quotas count over the whole cluster, but each node sees
only the partitions it leads and the groups it coordinates; and the rate
shares follow the demand every node reports (shares.py: each ask names
the report the asker holds, so the answering node knows what may be held
of its demand). So every node
asks every other node's NodeAdmin (internal: with this node's proof) for
its per-tenant figures every ``POLL_S`` while some tenant with a rate
quota has demand (here or in the last reports), every ``IDLE_POLL_S``
otherwise, and keeps the latest answers on the ``UsageBoard``; the quota
service adds its own live figures. A tenant can therefore overshoot its
storage quota by about one poll's worth of writes (up to ``IDLE_POLL_S``
when no rate-limited tenant is busy), and a group quota by the groups
created meanwhile on other coordinators.

Invariants:

- One slow or silent node never delays the others' answers: every node is
  asked at once, each ask with a ``ASK_TIMEOUT_S`` timeout; a failed ask
  leaves that node's last report, which stops counting after
  ``usage.STALE_S``.
- A node that answers as another node id is ignored (its address now
  belongs to another process).
- Every ask carries a fresh proof (a receiver accepts each proof once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import grpc

from cluster.controller_replica import ControllerReplica
from cluster.frontend.forwarding import ChannelCache
from cluster.quotas.quota_service import QuotaService
from cluster.quotas.usage import (
    ASK_TIMEOUT_S,
    DEMAND_FIELDS,
    IDLE_POLL_S,
    POLL_S,
    USAGE_FIELDS,
    Demand,
    GroupSize,
    NodeReport,
    TenantUsage,
)
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc

__all__ = ["ASK_TIMEOUT_S", "NODE_ADMIN_TENANT_USAGE", "POLL_S", "UsagePoller", "from_report", "to_report"]

log = logging.getLogger(__name__)

NODE_ADMIN_TENANT_USAGE = "/raftlog.internal.v1.NodeAdmin/TenantUsage"

Prove = Callable[[str], tuple[tuple[str, str], ...]]


def to_report(node_id: int, report: NodeReport) -> node_admin_pb2.TenantUsageReport:
    tenants = sorted(set(report.usage) | set(report.sizes) | set(report.demand))
    return node_admin_pb2.TenantUsageReport(
        node_id=node_id,
        report_id=report.report_id,
        tenants=[
            node_admin_pb2.TenantUsageEntry(
                tenant=tenant,
                **{name: getattr(report.usage.get(tenant, TenantUsage()), name) for name in USAGE_FIELDS},
                stored_groups=[
                    node_admin_pb2.StoredGroup(group=g, bytes=s.size, term=s.term, seen_ms=s.seen_ms)
                    for g, s in sorted(report.sizes.get(tenant, {}).items())
                ],
                demand=node_admin_pb2.OfferedLoad(
                    **{name: getattr(report.demand.get(tenant, Demand()), name) for name in DEMAND_FIELDS}
                ),
            )
            for tenant in tenants
        ],
    )


def from_report(report: node_admin_pb2.TenantUsageReport) -> NodeReport:
    return NodeReport(
        usage={
            e.tenant: TenantUsage(**{name: getattr(e, name) for name in USAGE_FIELDS}) for e in report.tenants
        },
        sizes={
            e.tenant: {g.group: GroupSize(g.bytes, g.term, g.seen_ms) for g in e.stored_groups}
            for e in report.tenants
            if e.stored_groups
        },
        demand={
            e.tenant: Demand(**{name: getattr(e.demand, name) for name in DEMAND_FIELDS})
            for e in report.tenants
            if e.HasField("demand")
        },
        report_id=report.report_id,
    )


class UsagePoller:
    """Run ``run()`` as one of the node's tasks; ``close()`` after it."""

    def __init__(
        self,
        service: QuotaService,
        controller: ControllerReplica,
        prove: Prove,
        dial: Mapping[int, str] | None = None,
        channels: ChannelCache | None = None,
    ) -> None:
        self._service = service
        self._controller = controller
        self._prove = prove
        self._dial = dict(dial or {})
        self._channels = channels or ChannelCache()

    async def answer(self, request: node_admin_pb2.TenantUsageRequest) -> node_admin_pb2.TenantUsageReport:
        """This node's report (what NodeAdmin.TenantUsage answers)."""
        report = await self._service.local_report(request.asker, request.held_report)
        return to_report(self._service.node_id, report)

    async def run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(POLL_S if self._service.rates_in_demand() else IDLE_POLL_S)

    async def poll_once(self) -> None:
        me = self._service.node_id
        nodes = [(n.node_id, self._dial.get(n.node_id) or n.address) for n in self._controller.state.nodes()]
        self._service.board.forget(n for n, _ in nodes)
        await asyncio.gather(*(self._ask(node, address) for node, address in nodes if node != me and address))

    async def _ask(self, node_id: int, address: str) -> None:
        stub = node_admin_pb2_grpc.NodeAdminStub(self._channels.channel(address))
        try:
            report: node_admin_pb2.TenantUsageReport = await stub.TenantUsage(
                node_admin_pb2.TenantUsageRequest(
                    asker=self._service.node_id,
                    held_report=self._service.board.report_id(node_id, self._service.now()),
                ),
                timeout=ASK_TIMEOUT_S,
                metadata=self._prove(NODE_ADMIN_TENANT_USAGE),
            )
        except grpc.aio.AioRpcError as error:
            log.debug("tenant usage from node %d: %s", node_id, error.code().name)
            return
        if report.node_id != node_id:
            return
        self._service.board.record(node_id, from_report(report), self._service.now())

    async def close(self) -> None:
        await self._channels.close()
