"""Whole simulator runs: determinism, the profiles, the liveness check."""

from __future__ import annotations

import pytest

from raft.sim import run_profiles, run_seed
from raft.sim.checker import LIVENESS
from raft.sim.cluster import Cluster
from raft.sim.runner import check_liveness


def test_same_seed_same_trace() -> None:
    first = run_seed(7, steps=1500, trace=True)
    second = run_seed(7, steps=1500, trace=True)
    assert first.fingerprint == second.fingerprint
    assert first.trace == second.trace
    assert len(first.trace) > 300
    assert (first.steps, first.faults, first.stats) == (second.steps, second.faults, second.stats)


def test_same_seed_same_liveness_run() -> None:
    first = run_seed(3, profile="liveness", steps=1500)
    second = run_seed(3, profile="liveness", steps=1500)
    assert first.fingerprint == second.fingerprint
    assert first.steps == second.steps > 1500  # the healing phase ran too


def test_different_seeds_differ() -> None:
    fingerprints = {run_seed(seed, steps=800).fingerprint for seed in range(1, 9)}
    assert len(fingerprints) == 8


def test_tracing_does_not_change_the_run() -> None:
    assert run_seed(11, steps=1000, trace=True).fingerprint == run_seed(11, steps=1000).fingerprint


def test_safety_profile_injects_every_kind_of_fault() -> None:
    names: set[str] = set()
    total = 0
    for seed in range(1, 6):
        result = run_seed(seed)
        assert result.ok, result.violations
        total += result.faults
        names.update(k.removeprefix("nemesis.") for k in result.stats if k.startswith("nemesis."))
        assert result.stats["crashes"] > 0
        assert result.stats["max_applied"] > 5  # the cluster still gets work done
    assert total > 500
    assert names >= {
        "crash",
        "crash-leader",
        "arm-crash",
        "cascade",
        "election-storm",
        "rolling-restart",
        "split-vote",
        "partition",
        "isolate-leader",
        "one-way",
        "clog",
        "unclog",
        "drop-burst",
        "duplicate-burst",
        "delay-burst",
        "pause",
        "heal-network",
        "forge",
    }


def test_no_fault_profile_is_fault_free_and_busy() -> None:
    result = run_seed(1, profile="none")
    assert result.ok
    assert result.faults == 0
    assert result.stats["crashes"] == 0
    assert result.stats["max_applied"] > 150
    assert result.stats["reads_answered"] > 50


def test_all_runs_safety_then_liveness() -> None:
    results = run_profiles(2, profile="all", steps=1000)
    assert [r.profile for r in results] == ["safety", "liveness"]


def test_unknown_profile_and_hazard_are_refused() -> None:
    with pytest.raises(ValueError):
        run_seed(1, profile="chaos")
    with pytest.raises(ValueError):
        run_seed(1, hazards=frozenset({"no-such-hazard"}))


def test_replay_command_names_everything_needed() -> None:
    result = run_seed(4, nodes=5, profile="liveness", steps=1200, hazards=frozenset({"ack-before-persist"}))
    assert result.replay_command() == (
        "python -m raft.sim --seeds 4 --nodes 5 --profile liveness --steps 1200 --hazard ack-before-persist"
    )
    assert run_seed(4, steps=100).replay_command() == (
        "python -m raft.sim --seeds 4 --nodes 3 --profile safety --steps 100"
    )


def test_liveness_check_fails_when_a_majority_stays_down() -> None:
    cluster = Cluster(5)
    cluster.start()
    cluster.run(300)
    assert not cluster.failed

    def take_out_a_majority() -> None:
        cluster.crash(1, None)
        cluster.crash(2, None)

    check_liveness_after = 1
    cluster.call_later(check_liveness_after, take_out_a_majority)
    check_liveness(cluster)
    assert [v.kind for v in cluster.checker.violations] == [LIVENESS]
    assert "after healing" in cluster.checker.violations[0].description


def test_liveness_check_passes_on_a_healthy_cluster() -> None:
    cluster = Cluster(5)
    cluster.start()
    cluster.run(300)
    check_liveness(cluster)
    assert not cluster.failed
