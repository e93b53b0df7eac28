"""Schedules are seeded and cover what they promise; cuts become the right
link modes (no node processes needed: the cluster is never started)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.__main__ import config_from, parse_args
from chaos.cluster import ChaosCluster, TopicTarget
from chaos.nemesis import NEMESES
from chaos.proxy import BLACKHOLE, PASS, LinkMode
from chaos.schedule import FULL, SMOKE, build_schedule


def test_the_same_seed_gives_the_same_schedule() -> None:
    a = build_schedule(FULL, 300, random.Random(7), shuffle=True)
    b = build_schedule(FULL, 300, random.Random(7), shuffle=True)
    c = build_schedule(FULL, 300, random.Random(8), shuffle=True)
    assert a == b
    assert a != c


def test_every_nemesis_runs_at_least_once_and_the_duration_is_filled() -> None:
    steps = build_schedule(FULL, 420, random.Random(1), shuffle=True)
    assert set(FULL) == {s.nemesis for s in steps}
    total = sum(s.duration + s.recovery for s in steps)
    # Rounds repeat until the next step would not fit: the longest step
    # (12 s of fault, 7 s of recovery) bounds what is left over.
    assert len(steps) > len(FULL)
    assert 420 - 19 <= total <= 420 + 0.01
    short = build_schedule(["pause", "split"], 1, random.Random(1))
    assert [s.nemesis for s in short] == ["pause", "split"]


def test_the_smoke_schedule_has_a_kill_a_pause_and_a_partition() -> None:
    steps = build_schedule(SMOKE, 0, random.Random(3))
    assert [s.nemesis for s in steps] == ["kill-leader", "pause", "isolate-leader"]
    assert sum(s.duration + s.recovery for s in steps) < 60


def test_unknown_nemeses_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown nemeses"):
        build_schedule(["kill-leader", "meteor"], 10, random.Random(1))
    # Every nemesis of the README's table, in its order.
    assert list(NEMESES) == [
        "kill-leader",
        "kill-node",
        "kill-controller",
        "pause",
        "isolate-leader",
        "split",
        "ring",
        "one-way",
        "slow",
        "lossy",
        "reply-reset",
        "leader-storm",
        "rolling-restart",
        "decommission",
    ]


def test_the_command_line_builds_the_config() -> None:
    config = config_from(parse_args(["--nemesis", "kill-leader,pause", "--duration", "30", "--seed", "9"]))
    assert (config.nemeses, config.duration_s, config.seed, config.nodes) == (
        ("kill-leader", "pause"),
        30,
        9,
        3,
    )
    assert config.replay() == "python -m chaos --nemesis kill-leader,pause --duration 30 --seed 9 --nodes 3"
    full = config_from(parse_args(["--schedule", "full", "--nodes", "5", "--no-idempotence"]))
    assert full.nemeses == FULL and full.shuffle and full.nodes == 5 and not full.idempotent
    assert "--no-idempotence" in full.replay() and "--shuffle" in full.replay()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ChaosCluster]:
    c = ChaosCluster(tmp_path, nodes=3, topics=[TopicTarget("default", "t", 2)], seed=1)
    yield c
    c.fleet.close()


def test_each_node_dials_its_peers_through_its_own_links(cluster: ChaosCluster) -> None:
    args = cluster.local.node_extra_args[1]
    assert args == [
        "--dial",
        f"2={cluster.fleet.address('n1->n2')}",
        "--dial",
        f"3={cluster.fleet.address('n1->n3')}",
    ]
    mapping = cluster.address_map(2)
    assert mapping[cluster.addresses[1]] == cluster.fleet.address("c2->n1")
    assert len(cluster.fleet.links) == 6 + 9


def test_a_one_way_cut_blocks_the_dialers_links_only(cluster: ChaosCluster) -> None:
    cluster.partition({(1, 2)})
    modes = cluster.fleet.modes()
    assert modes["n1->n2"] == BLACKHOLE and modes["c1->n2"] == BLACKHOLE
    assert modes["n2->n1"] == PASS and modes["c2->n1"] == PASS
    assert all(m == PASS for name, m in modes.items() if name not in {"n1->n2", "c1->n2"})
    slow = LinkMode(delay_ms=50)
    cluster.degrade(slow)
    modes = cluster.fleet.modes()
    assert modes["n1->n2"] == BLACKHOLE  # cuts win over degradation
    assert modes["n2->n1"] == slow and modes["c3->n1"] == slow
    assert modes["c1->n1"] == PASS  # a client's own node is never degraded
    cluster.heal_network()
    assert set(cluster.fleet.modes().values()) == {PASS}
    with pytest.raises(ValueError):
        cluster.partition({(1, 1)})
