"""``raftlog zone-from-node`` (cluster/cli_zone.py) against a fake Kubernetes
API on loopback HTTPS (tests/helm/fake_kube_api.py), and the node's side of
the hand-over, ``$RAFTLOG_ZONE`` / ``$RAFTLOG_ZONE_FILE``
(cluster/zone_source.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster import cli, cli_zone
from cluster.static_config import ConfigError
from cluster.zone_source import environment_zone
from tests.helm.fake_kube_api import TOKEN, FakeKubeApi

ZONE = "topology.kubernetes.io/zone"
NODES = {
    "worker-1": {ZONE: "eu-west-1a", "kubernetes.io/hostname": "worker-1"},
    "bare": {"kubernetes.io/hostname": "bare"},
}


@pytest.fixture(autouse=True)
def _no_pod_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NODE_NAME", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)


def _run(api: FakeKubeApi, tmp_path: Path, *extra: str, node: str | None = "worker-1") -> int:
    argv = [
        "--out",
        str(tmp_path / "zone"),
        "--service-account-dir",
        str(api.service_account_dir(tmp_path / "sa")),
        "--api-server",
        api.url,
        *(["--node-name", node] if node else []),
        *extra,
    ]
    return cli_zone.main(argv)


def test_reads_the_nodes_zone_label_with_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeKubeApi(tmp_path, NODES) as api:
        assert _run(api, tmp_path) == 0
    assert (tmp_path / "zone").read_text() == "eu-west-1a"
    # One GET of the node, with the service account's bearer token.
    assert api.requests == [("/api/v1/nodes/worker-1", f"Bearer {TOKEN}")]
    out = capsys.readouterr()
    assert "eu-west-1a" in out.out and TOKEN not in out.out + out.err


def test_a_node_without_the_label_gives_an_empty_file_and_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "zone").write_text("stale")
    with FakeKubeApi(tmp_path, NODES) as api:
        assert _run(api, tmp_path, node="bare") == 0
    assert (tmp_path / "zone").read_text() == ""
    assert "warning: node bare has no topology.kubernetes.io/zone label" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("status", "node", "says"),
    [
        (403, "worker-1", '403 Forbidden: nodes "x" is forbidden'),
        (None, "gone", '404 Not Found: nodes "gone" not found; no such node'),
    ],
)
def test_a_refusal_exits_1_with_the_reason_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int | None, node: str, says: str
) -> None:
    with FakeKubeApi(tmp_path, NODES, refuse_with=status) as api:
        assert _run(api, tmp_path, node=node) == 1
    assert not (tmp_path / "zone").exists()
    err = capsys.readouterr().err
    assert says in err and TOKEN not in err
    if status == 403:
        assert "ClusterRole" in err  # what to fix


def test_a_wrong_token_is_a_401(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeKubeApi(tmp_path, NODES) as api:
        sa = api.service_account_dir(tmp_path / "sa", token="not-the-token")
        argv = ["--out", str(tmp_path / "zone"), "--service-account-dir", str(sa), "--api-server", api.url]
        assert cli_zone.main([*argv, "--node-name", "worker-1"]) == 1
    assert "401 Unauthorized" in capsys.readouterr().err
    assert not (tmp_path / "zone").exists()


def test_the_server_certificate_is_checked_against_the_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeKubeApi(tmp_path / "a", NODES) as api, FakeKubeApi(tmp_path / "b", NODES) as other:
        sa = api.service_account_dir(tmp_path / "sa")
        (sa / "ca.crt").write_bytes(other.ca_file.read_bytes())  # another cluster's CA
        argv = ["--out", str(tmp_path / "zone"), "--service-account-dir", str(sa), "--api-server", api.url]
        assert cli_zone.main([*argv, "--node-name", "worker-1"]) == 1
    assert "cannot reach the API server" in capsys.readouterr().err
    assert api.requests == []  # the token was never sent


def test_unreachable_api_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeKubeApi(tmp_path, NODES) as api:
        sa = api.service_account_dir(tmp_path / "sa")
    url = api.url  # closed now
    argv = ["--out", str(tmp_path / "zone"), "--service-account-dir", str(sa), "--api-server", url]
    assert cli_zone.main([*argv, "--node-name", "worker-1", "--timeout", "2"]) == 1
    assert "cannot reach the API server" in capsys.readouterr().err


def test_usage_errors_exit_2_and_ask_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeKubeApi(tmp_path, NODES) as api:
        assert _run(api, tmp_path, node=None) == 2
        assert "set $NODE_NAME" in capsys.readouterr().err
        out = ["--out", str(tmp_path / "zone"), "--api-server", api.url, "--node-name", "worker-1"]
        assert cli_zone.main([*out, "--service-account-dir", str(tmp_path / "nowhere")]) == 2
        assert "service account token" in capsys.readouterr().err
        sa = api.service_account_dir(tmp_path / "sa")
        plain = ["--out", str(tmp_path / "zone"), "--service-account-dir", str(sa), "--node-name", "w"]
        assert cli_zone.main([*plain, "--api-server", "http://127.0.0.1:1"]) == 2
        assert "expected an https:// URL" in capsys.readouterr().err
        missing_dir = ["--out", str(tmp_path / "no" / "zone"), "--service-account-dir", str(sa)]
        assert cli_zone.main([*missing_dir, "--api-server", api.url, "--node-name", "worker-1"]) == 2
    assert api.requests == []
    assert not (tmp_path / "zone").exists()


def test_node_name_from_the_environment_and_the_registered_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_NAME", "worker-1")
    with FakeKubeApi(tmp_path, NODES) as api:
        sa = api.service_account_dir(tmp_path / "sa")
        host, port = api.url.removeprefix("https://").split(":")
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
        # `raftlog zone-from-node`, with the API server from the pod's environment.
        assert (
            cli.main(["zone-from-node", "--out", str(tmp_path / "zone"), "--service-account-dir", str(sa)])
            == 0
        )
    assert (tmp_path / "zone").read_text() == "eu-west-1a"


def test_the_api_server_url_from_the_pod_environment() -> None:
    assert cli_zone.api_server({}) == "https://kubernetes.default.svc"
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert cli_zone.api_server(env) == "https://10.96.0.1:443"
    env6 = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert cli_zone.api_server(env6) == "https://[fd00::1]:443"


def test_the_node_reads_the_zone_from_the_env_else_the_file(tmp_path: Path) -> None:
    zone_file = tmp_path / "zone"
    zone_file.write_text("eu-west-1b\n")
    assert environment_zone({}) is None
    assert (
        environment_zone({"RAFTLOG_ZONE": "eu-west-1a", "RAFTLOG_ZONE_FILE": str(zone_file)}) == "eu-west-1a"
    )
    # The pod label's fieldRef gives "" where the label is not copied: the file decides.
    assert environment_zone({"RAFTLOG_ZONE": "", "RAFTLOG_ZONE_FILE": str(zone_file)}) == "eu-west-1b"
    zone_file.write_text("")  # the node has no zone label
    assert environment_zone({"RAFTLOG_ZONE": " ", "RAFTLOG_ZONE_FILE": str(zone_file)}) is None
    with pytest.raises(ConfigError, match=r"RAFTLOG_ZONE_FILE=.*init container"):
        environment_zone({"RAFTLOG_ZONE_FILE": str(tmp_path / "missing")})


def test_the_init_container_module_needs_only_the_standard_library() -> None:
    """The chart runs ``python -P -m cluster.cli_zone``: no gRPC, no CLI."""
    import subprocess
    import sys

    code = "import sys, cluster.cli_zone; print(' '.join(sorted(m for m in sys.modules if '.' not in m)))"
    done = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
    top = set(done.stdout.split())
    assert "cluster" in top and not top & {"grpc", "client", "flags", "google", "partitions", "raft"}, top


@pytest.mark.parametrize(
    ("zone_file", "says"),
    [("eu west", "zone label 'eu west'"), (None, "$RAFTLOG_ZONE_FILE=")],
    ids=["a bad zone in the file", "no file"],
)
def test_serve_takes_the_zone_file_and_refuses_a_bad_one(
    tmp_path: Path, zone_file: str | None, says: str
) -> None:
    """``raftlog serve`` reads $RAFTLOG_ZONE_FILE through zone_source and
    checks what it holds like any zone: exit 2, nothing started."""
    import os
    import subprocess
    import sys

    config = tmp_path / "cluster.toml"
    (tmp_path / "cluster.secret").write_text("ab" * 32)
    (tmp_path / "cluster.secret").chmod(0o600)
    config.write_text(
        'cluster_id = "zone"\ncluster_secret_file = "cluster.secret"\n\n'
        '[[nodes]]\nid = 1\naddress = "127.0.0.1:1"\ndata_dir = "node1"\n'
    )
    path = tmp_path / "zone"
    if zone_file is not None:
        path.write_text(zone_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTLOG_")}
    done = subprocess.run(
        [sys.executable, "-m", "cluster.serve", "--config", str(config), "--node-id", "1"],
        env={**env, "RAFTLOG_ZONE": "", "RAFTLOG_ZONE_FILE": str(path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and says in done.stderr, done
    assert not (tmp_path / "node1").exists()
