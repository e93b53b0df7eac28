"""``NodeQuotas``: the quota pieces one node runs, built and wired once
(cluster/node.py holds one): the service, the front door's stage, the
metered ``LogService``, the usage poller and the NodeAdmin answer.

Consumer groups are counted through the node's ``GroupService`` handlers
(``describe_group`` says whether a group exists; ``list_groups`` lists a
tenant's groups on the coordinator partitions this node leads): the same
answers a client gets, so the count is what ``ListGroups`` shows, summed
over nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cluster.controller_replica import ControllerReplica
from cluster.frontend.forwarding import ChannelCache
from cluster.frontend.grpc_errors import ServiceError
from cluster.groups.service import GroupService
from cluster.quotas.fair_scheduler import FairScheduler
from cluster.quotas.node_view import NodeQuotaView
from cluster.quotas.quota_service import QuotaService
from cluster.quotas.quota_stage import MeteredLogService, QuotaStage
from cluster.quotas.tenant_metrics import TenantMetrics
from cluster.quotas.usage import DESCRIBED_AS, USAGE_FIELDS, TenantUsage
from cluster.quotas.usage_poller import Prove, UsagePoller
from partitions.replica_host import ReplicaHost
from raftlog.internal.v1 import node_admin_pb2
from raftlog.v1 import groups_pb2
from raftlog.v1.reasons import Reason

__all__ = ["NodeQuotas", "usage_figures"]

_LIST_PAGE = 1000


def usage_figures(usage: TenantUsage) -> dict[str, int]:
    """``usage`` as ``TenantUsageSource`` reports it (``MEASURED_USAGE``
    names: every ``USAGE_FIELDS`` figure, renamed by ``DESCRIBED_AS``; rates
    rounded to whole units per second)."""
    return {DESCRIBED_AS.get(name, name): round(getattr(usage, name)) for name in USAGE_FIELDS}


class NodeQuotas:
    """Build before the servers; ``groups`` is read when first needed (the
    node builds its GroupService after the front door); ``channels``: how
    to reach other nodes' NodeAdmin (the node's dialer); ``metrics``: the
    node's tenant figures (None: no ``metrics_port``)."""

    def __init__(
        self,
        node_id: int,
        controller: ControllerReplica,
        host: ReplicaHost,
        groups: Callable[[], GroupService | None],
        prove: Prove,
        dial: Mapping[int, str] | None = None,
        channels: ChannelCache | None = None,
        metrics: TenantMetrics | None = None,
    ) -> None:
        self._groups = groups
        self.view = NodeQuotaView(controller, host)
        self.service = QuotaService(
            node_id,
            self.view,
            group_exists=self._group_exists,
            group_names=self._group_names,
            metrics=metrics,
        )
        self.stage = QuotaStage(self.service, self.view, FairScheduler())
        self.poller = UsagePoller(self.service, controller, prove, dial, channels)

    def log_service(self, *args: Any, **kwargs: Any) -> MeteredLogService:
        """The node's ``LogService`` (same arguments), charging fetch bytes."""
        return MeteredLogService(self.service, self.view, *args, **kwargs)

    async def usage(self, tenant: str) -> dict[str, int]:
        """``tenant``'s usage over the cluster, as DescribeTenant shows it
        (``cluster.frontend.tenant_admin.TenantUsageSource``; rates rounded
        to whole units per second)."""
        return usage_figures(await self.service.usage(tenant))

    async def tenant_usage_report(
        self, request: node_admin_pb2.TenantUsageRequest
    ) -> node_admin_pb2.TenantUsageReport:
        """What NodeAdmin.TenantUsage answers ``request``."""
        return await self.poller.answer(request)

    async def run(self) -> None:
        await self.poller.run()

    async def close(self) -> None:
        await self.poller.close()

    async def _group_exists(self, tenant: str, group: str) -> bool | None:
        groups = self._groups()
        if groups is None:
            return None
        try:
            await groups.describe_group(tenant, groups_pb2.DescribeGroupRequest(group=group))
        except ServiceError as error:
            # Not found: it does not exist. Anything else (not the
            # coordinator, a bad name): the call itself will say so.
            return False if error.info.reason == Reason.GROUP_NOT_FOUND else None
        return True

    async def _group_names(self, tenant: str) -> set[str]:
        groups = self._groups()
        if groups is None:
            return set()
        names: set[str] = set()
        token = ""
        while True:
            try:
                page = await groups.list_groups(
                    tenant, groups_pb2.ListGroupsRequest(page_size=_LIST_PAGE, page_token=token)
                )
            except ServiceError:
                return names  # a coordinator partition changed hands meanwhile: the next poll counts it
            names.update(g.group for g in page.groups)
            token = page.next_page_token
            if not token:
                return names
