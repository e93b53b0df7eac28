"""Assertions on what helm/raftlog renders (tests/helm/chart_render.py):
the properties the cluster's safety and the Kubernetes contract of issue 19
rest on, checked for every ci/ scenario and for a few value combinations.

- The PDB never admits losing the controller's quorum.
- Ordinal N is node N+1 with its own data dir and DNS address, and the
  StatefulSet/headless Service/ConfigMap agree on those names.
- Probes ask gRPC health on the gRPC port; startup allows a long recovery.
- No container of any kind (nodes, flag server, test hook) runs as root.
- The pod template's config checksum follows cluster.toml, and only it.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.helm.chart_render import CI_DIR, ci_values_files, find, find_all, merge_values, render

SCENARIOS = ci_values_files()
HEADLESS = "raftlog-headless"
GRPC_PORT = 7001
HAND_OFF_WAIT_S = 20  # `raftlog node hand-off` waits at most this long (plan19.md)

# Metric names the alerts may use: the "Metrics names" contract of plan19.md.
CONTRACT_METRICS = {
    "up",
    "raftlog_rpc_server_handled_total",
    "raftlog_raft_leaderless_groups",
    "raftlog_raft_elections_started_total",
    "raftlog_raft_commit_latency_seconds_bucket",
    "raftlog_raft_follower_lag_bytes",
    "raftlog_raft_follower_lag_entries",
    "raftlog_disk_free_bytes",
    "raftlog_rocksdb_write_stalled",
    "raftlog_rocksdb_pending_compaction_bytes",
}

# Value combinations beyond ci/ that change pod specs.
COMBINATIONS: list[dict[str, Any]] = [
    {"tls.enabled": True, "tls.existingSecret": "certs", "flags.autoscaling.enabled": True},
    {"replicas": 7, "controllers": 5, "scheduling.antiAffinity": "none", "serviceAccount.create": False},
    {
        "networkPolicy.enabled": True,
        "flags.enabled": False,
        "zone.fromPodLabel": False,
        "zone.fromNode.enabled": False,
    },
]


@cache
def _objects(path: Path) -> list[dict[str, Any]]:
    return render([path])


def _pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for obj in objects:
        if obj["kind"] in ("StatefulSet", "Deployment"):
            specs.append((f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "Pod":
            specs.append((f"Pod/{obj['metadata']['name']}", obj["spec"]))
    return specs


def _node_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = find(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    (node,) = [c for c in containers if c["name"] == "node"]
    return node


def _cluster_toml(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return tomllib.loads(find(objects, "ConfigMap", "raftlog-config")["data"]["cluster.toml"])


def _checksum(objects: list[dict[str, Any]]) -> str:
    annotation: str = find(objects, "StatefulSet")["spec"]["template"]["metadata"]["annotations"][
        "checksum/config"
    ]
    return annotation


@pytest.mark.parametrize("values_file", SCENARIOS, ids=lambda p: p.name)
def test_pdb_never_allows_losing_quorum(values_file: Path) -> None:
    objects = _objects(values_file)
    statefulset = find(objects, "StatefulSet")
    controllers = len(_cluster_toml(objects)["controller_nodes"])
    assert controllers % 2 == 1 and controllers >= 3
    (pdb,) = find_all(objects, "PodDisruptionBudget")
    assert "minAvailable" not in pdb["spec"]
    max_unavailable = pdb["spec"]["maxUnavailable"]
    # A majority of the voters and of any 3-replica partition stays up.
    assert isinstance(max_unavailable, int) and 1 <= max_unavailable <= min((controllers - 1) // 2, 1)
    # The budget covers exactly the node pods.
    assert pdb["spec"]["selector"]["matchLabels"] == statefulset["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("values_file", SCENARIOS, ids=lambda p: p.name)
def test_every_ordinal_is_a_distinct_node(values_file: Path) -> None:
    objects = _objects(values_file)
    statefulset = find(objects, "StatefulSet")
    replicas = statefulset["spec"]["replicas"]
    doc = _cluster_toml(objects)
    nodes = doc["nodes"]
    assert [n["id"] for n in nodes] == list(range(1, replicas + 1))
    assert len({n["data_dir"] for n in nodes}) == replicas
    assert len({n["address"] for n in nodes}) == replicas
    for ordinal, node in enumerate(nodes):
        assert node["address"] == f"raftlog-{ordinal}.{HEADLESS}.raftlog.svc.cluster.local:{GRPC_PORT}"
        assert node["data_dir"] == f"/var/lib/raftlog/node{ordinal + 1}"
    assert doc["controller_nodes"] == [1, 2, 3]
    assert doc["metrics_port"] == 9090
    assert "cluster_secret_file" not in doc
    # The names in the addresses are the ones Kubernetes gives the pods.
    assert statefulset["metadata"]["name"] == "raftlog"
    assert statefulset["spec"]["serviceName"] == HEADLESS
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    headless = find(objects, "Service", HEADLESS)
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    # The data dirs live on the PVC.
    node = _node_container(objects)
    mounts = {m["mountPath"]: m["name"] for m in node["volumeMounts"]}
    assert mounts["/var/lib/raftlog"] == "data"
    assert [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]] == ["data"]


@pytest.mark.parametrize("values_file", SCENARIOS, ids=lambda p: p.name)
def test_node_process_contract(values_file: Path) -> None:
    node = _node_container(_objects(values_file))
    args = node["args"]
    assert args[:3] == ["serve", "--config", "/etc/raftlog/cluster.toml"]
    assert "--node-id-from-pod-name" in args and "--node-id" not in args
    assert args[args.index("--listen") + 1] == f"0.0.0.0:{GRPC_PORT}"
    assert args[args.index("--bootstrap-key-file") + 1] == "/etc/raftlog/bootstrap/operator-key"
    env = {e["name"]: e for e in node["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["RAFTLOG_CLUSTER_SECRET_FILE"]["value"] == "/etc/raftlog/secret/cluster.secret"
    mounts = {m["mountPath"] for m in node["volumeMounts"]}
    assert {"/etc/raftlog/cluster.toml", "/etc/raftlog/secret/cluster.secret", "/tmp"} <= mounts
    assert node["lifecycle"]["preStop"]["exec"]["command"] == [
        "raftlog",
        "node",
        "hand-off",
        "--config",
        "/etc/raftlog/cluster.toml",
        "--node-id-from-pod-name",
    ]
    grace = find(_objects(values_file), "StatefulSet")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert grace > HAND_OFF_WAIT_S + 10


@pytest.mark.parametrize("values_file", SCENARIOS, ids=lambda p: p.name)
def test_probes_ask_grpc_health_on_the_grpc_port(values_file: Path) -> None:
    objects = _objects(values_file)
    node = _node_container(objects)
    ports = {p["name"]: p["containerPort"] for p in node["ports"]}
    assert ports["grpc"] == GRPC_PORT
    tls = "tls" in _cluster_toml(objects)
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = node[kind]
        if tls:  # kubelet's gRPC probe has no TLS: the image's health command with the CA
            command = probe["exec"]["command"]
            # The health module alone (not the whole CLI): a probe runs every few seconds.
            assert command[:4] == ["python", "-P", "-m", "cluster.cli_health"]
            assert command[command.index("--address") + 1] == f"localhost:{GRPC_PORT}"
            assert "--tls-ca" in command
        else:
            assert probe["grpc"] == {"port": GRPC_PORT}
    startup = node["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "RocksDB recovery needs minutes"


def _assert_not_root(where: str, pod_spec: dict[str, Any]) -> None:
    pod_ctx = pod_spec.get("securityContext", {})
    assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
    for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        ctx = container.get("securityContext", {})
        name = f"{where} {container['name']}"
        non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        assert non_root is True, f"{name}: runAsNonRoot"
        assert uid is not None and uid != 0, f"{name}: runAsUser {uid}"
        assert ctx.get("runAsGroup", pod_ctx.get("runAsGroup")) != 0, f"{name}: runAsGroup"
        assert ctx.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem"
        assert ctx.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation"
        assert ctx.get("privileged", False) is False, f"{name}: privileged"
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: capabilities"
        assert not ctx.get("capabilities", {}).get("add"), f"{name}: capabilities added"
        # A read-only root still needs a writable /tmp.
        assert "/tmp" in {m["mountPath"] for m in container.get("volumeMounts", [])}, f"{name}: /tmp"


@pytest.mark.parametrize(
    ("values_file", "set_values"),
    [(p, None) for p in SCENARIOS] + [(CI_DIR / "minimal-values.yaml", c) for c in COMBINATIONS],
    ids=[p.name for p in SCENARIOS] + [f"combination{i}" for i in range(len(COMBINATIONS))],
)
def test_no_value_renders_a_root_container(values_file: Path, set_values: dict[str, Any] | None) -> None:
    objects = render([values_file], set_values)
    specs = _pod_specs(objects)
    kinds = {where.split("/")[0] for where, _ in specs}
    assert {"StatefulSet", "Pod"} <= kinds  # the nodes and the helm test hook, at least
    for where, spec in specs:
        _assert_not_root(where, spec)


def test_config_checksum_follows_cluster_toml() -> None:
    minimal = [CI_DIR / "minimal-values.yaml"]
    base = _checksum(render(minimal))
    # Stable: the generated secrets (random per offline render) are not in it.
    assert _checksum(render(minimal)) == base
    for change in ({"replicas": 4}, {"cluster.raft.tickMs": 100}, {"cluster.quotas.produceMbS": 10}):
        assert _checksum(render(minimal, change)) != base, change
    # What is not in cluster.toml does not roll the nodes.
    assert _checksum(render(minimal, {"image.tag": "other", "flags.replicas": 5})) == base


def test_checksum_is_the_configmaps() -> None:
    """The annotation is the hash of the cluster.toml the ConfigMap holds."""
    import hashlib

    objects = render([CI_DIR / "minimal-values.yaml"])
    text = find(objects, "ConfigMap", "raftlog-config")["data"]["cluster.toml"]
    assert _checksum(objects) == hashlib.sha256(text.rstrip("\n").encode()).hexdigest()


def test_scheduling_presets() -> None:
    minimal = [CI_DIR / "minimal-values.yaml"]

    def pod_spec(values: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = find(render(minimal, values), "StatefulSet")["spec"]["template"]["spec"]
        return spec

    hard = pod_spec({"scheduling.antiAffinity": "hard"})["affinity"]["podAntiAffinity"]
    assert (
        hard["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    )
    soft = pod_spec({"scheduling.antiAffinity": "soft"})["affinity"]["podAntiAffinity"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in soft
    assert "affinity" not in pod_spec({"scheduling.antiAffinity": "none"})
    spread = pod_spec({})["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["topology.kubernetes.io/zone"]
    assert "topologySpreadConstraints" not in pod_spec({"scheduling.zoneSpread.enabled": False})


def test_five_nodes_three_zones_scenario() -> None:
    objects = _objects(CI_DIR / "five-nodes-three-zones-values.yaml")
    spec = find(objects, "StatefulSet")["spec"]["template"]["spec"]
    assert spec["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "DoNotSchedule"
    env = {e["name"]: e for e in _node_container(objects)["env"]}
    # The zone reaches the node as its rack label.
    assert (
        env["RAFTLOG_ZONE"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.labels['topology.kubernetes.io/zone']"
    )
    assert len(_cluster_toml(objects)["nodes"]) == 5


def test_otel_env_from_secrets_reaches_every_raftlog_container() -> None:
    """otel.envFrom (OTLP auth headers out of the pod spec) on the nodes and
    the flag server, exactly as given; nothing when the list is empty."""
    path = CI_DIR / "metrics-values.yaml"
    wanted = merge_values([path])["otel"]["envFrom"]
    assert any("secretRef" in item for item in wanted)
    specs = [(w, s) for w, s in _pod_specs(_objects(path)) if not w.startswith("Pod/")]
    assert {w.split("/")[0] for w, _ in specs} == {"StatefulSet", "Deployment"}
    for where, spec in specs:
        assert spec["containers"][0]["envFrom"] == wanted, where
    for where, spec in _pod_specs(_objects(CI_DIR / "minimal-values.yaml")):
        assert all("envFrom" not in c for c in spec["containers"]), where


def test_otel_env_passthrough() -> None:
    path = CI_DIR / "metrics-values.yaml"
    wanted = merge_values([path])["otel"]["env"]
    assert wanted
    for where, spec in _pod_specs(_objects(path)):
        if where.startswith("Pod/"):
            continue  # the test hook traces nothing
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert {k: env.get(k) for k in wanted} == wanted, where


def test_flags_switch() -> None:
    off = _objects(CI_DIR / "flags-off-values.yaml")
    assert not find_all(off, "Deployment") and not find_all(off, "HorizontalPodAutoscaler")
    assert not [s for s in find_all(off, "Service") if s["metadata"]["name"] == "raftlog-flags"]
    on = _objects(CI_DIR / "metrics-values.yaml")
    deployment = find(on, "Deployment", "raftlog-flags")
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    assert find(on, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "raftlog-flags"


def test_tls_scenario() -> None:
    objects = _objects(CI_DIR / "tls-values.yaml")
    cert = find(objects, "Certificate")
    assert "*.raftlog-headless.raftlog.svc.cluster.local" in cert["spec"]["dnsNames"]
    assert {"server auth", "client auth"} <= set(cert["spec"]["usages"])
    tls = _cluster_toml(objects)["tls"]
    assert tls["cert_file"] == "/etc/raftlog/tls/tls.crt"
    # The internal (mTLS) port is open to node pods only.
    policy = find(objects, "NetworkPolicy", "raftlog")
    (internal,) = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == GRPC_PORT + 10000]
    node_labels = find(objects, "StatefulSet")["spec"]["selector"]["matchLabels"]
    assert internal["from"] == [{"podSelector": {"matchLabels": node_labels}}]


def test_alerts_use_contract_metric_names() -> None:
    (rule,) = find_all(_objects(CI_DIR / "metrics-values.yaml"), "PrometheusRule")
    used: set[str] = set()
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            used |= set(re.findall(r"\b(raftlog_[a-z0-9_]+|up)\s*\{", alert["expr"]))
    assert used and used <= CONTRACT_METRICS, used - CONTRACT_METRICS


def test_helm_test_hook_produces_and_consumes_through_the_client_service() -> None:
    objects = _objects(CI_DIR / "minimal-values.yaml")
    (pod,) = find_all(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    client = find(objects, "Service", "raftlog")
    assert (
        env["RAFTLOG_BOOTSTRAP"]["value"]
        == f"{client['metadata']['name']}.raftlog.svc.cluster.local:{GRPC_PORT}"
    )
    assert env["RAFTLOG_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "operator-key"
    script = container["args"][0]
    assert "raftlog produce" in script and "raftlog consume" in script


# Every node metric of the plan19.md contract (histograms by base name).
ALL_CONTRACT_METRICS = {
    "raftlog_rpc_server_handled_total",
    "raftlog_rpc_server_handling_seconds",
    "raftlog_tenant_produce_bytes_total",
    "raftlog_tenant_fetch_bytes_total",
    "raftlog_tenant_throttle_seconds_total",
    "raftlog_tenant_throttled_requests_total",
    "raftlog_raft_replicas",
    "raftlog_raft_leaders",
    "raftlog_raft_hibernating_replicas",
    "raftlog_raft_leaderless_groups",
    "raftlog_raft_elections_started_total",
    "raftlog_raft_commit_latency_seconds",
    "raftlog_raft_follower_lag_entries",
    "raftlog_raft_follower_lag_bytes",
    "raftlog_raft_snapshots_sent_total",
    "raftlog_group_commit_syncs_total",
    "raftlog_group_commit_sync_seconds",
    "raftlog_group_commit_batch_writes",
    "raftlog_group_commit_batch_bytes",
    "raftlog_rocksdb_live_data_bytes",
    "raftlog_rocksdb_pending_compaction_bytes",
    "raftlog_rocksdb_write_stalled",
    "raftlog_disk_free_bytes",
    "raftlog_consumer_group_lag_records",
    "raftlog_transport_sent_bytes_total",
    "raftlog_transport_dropped_messages_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
}


def test_dashboard_uses_contract_metric_names() -> None:
    import json

    dashboard = json.loads((CI_DIR.parent / "dashboards" / "raftlog.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {
        re.sub(r"_(bucket|sum|count)$", "", n)
        for e in exprs
        for n in re.findall(r"\b((?:raftlog|process)_[a-z0-9_]+)\{", e)
    }
    assert len(names) >= 10 and names <= ALL_CONTRACT_METRICS, names - ALL_CONTRACT_METRICS


def _init_containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = find(objects, "StatefulSet")["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = spec.get("initContainers", [])
    return containers


def test_zone_from_node_init_container_and_its_rbac() -> None:
    """The fallback route to the zone (cluster/cli_zone.py): the init
    container asks the API for its Node with a token no other container
    gets, writes where the node reads ($RAFTLOG_ZONE_FILE), and the RBAC
    grants exactly `get nodes` to the pods' service account."""
    objects = _objects(CI_DIR / "minimal-values.yaml")
    statefulset = find(objects, "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    (init,) = _init_containers(objects)
    assert init["command"] == ["python", "-P", "-m", "cluster.cli_zone"]
    args = init["args"]
    env = {e["name"]: e for e in init["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    token_dir = args[args.index("--service-account-dir") + 1]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    projected = volumes[mounts[token_dir]]["projected"]["sources"]
    assert {"serviceAccountToken", "configMap"} <= {k for source in projected for k in source}
    # The pod automounts no token: only the init container holds one.
    assert pod["automountServiceAccountToken"] is False
    node = _node_container(objects)
    assert mounts[token_dir] not in {m["name"] for m in node["volumeMounts"]}
    # The file it writes is the one the node reads, on a volume both mount.
    out = args[args.index("--out") + 1]
    node_env = {e["name"]: e for e in node["env"]}
    assert node_env["RAFTLOG_ZONE_FILE"]["value"] == out
    zone_volume = mounts[str(Path(out).parent)]
    assert "emptyDir" in volumes[zone_volume]
    assert {m["name"]: m.get("readOnly") for m in node["volumeMounts"]}[zone_volume] is True
    # RBAC: get on nodes, nothing more, for the pods' service account.
    role = find(objects, "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    binding = find(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "raftlog"}
    ]
    # Cluster-scoped names carry the namespace: two releases never share them.
    assert "raftlog" in role["metadata"]["name"] and "namespace" not in role["metadata"]


def test_zone_routes_can_be_switched_off() -> None:
    minimal = [CI_DIR / "minimal-values.yaml"]
    off = render(minimal, {"zone.fromNode.enabled": False})
    assert not _init_containers(off)
    assert not find_all(off, "ClusterRole") and not find_all(off, "ClusterRoleBinding")
    volumes = {v["name"] for v in find(off, "StatefulSet")["spec"]["template"]["spec"]["volumes"]}
    assert not {"zone", "kube-api-access"} & volumes
    env = {e["name"] for e in _node_container(off)["env"]}
    assert "RAFTLOG_ZONE_FILE" not in env and "RAFTLOG_ZONE" in env
    no_label = {e["name"] for e in _node_container(render(minimal, {"zone.fromPodLabel": False}))["env"]}
    assert "RAFTLOG_ZONE" not in no_label and "RAFTLOG_ZONE_FILE" in no_label
