"""``make run``: a local 3-node cluster on loopback with data under ``./data``.

The first run writes ``data/cluster.toml`` (three nodes on 127.0.0.1:7001-7003
and a starter topic ``demo`` of 3 partitions, replication 3) and
``data/cluster.env`` (mode 0600)::

    RAFTLOG_BOOTSTRAP=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    RAFTLOG_API_KEY=rlk_...        # the operator key the cluster bootstraps with

so ``. data/cluster.env`` sets up the ``raftlog`` CLI. Later runs reuse both
and the data. Node logs go to ``data/nodeN.log``. Ctrl-C (or SIGTERM) stops
every node cleanly; a node that dies on its own stops the others and the
command exits non-zero.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from cluster.private_file import write_private
from cluster.static_config import ConfigError, load_cluster
from harness.local_cluster import LocalCluster, new_operator_key

ENV_FILE = "cluster.env"

DEFAULT_CLUSTER = """\
# A local 3-node raftlog cluster (see cluster/static_config.py).
cluster_id = "local"

[[nodes]]
id = 1
address = "127.0.0.1:7001"
data_dir = "node1"

[[nodes]]
id = 2
address = "127.0.0.1:7002"
data_dir = "node2"

[[nodes]]
id = 3
address = "127.0.0.1:7003"
data_dir = "node3"

[[topics]]
name = "demo"
partitions = 3
replicas = [1, 2, 3]
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.run_local", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="data directory (default ./data)")
    args = parser.parse_args(argv)
    root: Path = args.data.resolve()
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "cluster.toml"
    if not config_path.exists():
        config_path.write_text(DEFAULT_CLUSTER)
    try:
        cluster_spec = load_cluster(config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bootstrap = ",".join(n.address for n in cluster_spec.nodes)
    api_key = _operator_key(root / ENV_FILE, bootstrap)
    cluster = LocalCluster.from_config(
        root, config_path, {n.id: n.address for n in cluster_spec.nodes}, api_key=api_key
    )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        cluster.start_all()
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        cluster.close()
        return 1
    print(f"raftlog: {len(cluster_spec.nodes)} nodes up, data in {root}")
    for node in cluster_spec.nodes:
        print(f"  node {node.id}: {node.address}  (log: {root / f'node{node.id}.log'})")
    print(f"client settings: {root / ENV_FILE} (RAFTLOG_BOOTSTRAP, RAFTLOG_API_KEY = the operator key)")
    print("try, in another terminal:")
    print(f"  . {_shown(root / ENV_FILE)}")
    print("  raftlog topic create t --partitions 3 --replication 3")
    print("  seq 1000 | raftlog produce t")
    print("  raftlog consume t --from-beginning --max-records 1000")
    print("Ctrl-C stops the cluster.", flush=True)
    failed = 0
    while not stopping:
        time.sleep(0.2)
        dead = cluster.exited()
        if dead:
            for node_id, code in dead.items():
                print(f"node {node_id} exited with status {code}; stopping the cluster", file=sys.stderr)
            failed = 1
            break
    codes = cluster.stop_all()
    print("stopped: " + ", ".join(f"node {n} -> {c}" for n, c in sorted(codes.items())))
    return failed or (1 if any(codes.values()) else 0)


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
