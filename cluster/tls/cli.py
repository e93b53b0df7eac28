"""``raftlog certs init DIR [--nodes N] [--host NAME]... [--new-ca]``: write a
development CA and node certificates (cluster/tls/certs.py) and say how to
use them. Registered by cluster/cli.py (``add_commands``); also runnable as
``python -m cluster.tls.cli init DIR`` (the harness starts it that way: it
may not import the server)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_commands", "main"]


def _init(args: argparse.Namespace) -> int:
    from cluster.tls.certs import init_certs  # cryptography loads only for this command

    try:
        files = init_certs(Path(args.dir), nodes=args.nodes, hosts=args.host, new_ca=args.new_ca)
    except (OSError, ValueError) as exc:
        print(f"raftlog certs init: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"CA: {files.ca_cert} (clients: --tls-ca {files.ca_cert} or RAFTLOG_TLS_CA)")
        print(f"CA key: {files.ca_key} (keep it private; it signs node certificates)")
        for node, (cert, key) in sorted(files.nodes.items()):
            print(f"node {node}: {cert} {key}")
        print("cluster file:")
        print("  [tls]")
        print(f'  ca_file = "{files.ca_cert}"')
        print(f'  cert_file = "{Path(args.dir) / "node{id}.pem"}"')
        print(f'  key_file = "{Path(args.dir) / "node{id}.key"}"')
    return 0


def _configure(init: argparse.ArgumentParser) -> None:
    init.add_argument("dir", help="folder for ca.pem, ca.key, nodeN.pem, nodeN.key (created owner-only)")
    init.add_argument(
        "--nodes", type=int, default=3, help="node certificates to write (node1..nodeN; default 3)"
    )
    init.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name or IP the nodes are reached at, besides localhost and 127.0.0.1 (repeatable)",
    )
    init.add_argument("--new-ca", action="store_true", help="make a new CA even if DIR has one")
    init.add_argument("--quiet", action="store_true", help="print nothing on success")
    init.set_defaults(sync=_init)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = commands.add_parser("certs", help="TLS certificates for development").add_subparsers(
        dest="action", required=True
    )
    _configure(certs.add_parser("init", help="a development CA and node certificates (server and client)"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.tls.cli")
    sub = parser.add_subparsers(dest="action", required=True)
    _configure(sub.add_parser("init"))
    args = parser.parse_args(argv)
    return _init(args)


if __name__ == "__main__":
    sys.exit(main())
