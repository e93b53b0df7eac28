"""``QuotaService``: one node's accounting of every tenant's quotas — the
token buckets, the node's shares, open streams, storage and group usage —
and the decisions the front door's stage (quota_stage.py) acts on.

What is charged where (the README's "Quotas" section says it for users):

- requests/s: every admitted public call of the tenant, on the node it
  reaches;
- produce bytes/s: a ``Produce``'s batch bytes, before the call, on the node
  that leads the partition (a node that forwards or answers ``NOT_LEADER``
  charges nothing: the leader does);
- fetch bytes/s: the batch bytes a ``Fetch`` answered, or each message of a
  ``StreamFetch``, after it was read, on the leader: the debt delays or
  refuses the tenant's next fetch (a stream waits it out before its next
  read);
- streams: open ``StreamFetch`` calls of the tenant on this node;
- storage: the batch bytes of the tenant's partitions, each counted once:
  every node reports the size of each partition it leads with its leader
  term and when it looked (usage_poller.py, about once a second), and the
  newest report of each partition counts (usage.stored_total), this node's
  own look included;
- groups: consumer groups (members or committed offsets) summed over the
  coordinators, checked when a call would create a group. A call that may
  create a group holds a *reservation* of its name from before its first
  await until it ends (``new_group``), so concurrent calls creating
  different new groups on this node are counted against each other: each
  counts the groups existing here, plus the names reserved before its own,
  plus the other nodes' reports (groups created at the same moment on
  *other* coordinators are seen only with their next report, about a
  second later).

Each rate bucket runs at this node's share of the quota (shares.py: from
the offered load every node measures and reports, with a small floor per
node, the fraction of partitions led as the fallback while nobody has
demand data), sized again when the metadata changes and at least every
``RECOMPUTE_S``. The offered load is metered in ``admit`` and ``fetched``:
each call's request and bytes, once more when that rate's bucket was in
debt (the call is delayed), and a refused call's too (a refused fetch
counts the tenant's last answered fetch size here). The policy on a rate: the debt the
tenant already owes decides (token_bucket.py): none or at most
``MAX_DELAY_S`` of it, the call is delayed that long and charged; more, the
call is refused ``RESOURCE_EXHAUSTED QUOTA_EXCEEDED`` with ``retry_after_ms``
= the debt, at most ``MAX_RETRY_AFTER_S``, and charged nothing (a refusal
is cheap; charging it would let a client that retries early lock itself
out).

Invariants:

1. A refused call changes nothing here but the offered-load meters (which
   exist to see refused demand): no bucket, usage meter or count moves
   (``admit`` decides everything before it charges anything).
2. Operator keys acting in the system tenant (``__system``: the node's own
   services and tools) are never charged: ``exempt``.
3. A quota of 0 refuses every call of that kind with retry-after 0 (no
   amount of waiting helps); an unset quota (None) charges no bucket (the
   rate is still measured for ``usage``).
4. ``streams[tenant]`` equals the number of ``stream_opened`` calls not yet
   matched by ``stream_closed``.
5. A group name is reserved exactly while some ``new_group`` block for it
   is open; of two calls for different new groups on this node, the later
   reservation counts the earlier one (between reserving and deciding
   nothing else of the count is read from a reservation made later).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Protocol

import grpc

from cluster.frontend.front_door import Caller
from cluster.frontend.grpc_errors import ServiceError
from cluster.quotas.shares import (
    DEMAND_WINDOW_S,
    DemandLedger,
    burst_for,
    demand_share,
    leader_fraction,
)
from cluster.quotas.tenant_metrics import TenantMetrics
from cluster.quotas.token_bucket import TokenBucket
from cluster.quotas.usage import (
    ASK_TIMEOUT_S,
    DEMAND_FIELDS,
    STALE_S,
    Demand,
    GroupSize,
    NodeReport,
    RateMeter,
    TenantUsage,
    UsageBoard,
    stored_total,
)
from raftlog.v1.reasons import Reason

__all__ = [
    "MAX_DELAY_S",
    "MAX_RETRY_AFTER_S",
    "RECOMPUTE_S",
    "STORAGE_RETRY_MS",
    "SYSTEM_TENANT",
    "Limits",
    "QuotaService",
    "QuotaView",
]

MAX_DELAY_S = 0.1
"""Up to this much debt, a call is delayed (Kafka's throttle); beyond, refused."""
MAX_RETRY_AFTER_S = 0.5
"""A refusal's retry-after is the debt owed, at most this: the share that
pays the debt is sized again every second or so (shares.py) and may grow,
and a client told to wait a minute at a small share would keep waiting
after it grew (and show no demand meanwhile, so it would not grow)."""
RECOMPUTE_S = 0.5
"""Shares are sized again at least this often (the demand reports and
leadership change without a metadata version)."""
STORAGE_RETRY_MS = 5_000
"""The retry-after of a produce refused for storage: deleting or retention
frees space in seconds, not milliseconds."""
SYSTEM_TENANT = "__system"


class Limits(Protocol):
    """What the stage reads of ``cluster.controller.quotas.QuotaLimits``."""

    @property
    def produce_bytes_s(self) -> int | None: ...
    @property
    def fetch_bytes_s(self) -> int | None: ...
    @property
    def requests_s(self) -> int | None: ...
    @property
    def storage_bytes(self) -> int | None: ...
    @property
    def groups(self) -> int | None: ...
    @property
    def streams(self) -> int | None: ...


class QuotaView(Protocol):
    """What the service reads of the node (node_view.py over the applied
    metadata and the replica host; a dict-backed fake in tests)."""

    @property
    def version(self) -> int:
        """Grows whenever the applied metadata (quotas, topics) may have changed."""
        ...

    def quota(self, tenant: str) -> Limits: ...
    def tenants(self) -> Iterable[str]: ...
    def tenant_groups(self, tenant: str) -> Sequence[int]:
        """The partition groups of the tenant's topics."""
        ...

    def group_of(self, tenant: str, topic: str, partition: int) -> int | None: ...
    def leads(self, group: int) -> bool:
        """Whether this node's replica of ``group`` leads it now."""
        ...

    def stored_bytes(self, group: int) -> int:
        """Batch bytes this node's replica of ``group`` holds (0: none here)."""
        ...

    def term(self, group: int) -> int:
        """The Raft term this node's replica of ``group`` is in (0: none here)."""
        ...

    def node_count(self) -> int: ...


GroupLookup = Callable[[str, str], Awaitable[bool | None]]
"""``(tenant, group)`` -> whether the group exists (None: not known here)."""
GroupNames = Callable[[str], Awaitable[Collection[str]]]
"""``tenant`` -> the names of its groups coordinated on this node."""


def quota_exceeded(what: str, retry_after_s: float, limit: float) -> ServiceError:
    """The refusal: ``retry_after_s`` 0 for a count (waiting does not help)."""
    retry_ms = 0 if math.isinf(retry_after_s) else max(1, math.ceil(retry_after_s * 1000))
    advice = (
        f"retry after {retry_ms} ms" if retry_ms else "waiting does not help: free some up or ask for more"
    )
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        Reason.QUOTA_EXCEEDED,
        f"the tenant is over its {what} quota ({limit:g}); {advice}",
        retry_after_ms=retry_ms,
        metadata={"quota": what, "limit": f"{limit:g}"},
    )


