"""``raftlog serve`` as a pod runs it (cluster/serve.py): the node id from
the pod's name, ``--listen`` apart from the advertised address, the zone
from the environment, JSON logs; the bad values that stop it with exit 2;
and ``raftlog health`` (cluster/cli_health.py)."""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.admin import Admin
from cluster import cli
from cluster.serve import chosen_node_id, node_id_from_pod_name, with_zone
from cluster.static_config import ConfigError, NodeSpec, StaticCluster
from harness.local_cluster import free_ports, new_operator_key
from raftlog.internal.node_proof import ensure_secret_file

pytestmark = pytest.mark.timeout(90)


def test_the_node_id_is_the_pod_ordinal_plus_one() -> None:
    assert node_id_from_pod_name({"POD_NAME": "raftlog-0"}) == 1
    assert node_id_from_pod_name({"POD_NAME": "my-raftlog-12"}) == 13
    with pytest.raises(ConfigError, match=r"\$POD_NAME is not set"):
        node_id_from_pod_name({})
    with pytest.raises(ConfigError, match="does not end in -<ordinal>"):
        node_id_from_pod_name({"POD_NAME": "raftlog"})
    with pytest.raises(ConfigError, match="does not end in -<ordinal>"):
        node_id_from_pod_name({"POD_NAME": "raftlog-3a"})
    from_pod = argparse.Namespace(node_id=None, node_id_from_pod_name=True)
    assert chosen_node_id(from_pod, {"POD_NAME": "raftlog-2"}) == 3
    with pytest.raises(ConfigError, match="--node-id N or --node-id-from-pod-name"):
        chosen_node_id(argparse.Namespace(node_id=None, node_id_from_pod_name=False), {})


def test_the_zone_replaces_only_this_nodes_label() -> None:
    nodes = (NodeSpec(1, "a:1", Path("d1"), zone="x"), NodeSpec(2, "b:1", Path("d2"), zone="x"))
    cluster = StaticCluster("c", nodes, ())
    changed = with_zone(cluster, 2, "zone-b")
    assert [n.zone for n in changed.nodes] == ["x", "zone-b"]
    assert with_zone(cluster, 2, None) is cluster
    with pytest.raises(ConfigError, match="zone label"):
        with_zone(cluster, 2, "eu west")


def _write_single_node(tmp_path: Path, address: str) -> Path:
    secret = tmp_path / "cluster.secret"
    ensure_secret_file(secret)
    config = tmp_path / "cluster.toml"
    config.write_text(
        f'cluster_id = "flags"\ncluster_secret_file = "cluster.secret"\n\n'
        f'[[nodes]]\nid = 1\naddress = "{address}"\ndata_dir = "node1"\nzone = "from-the-file"\n'
    )
    return config


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--node-id-from-pod-name"], {}, "$POD_NAME is not set"),
        (["--node-id-from-pod-name"], {"POD_NAME": "raftlog"}, "does not end in -<ordinal>"),
        (["--node-id", "1", "--node-id-from-pod-name"], {}, "not allowed with"),
        ([], {}, "--node-id N or --node-id-from-pod-name"),
        (["--node-id", "1", "--zone", "eu west"], {}, "zone label"),
        (["--node-id", "1"], {"RAFTLOG_ZONE": "eu west"}, "zone label"),
        (["--node-id", "1", "--listen", "7001"], {}, "expected HOST:PORT"),
        (["--node-id", "1"], {"RAFTLOG_LOG_FORMAT": "xml"}, "RAFTLOG_LOG_FORMAT"),
    ],
)
def test_bad_flags_exit_2_before_anything_starts(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    config = _write_single_node(tmp_path, "127.0.0.1:1")
    base = {
        k: v for k, v in os.environ.items() if k not in ("POD_NAME", "RAFTLOG_ZONE", "RAFTLOG_LOG_FORMAT")
    }
    done = subprocess.run(
        [sys.executable, "-m", "cluster.serve", "--config", str(config), *args],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done
    assert says in done.stderr
    assert not (tmp_path / "node1").exists()  # nothing was started


def test_raftlog_serve_passes_the_pod_flags_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import cluster.serve

    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    monkeypatch.setattr(cluster.serve, "main", fake_main)
    argv = ["serve", "--config", "c.toml", "--node-id-from-pod-name", "--listen", "0.0.0.0:7001"]
    assert cli.main([*argv, "--zone", "z", "--log-format", "json"]) == 0
    assert seen == [[*argv[1:], "--zone", "z", "--log-format", "json"]]


def _health(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", "health", *args], capture_output=True, text=True, timeout=30
    )


def _start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """``raftlog ARGS`` in ``cwd``; its log lines go to ``cwd/node.log``."""
    with (cwd / "node.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=log
        )


def _wait_ready(proc: subprocess.Popen[bytes], timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout.fileno(), selectors.EVENT_READ)
        seen = b""
        while b"ready on" not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0 and proc.poll() is None, f"node not ready (exit {proc.poll()})"
            if selector.select(remaining):
                seen += os.read(proc.stdout.fileno(), 4096)


async def test_a_pod_like_node_binds_listen_takes_its_id_zone_and_log_format(tmp_path: Path) -> None:
    """Advertised under a name that does not resolve here (a pod's DNS
    name): without ``--listen`` it could not bind at all."""
    (port,) = free_ports(1)
    config = _write_single_node(tmp_path, f"raftlog-0.raftlog-headless.invalid:{port}")
    key_file = tmp_path / "operator.key"
    key = new_operator_key()
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    down = _health("--address", f"127.0.0.1:{port}", "--timeout", "1")
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr, down
    env = {
        **os.environ,
        "POD_NAME": "raftlog-0",
        "RAFTLOG_ZONE": "zone-a",
        "RAFTLOG_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    args = ["--node-id-from-pod-name", "--listen", f"127.0.0.1:{port}", "--bootstrap-key-file", str(key_file)]
    proc = _start(["serve", "--config", str(config), *args], env, tmp_path)
    try:
        _wait_ready(proc, 30)
        up = _health("--address", f"127.0.0.1:{port}")
        assert up.returncode == 0, up
        async with Admin([f"127.0.0.1:{port}"], api_key=key, timeout_s=5) as admin:
            (node,) = await admin.list_nodes()
        assert (node.node_id, node.zone) == (1, "zone-a")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    lines = [
        json.loads(line) for line in (tmp_path / "node.log").read_text().splitlines() if line.startswith("{")
    ]
    assert lines and all(line["node_id"] == 1 for line in lines)
