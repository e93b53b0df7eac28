"""Negative controls: break one rule of the core (a test-only hazard switch)
and the simulator must report a safety violation within a few hundred seeds,
with a replay command that reproduces it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raft.sim import SeedResult, run_seed
from raft.sim.checker import (
    ELECTION_SAFETY,
    LEADER_COMPLETENESS,
    LOG_MATCHING,
    READ_SAFETY,
    STATE_MACHINE_SAFETY,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SAFETY_KINDS = {ELECTION_SAFETY, LOG_MATCHING, LEADER_COMPLETENESS, STATE_MACHINE_SAFETY, READ_SAFETY}
SEARCHED = range(1, 301)


def _first_failing(hazard: str) -> SeedResult:
    for seed in SEARCHED:
        result = run_seed(seed, hazards=frozenset({hazard}))
        if not result.ok:
            return result
    pytest.fail(f"hazard {hazard} went unnoticed on seeds {SEARCHED.start}-{SEARCHED.stop - 1}")


@pytest.mark.parametrize(
    ("hazard", "expected"),
    [
        # An ack sent before the entry was durable: the entry is committed,
        # the acker crashes and loses it, a leader without it is elected.
        ("ack-before-persist", {LEADER_COMPLETENESS, STATE_MACHINE_SAFETY, ELECTION_SAFETY, LOG_MATCHING}),
        # A vote forgotten by a restart: two leaders in one term.
        ("forget-vote-on-restart", {ELECTION_SAFETY, LOG_MATCHING}),
    ],
)
def test_hazard_is_caught_and_replays(hazard: str, expected: set[str]) -> None:
    result = _first_failing(hazard)
    kinds = {v.kind for v in result.violations}
    assert kinds <= SAFETY_KINDS, result.violations  # a real safety violation, not a crash of the sim
    assert kinds & expected, result.violations

    # Same seed, rule kept: no violation, so the hazard is what broke it.
    assert run_seed(result.seed).ok

    # The CLI reports it, exits non-zero, and prints the command to replay it.
    command = result.replay_command()
    assert f"--hazard {hazard}" in command
    proc = subprocess.run(
        [sys.executable, *command.split()[1:]], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert f"FAIL seed={result.seed} profile=safety nodes=3" in lines
    assert f"  replay: {command}" in lines
    assert lines[-1].startswith("seeds=1 ")
    assert lines[-1].endswith(f"violations={len(result.violations)}")