@dataclass(slots=True)
class _Tenant:
    """One tenant's accounting on this node."""

    version: int = -1
    computed_at: float = -math.inf
    limits: Limits | None = None
    produce: TokenBucket | None = None
    fetch: TokenBucket | None = None
    requests: TokenBucket | None = None
    sizes: dict[int, GroupSize] = field(default_factory=dict)
    """Of the partitions this node leads, as of ``computed_at`` (how many it
    leads: ``len(sizes)``)."""
    cluster_stored: int = 0
    """Over the cluster (usage.stored_total), as of ``computed_at``."""
    streams: int = 0
    produce_meter: RateMeter = field(default_factory=RateMeter)
    fetch_meter: RateMeter = field(default_factory=RateMeter)
    request_meter: RateMeter = field(default_factory=RateMeter)
    # Offered load (shares.py): admitted, refused, and delayed once more.
    produce_offered: RateMeter = field(default_factory=lambda: RateMeter(DEMAND_WINDOW_S))
    fetch_offered: RateMeter = field(default_factory=lambda: RateMeter(DEMAND_WINDOW_S))
    request_offered: RateMeter = field(default_factory=lambda: RateMeter(DEMAND_WINDOW_S))
    fetch_size: int = 0
    """The last fetch answer's bytes: what a refused fetch is taken to have wanted."""
    shares: Demand = field(default_factory=Demand)
    """The bucket rates set at the last recompute (for tests and operators)."""


