"""LocalCluster's wait for a node's ready line, with a stand-in process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.local_cluster import LocalCluster, StartInterrupted


def stand_in(tmp_path: Path, code: str) -> tuple[LocalCluster, subprocess.Popen[bytes]]:
    cluster = LocalCluster.from_config(tmp_path, tmp_path / "cluster.toml", {1: "127.0.0.1:1"})
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    cluster.processes[1] = proc
    return cluster, proc


def test_a_node_that_hangs_without_printing_times_out(tmp_path: Path) -> None:
    cluster, proc = stand_in(tmp_path, "import time; time.sleep(60)")
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"node 1 not ready after 0\.3s"):
            cluster._wait_ready(1, proc, 0.3)
        assert time.monotonic() - started < 5
    finally:
        cluster.close()


def test_the_ready_line_and_an_early_exit_are_told_apart(tmp_path: Path) -> None:
    cluster, proc = stand_in(
        tmp_path, "print('starting'); print('node 1 ready on x', flush=True); import time; time.sleep(60)"
    )
    try:
        cluster._wait_ready(1, proc, 10)
    finally:
        cluster.close()
    cluster, proc = stand_in(tmp_path, "print('starting'); raise SystemExit(3)")
    with pytest.raises(RuntimeError, match=r"node 1 exited \(3\) before it was ready"):
        cluster._wait_ready(1, proc, 10)
    cluster.close()


# A stand-in node that, once its SIGTERM handler is in place, says it is
# ready; on SIGTERM it takes STOP_S to exit 0 (IGNORE_TERM: never exits).
SLOW_STOP = """
import signal, sys, time
def stop(*_):
    time.sleep({stop_s})
    sys.exit(0)
signal.signal(signal.SIGTERM, {handler})
print('node ready on x', flush=True)
time.sleep(60)
"""


def slow_stand_ins(tmp_path: Path, handlers: dict[int, str], stop_s: float = 0.8) -> LocalCluster:
    cluster = LocalCluster.from_config(
        tmp_path, tmp_path / "cluster.toml", {n: "127.0.0.1:1" for n in handlers}
    )
    for node, handler in handlers.items():
        code = SLOW_STOP.format(stop_s=stop_s, handler=handler)
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        cluster.processes[node] = proc
        cluster._wait_ready(node, proc, 10)
    return cluster


def test_stop_all_stops_the_nodes_together_within_one_grace_period(tmp_path: Path) -> None:
    cluster = slow_stand_ins(tmp_path, {1: "stop", 2: "stop", 3: "stop"}, stop_s=0.8)
    try:
        started = time.monotonic()
        assert cluster.stop_all(timeout=5) == {1: 0, 2: 0, 3: 0}
        # One by one would take 3 x 0.8 s.
        assert time.monotonic() - started < 1.8
        assert cluster.processes == {}
    finally:
        cluster.close()


def test_stop_all_kills_only_a_node_still_running_after_the_grace_and_says_so(tmp_path: Path) -> None:
    cluster = slow_stand_ins(tmp_path, {1: "stop", 2: "signal.SIG_IGN"}, stop_s=0.2)
    killed: list[int] = []
    try:
        started = time.monotonic()
        codes = cluster.stop_all(timeout=1.5, on_kill=killed.append)
        elapsed = time.monotonic() - started
    finally:
        cluster.close()
    assert codes == {1: 0, 2: -signal.SIGKILL}
    assert killed == [2]
    assert 1.4 < elapsed < 4


def test_start_all_stops_waiting_once_interrupted(tmp_path: Path) -> None:
    cluster, proc = stand_in(tmp_path, "import time; time.sleep(60)")
    asked_at = time.monotonic() + 0.3
    try:
        with pytest.raises(StartInterrupted, match="node 1"):
            cluster._wait_ready(1, proc, 30, interrupted=lambda: time.monotonic() > asked_at)
        assert time.monotonic() - asked_at < 2
        assert proc.poll() is None, "interrupting the wait must leave the node to the caller"
    finally:
        cluster.close()
