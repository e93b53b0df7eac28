"""``NodeQuotaView``: what the quota service reads of a running node — the
applied metadata (quotas, the tenant's partitions, the nodes) and this
node's replicas (who leads, how many bytes they hold).

Every answer is read from memory without awaiting: the quota service calls
it on the hot path (``group_of`` and ``leads`` per produce and fetch, the
rest at most every ``quota_service.RECOMPUTE_S`` per tenant).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from cluster.controller_replica import ControllerReplica
from cluster.quotas.quota_service import Limits
from partitions.replica_host import ReplicaHost

__all__ = ["NodeQuotaView"]

_PAGE = 1000


class NodeQuotaView:
    """``quota_service.QuotaView`` over a node's controller replica and host."""

    def __init__(self, controller: ControllerReplica, host: ReplicaHost) -> None:
        self._controller = controller
        self._host = host

    @property
    def version(self) -> int:
        return self._controller.version

    def quota(self, tenant: str) -> Limits:
        return self._controller.state.effective_quota(tenant)

    def tenants(self) -> Iterator[str]:
        state = self._controller.state
        token = ""
        while True:
            page = state.list_tenants(_PAGE, token)
            yield from (t.name for t in page.items)
            token = page.next_page_token
            if not token:
                return

    def tenant_groups(self, tenant: str) -> Sequence[int]:
        return [g for topic in self._controller.state.topics_for(tenant) for g in topic.groups]

    def group_of(self, tenant: str, topic: str, partition: int) -> int | None:
        found = self._controller.state.partition(tenant, topic, partition)
        return found.group if found is not None else None

    def leads(self, group: int) -> bool:
        replica = self._host.replica(group)
        return replica is not None and replica.is_leader

    def stored_bytes(self, group: int) -> int:
        replica = self._host.replica(group)
        return replica.retained_bytes if replica is not None else 0

    def term(self, group: int) -> int:
        replica = self._host.replica(group)
        return replica.term if replica is not None else 0

    def node_count(self) -> int:
        return len(self._controller.state.nodes())
