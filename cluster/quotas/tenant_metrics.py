"""``TenantMetrics``: the per-tenant Prometheus figures the quota stage and
the metered ``LogService`` record where they already handle the bytes.

- ``raftlog_tenant_produce_bytes_total{tenant}``: produce batch bytes this
  node admitted as the partition's leader (``QuotaService.admit``; a node
  that forwards counts nothing, so the sum over nodes counts each batch
  once);
- ``raftlog_tenant_fetch_bytes_total{tenant}``: batch bytes this node's
  fetches and fetch streams answered as the partition's leader
  (``QuotaService.fetched``; summed over nodes: once each);
- ``raftlog_tenant_throttled_requests_total{tenant}``: calls the tenant's
  quotas delayed, held or refused (``QUOTA_EXCEEDED``) on this node, each
  counted once;
- ``raftlog_tenant_throttle_seconds_total{tenant}``: the time those calls
  were made to wait here (delay and hold) plus the retry-after handed out
  with a refusal: what the quota cost the tenant's clients.

Invariants:

- Only calls the quotas charge are counted (operator keys in ``__system``
  are exempt from both).
- Per call: one dict lookup for the tenant's counter and one increment; a
  tenant's children are resolved on its first figure and kept (one series
  per tenant that used this node since it started).
- A node without a ``metrics_port`` has no ``TenantMetrics`` and the quota
  code does nothing more than compare with None.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

__all__ = ["TenantMetrics"]


class TenantMetrics:
    """The tenant counters, registered on ``registry`` (the node's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._produce = Counter(
            "raftlog_tenant_produce_bytes_total",
            "Produce batch bytes admitted on the partition's leader, by tenant.",
            ["tenant"],
            registry=registry,
        )
        self._fetch = Counter(
            "raftlog_tenant_fetch_bytes_total",
            "Batch bytes answered by fetches and fetch streams on the partition's leader, by tenant.",
            ["tenant"],
            registry=registry,
        )
        self._throttled = Counter(
            "raftlog_tenant_throttled_requests_total",
            "Calls delayed, held or refused by the tenant's quotas.",
            ["tenant"],
            registry=registry,
        )
        self._throttle_seconds = Counter(
            "raftlog_tenant_throttle_seconds_total",
            "Seconds calls were delayed or held by the tenant's quotas, plus the retry-after of refusals.",
            ["tenant"],
            registry=registry,
        )
        self._produced: dict[str, Callable[[float], None]] = {}
        self._fetched: dict[str, Callable[[float], None]] = {}
        self._throttles: dict[str, tuple[Callable[[float], None], Callable[[float], None]]] = {}

    def produced(self, tenant: str, nbytes: int) -> None:
        inc = self._produced.get(tenant)
        if inc is None:
            inc = self._produced[tenant] = self._produce.labels(tenant).inc
        inc(nbytes)

    def fetched(self, tenant: str, nbytes: int) -> None:
        inc = self._fetched.get(tenant)
        if inc is None:
            inc = self._fetched[tenant] = self._fetch.labels(tenant).inc
        inc(nbytes)

    def throttled(self, tenant: str, seconds: float) -> None:
        """One call throttled, costing its client ``seconds``."""
        incs = self._throttles.get(tenant)
        if incs is None:
            incs = self._throttles[tenant] = (
                self._throttled.labels(tenant).inc,
                self._throttle_seconds.labels(tenant).inc,
            )
        incs[0](1)
        incs[1](seconds)
