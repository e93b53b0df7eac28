"""A local cluster of real node processes on loopback, for tests, benchmarks
and failover drills.

``LocalCluster`` writes a static cluster file (cluster/static_config.py)
into a directory, starts ``python -m cluster.serve`` once per node (the
server must be installed in the same environment as this SDK), waits for
each node's ready line, and can SIGKILL, SIGSTOP/SIGCONT, stop and restart
nodes. Node output goes to ``<root>/nodeN.log``. It only runs processes: it
imports nothing of the server.

Secrets (invariants): the cluster secret is a file (``secret_file``, default
``<root>/cluster.secret``, created 0600 on first use, never overwritten),
named to the nodes by ``RAFTLOG_CLUSTER_SECRET_FILE``; the bootstrap
operator key goes to the nodes in a file (``<root>/bootstrap.key``, 0600,
``--bootstrap-key-file``). Neither value is ever in a node's environment or
command line (``RAFTLOG_BOOTSTRAP_API_KEY`` is removed from the environment
the nodes inherit). Tools reach the internal NodeAdmin service with a fresh
node proof for every call (``node_admin_metadata``, the format in
proto/raftlog/internal/node_proof.py).

TLS (``tls=True``): the cluster file gets a ``[tls]`` section and
``<root>/certs`` a development CA and node certificates, made by
``python -m cluster.tls.cli init`` (a process: the harness does not import
the server). Clients pass ``tls_ca`` (the CA file) to the SDK. Each node's
internal mTLS listener is its port + ``internal_port_offset``, an offset
chosen so that every such port is free now (cluster/tls/__init__.py).

Metrics (``metrics=True``, the default): every node gets a free port as
its ``metrics_port`` and serves Prometheus ``/metrics`` there over HTTP
(cluster/telemetry/node_metrics.py); ``metrics_address(node)`` says where.
``metrics=False`` leaves the setting out: no endpoint, and no per-call
metric work in the nodes.

Stopping: ``stop_all`` sends every node SIGTERM at once and waits for them
within one grace period; a node still running after it gets SIGKILL (the
caller can be told first). With ``own_sessions`` (``from_config``) each node
runs in a session of its own, so a terminal's Ctrl-C reaches only the
program that owns the cluster, and that program stops each node exactly once
(cluster/run_local.py); otherwise the nodes share the caller's process group.
"""

from __future__ import annotations

import base64
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from raftlog.internal.node_proof import (
    NODE_ADMIN_STATS,
    ensure_secret_file,
    proof_metadata,
    read_secret_file,
)