def _bucket(held: TokenBucket | None, limit: int | None, rate: float, now: float) -> TokenBucket | None:
    if limit is None:
        return None
    if held is None:
        return TokenBucket(rate, burst_for(rate), now)
    if held.rate_per_s != rate:
        held.reconfigure(rate, burst_for(rate), now)
    return held


class QuotaService:
    """See the module docstring."""

    def __init__(
        self,
        node_id: int,
        view: QuotaView,
        *,
        group_exists: GroupLookup | None = None,
        group_names: GroupNames | None = None,
        board: UsageBoard | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        metrics: TenantMetrics | None = None,
    ) -> None:
        """``metrics``: where the charged produce and fetch bytes are
        counted for Prometheus (None: a node without ``metrics_port``)."""
        self.node_id = node_id
        self.metrics = metrics
        self._view = view
        self._group_exists = group_exists
        self._group_names = group_names
        # tenant -> group name -> [reservation number, open blocks] (invariant 5)
        self._reserved: dict[str, dict[str, list[int]]] = {}
        self._reservations = itertools.count(1)
        self.board = board or UsageBoard(node_id)
        self._clock = clock
        self._wall_clock = wall_clock
        # What other nodes may hold of this node's demand; report ids start
        # from the wall clock so a restarted node never reuses one.
        self.ledger = DemandLedger(STALE_S + ASK_TIMEOUT_S, first_id=time.time_ns())
        self._tenants: dict[str, _Tenant] = {}

    def now(self) -> float:
        """The service's clock (the usage board is kept on it too)."""
        return self._clock()

    # --- the tenant's state ----------------------------------------------------------

    @staticmethod
    def exempt(caller: Caller) -> bool:
        """Operator keys acting in the system tenant (invariant 2)."""
        return caller.is_operator and caller.tenant == SYSTEM_TENANT

    def _tenant(self, tenant: str, now: float) -> _Tenant:
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant()
        view = self._view
        if state.version != view.version or now - state.computed_at >= RECOMPUTE_S:
            self._recompute(tenant, state, now)
        return state

    def _recompute(self, tenant: str, state: _Tenant, now: float) -> None:
        view = self._view
        state.version, state.computed_at = view.version, now
        limits = state.limits = view.quota(tenant)
        groups = view.tenant_groups(tenant)
        seen_ms = int(self._wall_clock() * 1000)
        state.sizes = {
            g: GroupSize(view.stored_bytes(g), view.term(g), seen_ms) for g in groups if view.leads(g)
        }
        led = len(state.sizes)
        state.cluster_stored = stored_total(groups, [state.sizes, *self.board.sizes(tenant, now)])
        partitions, nodes = len(groups), view.node_count()
        live, others = self._live_demand(state, now), self.board.demands(tenant, now)
        rates = {}
        for name in DEMAND_FIELDS:
            quota = getattr(limits, name)
            own = self.ledger.own((tenant, name), getattr(live, name), now)
            fallback = 1 / max(1, nodes) if name == "requests_s" else leader_fraction(led, partitions, nodes)
            rates[name] = demand_share(quota or 0, own, [getattr(d, name) for d in others], nodes, fallback)
        state.shares = Demand(**rates)
        state.produce = _bucket(state.produce, limits.produce_bytes_s, rates["produce_bytes_s"], now)
        state.fetch = _bucket(state.fetch, limits.fetch_bytes_s, rates["fetch_bytes_s"], now)
        state.requests = _bucket(state.requests, limits.requests_s, rates["requests_s"], now)

    @staticmethod
    def _live_demand(state: _Tenant, now: float) -> Demand:
        return Demand(
            state.produce_offered.rate(now), state.fetch_offered.rate(now), state.request_offered.rate(now)
        )

    def rates_in_demand(self) -> bool:
        """Whether some tenant with a rate quota has offered load here or in
        another node's latest report: then the nodes must swap their
        figures often (shares follow demand); otherwise they can wait
        (usage_poller.IDLE_POLL_S)."""
        now = self._clock()
        for tenant, state in self._tenants.items():
            limits = state.limits
            if limits is None or all(getattr(limits, name) is None for name in DEMAND_FIELDS):
                continue
            if self._live_demand(state, now) != Demand() or any(
                demand != Demand() for demand in self.board.demands(tenant, now)
            ):
                return True
        return False

    def limits(self, tenant: str) -> Limits:
        state = self._tenant(tenant, self._clock())
        assert state.limits is not None
        return state.limits

    # --- decisions (nothing changes on a refusal) ------------------------------------

    def admit(self, tenant: str, *, produce_group: int | None = None, produce_bytes: int = 0,
              fetch_group: int | None = None) -> float:  # fmt: skip
        """Charge one request (and ``produce_bytes`` when this node leads
        ``produce_group``; check the fetch debt when it leads
        ``fetch_group``) and return how long the call must wait first, or
        raise the ``QUOTA_EXCEEDED`` refusal having charged nothing."""
        now = self._clock()
        state = self._tenant(tenant, now)
        limits = state.limits
        assert limits is not None
        view = self._view
        charge_produce = produce_group is not None and view.leads(produce_group)
        check_fetch = fetch_group is not None and view.leads(fetch_group)
        try:
            waits = self._decide(state, limits, produce_group is not None, charge_produce, check_fetch, now)
        except ServiceError:
            # Refused: offered all the same (shares.py), charged nothing.
            state.request_offered.add(1, now)
            if charge_produce:
                state.produce_offered.add(produce_bytes, now)
            if check_fetch:
                state.fetch_offered.add(state.fetch_size, now)
            raise
        request_wait, produce_wait, _ = waits
        # Admitted: charge, and offer once more what met a debt.
        if state.requests is not None:
            state.requests.charge(1, now)
        state.request_meter.add(1, now)
        state.request_offered.add(2 if request_wait > 0 else 1, now)
        if charge_produce:
            if state.produce is not None:
                state.produce.charge(produce_bytes, now)
            state.produce_meter.add(produce_bytes, now)
            state.produce_offered.add(produce_bytes * (2 if produce_wait > 0 else 1), now)
            if self.metrics is not None:
                self.metrics.produced(tenant, produce_bytes)
        return max(waits)

    @staticmethod
    def _decide(state: _Tenant, limits: Limits, produce: bool, charge_produce: bool, check_fetch: bool,
                now: float) -> tuple[float, float, float]:  # fmt: skip
        """The waits on the requests, produce and fetch buckets, or the refusal."""
        request_wait = _debt(state.requests, limits.requests_s, "requests/s", now)
        produce_wait = fetch_wait = 0.0
        if produce:
            storage = limits.storage_bytes
            if storage is not None and (storage == 0 or state.cluster_stored >= storage):
                raise quota_exceeded(
                    "storage bytes", STORAGE_RETRY_MS / 1000 if storage else math.inf, storage
                )
            if charge_produce:
                produce_wait = _debt(state.produce, limits.produce_bytes_s, "produce bytes/s", now)
        if check_fetch:
            fetch_wait = _debt(state.fetch, limits.fetch_bytes_s, "fetch bytes/s", now)
        return request_wait, produce_wait, fetch_wait

    def fetched(self, tenant: str, nbytes: int) -> float:
        """Charge ``nbytes`` a fetch answered (debt allowed); the debt's wait,
        which a stream waits out before its next read (and the next fetch
        meets). Bytes that leave a debt are offered once more."""
        now = self._clock()
        state = self._tenant(tenant, now)
        state.fetch_meter.add(nbytes, now)
        state.fetch_size = nbytes
        wait = 0.0 if state.fetch is None else min(state.fetch.charge(nbytes, now), 60.0)
        state.fetch_offered.add(nbytes * (2 if wait > 0 else 1), now)
        if self.metrics is not None:
            self.metrics.fetched(tenant, nbytes)
        return wait

    def stream_opened(self, tenant: str) -> None:
        """Count one more open stream, or refuse it over ``streams``."""
        state = self._tenant(tenant, self._clock())
        assert state.limits is not None
        limit = state.limits.streams
        if limit is not None and state.streams >= limit:
            raise quota_exceeded("open streams", math.inf, limit)
        state.streams += 1

    def stream_closed(self, tenant: str) -> None:
        state = self._tenants.get(tenant)
        if state is not None and state.streams > 0:
            state.streams -= 1

    @asynccontextmanager
    async def new_group(self, tenant: str, group: str) -> AsyncIterator[None]:
        """Around a call that would create ``group`` if it does not exist:
        refuse it on entry once the tenant has its ``groups`` quota of
        them, counting the names reserved before this one (module
        docstring); the name stays reserved until the block ends."""
        limit = self.limits(tenant).groups
        if limit is None or self._group_exists is None:
            yield
            return
        number = self._reserve(tenant, group)  # before any await: concurrent calls see it
        try:
            await self._check_new_group(tenant, group, number, limit)
            yield
        finally:
            self._unreserve(tenant, group)

    def _reserve(self, tenant: str, group: str) -> int:
        reserved = self._reserved.setdefault(tenant, {})
        held = reserved.get(group)
        if held is None:
            held = reserved[group] = [next(self._reservations), 0]
        held[1] += 1  # another call for the same group shares its number
        return held[0]

    def _unreserve(self, tenant: str, group: str) -> None:
        reserved = self._reserved[tenant]
        held = reserved[group]
        held[1] -= 1
        if held[1] == 0:
            del reserved[group]
            if not reserved:
                del self._reserved[tenant]

    async def _check_new_group(self, tenant: str, group: str, number: int, limit: int) -> None:
        assert self._group_exists is not None
        if await self._group_exists(tenant, group) is not False:
            return  # exists, or this node does not coordinate it (the call says where to go)
        names = set(await self._group_names(tenant)) if self._group_names is not None else set()
        earlier = {g for g, (n, _) in self._reserved.get(tenant, {}).items() if n < number}
        count = len(names | earlier) + sum(u.groups for u in self.board.others(tenant, self._clock()))
        if count >= limit:
            raise quota_exceeded("consumer groups", math.inf, limit)

    # --- usage -------------------------------------------------------------------------

    async def local_usage(self, tenant: str) -> TenantUsage:
        """``tenant``'s figures on this node."""
        now = self._clock()
        state = self._tenant(tenant, now)
        groups = len(await self._group_names(tenant)) if self._group_names is not None else 0
        return TenantUsage(
            stored_bytes=sum(size.size for size in state.sizes.values()),
            groups=groups,
            streams=state.streams,
            produce_bytes_s=state.produce_meter.rate(now),
            fetch_bytes_s=state.fetch_meter.rate(now),
            requests_s=state.request_meter.rate(now),
        )

    async def local_report(self, asker: int = 0, held: int = 0) -> NodeReport:
        """Every tenant's figures on this node, leaving out the all-zero ones
        (what NodeAdmin.TenantUsage answers node ``asker``, which holds our
        report ``held``: the demand answered is recorded in the ledger)."""
        usage, sizes, demand = {}, {}, {}
        now = self._clock()
        for tenant in self._view.tenants():
            figures = await self.local_usage(tenant)
            if figures != TenantUsage():
                usage[tenant] = figures
            state = self._tenants[tenant]
            if state.sizes:
                sizes[tenant] = dict(state.sizes)
            offered = self._live_demand(state, now)
            if offered != Demand():
                demand[tenant] = offered
        figures_by_key = {(t, name): getattr(d, name) for t, d in demand.items() for name in DEMAND_FIELDS}
        report_id = self.ledger.publish(asker, held, figures_by_key, now) if asker > 0 else 0
        return NodeReport(usage, sizes, demand, report_id)

    async def usage(self, tenant: str) -> TenantUsage:
        """``tenant``'s usage over the cluster: this node's live figures and
        the other nodes' latest reports (at most about a second old),
        combined (usage.TenantUsage.combined: streams are the most on one
        node), with each partition's stored bytes counted once."""
        now = self._clock()
        local = await self.local_usage(tenant)
        total = TenantUsage.combined([local, *self.board.others(tenant, now)])
        return replace(total, stored_bytes=self._tenants[tenant].cluster_stored)


def _debt(bucket: TokenBucket | None, limit: int | None, what: str, now: float) -> float:
    """The delay a call meets on ``bucket``, or the refusal."""
    if limit is None or bucket is None:
        return 0.0
    if limit == 0:
        raise quota_exceeded(what, math.inf, 0)
    wait = bucket.wait(now)
    if wait > MAX_DELAY_S:
        raise quota_exceeded(what, min(wait, MAX_RETRY_AFTER_S), limit)
    return wait
