"""``shares``: a node's share of a tenant's cluster-wide rate, from the
demand every node reports, against the numbered invariants of
cluster/quotas/shares.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.quotas.shares import (
    FLOOR_TOTAL,
    DemandLedger,
    burst_for,
    demand_share,
    leader_fraction,
)

KEY = ("acme", "produce_bytes_s")


def test_a_share_follows_the_demand_with_a_floor_and_falls_back_to_leadership() -> None:
    # One node: the whole quota, demand or not.
    assert demand_share(1_000, own=0, others=[], nodes=1, fallback=1) == pytest.approx(1_000)
    # Three nodes, all demand here: all but the two other floors.
    assert demand_share(1_000, own=5, others=[0, 0], nodes=3, fallback=0) == pytest.approx(
        1_000 * (1 - 2 * FLOOR_TOTAL / 3)
    )
    # No demand here: the floor only.
    assert demand_share(900, own=0, others=[5, 5], nodes=3, fallback=1) == pytest.approx(
        900 * FLOOR_TOTAL / 3
    )
    # Nobody has demand data: the fallback (one of three partitions led).
    floor = FLOOR_TOTAL / 3
    assert demand_share(
        900, own=0, others=[0, 0], nodes=3, fallback=leader_fraction(1, 3, 3)
    ) == pytest.approx(900 * (floor + (1 - 3 * floor) / 3))
    assert leader_fraction(0, 0, 4) == 0.25 and leader_fraction(5, 4, 4) == 1
    assert burst_for(0) == 1 and burst_for(1000) == 500


@st.composite
def cluster_views(draw: st.DrawFn) -> tuple[list[float], list[list[float]], list[float]]:
    """Per node: its own acknowledged figure, what each node holds of each
    other node (some figure that node published, so >= its own), and its
    fallback fraction (adding up to at most 1)."""
    nodes = draw(st.integers(1, 7))
    figure = st.floats(0, 1e9, allow_nan=False)
    own = [draw(figure) if draw(st.booleans()) else 0.0 for _ in range(nodes)]
    # Node j's view of node i: i's acknowledged figure, or something it
    # published later that is larger (never smaller: the ledger's promise).
    views = [
        [own[i] + draw(st.floats(0, 1e9)) * draw(st.sampled_from([0, 1])) for i in range(nodes)]
        for _ in range(nodes)
    ]
    weights = [draw(st.floats(0, 1)) for _ in range(nodes)]
    total = sum(weights) or 1.0
    return own, views, [w / total for w in weights]


@settings(max_examples=500, deadline=None)
@given(quota=st.integers(0, 10**12), cluster=cluster_views())
def test_the_shares_never_add_up_to_more_than_the_quota(
    quota: int, cluster: tuple[list[float], list[list[float]], list[float]]
) -> None:
    """Invariants 1-2, demand and fallback nodes mixed."""
    own, views, fallback = cluster
    nodes = len(own)
    shares = [
        demand_share(quota, own[i], [views[i][j] for j in range(nodes) if j != i], nodes, fallback[i])
        for i in range(nodes)
    ]
    assert sum(shares) <= quota * (1 + 1e-9) + 1e-6
    for share in shares:
        assert quota * FLOOR_TOTAL / nodes * (1 - 1e-9) <= share <= quota * (1 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(
    nodes=st.integers(2, 5),
    steps=st.lists(
        st.tuples(
            st.lists(st.floats(0, 1e6), min_size=5, max_size=5),
            st.lists(st.booleans(), min_size=25, max_size=25),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_through_the_ledger_and_lost_answers_the_shares_stay_within_the_quota(
    nodes: int, steps: list[tuple[list[float], list[bool]]]
) -> None:
    """Invariants 2 and 4 together: every second each node's demand changes
    and every node asks every other; some answers are lost (the asker keeps
    the report it had). Whatever was lost, the shares computed from what
    each node holds add up to at most the quota."""
    quota = 1_000_000.0
    ledgers = [DemandLedger(hold_s=1e9, first_id=1 + 1000 * i) for i in range(nodes)]
    held = [[(0, 0.0)] * nodes for _ in range(nodes)]  # held[j][i]: node j's (report id, figure) of node i
    now = 0.0
    for live, delivered in steps:
        now += 1.0
        for j in range(nodes):
            for i in range(nodes):
                if i == j:
                    continue
                report = ledgers[i].publish(j, held[j][i][0], {KEY: live[i]}, now)
                if delivered[j * 5 + i]:
                    held[j][i] = (report, live[i])
        shares = [
            demand_share(
                quota,
                ledgers[i].own(KEY, live[i], now),
                [held[i][j][1] for j in range(nodes) if j != i],
                nodes,
                1 / nodes,
            )
            for i in range(nodes)
        ]
        assert sum(shares) <= quota * (1 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(
    quota=st.integers(1, 10**12),
    nodes=st.integers(2, 9),
    demand=st.floats(1, 1e9),
    before=st.lists(st.floats(0, 1e9), min_size=8, max_size=8),
)
def test_a_node_carrying_all_the_demand_converges_to_nearly_the_whole_quota(
    quota: int, nodes: int, demand: float, before: list[float]
) -> None:
    """Invariant 3, through the ledger: the other nodes poll this one every
    second, each naming the report it holds; they had some demand before
    (``before``), now none. After two polls this node's figure is
    acknowledged and its share is the quota less the others' floors."""
    ledger = DemandLedger(hold_s=6.0)
    held = dict.fromkeys(range(1, nodes), 0)
    others = before[: nodes - 1]  # what they reported last
    now = 0.0
    for asker in held:  # before the move: answered with no demand here
        held[asker] = ledger.publish(asker, held[asker], {KEY: 0.0}, now)
    share = demand_share(quota, ledger.own(KEY, demand, now), others, nodes, 0.0)
    assert share == pytest.approx(quota * FLOOR_TOTAL / nodes) or sum(others) == 0
    others = [0.0] * (nodes - 1)  # their meters emptied, and they said so
    for _ in range(2):
        now += 1.0
        for asker in held:
            held[asker] = ledger.publish(asker, held[asker], {KEY: demand}, now)
    share = demand_share(quota, ledger.own(KEY, demand, now), others, nodes, 0.0)
    assert share >= 0.9 * quota
    assert share == pytest.approx(quota * (1 - (nodes - 1) * FLOOR_TOTAL / nodes))


