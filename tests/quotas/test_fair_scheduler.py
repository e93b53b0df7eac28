"""``FairScheduler`` and the usage meters (cluster/quotas/fair_scheduler.py,
cluster/quotas/usage.py)."""

from __future__ import annotations

import asyncio

import pytest

from cluster.quotas.fair_scheduler import FairScheduler
from cluster.quotas.usage import (
    WINDOW_S,
    GroupSize,
    NodeReport,
    RateMeter,
    TenantUsage,
    UsageBoard,
    stored_total,
)

pytestmark = pytest.mark.timeout(30)


async def test_uncontended_calls_take_a_slot_without_waiting() -> None:
    scheduler = FairScheduler(slots=2)
    async with scheduler.slot("a"), scheduler.slot("b"):
        assert scheduler.active == 2 and scheduler.waiting() == 0
    assert scheduler.active == 0


async def test_one_tenants_backlog_does_not_queue_ahead_of_another_tenant() -> None:
    """Invariants 2 and 3: A queues 20 calls, then B queues one: B is served
    after at most one more of A's, and A's run in arrival order."""
    scheduler = FairScheduler(slots=1)
    served: list[str] = []
    gate = asyncio.Event()

    async def call(tenant: str, name: str) -> None:
        async with scheduler.slot(tenant):
            served.append(name)
            await gate.wait()

    holder = asyncio.create_task(call("a", "a-held"))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(call("a", f"a{i}")) for i in range(20)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(call("b", "b0")))
    await asyncio.sleep(0)
    assert scheduler.waiting("a") == 20 and scheduler.waiting("b") == 1
    gate.set()
    await asyncio.gather(holder, *tasks)
    assert served.index("b0") <= 2, served
    assert [s for s in served if s.startswith("a") and s != "a-held"] == [f"a{i}" for i in range(20)]
    assert scheduler.active == 0 and scheduler.waiting() == 0


async def test_a_cancelled_waiter_leaves_no_slot_taken() -> None:
    """Invariant 4."""
    scheduler = FairScheduler(slots=1)
    await scheduler.acquire("a")
    waiter = asyncio.create_task(scheduler.acquire("b"))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert scheduler.waiting() == 0
    scheduler.release()
    assert scheduler.active == 0
    # Granted and cancelled in the same turn: the slot is passed on, not lost.
    await scheduler.acquire("a")
    late = asyncio.create_task(scheduler.acquire("b"))
    await asyncio.sleep(0)
    scheduler.release()  # grants it to `late`...
    late.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await late
    assert scheduler.active == 0


def test_a_rate_meter_averages_over_its_window_and_forgets() -> None:
    meter = RateMeter()
    for second in range(10):
        meter.add(1000, second + 0.5)
    assert meter.rate(10.0) == pytest.approx(1000 * WINDOW_S / WINDOW_S, rel=0.25)
    assert meter.rate(100.0) == 0


def test_the_board_holds_other_nodes_fresh_reports_only() -> None:
    board = UsageBoard(node_id=1)
    board.record(1, NodeReport({"a": TenantUsage(stored_bytes=99)}), now=0.0)  # its own: ignored
    board.record(2, NodeReport({"a": TenantUsage(stored_bytes=10, groups=1)}), now=0.0)
    board.record(3, NodeReport({"a": TenantUsage(stored_bytes=5)}), now=4.0)
    assert sorted(u.stored_bytes for u in board.others("a", now=4.0)) == [5, 10]
    assert board.others("a", now=8.0) == [TenantUsage(stored_bytes=5)]  # node 2's report is stale
    board.forget([1, 2])
    assert board.others("a", now=4.0) == [TenantUsage(stored_bytes=10, groups=1)]


def test_combined_usage_sums_but_takes_the_most_streams_on_one_node() -> None:
    total = TenantUsage.combined([TenantUsage(groups=1, streams=2), TenantUsage(groups=2, streams=3)])
    assert total == TenantUsage(groups=3, streams=3)


def test_each_partition_is_stored_once_at_its_newest_size() -> None:
    old, new = GroupSize(500, 1, 10), GroupSize(600, 2, 5)  # a later term wins over a later look
    same_term_later = GroupSize(700, 2, 6)
    assert stored_total([7], [{7: old}, {7: new}]) == 600
    assert stored_total([7], [{7: new}, {7: old}]) == 600
    assert (
        stored_total([7, 8], [{7: new, 9: old}, {7: same_term_later}]) == 700
    )  # 8 unknown, 9 not the tenant's
