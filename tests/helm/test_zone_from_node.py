"""The zone's route through the rendered pod, run as the kubelet would run
it: the StatefulSet's zone-from-node init container (its command, args and
env exactly as rendered) against a fake Kubernetes API
(tests/helm/fake_kube_api.py), then the node container's env as the node
reads it (cluster/zone_source.py), on a cluster where the pod label is not
copied (Kubernetes < 1.35 without the PodTopologyLabelsAdmission gate: the
fieldRef gives "").

Paths are mapped as in test_statefulset_processes.py: every absolute path
in args and env is taken under the pod's own root in ``tmp_path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cluster.zone_source import environment_zone
from tests.helm.chart_render import CI_DIR, find, render
from tests.helm.fake_kube_api import FakeKubeApi

ZONE_LABEL_REF = "metadata.labels['topology.kubernetes.io/zone']"
NODE = "worker-7"


def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = find(render([CI_DIR / "minimal-values.yaml"]), "StatefulSet")["spec"]["template"][
        "spec"
    ]
    return spec


def _under(root: Path, path: str) -> str:
    return str(root / path.lstrip("/")) if path.startswith("/") else path


def _env(root: Path, container: dict[str, Any], fields: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _under(root, item["value"])
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def _run_init(root: Path, api: FakeKubeApi, init: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    # The volumes the init container mounts: the projected token and CA, empty dirs.
    for mount in init["volumeMounts"]:
        target = root / mount["mountPath"].lstrip("/")
        if mount["name"] == "kube-api-access":
            api.service_account_dir(target)
        else:
            target.mkdir(parents=True, exist_ok=True)
    assert init["command"][0] == "python"
    argv = [sys.executable, *init["command"][1:], *[_under(root, a) for a in init["args"]]]
    host, port = api.url.removeprefix("https://").split(":")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAFTLOG_", "KUBERNETES_", "NODE_"))}
    # What the kubelet sets in every pod, and the rendered env.
    env |= {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    env |= _env(root, init, {"spec.nodeName": NODE})
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_the_init_container_hands_the_nodes_zone_to_the_node(tmp_path: Path) -> None:
    pod = _pod()
    (init,) = pod["initContainers"]
    (node,) = [c for c in pod["containers"] if c["name"] == "node"]
    with FakeKubeApi(tmp_path, {NODE: {"topology.kubernetes.io/zone": "eu-west-1c"}}) as api:
        done = _run_init(tmp_path / "pod", api, init)
    assert done.returncode == 0, done.stderr
    assert [path for path, _ in api.requests] == [f"/api/v1/nodes/{NODE}"]
    # The node container: the pod label's fieldRef is empty here, the file decides.
    node_env = _env(tmp_path / "pod", node, {"metadata.name": "raftlog-0", ZONE_LABEL_REF: ""})
    assert environment_zone(node_env) == "eu-west-1c"


def test_a_refused_init_container_fails_the_pod_start(tmp_path: Path) -> None:
    pod = _pod()
    (init,) = pod["initContainers"]
    with FakeKubeApi(tmp_path, {NODE: {}}, refuse_with=403) as api:
        done = _run_init(tmp_path / "pod", api, init)
    assert done.returncode == 1 and "403 Forbidden" in done.stderr
    (node,) = [c for c in pod["containers"] if c["name"] == "node"]
    assert not Path(
        _env(tmp_path / "pod", node, {"metadata.name": "raftlog-0", ZONE_LABEL_REF: ""})["RAFTLOG_ZONE_FILE"]
    ).exists()
