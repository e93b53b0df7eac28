"""``make run``: a local 3-node cluster on loopback with data under ``./data``.

The first run writes ``data/cluster.toml`` (three nodes on 127.0.0.1:7001-7003,
their Prometheus ``/metrics`` on http://127.0.0.1:9101-9103/metrics, and a
starter topic ``demo`` of 3 partitions, replication 3) and
``data/cluster.env`` (mode 0600)::

    RAFTLOG_BOOTSTRAP=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    RAFTLOG_API_KEY=rlk_...        # the operator key the cluster bootstraps with

so ``. data/cluster.env`` sets up the ``raftlog`` CLI, and
``data/cluster.secret`` (mode 0600): the cluster secret every node proves
itself with on the internal surfaces (cluster/internal/node_auth.py). The
nodes get the operator key in ``data/bootstrap.key`` (0600,
``--bootstrap-key-file``), never in their environment. Later runs reuse
all of them and the data. Node logs go to ``data/nodeN.log``. A cluster
file from before metrics names no ``metrics_port``: its nodes serve no
``/metrics`` (the banner says what to add).

``make run TLS=1`` (``--tls``): TLS for clients and mTLS between the nodes
(cluster/tls/__init__.py). The first such run makes a development CA and
node certificates in ``data/certs`` (``raftlog certs init``, kept across
runs), adds a ``[tls]`` section to ``data/cluster.toml`` (node N's internal
listener on 1700N) and ``RAFTLOG_TLS_CA`` to ``data/cluster.env``; the flag
server gets ``--tls-ca``. The cluster file decides: once it has ``[tls]``,
later runs use TLS with or without the flag (remove the section, and the
env line, to go back to plaintext). Without either, everything stays
plaintext on loopback.

Once the nodes are ready, one flag server (``raftlog flags serve``,
harness/flag_server.py) starts beside them on 127.0.0.1:8013 (evaluation
and admin gRPC), 8014 (management HTTP), 8015 (sync gRPC) and 8016 (OFREP
HTTP for mobile and web apps, tracking), with the
operator key in ``data/flags.key`` (0600) and its log in ``data/flags.log``.
A flag server that cannot start (a port taken) is reported and the cluster
runs without it; one that dies later stops everything, like a node.

Stopping (invariants):

- The nodes run in sessions of their own, so a terminal's Ctrl-C reaches
  this program (and make) but not them; this program then stops each node
  exactly once: SIGTERM to all together, and SIGKILL (said on stderr) only
  for a node still running ``STOP_GRACE_S`` later. (Before, the terminal's
  SIGINT and this program's SIGTERM both reached each node, and the second
  one could land after the node's event loop had closed, ending it with
  status -15: the "Error 1" that make printed.)
- SIGINT, SIGTERM and SIGHUP (the terminal closed) stop the cluster, also
  while it is starting; a second signal changes nothing but a message. Any
  other way out kills the nodes; only a SIGKILL of this program leaves them
  running (stop them by their pids, or the next run cannot bind its ports).
- The flag server is a process like a node here: its own session, stopped
  once, together with the nodes (SIGTERM to it first), under the same grace.
- Exit status 0 when every node (and the flag server) stopped cleanly (``_stopped_cleanly``:
  status 0, or killed by a signal the user's stop explains); 1 when a node
  had to be SIGKILLed, stopped with another status, or died on its own (that
  stops the others too); 2 for a bad cluster file.

GNU make, itself interrupted by the same Ctrl-C, waits for this program and
then ends by SIGINT (a shell shows status 130) whatever the recipe returned;
it prints ``*** ... Error`` only for a non-zero recipe status.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from cluster.private_file import write_private
from cluster.static_config import ConfigError, NodeSpec, StaticCluster, load_cluster
from cluster.tls.settings import DEFAULT_INTERNAL_PORT_OFFSET
from harness.flag_server import FlagServerProcess
from harness.local_cluster import LocalCluster, StartInterrupted, new_operator_key, tls_section
from partitions.owner_only import make_owner_only_dir, restrict_umask
from raftlog.internal.node_proof import ensure_secret_file

ENV_FILE = "cluster.env"

FLAGS_HOST = "127.0.0.1"
FLAGS_EVAL_PORT = 8013
FLAGS_MANAGEMENT_PORT = 8014
FLAGS_SYNC_PORT = 8015
FLAGS_OFREP_PORT = 8016

STOP_GRACE_S = 10.0
"""How long the nodes get to stop before SIGKILL. A node stops in about
1-2 s (up to 1 s of gRPC grace for calls in flight, then its replicas close)."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

