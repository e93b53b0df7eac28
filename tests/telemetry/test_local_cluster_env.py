"""``LocalCluster`` node processes never inherit ``OTEL_*`` from the caller
(harness/local_cluster.py, class docstring): a benchmark's "telemetry off"
run stays off whatever the shell exported; ``node_env`` still sets them."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from harness.local_cluster import LocalCluster

pytestmark = pytest.mark.timeout(60)


def _inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-the-shell")
    monkeypatch.setenv("RAFTLOG_TEST_KEEP", "kept")


def test_node_environment_drops_otel_unless_node_env_sets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inherited(monkeypatch)
    off = LocalCluster(tmp_path / "off", nodes=1, metrics=False).node_environment()
    assert not [k for k in off if k.startswith("OTEL_")], off
    assert off["RAFTLOG_TEST_KEEP"] == "kept"  # everything else is inherited

    on = LocalCluster(
        tmp_path / "on", nodes=1, metrics=False, node_env={"OTEL_SERVICE_NAME": "bench"}
    ).node_environment()
    assert {k: v for k, v in on.items() if k.startswith("OTEL_")} == {"OTEL_SERVICE_NAME": "bench"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/environ")
def test_a_started_node_process_has_no_inherited_otel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inherited(monkeypatch)
    cluster = LocalCluster(tmp_path, nodes=1, metrics=False, node_env={"OTEL_SERVICE_NAME": "bench"})
    cluster.launch(1)
    try:
        proc = Path(f"/proc/{cluster.processes[1].pid}")
        # Between fork and exec the child's /proc files show the parent (or
        # nothing, mid-exec): read the environment once it runs the node.
        deadline = time.monotonic() + 20
        while b"cluster.serve" not in (proc / "cmdline").read_bytes():
            assert time.monotonic() < deadline, "the node process never started"
            time.sleep(0.01)
        raw = (proc / "environ").read_bytes()
    finally:
        cluster.kill(1)
    env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    assert {k: v for k, v in env.items() if k.startswith("OTEL_")} == {"OTEL_SERVICE_NAME": "bench"}
    assert env["RAFTLOG_TEST_KEEP"] == "kept"
