"""LocalCluster's wait for a node's ready line, with a stand-in process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.local_cluster import LocalCluster


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
