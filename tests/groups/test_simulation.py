"""Seeded simulations of a group under faults (see sim.py for the model and
the properties checked). A failing seed replays exactly:
``Simulation(seed).run()``."""

from __future__ import annotations

from collections import Counter

from tests.groups.sim import Simulation, SimulationFailure

SEEDS = range(24)


def test_no_double_ownership_no_zombie_commit_no_skipped_record_and_convergence() -> None:
    totals: Counter[str] = Counter()
    for seed in SEEDS:
        sim = Simulation(seed)
        try:
            sim.run()
        except SimulationFailure as failure:
            raise SimulationFailure(f"seed {seed}: {failure}") from failure
        totals.update(sim.stats)

    # The properties mean little unless the faults happen: over the seeds,
    # every kind of event the protocol guards against occurs.
    for kind in (
        "revocations",
        "crashes",
        "network cuts",
        "session drops",
        "expired",
        "failovers",
        # A successor knows the members (takeover.py): they keep their
        # partitions, even when the last change before the move never
        # reached the log (its answer was never sent). Commits refused
        # UNKNOWN_MEMBER_ID came from failovers forgetting every member;
        # they no longer happen here.
        "takeovers keeping partitions",
        "metadata appends lost",
        "leaves",
        "heartbeat refused UNKNOWN_MEMBER_ID",
        "heartbeat refused FENCED_MEMBER",
        "commit refused FENCED_MEMBER",
        "late duplicate refused STALE_MEMBER_EPOCH",
        "late duplicate refused FENCED_MEMBER",
        "late duplicates accepted",
    ):
        assert totals[kind] > 0, f"no {kind!r} in {dict(totals)}"
    # Honest members never commit a partition they do not own at their
    # epoch: a STALE_MEMBER_EPOCH here would be a spurious refusal.
    assert totals["commit refused STALE_MEMBER_EPOCH"] == 0, dict(totals)