DEFAULT_CLUSTER = """\
# A local 3-node raftlog cluster (see cluster/static_config.py).
cluster_id = "local"
cluster_secret_file = "cluster.secret"

[[nodes]]
id = 1
address = "127.0.0.1:7001"
data_dir = "node1"
metrics_port = 9101

[[nodes]]
id = 2
address = "127.0.0.1:7002"
data_dir = "node2"
metrics_port = 9102

[[nodes]]
id = 3
address = "127.0.0.1:7003"
data_dir = "node3"
metrics_port = 9103

[[topics]]
name = "demo"
partitions = 3
replicas = [1, 2, 3]
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.run_local", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="data directory (default ./data)")
    parser.add_argument("--tls", action="store_true", help="TLS and mTLS with development certificates")
    args = parser.parse_args(argv)
    # First of all: a Ctrl-C while the files below are written is a stop
    # request like any other, not a KeyboardInterrupt traceback.
    stop = _StopRequest()
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop.handle)
    # The cluster file, the client settings (the operator key) and the node
    # logs are for this user only, like the nodes' own data.
    restrict_umask()
    root: Path = args.data.resolve()
    make_owner_only_dir(root)
    config_path = root / "cluster.toml"
    if not config_path.exists():
        config_path.write_text(DEFAULT_CLUSTER)
    try:
        cluster_spec = load_cluster(config_path)
        if args.tls and cluster_spec.tls is None:
            with config_path.open("a") as config:
                config.write(TLS_SECTION)
            cluster_spec = load_cluster(config_path)
        tls_ca = _ensure_certs(root, cluster_spec)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bootstrap = ",".join(n.address for n in cluster_spec.nodes)
    api_key = _operator_key(root / ENV_FILE, bootstrap)
    if tls_ca is not None:
        _add_tls_ca(root / ENV_FILE, tls_ca)
    # A cluster file from before the secret existed names none: the
    # default place, handed to the nodes by the harness.
    secret_file = cluster_spec.cluster_secret_file or root / "cluster.secret"
    ensure_secret_file(secret_file)
    if stop.requested():
        return 0  # nothing started yet
    cluster = LocalCluster.from_config(
        root,
        config_path,
        {n.id: n.address for n in cluster_spec.nodes},
        api_key=api_key,
        own_sessions=True,
        secret_file=secret_file,
        metrics_ports={n.id: n.metrics_port for n in cluster_spec.nodes},
    )
    # The harness never passes on OTEL_* by itself: make run's nodes trace
    # when the developer's shell asks for it, so hand them over explicitly.
    cluster.node_env.update({k: v for k, v in os.environ.items() if k.startswith("OTEL_")})
    flags: FlagServerProcess | None = None
    try:
        try:
            cluster.start_all(interrupted=stop.requested)
        except StartInterrupted:
            return _stop(cluster, None, stop, starting=True)
        except (RuntimeError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        flags = FlagServerProcess(
            root,
            bootstrap,
            api_key,
            host=FLAGS_HOST,
            eval_port=FLAGS_EVAL_PORT,
            sync_port=FLAGS_SYNC_PORT,
            management_port=FLAGS_MANAGEMENT_PORT,
            ofrep_port=FLAGS_OFREP_PORT,
            metrics_port=9104,  # Prometheus GET /metrics (the nodes': 9101-9103)
            own_session=True,
            extra_args=["--tls-ca", str(tls_ca)] if tls_ca is not None else [],
        )
        try:
            flags.start(interrupted=stop.requested)
        except StartInterrupted:
            return _stop(cluster, flags, stop, starting=True)
        except (RuntimeError, TimeoutError) as exc:
            print(
                f"error: the flag server did not start; the cluster runs without it: {exc}", file=sys.stderr
            )
            flags.close()
            flags = None
        _print_banner(root, cluster_spec.nodes, flags, tls_ca)
        failed = _wait_until_stop_or_death(cluster, flags, stop)
        return _stop(cluster, flags, stop) or failed
    finally:
        # Processes in sessions of their own outlive us unless stopped: on
        # any way out that did not stop them (a failed start, a bug), kill them.
        if flags is not None:
            flags.close()
        cluster.close()
        # Everything is stopped: a Ctrl-C still arriving must not kill the
        # interpreter on its way out (finalization puts back the default
        # handler of every signal that has a Python one, but leaves ignored
        # ones ignored), so the exit status stays the one decided above.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def _wait_until_stop_or_death(
    cluster: LocalCluster, flags: FlagServerProcess | None, stop: _StopRequest
) -> int:
    """1 if a node or the flag server died on its own first (said on
    stderr), else 0."""
    while not stop.requested():
        time.sleep(0.2)
        # A node that exits once the stop is asked for is stopping, not dying.
        if stop.requested():
            break
        dead = cluster.exited()
        if dead:
            for node_id, code in dead.items():
                print(f"node {node_id} exited with status {code}; stopping the cluster", file=sys.stderr)
            return 1
        flags_code = flags.exit_code() if flags is not None else None
        if flags_code is not None:
            print(f"the flag server exited with status {flags_code}; stopping the cluster", file=sys.stderr)
            return 1
    return 0


def _stop(
    cluster: LocalCluster, flags: FlagServerProcess | None, stop: _StopRequest, *, starting: bool = False
) -> int:
    """Stop every node and the flag server once, together (see the module
    docstring); 0 if all stopped cleanly. ``starting``: not all were ready yet."""
    flags_running = flags is not None and flags.exit_code() is None
    if stop.signal is not None:
        also = " and the flag server" if flags_running else ""
        print(
            f"raftlog: {signal.Signals(stop.signal).name}: stopping {len(cluster.processes)} nodes{also}"
            f" (SIGKILL for any still running after {STOP_GRACE_S:g} s)",
            file=sys.stderr,
            flush=True,
        )

    def say_kill(node: int) -> None:
        print(
            f"node {node} did not stop within {STOP_GRACE_S:g} s; sending SIGKILL",
            file=sys.stderr,
            flush=True,
        )

    def say_flags_kill() -> None:
        print(
            f"the flag server did not stop within {STOP_GRACE_S:g} s; sending SIGKILL",
            file=sys.stderr,
            flush=True,
        )

    # SIGTERM to the flag server first, then to the nodes: all stop together.
    if flags is not None and flags_running:
        flags.terminate()
    codes = cluster.stop_all(STOP_GRACE_S, on_kill=say_kill)
    print("stopped: " + ", ".join(f"node {n} -> {_status(c)}" for n, c in sorted(codes.items())), flush=True)
    clean = all(_stopped_cleanly(code, stop.signal, starting) for code in codes.values())
    if flags is not None and flags_running:
        flags_code = flags.wait_stopped(STOP_GRACE_S, on_kill=say_flags_kill)
        # A line of its own: "stopped:" lists the nodes (scripts read it).
        print(f"flag server stopped -> {_status(flags_code)}", flush=True)
        clean = clean and _stopped_cleanly(flags_code, stop.signal, starting)
    return 0 if clean else 1


class _StopRequest:
    """The first stop signal this program received; a later one only says
    that the stop is under way (the handler then writes with ``os.write``:
    ``print`` is not safe inside a signal handler that may interrupt it)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def requested(self) -> bool:
        return self.signal is not None

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signum
            return
        os.write(2, f"raftlog: already stopping (SIGKILL after {STOP_GRACE_S:g} s)\n".encode())


