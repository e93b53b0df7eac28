"""Tenant quotas and fairness, charged at the front door on every node.

One job per module:

- ``token_bucket``: a rate with a burst and debt, time passed in (pure);
- ``shares``: a node's share of a tenant's cluster-wide rate, from the
  offered load every node reports (pure; the rule, why the shares never
  add up to more than the quota, and how fast they follow the traffic);
- ``usage``: rate meters, a tenant's usage figures, per-partition stored
  sizes, the board of the other nodes' reports (pure);
- ``fair_scheduler``: per-tenant queues served round-robin over a node's
  produce/fetch slots;
- ``quota_service``: the per-tenant accounting and the decisions (delay,
  refuse, count);
- ``quota_stage``: the front door's stage, and the ``LogService`` that
  charges the fetch bytes it answers;
- ``usage_poller``: the NodeAdmin ``TenantUsage`` answer and the loop that
  asks every node for it;
- ``node_view``, ``node_quotas``: what a node reads and wires.
"""

from cluster.quotas.fair_scheduler import FairScheduler
from cluster.quotas.node_quotas import NodeQuotas
from cluster.quotas.quota_service import QuotaService
from cluster.quotas.quota_stage import QuotaStage
from cluster.quotas.token_bucket import TokenBucket
from cluster.quotas.usage import TenantUsage

__all__ = ["FairScheduler", "NodeQuotas", "QuotaService", "QuotaStage", "TenantUsage", "TokenBucket"]