def test_the_ledger_keeps_every_figure_an_asker_may_hold() -> None:
    """Invariant 4."""
    ledger = DemandLedger(hold_s=6.0, first_id=100)
    assert ledger.own(KEY, live=50.0, now=0.0) == 50  # nobody asks (one node): the live figure
    first = ledger.publish(2, 0, {KEY: 10.0}, now=0.0)
    assert ledger.own(KEY, live=50.0, now=0.0) == 0  # node 2 holds none of ours yet: it counts 0
    second = ledger.publish(2, first, {KEY: 30.0}, now=1.0)
    assert ledger.own(KEY, live=50.0, now=1.0) == 10  # it holds `first`, `second` may arrive
    third = ledger.publish(2, first, {KEY: 40.0}, now=2.0)  # `second` was lost: still `first`
    assert ledger.own(KEY, live=50.0, now=2.0) == 10
    ledger.publish(2, third, {KEY: 45.0}, now=3.0)
    assert ledger.own(KEY, live=50.0, now=3.0) == 40
    assert ledger.own(KEY, live=20.0, now=3.0) == 20  # never above the live figure
    assert ledger.own(("acme", "fetch_bytes_s"), live=5.0, now=3.0) == 0  # never published: 0
    assert first < second < third
    # An asker naming a report we never answered (an earlier process of ours): 0 until it moves on.
    ledger.publish(3, 7, {KEY: 40.0}, now=3.0)
    assert ledger.own(KEY, live=50.0, now=3.0) == 0
    # An asker silent for longer than it keeps a report no longer counts.
    assert ledger.own(KEY, live=50.0, now=10.0) == 50