def _stopped_cleanly(code: int, stop_signal: int | None, starting: bool) -> bool:
    """Status 0; or killed by SIGINT when a SIGINT stopped us too: the user
    interrupted everything (``kill -INT`` to each process, or a node that
    shared our process group and got the signal before its handler was in
    place), a stop they asked for. While starting, also killed by our
    SIGTERM: a node installs its handler before it touches its data, so one
    that SIGTERM kills had not begun (cluster/serve.py); once running, a node
    never dies of SIGTERM, and one that does is reported."""
    if code == 0 or (stop_signal == signal.SIGINT and code == -signal.SIGINT):
        return True
    return starting and stop_signal is not None and code == -signal.SIGTERM


def _status(code: int) -> str:
    """An exit status as Popen gives it, with the signal's name when one
    ended the process (``-15 (SIGTERM)``)."""
    if code >= 0:
        return str(code)
    try:
        return f"{code} ({signal.Signals(-code).name})"
    except ValueError:
        return str(code)


def _print_banner(
    root: Path, nodes: Sequence[NodeSpec], flags: FlagServerProcess | None, tls_ca: Path | None = None
) -> None:
    secured = f", TLS (CA {tls_ca}; mTLS between nodes)" if tls_ca is not None else ""
    print(f"raftlog: {len(nodes)} nodes up{secured}, data in {root}")
    for node in nodes:
        host = node.address.rpartition(":")[0]
        metrics = f"  metrics http://{host}:{node.metrics_port}/metrics" if node.metrics_port else ""
        print(f"  node {node.id}: {node.address}{metrics}  (log: {root / f'node{node.id}.log'})")
    if not any(node.metrics_port for node in nodes):
        print(
            f"  (no /metrics: add metrics_port = 9101, 9102, ... to each [[nodes]] of {root / 'cluster.toml'})"
        )
    if flags is not None:
        print(
            f"  flag server: evaluation+admin {flags.eval_address}, sync {flags.sync_address}, "
            f"management {flags.management_url}, OFREP {flags.ofrep_url}  (log: {flags.log_path})"
        )
    tls_setting = ", RAFTLOG_TLS_CA = the CA" if tls_ca is not None else ""
    print(
        f"client settings: {root / ENV_FILE} (RAFTLOG_BOOTSTRAP, RAFTLOG_API_KEY = the operator key{tls_setting})"
    )
    if tls_ca is not None:
        print(f"  export RAFTLOG_TLS_CA={tls_ca}   # SDK and CLI: connect with TLS (or --tls-ca / tls_ca=)")
    print("try, in another terminal:")
    print(f"  . {_shown(root / ENV_FILE)}")
    print("  raftlog topic create t --partitions 3 --replication 3")
    print("  seq 1000 | raftlog produce t")
    print("  raftlog consume t --from-beginning --max-records 1000")
    if flags is not None:
        print(
            "  raftlog flags env create production && raftlog flags key create production"
            "   # flags of the default tenant; an SDK key for OpenFeature providers"
        )
        print(
            "  raftlog flags key create production --kind client   # a public key for mobile and web apps: "
            f"POST {flags.ofrep_url}/ofrep/v1/evaluate/flags with Authorization: Bearer rlc_..."
        )
    print("Ctrl-C stops the cluster.", flush=True)


