"""``python -m raft.sim``: output format and exit status."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from raft.sim.__main__ import main, parse_seeds

REPO = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(r"seeds=(\d+) steps=(\d+) faults=(\d+) violations=(\d+)")


def test_cli_runs_seeds_and_prints_the_summary_last() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "raft.sim", "--seeds", "1-3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.rstrip("\n").splitlines()[-1]
    match = LAST_LINE.fullmatch(last)
    assert match is not None, last
    seeds, steps, faults, violations = map(int, match.groups())
    assert (seeds, violations) == (3, 0)
    assert steps > 3 * 2 * 1000  # both profiles ran
    assert faults > 0


def test_verbose_prints_one_line_per_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "5", "--profile", "safety", "--steps", "500", "--verbose"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("seed=5 profile=safety steps=500 ")
    assert LAST_LINE.fullmatch(lines[1])


def test_trace_prints_events(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "2", "--profile", "none", "--steps", "200", "--trace"]) == 0
    out = capsys.readouterr().out
    assert "--- trace seed=2 profile=none" in out
    assert "leads term" in out


def test_seed_arguments() -> None:
    assert parse_seeds("5") == range(5, 6)
    assert parse_seeds("3-7") == range(3, 8)
    for bad in ("7-3", "x", "1-", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seeds(bad)
