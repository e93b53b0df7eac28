"""``raftlog node hand-off --config F (--node-id N | --node-id-from-pod-name)
[--timeout S] [--address HOST:PORT]``: ask a node to move the leadership of
every group it leads to other live voters, and wait until it leads nothing
that can move, or ``--timeout`` (default 20 s) passed. A StatefulSet pod's
preStop runs it, so the node's groups have new leaders before SIGTERM
instead of an election timeout after it. The node stays draining until it
stops (cluster/leader_balance.py): other nodes' preferred-leader balancing
cannot hand leaderships back, and whatever it still wins it hands off
again; running the command again is harmless.

It speaks to the node's internal surface (``NodeAdmin.HandOffLeadership``,
cluster/internal/node_admin.py) as the node itself would: a node proof made
from the cluster secret file (the cluster file's ``cluster_secret_file`` or
``$RAFTLOG_CLUSTER_SECRET_FILE``) naming the node, and with ``[tls]`` the
node's own certificate on the internal listener (port + offset,
cluster/tls/dial.py). ``--address`` reaches the node elsewhere than its
address in the file (a proxy; with TLS the certificate must name that host).

Exit status: 0 when the node answered, even if some leadership could not
move (a group with no other live voter, or one still moving at the
timeout): a preStop must never hold a shutdown back, and one line on
stderr says which groups stayed. 1 when the node could not be reached or
refused the call; 2 for a bad configuration (the file, the node id, the
secret, the TLS files).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import grpc

HAND_OFF_TIMEOUT_S = 20.0
ANSWER_MARGIN_S = 0.5
"""The node is asked to wait this much less than the call's deadline, so
its answer (what moved, what stayed) arrives before the caller gives up."""


def add_commands(node: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``raftlog node hand-off`` (cluster/cli.py's ``node`` commands)."""
    from cluster.serve import add_node_flags

    hand_off = node.add_parser(
        "hand-off",
        help="move every leadership off a node before it stops (a pod's preStop; cluster secret)",
    )
    hand_off.add_argument("--config", required=True, type=Path, help="the static cluster file (TOML)")
    add_node_flags(hand_off, id_only=True)  # --node-id N | --node-id-from-pod-name
    hand_off.add_argument(
        "--timeout", type=float, default=HAND_OFF_TIMEOUT_S, metavar="S", help="wait at most S seconds"
    )
    hand_off.add_argument(
        "--address", metavar="HOST:PORT", help="reach the node here (default: its address in the file)"
    )
    hand_off.set_defaults(run=hand_off_command)


async def hand_off_command(args: argparse.Namespace) -> int:
    from cluster.internal.cluster_secret import load_cluster_secret
    from cluster.internal.node_admin import NODE_ADMIN_HAND_OFF
    from cluster.internal.node_auth import NodeCredentials
    from cluster.serve import chosen_node_id
    from cluster.static_config import ConfigError, load_cluster
    from cluster.tls.dial import PLAIN, Dialer, TlsDialer
    from cluster.tls.material import CertSource
    from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc

    try:
        if args.timeout <= ANSWER_MARGIN_S:
            raise ConfigError(f"--timeout must be more than {ANSWER_MARGIN_S} s")
        cluster = load_cluster(args.config)
        node_id = chosen_node_id(args, os.environ)
        address = args.address or cluster.node(node_id).address
        credentials = NodeCredentials(load_cluster_secret(cluster, node_id), node_id)
        dialer: Dialer = PLAIN
        if cluster.tls is not None:
            dialer = TlsDialer(CertSource(cluster.tls.for_node(node_id)), cluster.tls.internal_port_offset)
    except ConfigError as exc:
        print(f"raftlog node hand-off: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    request = node_admin_pb2.HandOffRequest(wait_seconds=args.timeout - ANSWER_MARGIN_S)
    try:
        async with dialer.dial(address) as channel:
            answer = await node_admin_pb2_grpc.NodeAdminStub(channel).HandOffLeadership(
                request, timeout=args.timeout, metadata=credentials.metadata(NODE_ADMIN_HAND_OFF)
            )
    except grpc.aio.AioRpcError as error:
        print(
            f"raftlog node hand-off: node {node_id} at {address} did not hand off "
            f"({error.code().name}: {error.details()}); it leads what it led",
            file=sys.stderr,
        )
        return 1
    took = time.monotonic() - started
    if answer.draining:
        print(f"node {node_id}: draining: it takes no leadership by transfer until it stops")
    print(
        f"node {node_id}: handed off the leadership of {len(answer.moved)} group(s) in {took:.1f}s"
        + (f": {', '.join(map(str, answer.moved))}" if answer.moved else "")
    )
    if answer.left:
        stayed = ", ".join(f"{g} ({why})" for g, why in zip(answer.left, answer.left_reasons, strict=True))
        print(
            f"raftlog node hand-off: node {node_id} still leads {len(answer.left)} group(s): {stayed}; "
            "they elect a new leader once it stops",
            file=sys.stderr,
        )
    return 0