TLS_SECTION = "\n".join(
    [
        "",
        "# make run TLS=1: TLS for clients, mTLS between nodes (cluster/tls/settings.py).",
        *tls_section("certs", DEFAULT_INTERNAL_PORT_OFFSET),  # where init_certs writes (_ensure_certs)
        "",
    ]
)


def _ensure_certs(root: Path, cluster: StaticCluster) -> Path | None:
    """With ``[tls]``: development certificates for every node where the
    file expects them (made once; the CA is kept), and the CA file."""
    if cluster.tls is None:
        return None
    from cluster.tls.certs import init_certs

    files = [cluster.tls.for_node(n.id) for n in cluster.nodes]
    if not all(f.ca_file.exists() and f.cert_file.exists() and f.key_file.exists() for f in files):
        certs = files[0].cert_file.parent
        if any(f.cert_file.parent != certs or f.ca_file != certs / "ca.pem" for f in files):
            raise ConfigError(
                "[tls]: certificate files are missing and not where `raftlog certs init` writes them; "
                "make them yourself or point [tls] at one folder (ca.pem, node{id}.pem, node{id}.key)"
            )
        init_certs(certs, nodes=max(n.id for n in cluster.nodes))
        print(f"raftlog: development CA and node certificates written to {certs}", flush=True)
    return files[0].ca_file


def _add_tls_ca(env_path: Path, ca: Path) -> None:
    """``export RAFTLOG_TLS_CA=...`` in the client settings, once."""
    text = env_path.read_text()
    if "RAFTLOG_TLS_CA=" not in text:
        write_private(env_path, text + f"export RAFTLOG_TLS_CA={ca}\n")


def _operator_key(env_path: Path, bootstrap: str) -> str:
    """The operator key in ``env_path``; a new one (and the file) on the
    first run. The nodes store its hash when they bootstrap the cluster."""
    if env_path.exists():
        for line in env_path.read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            if name.strip() == "RAFTLOG_API_KEY" and value.strip():
                return value.strip()
    key = new_operator_key()
    write_private(
        env_path,
        "# written by make run: . this file to use the raftlog CLI\n"
        f"export RAFTLOG_BOOTSTRAP={bootstrap}\nexport RAFTLOG_API_KEY={key}\n",
    )
    return key


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
