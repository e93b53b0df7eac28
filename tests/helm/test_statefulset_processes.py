"""The node pods the chart renders, run as processes: no Kubernetes API
server runs here, so this test does what the kubelet would with the
rendered StatefulSet and ConfigMap, and checks that the pods form one
cluster and that a pod added by ``--set replicas=5`` joins it.

What a pod gets is taken from the rendered objects as they are: the
container's command (none: the image entry point ``raftlog``, run here as
``python -m cluster.cli``) and args, its env (``fieldRef``s expanded as the
kubelet would: the pod's name, and the zone label Kubernetes >= 1.33 copies
onto pods), its preStop command, and the files its volume mounts put in
place (the ConfigMap's ``cluster.toml``, the Secret's cluster secret and
operator key). Only what pods do not share on one machine is mapped, the
same way for every pod:

- file system: each pod has a root of its own under ``tmp_path``; every
  absolute path in args, env and the config (``/etc/raftlog/...``, the
  data dirs under ``/var/lib/raftlog``) is taken inside that root;
- network: each pod has a network namespace of its own, here they share
  127.0.0.1: pod i's DNS name (in the config) and its own ``0.0.0.0:7001``
  (``--listen``) become 127.0.0.1:<a free port of pod i>, and its metrics
  port (the config's top-level ``metrics_port``) a free port of its own
  (written as that node's ``metrics_port``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from client import Consumer, Producer
from client.admin import Admin
from cluster import cli_health
from harness.local_cluster import free_ports
from raftlog.internal.node_proof import NODE_ADMIN_STATS, proof_metadata, read_secret_file
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc
from tests.helm.chart_render import find, render

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

ZONES = ("zone-a", "zone-b", "zone-c")
ZONE_LABEL = "metadata.labels['topology.kubernetes.io/zone']"
ENTRYPOINT = [sys.executable, "-m", "cluster.cli"]  # the image's `raftlog`
READY_S = 60.0


@dataclass
class Rendered:
    container: dict[str, Any]
    volumes: dict[str, dict[str, Any]]
    objects: list[dict[str, Any]]
    cluster_toml: str


def _render(replicas: int) -> Rendered:
    objects = render([], {"replicas": replicas})
    spec = find(objects, "StatefulSet")["spec"]
    assert spec["replicas"] == replicas
    pod = spec["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c.get("args", [""])[0] == "serve"]
    config = next(o for o in objects if o["kind"] == "ConfigMap" and "cluster.toml" in o.get("data", {}))
    return Rendered(
        container, {v["name"]: v for v in pod["volumes"]}, objects, config["data"]["cluster.toml"]
    )


def _port(container: dict[str, Any], name: str) -> int:
    return int(next(p["containerPort"] for p in container["ports"] if p["name"] == name))


@dataclass
class Pod:
    ordinal: int
    root: Path
    grpc_port: int
    metrics_port: int

    @property
    def name(self) -> str:
        return f"raftlog-{self.ordinal}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def path(self, path: str) -> str:
        """An absolute path as this pod sees it."""
        return str(self.root / path.lstrip("/"))


class Pods:
    """The pods' file systems and network (module docstring), the Secret
    they all mount (rendered once: the chart keeps it across upgrades)."""

    def __init__(self, root: Path, secret: dict[str, Any]) -> None:
        self.root = root
        self.secret = {k: base64.b64decode(v) for k, v in secret.get("data", {}).items()}
        self.secret.update({k: v.encode() for k, v in secret.get("stringData", {}).items()})
        self.pods: dict[int, Pod] = {}
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def pod(self, ordinal: int) -> Pod:
        if ordinal not in self.pods:
            grpc_port, metrics_port = free_ports(2)
            self.pods[ordinal] = Pod(ordinal, self.root / f"pod-{ordinal}", grpc_port, metrics_port)
        return self.pods[ordinal]

    def config_for(self, pod: Pod, cluster_toml: str, grpc_port: int) -> str:
        """The ConfigMap's cluster.toml as ``pod`` reads it."""

        def address(match: re.Match[str]) -> str:
            assert int(match.group(2)) == grpc_port, match.group(0)
            other = self.pod(int(match.group(1)))
            return f'address = "{other.address}"\nmetrics_port = {other.metrics_port}'

        text, count = re.subn(r'address = "raftlog-(\d+)\.[^"]*:(\d+)"', address, cluster_toml)
        assert count == cluster_toml.count("[[nodes]]"), cluster_toml
        return re.sub(r'"(/[^"]*)"', lambda m: f'"{pod.path(m.group(1))}"', text)

    def mount(self, pod: Pod, rendered: Rendered) -> None:
        """Put in place what the container's volume mounts hold."""
        grpc_port = _port(rendered.container, "grpc")
        for mount in rendered.container["volumeMounts"]:
            target = Path(pod.path(mount["mountPath"]))
            volume = rendered.volumes.get(mount["name"])
            if volume is None:  # a volumeClaimTemplate: the pod's own PVC (data)
                assert mount["name"] in _claims(rendered), mount
                target.mkdir(parents=True, exist_ok=True)
                continue
            files: dict[str, bytes]
            if "configMap" in volume:
                assert volume["configMap"]["name"] == "raftlog-config"
                files = {"cluster.toml": self.config_for(pod, rendered.cluster_toml, grpc_port).encode()}
            elif "secret" in volume:
                files = self.secret
            else:
                assert "emptyDir" in volume, volume
                target.mkdir(parents=True, exist_ok=True)
                continue
            chosen = {mount["subPath"]: files[mount["subPath"]]} if "subPath" in mount else files
            for key, content in chosen.items():
                path = target if "subPath" in mount else target / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
                path.chmod(0o400 if "secret" in volume else 0o444)

    def env(self, pod: Pod, container: dict[str, Any]) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RAFTLOG_", "OTEL_")) and k not in ("POD_NAME", "PYTHONPATH")
        }
        env["PYTHONUNBUFFERED"] = "1"
        for item in container.get("env", []):
            if "value" in item:
                value = item["value"]
                env[item["name"]] = pod.path(value) if value.startswith("/") else value
                continue
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            known = {"metadata.name": pod.name, "metadata.namespace": "raftlog", ZONE_LABEL: zone_of(pod)}
            assert field in known, f"env {item['name']}: the test does not expand {field}"
            env[item["name"]] = known[field]
        return env

    def argv(self, pod: Pod, command: list[str], grpc_port: int) -> list[str]:
        """``command`` (the image's ``raftlog`` and its args) for ``pod``."""
        assert command[0] == "raftlog", command
        args = []
        for arg in command[1:]:
            if arg == f"0.0.0.0:{grpc_port}":
                arg = pod.address  # the pod's own network namespace
            elif arg.startswith("/"):
                arg = pod.path(arg)
            args.append(arg)
        return [*ENTRYPOINT, *args]

    def start(self, ordinal: int, rendered: Rendered) -> None:
        pod = self.pod(ordinal)
        self.mount(pod, rendered)
        container = rendered.container
        command = container.get("command") or ["raftlog"]
        argv = self.argv(pod, [*command, *container["args"]], _port(container, "grpc"))
        with (self.root / f"{pod.name}.log").open("ab") as log:
            self.processes[ordinal] = subprocess.Popen(
                argv, env=self.env(pod, container), cwd=pod.root, stdout=subprocess.PIPE, stderr=log
            )

    def pre_stop(self, ordinal: int, rendered: Rendered) -> subprocess.CompletedProcess[str]:
        pod = self.pod(ordinal)
        command = rendered.container["lifecycle"]["preStop"]["exec"]["command"]
        argv = self.argv(pod, command, _port(rendered.container, "grpc"))
        env = self.env(pod, rendered.container)
        return subprocess.run(argv, env=env, cwd=pod.root, capture_output=True, text=True, timeout=40)

    def wait_ready(self, ordinals: list[int], timeout: float = READY_S) -> None:
        deadline = time.monotonic() + timeout
        for ordinal in ordinals:
            proc = self.processes[ordinal]
            assert proc.stdout is not None
            seen = b""
            with selectors.DefaultSelector() as selector:
                selector.register(proc.stdout.fileno(), selectors.EVENT_READ)
                while b"ready on" not in seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or proc.poll() is not None:
                        raise AssertionError(
                            f"raftlog-{ordinal} not ready (exit {proc.poll()}):\n{self.log(ordinal)}"
                        )
                    if selector.select(remaining):
                        seen += os.read(proc.stdout.fileno(), 4096)

    def log(self, ordinal: int) -> str:
        return "\n".join((self.root / f"raftlog-{ordinal}.log").read_text().splitlines()[-30:])

    def stop_all(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _claims(rendered: Rendered) -> set[str]:
    sts = find(rendered.objects, "StatefulSet")
    return {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}


def zone_of(pod: Pod) -> str:
    return ZONES[pod.ordinal % len(ZONES)]


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[Pods]:
    first = _render(4)
    running = Pods(tmp_path, find(first.objects, "Secret", "raftlog-auth"))
    try:
        yield running
    finally:
        running.stop_all()


async def _wait_nodes(admin: Admin, wanted: dict[int, str], timeout: float = 30.0) -> None:
    """Until the registered nodes are exactly ``wanted`` (id -> zone), alive."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        nodes = await admin.list_nodes()
        if {n.node_id: n.zone for n in nodes} == wanted and all(n.alive for n in nodes):
            return
        assert asyncio.get_running_loop().time() < deadline, [(n.node_id, n.zone, n.alive) for n in nodes]
        await asyncio.sleep(0.3)


async def _controller_role(pods: Pods, ordinal: int) -> str:
    secret = read_secret_file(Path(pods.pod(ordinal).path("/etc/raftlog/secret/cluster.secret")))
    async with grpc.aio.insecure_channel(pods.pod(ordinal).address) as channel:
        stats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
            node_admin_pb2.StatsRequest(groups=[0]),
            timeout=5,
            metadata=proof_metadata(secret, 0, NODE_ADMIN_STATS),
        )
    return str(stats.partitions[0].role)


def _metrics(pod: Pod) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{pod.metrics_port}/metrics", timeout=5) as page:
        return bytes(page.read())


def _healthy(pod: Pod) -> bool:
    return cli_health.main(["--address", pod.address, "--timeout", "3"]) == 0


async def test_the_rendered_pods_form_one_cluster_and_a_fifth_joins(pods: Pods) -> None:
    four = _render(4)
    for ordinal in range(4):  # podManagementPolicy: Parallel
        pods.start(ordinal, four)
    await asyncio.to_thread(pods.wait_ready, list(range(4)))
    assert all(_healthy(pods.pod(i)) for i in range(4))
    key = pods.secret["operator-key"].decode().strip()
    addresses = [pods.pod(i).address for i in range(4)]
    async with Admin(addresses, api_key=key, timeout_s=10) as admin:
        # Each node registered with the zone its pod runs in (the file has none).
        await _wait_nodes(admin, {i + 1: zone_of(pods.pod(i)) for i in range(4)})
        await admin.create_topic("events", 3, 3)
    sent = [f"record-{i}".encode() for i in range(30)]
    async with Producer(addresses, api_key=key) as producer:
        futures = [await producer.send("events", value, partition=i % 3) for i, value in enumerate(sent)]
        await producer.flush()
        for future in futures:
            await future
    async with Consumer(addresses, api_key=key) as consumer:
        consumer.assign([("events", p) for p in range(3)])
        await consumer.seek_to_beginning()
        got: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(got) < len(sent) and asyncio.get_running_loop().time() < deadline:
            got += [r.value or b"" for r in await consumer.poll(1.0)]
    assert sorted(got) == sorted(sent)
    assert b"raftlog_" in await asyncio.to_thread(_metrics, pods.pod(1))
    # The preStop, as the kubelet runs it before stopping a pod.
    handed = await asyncio.to_thread(pods.pre_stop, 0, four)
    assert handed.returncode == 0 and "node 1: handed off" in handed.stdout, handed

    # helm upgrade --set replicas=5: ordinal 4 starts with the new ConfigMap.
    five = _render(5)
    assert "raftlog-4." in five.cluster_toml
    pods.start(4, five)
    await asyncio.to_thread(pods.wait_ready, [4])
    assert _healthy(pods.pod(4))
    async with Admin(addresses, api_key=key, timeout_s=10) as admin:
        await _wait_nodes(admin, {i + 1: zone_of(pods.pod(i)) for i in range(5)})
    assert await _controller_role(pods, 4) == "LEARNER"
