"""Acknowledged writes survive a SIGKILL of the node process.

The subject is ``crash_writer.py``: several groups writing Raft-shaped
workloads through one group-commit writer, printing ``ACK``/``STEP`` lines
only after a write's future resolved. Each iteration kills it with SIGKILL at
a seeded random moment, reopens the store and checks, for every group:

- the log is contiguous and agrees with its term and conf indexes
  (``GroupStorage.verify``);
- the group is in the state after its last acknowledged step, or after the
  one step that was in flight (a write may be durable and not yet
  acknowledged; it can never be partly there): every ``Storage`` method
  answers like the reference storage replaying the same steps;
- every acknowledged (group, index) that the group's state still holds is
  present with the acknowledged bytes.

``RAFTLOG_CRASH_ITERATIONS`` (default 3) sets the number of kills.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from partitions.node_store import NodeStore
from partitions.raft_storage import GroupStorage
from raft.storage import MemoryStorage
from tests.partitions.crash_writer import workload_for
from tests.partitions.storage_checks import assert_same

REPO = Path(__file__).resolve().parents[2]
ITERATIONS = int(os.environ.get("RAFTLOG_CRASH_ITERATIONS", "3"))
GROUPS = 8


def run_and_kill(path: Path, seed: int, kill_after: float, stderr_path: Path) -> list[str]:
    """Start the crash writer, SIGKILL it ``kill_after`` seconds after its first
    acknowledgement, and return every complete line it printed."""
    command = [sys.executable, "-m", "tests.partitions.crash_writer", str(path)]
    command += ["--seed", str(seed), "--groups", str(GROUPS)]
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        assert proc.stdout is not None
        stdout = proc.stdout
        lines: list[str] = []
        first = threading.Event()

        def read() -> None:  # keep the pipe drained so the writer never blocks on it
            for line in stdout:
                lines.append(line)
                first.set()
            first.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert first.wait(60), "the crash writer acknowledged nothing"
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(30)
            reader.join(30)
    assert proc.returncode == -signal.SIGKILL, stderr_path.read_text()
    return [line for line in lines if line.endswith("\n")]  # a torn last line promises nothing


def parse(lines: list[str]) -> tuple[dict[int, int], dict[int, set[int]]]:
    """Last acknowledged step per group, and every acknowledged index per group."""
    steps: dict[int, int] = {}
    acked: dict[int, set[int]] = {}
    for line in lines:
        kind, group, number = line.split()
        if kind == "STEP":
            steps[int(group)] = int(number)
        else:
            assert kind == "ACK", line
            acked.setdefault(int(group), set()).add(int(number))
    return steps, acked


def same(storage: GroupStorage, model: MemoryStorage, rng: random.Random) -> bool:
    try:
        assert_same(storage, model, rng)
    except AssertionError:
        return False
    return True


def check_group(
    store: NodeStore, seed: int, group: int, last_step: int, acked: set[int], rng: random.Random
) -> None:
    workload = workload_for(seed, group)
    for _ in range(last_step):
        workload.next_step()
    acknowledged = workload.model.copy()
    workload.next_step()  # the write that may have been in flight
    in_flight = workload.model

    storage = GroupStorage(store, group)
    storage.verify()
    if same(storage, acknowledged, rng):
        state = acknowledged
    else:
        assert same(storage, in_flight, rng), f"group {group}: neither step {last_step} nor {last_step + 1}"
        state = in_flight
    first, last = state.first_index(), state.last_index()
    for index in sorted(acked):
        if first <= index <= last:
            assert storage.entries(index, index + 1) == state.entries(index, index + 1), (group, index)


@pytest.mark.parametrize("iteration", range(ITERATIONS))
def test_acknowledged_writes_survive_sigkill(tmp_path: Path, iteration: int) -> None:
    rng = random.Random(9000 + iteration)
    seed = rng.randrange(2**32)
    kill_after = rng.uniform(0.05, 1.0)
    path = tmp_path / "store"
    lines = run_and_kill(path, seed, kill_after, tmp_path / "stderr.txt")
    steps, acked = parse(lines)
    assert sum(steps.values()) >= GROUPS, f"too little progress before the kill: {steps}"

    with NodeStore(path) as store:
        for group in range(1, GROUPS + 1):
            check_group(store, seed, group, steps.get(group, 0), acked.get(group, set()), rng)
