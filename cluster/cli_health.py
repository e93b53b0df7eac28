"""``raftlog health --address HOST:PORT [--tls-ca F] [--tls-server-name N]
[--timeout S]``: one standard gRPC health ``Check`` of the whole server
(service ``""``), for a container's HEALTHCHECK and scripts.

Exit 0 iff the node answers SERVING; 1 otherwise (NOT_SERVING while it
starts, no answer, a TLS failure), with one line on stderr saying why; 2 for
a usage error. It runs every few seconds in a container, so it imports only
gRPC and the health stubs: ``python -m cluster.cli_health`` starts in about
0.15 s (``raftlog health`` also loads the rest of the CLI first).

TLS: ``--tls-ca`` (else ``$RAFTLOG_TLS_CA``) is the cluster CA to trust on
the node's public port; ``--tls-server-name`` checks the certificate for
that name instead of the address's host (a probe dials 127.0.0.1, the
certificate names the pod's DNS name).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TLS_CA_ENV = "RAFTLOG_TLS_CA"  # the SDK's variable (client/auth.py)
DEFAULT_TIMEOUT_S = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", required=True, metavar="HOST:PORT", help="the node's gRPC port")
    parser.add_argument(
        "--tls-ca", dest="health_tls_ca", metavar="PATH", help=f"trust this CA (default: ${TLS_CA_ENV})"
    )
    parser.add_argument("--tls-server-name", metavar="NAME", help="the name the node's certificate holds")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S")


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``raftlog health`` (cluster/cli.py)."""
    health = commands.add_parser("health", help="exit 0 iff the node's gRPC health says SERVING")
    add_arguments(health)
    health.set_defaults(sync=run)


def _channel(args: argparse.Namespace) -> grpc.Channel:
    # ``raftlog --tls-ca F health`` (the CLI's global flag) counts too.
    ca_path = args.health_tls_ca or getattr(args, "tls_ca", None)
    if ca_path is None:
        ca_path = os.environ.get(TLS_CA_ENV, "")
    if not ca_path:
        return grpc.insecure_channel(args.address)
    with open(ca_path, "rb") as ca:
        credentials = grpc.ssl_channel_credentials(ca.read())
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    return grpc.secure_channel(args.address, credentials, options=options)


def check(args: argparse.Namespace) -> str | None:
    """None when SERVING, else why not (one line)."""
    try:
        channel = _channel(args)
    except OSError as exc:
        return f"the CA file: {exc.strerror or exc} ({exc.filename})"
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=args.timeout
            )
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            return f"{args.address}: {code.name if code else 'ERROR'}: {details}"
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        return f"{args.address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}"
    return None


def run(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        print("raftlog health: --timeout must be > 0", file=sys.stderr)
        return 2
    problem = check(args)
    if problem is not None:
        print(f"raftlog health: {problem}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raftlog health", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
