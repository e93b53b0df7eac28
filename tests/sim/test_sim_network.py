"""The simulated network: faults happen as configured and replay by seed."""

from __future__ import annotations

import random

from raft.sim.network import LinkFaults, Network


def _plans(seed: int, faults: LinkFaults, n: int = 200) -> list[list[int]]:
    net = Network(random.Random(seed), faults)
    return [net.plan() for _ in range(n)]


def test_latency_stays_within_bounds_without_faults() -> None:
    net = Network(random.Random(1))
    plans = [net.plan() for _ in range(500)]
    assert all(len(p) == 1 and 1 <= p[0] <= 5 for p in plans)
    assert {p[0] for p in plans} == {1, 2, 3, 4, 5}  # reordering falls out of it
    assert net.faults == 0


def test_same_seed_same_fates_different_seed_different_fates() -> None:
    faults = LinkFaults(drop=0.2, duplicate=0.2, spike=0.2)
    assert _plans(7, faults) == _plans(7, faults)
    assert _plans(7, faults) != _plans(8, faults)


def test_drop_duplicate_and_spike_are_counted() -> None:
    net = Network(random.Random(3), LinkFaults(drop=1.0))
    assert all(net.plan() == [] for _ in range(50))
    assert net.dropped == net.faults == 50

    net = Network(random.Random(3), LinkFaults(duplicate=1.0))
    assert all(len(net.plan()) == 2 for _ in range(50))
    assert net.duplicated == net.faults == 50

    net = Network(random.Random(3), LinkFaults(spike=1.0, spike_min=20, spike_max=30))
    assert all(21 <= net.plan()[0] <= 35 for _ in range(50))
    assert net.delayed == net.faults == 50


def test_drop_rate_is_roughly_what_was_asked() -> None:
    plans = _plans(11, LinkFaults(drop=0.3), n=2000)
    dropped = sum(1 for p in plans if not p)
    assert 500 < dropped < 700


def test_symmetric_partition_blocks_across_groups_only() -> None:
    net = Network(random.Random(1))
    net.partition([[1, 2], [3, 4, 5]])
    for a, b in [(1, 3), (3, 1), (2, 5), (5, 2)]:
        assert net.blocked(a, b)
    for a, b in [(1, 2), (2, 1), (3, 4), (5, 3)]:
        assert not net.blocked(a, b)
    net.heal_partition()
    assert not any(net.blocked(a, b) for a in range(1, 6) for b in range(1, 6))


def test_one_way_cut_blocks_one_direction() -> None:
    net = Network(random.Random(1))
    net.cut(1, 2)
    assert net.blocked(1, 2)
    assert not net.blocked(2, 1)
    net.heal_partition()  # a cut is not a partition
    assert net.blocked(1, 2)
    net.restore_cut(1, 2)
    assert not net.blocked(1, 2)


def test_clogged_links_come_back_one_by_one_in_seeded_random_order() -> None:
    def unclog_order(seed: int) -> list[tuple[int, int]]:
        net = Network(random.Random(seed))
        for a, b in [(1, 2), (1, 3), (2, 3), (3, 4), (4, 5)]:
            net.clog(a, b, both_ways=False)
        order = []
        while (link := net.unclog_one()) is not None:
            order.append(link)
            assert not net.blocked(*link)
            assert len(net.clogged) == 5 - len(order)
        return order

    first = unclog_order(5)
    assert sorted(first) == [(1, 2), (1, 3), (2, 3), (3, 4), (4, 5)]
    assert unclog_order(5) == first
    assert any(unclog_order(seed) != first for seed in range(6, 12))


def test_clog_both_ways_and_heal_everything() -> None:
    net = Network(random.Random(1), LinkFaults(drop=0.5, duplicate=0.5, spike=0.5))
    net.clog(1, 2)
    assert net.blocked(1, 2) and net.blocked(2, 1)
    net.partition([[1], [2, 3]])
    net.cut(3, 2)
    net.heal()
    assert not any(net.blocked(a, b) for a in range(1, 4) for b in range(1, 4))
    assert net.rates.drop == net.rates.duplicate == net.rates.spike == 0.0
    assert all(len(net.plan()) == 1 for _ in range(100))