def free_ports(count: int) -> list[int]:
    """Ports the OS just handed out (bound and released together, so they
    are distinct; another process could still take one — rare on CI)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


SECRET_FILE_ENV = "RAFTLOG_CLUSTER_SECRET_FILE"
"""Names the cluster secret file to a node (cluster/internal/cluster_secret.py)."""
DISCOURAGED_KEY_ENV = "RAFTLOG_BOOTSTRAP_API_KEY"
"""The old way to hand a node its bootstrap key; never passed on to nodes."""
TOOL_NODE_ID = 0
"""The node id in the proofs of tools (they are not nodes)."""


def _write_private(path: Path, text: str) -> None:
    """Make ``path`` hold ``text``, mode 0600 from its creation (like the
    server's cluster/private_file.py, which the harness may not import).
    Replaced atomically, and only when it differs: a node started a moment
    ago may be reading it."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    scratch = path.with_name(path.name + ".new")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(scratch, path)


def new_operator_key() -> str:
    """A fresh key in the server's format: ``rlk_<16 hex>_<43 base64url>``."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return f"rlk_{secrets.token_hex(8)}_{secret}"


def make_certs(directory: Path, nodes: int) -> Path:
    """``raftlog certs init directory --nodes N`` (the CA is kept when
    there is one); returns the CA file."""
    subprocess.run(
        [sys.executable, "-m", "cluster.tls.cli", "init", str(directory), "--nodes", str(nodes), "--quiet"],
        check=True,
    )
    return directory / "ca.pem"


def tls_section(certs: str, offset: int) -> list[str]:
    """The cluster file's ``[tls]`` lines for certificates in ``certs``
    (relative to the cluster file) as ``make_certs`` names them."""
    return [
        "[tls]",
        f'ca_file = "{certs}/ca.pem"',
        f'cert_file = "{certs}/node{{id}}.pem"',
        f'key_file = "{certs}/node{{id}}.key"',
        f"internal_port_offset = {offset}",
    ]


def _free_offset(ports: Sequence[int], avoid: Iterable[int] = (), tries: int = 50) -> int:
    """An offset that puts every port + offset on a port free now and
    below 65536 (loopback ephemeral ports reach ~61000: offsets stay small),
    none of them one of ``ports`` or ``avoid`` (ports chosen for other
    listeners, e.g. the metrics ports: free now, taken once the nodes start)."""
    rng = secrets.SystemRandom()
    taken = {*ports, *avoid}
    for _ in range(tries):
        offset = rng.randrange(100, 65536 - max(ports))
        candidates = [p + offset for p in ports]
        if taken.intersection(candidates):
            continue
        try:
            sockets = []
            for port in candidates:
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return offset
    raise RuntimeError("no free internal ports for a TLS cluster")


class StartInterrupted(Exception):
    """``start_all`` gave up waiting because its ``interrupted`` check said so."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 1
    retention_bytes: int = -1


class LocalCluster:
    """The node processes of one cluster file (module docstring).

    A node's environment is this process's, minus the bootstrap key
    (``RAFTLOG_BOOTSTRAP_API_KEY``) and minus every ``OTEL_*`` variable,
    then ``node_env`` over it: a node exports traces only when the caller
    asks for it through ``node_env``, never because the shell that ran the
    tests or the benchmark had ``OTEL_*`` set (a benchmark's "telemetry
    off" run must be off). ``node_env`` may set any ``OTEL_*`` it wants."""

    tls_ca: Path | None
    """The CA clients trust (``tls=True``); None: plaintext."""
    metrics_ports: dict[int, int]
    """Node id -> its ``metrics_port`` (nodes serving none left out)."""

    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        topics: Sequence[TopicSpec] = (TopicSpec("t"),),
        *,
        tick_ms: int = 50,
        election_ticks: int = 6,
        retention_check_ms: int = 30_000,
        leader_balance_ms: int = 10_000,
        node_dead_after_ms: int = 10_000,
        node_args: Sequence[str] = (),
        tls: bool = False,
        metrics: bool = True,
        node_env: Mapping[str, str] | None = None,
    ) -> None:
        """``tls``: TLS for clients and mTLS between nodes; ``metrics``: a
        ``/metrics`` port per node (module docstring); ``node_env``: more
        environment for every node process (e.g. ``OTEL_*``), over this
        process's own (whose ``OTEL_*`` the nodes never see: class docstring)."""
        ports = free_ports(nodes * (2 if metrics else 1))  # all at once: distinct
        ports, metrics_ports = ports[:nodes], ports[nodes:]
        addresses = {n: f"127.0.0.1:{port}" for n, port in enumerate(ports, start=1)}
        self._setup(root, root.resolve() / "cluster.toml", addresses, node_args)
        self.metrics_ports = dict(enumerate(metrics_ports, start=1))
        self.node_env.update(node_env or {})
        lines = [
            f'cluster_id = "test-{ports[0]}"',
            f'cluster_secret_file = "{self.secret_file.name}"',
            f"retention_check_ms = {retention_check_ms}",
            f"leader_balance_ms = {leader_balance_ms}",
            f"node_dead_after_ms = {node_dead_after_ms}",
            "",
        ]
        for n in self.node_ids:
            lines += [
                "[[nodes]]",
                f"id = {n}",
                f'address = "{self.addresses[n]}"',
                f'data_dir = "node{n}"',
                *([f"metrics_port = {self.metrics_ports[n]}"] if metrics else []),
                "",
            ]
        for t in topics:
            lines += [
                "[[topics]]",
                f'name = "{t.name}"',
                f"partitions = {t.partitions}",
                f"replicas = {self.node_ids}",
                "[topics.retention]",
                f"bytes = {t.retention_bytes}",
                "",
            ]
        lines += [
            "[raft]",
            f"tick_ms = {tick_ms}",
            f"election_ticks = {election_ticks}",
            "heartbeat_ticks = 2",
        ]
        if tls:
            self.tls_offset = _free_offset(ports, avoid=metrics_ports)
            self.tls_ca = make_certs(self.root / "certs", nodes)
            lines += ["", *tls_section("certs", self.tls_offset)]
        root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(lines) + "\n")

    @classmethod
    def from_config(
        cls,
        root: Path,
        config_path: Path,
        addresses: dict[int, str],
        node_args: Sequence[str] = (),
        api_key: str | None = None,
        own_sessions: bool = False,
        secret_file: Path | None = None,
        metrics_ports: dict[int, int] | None = None,
    ) -> LocalCluster:
        """Run the nodes of an existing cluster file (``addresses``: node id
        to address, as in the file) instead of generating one.
        ``own_sessions``: start each node in a new session (see the module
        docstring). ``secret_file``: the cluster secret (default
        ``<root>/cluster.secret``; created when missing).
        ``metrics_ports``: node id to its ``metrics_port`` in the file
        (nodes left out serve none)."""
        self = cls.__new__(cls)
        self._setup(root, config_path.resolve(), addresses, node_args, api_key, secret_file)
        self.own_sessions = own_sessions
        self.metrics_ports = {n: p for n, p in (metrics_ports or {}).items() if p}
        return self

    def _setup(
        self,
        root: Path,
        config_path: Path,
        addresses: dict[int, str],
        node_args: Sequence[str],
        api_key: str | None = None,
        secret_file: Path | None = None,
    ) -> None:
        self.root = root.resolve()  # node processes run with the root as cwd
        self.root.mkdir(parents=True, exist_ok=True)
        self.secret_file = (secret_file or self.root / "cluster.secret").resolve()
        """The cluster secret every node is given (created on first use)."""
        ensure_secret_file(self.secret_file)
        self._secret: bytes | None = None
        self.api_key = api_key or new_operator_key()
        """The operator key: given to the nodes, which store its hash when
        they bootstrap the cluster (a later start keeps the stored one)."""
        self.node_args = list(node_args)
        self.node_env: dict[str, str] = {}
        """More environment for every node process (``__init__``'s ``node_env``)."""
        self.node_extra_args: dict[int, list[str]] = {}
        """Arguments for one node only, after ``node_args`` (failover drills
        give each node its own ``--dial`` proxies)."""
        self.node_ids = sorted(addresses)
        self.addresses = dict(addresses)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.config_path = config_path
        self.own_sessions = False
        self.tls_ca = None
        self.tls_offset = 0
        """The internal listeners' port offset (``tls=True``)."""
        self.metrics_ports = {}

    def metrics_address(self, node: int) -> str:
        """``HOST:PORT`` of ``node``'s ``/metrics`` (on its address's host);
        ``KeyError`` for a node serving none (``metrics=False``)."""
        host = self.addresses[node].rpartition(":")[0]
        return f"{host}:{self.metrics_ports[node]}"

    def internal_address(self, node: int) -> str:
        """Where ``node``'s internal services are: its address without TLS,
        its internal mTLS listener with (``node_credentials`` then)."""
        host, _, port = self.addresses[node].rpartition(":")
        return f"{host}:{int(port) + self.tls_offset}" if self.tls_ca else self.addresses[node]

    def node_credentials(self, node: int = 1) -> grpc.ChannelCredentials:
        """mTLS credentials of ``node``'s certificate (a tool dialling an
        internal listener presents one: the listener requires it)."""
        assert self.tls_ca is not None, "a plaintext cluster"
        certs = self.tls_ca.parent
        return grpc.ssl_channel_credentials(
            self.tls_ca.read_bytes(),
            (certs / f"node{node}.key").read_bytes(),
            (certs / f"node{node}.pem").read_bytes(),
        )

    def internal_metadata(self, method: str, node_id: int = TOOL_NODE_ID) -> tuple[tuple[str, str]]:
        """Call metadata with a fresh node proof for one call of ``method``
        (a full gRPC path) on an internal service; make one per call.
        ``node_id``: whom the proof names (a ``Join`` must name the node it
        registers); tools are node 0."""
        if self._secret is None:
            self._secret = read_secret_file(self.secret_file)
        return proof_metadata(self._secret, node_id, method)

    def node_admin_metadata(self) -> tuple[tuple[str, str]]:
        """``internal_metadata`` for ``NodeAdmin.Stats``."""
        return self.internal_metadata(NODE_ADMIN_STATS)

    def exited(self) -> dict[int, int]:
        """Nodes whose process ended on its own, with their exit status."""
        return {node: code for node, proc in self.processes.items() if (code := proc.poll()) is not None}

    def node_environment(self) -> dict[str, str]:
        """The environment a node process starts with (class docstring)."""
        env = {k: v for k, v in os.environ.items() if k != DISCOURAGED_KEY_ENV and not k.startswith("OTEL_")}
        env.update(self.node_env)
        env.update({"PYTHONUNBUFFERED": "1", SECRET_FILE_ENV: str(self.secret_file)})
        return env

    def data_dir(self, node: int) -> Path:
        return self.root / f"node{node}"

    def start(self, node: int, timeout: float = 30.0) -> None:
        """Start ``node`` and wait until it serves (it must reach the
        metadata controller, so a majority of the controller nodes must be
        running or starting)."""
        self._launch(node)
        self._wait_ready(node, self.processes[node], timeout)

    def launch(self, node: int) -> None:
        """Start ``node`` without waiting for it to serve (a node that may
        never be ready: one the cluster refuses to register)."""
        self._launch(node)

    def _launch(self, node: int) -> None:
        assert node not in self.processes, f"node {node} is already running"
        env = self.node_environment()
        key_args: list[str] = []
        if self.api_key:
            key_file = self.root / "bootstrap.key"
            _write_private(key_file, self.api_key + "\n")
            key_args = ["--bootstrap-key-file", str(key_file)]
        log = open(self.root / f"node{node}.log", "ab")  # noqa: SIM115 (owned by the process)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cluster.serve",
                "--config",
                str(self.config_path),
                "--node-id",
                str(node),
                *key_args,
                *self.node_args,
                *self.node_extra_args.get(node, ()),
            ],
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            start_new_session=self.own_sessions,
        )
        log.close()
        self.processes[node] = proc

    def _wait_ready(
        self,
        node: int,
        proc: subprocess.Popen[bytes],
        timeout: float,
        interrupted: Callable[[], bool] | None = None,
    ) -> None:
        """Read the node's stdout until a line says ``ready on``. Waits on a
        selector with a deadline, so a node that hangs without printing
        cannot block past ``timeout`` (a plain ``readline`` would); with
        ``interrupted``, asks it every 0.1 s and raises ``StartInterrupted``
        once it says yes."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        pending = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                if interrupted is not None and interrupted():
                    raise StartInterrupted(f"interrupted while node {node} was starting")
                if not selector.select(remaining if interrupted is None else min(remaining, 0.1)):
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    if b"ready on" in pending:  # a last line without a newline
                        return
                    raise RuntimeError(
                        f"node {node} exited ({proc.wait()}) before it was ready:\n{self.log_tail(node)}"
                    )
                *lines, pending = (pending + chunk).split(b"\n")
                if any(b"ready on" in line for line in lines):
                    return
        raise TimeoutError(f"node {node} not ready after {timeout}s:\n{self.log_tail(node)}")

    def start_all(self, timeout: float = 60.0, interrupted: Callable[[], bool] | None = None) -> None:
        """Start every node, then wait for each (a new cluster's nodes can
        only become ready together: they elect the controller first).
        ``interrupted``: see ``_wait_ready``; the nodes keep running."""
        for node in self.node_ids:
            self._launch(node)
        for node in self.node_ids:
            self._wait_ready(node, self.processes[node], timeout, interrupted)

    def add_node(self, zone: str = "", timeout: float = 60.0) -> int:
        """Add a node to the running cluster the way an operator does: a
        new ``[[nodes]]`` entry at the end of the cluster file, then start
        it (it asks the running nodes to register it, cluster/internal/join.py).
        Returns its id."""
        node = max(self.node_ids) + 1
        port, metrics_port = free_ports(2)
        address = f"127.0.0.1:{port}"
        entry = ["", "[[nodes]]", f"id = {node}", f'address = "{address}"', f'data_dir = "node{node}"']
        if self.metrics_ports:  # the cluster serves metrics: so does the new node
            entry.append(f"metrics_port = {metrics_port}")
            self.metrics_ports[node] = metrics_port
        if zone:
            entry.append(f'zone = "{zone}"')
        with self.config_path.open("a") as config:  # a [[nodes]] header may come anywhere
            config.write("\n".join(entry) + "\n")
        if self.tls_ca is not None:  # a certificate for the new node (same CA)
            make_certs(self.tls_ca.parent, node)
        self.node_ids.append(node)
        self.addresses[node] = address
        self.start(node, timeout)
        return node

    def kill(self, node: int) -> None:
        proc = self.processes.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def pause(self, node: int) -> None:
        self.processes[node].send_signal(signal.SIGSTOP)

    def resume(self, node: int) -> None:
        self.processes[node].send_signal(signal.SIGCONT)

    def stop(self, node: int, timeout: float = 20.0) -> int:
        """SIGTERM ``node`` and wait up to ``timeout``, then SIGKILL it;
        returns its exit status."""
        return self._stop_together([node], timeout, None)[node]

    def stop_all(self, timeout: float = 20.0, on_kill: Callable[[int], None] | None = None) -> dict[int, int]:
        """Stop every running node together: SIGTERM to each, then wait for
        all within one ``timeout``; a node still running then is SIGKILLed,
        after ``on_kill(node)`` (if given). Returns each node's exit status.
        Together, not one by one: the total stays within ``timeout``, and
        the last nodes do not spend it electing leaders without the first."""
        return self._stop_together(list(self.processes), timeout, on_kill)

    def _stop_together(
        self, nodes: list[int], timeout: float, on_kill: Callable[[int], None] | None
    ) -> dict[int, int]:
        procs = {node: self.processes.pop(node) for node in nodes}
        for proc in procs.values():
            # Popen.send_signal skips a process already reaped, so a reused
            # pid is never signalled. SIGCONT first: a paused node cannot stop.
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = {}
        for node, proc in procs.items():
            try:
                codes[node] = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                if on_kill is not None:
                    on_kill(node)
                proc.kill()
                codes[node] = proc.wait()
            if proc.stdout:
                proc.stdout.close()
        return codes

    def close(self) -> None:
        for node in list(self.processes):
            self.kill(node)

    def log_tail(self, node: int, lines: int = 40) -> str:
        path = self.root / f"node{node}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
