"""``raftlog zone-from-node --out PATH``: write the ``topology.kubernetes.io/zone``
label of the Kubernetes node this pod runs on into PATH.

The chart's init container (helm/raftlog, ``zone.fromNode.enabled``) runs it
so the node gets its zone on every Kubernetes version: the pod's own copy
of the label (the downward-API route) exists only where the
``PodTopologyLabelsAdmission`` gate is on (cluster/zone_source.py). The
node process then reads PATH through ``$RAFTLOG_ZONE_FILE``.

How it asks: ``GET {api}/api/v1/nodes/{node}`` with the pod's service
account token (``Authorization: Bearer``), trusting the cluster CA, both
from ``--service-account-dir`` (default the standard mount,
``/var/run/secrets/kubernetes.io/serviceaccount``: ``token``, ``ca.crt``).
``{api}`` is ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``
(the kubelet sets both in every pod, service links or not), else
``https://kubernetes.default.svc``; ``--api-server URL`` overrides.
``{node}`` is ``--node-name``, else ``$NODE_NAME`` (the chart gives it from
``spec.nodeName``). The service account needs ``get`` on ``nodes`` (the
chart's ClusterRole). Only the standard library runs here (urllib, ssl,
json): it starts fast and needs no client package.

Exit status and output:

- 0: PATH holds the label's value; or the node has no such label, PATH is
  empty (no zone) and a warning says so on stderr.
- 1: the API refused (401, 403, 404 ...) or could not be reached; one line
  on stderr with the status, the API's own message and what to check.
  PATH is not written: the init container fails and the kubelet retries
  it, and the node never starts with a zone it did not ask for.
- 2: usage: no node name, an unreadable token or CA file, a bad
  ``--api-server``; nothing is asked and PATH is not written.

Invariants: the token never appears in output or errors; PATH is replaced
atomically (a reader sees the old content or the new, never half); no
proxy from the environment is used (the API server is in the cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ZONE_LABEL", "ApiRefused", "api_server", "main", "node_zone"]

ZONE_LABEL = "topology.kubernetes.io/zone"
NODE_NAME_ENV = "NODE_NAME"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_API_SERVER = "https://kubernetes.default.svc"
DEFAULT_TIMEOUT_S = 10.0
PROG = "raftlog zone-from-node"

# What to check for a refusal, by HTTP status.
_HINTS = {
    401: "the service account token was not accepted (is the projected token mounted and current?)",
    403: "the service account may not get nodes: the chart's ClusterRole/ClusterRoleBinding "
    "(zone.fromNode.enabled) grant it",
    404: "no such node (is $NODE_NAME the pod's spec.nodeName?)",
}


class ApiRefused(Exception):
    """The API server said no or could not be reached (exit 1)."""


class UsageError(Exception):
    """A local setting is missing or unreadable (exit 2)."""


def api_server(environ: Mapping[str, str]) -> str:
    """The in-cluster API server's base URL (module docstring)."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = environ.get("KUBERNETES_SERVICE_PORT", "").strip()
    if not (host and port):
        return DEFAULT_API_SERVER
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"https://{host}:{port}"


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise UsageError(f"the {what} {path}: {reason}") from None


def _refusal(error: urllib.error.HTTPError) -> str:
    """``403 Forbidden: <the API's Status message>; <what to check>``."""
    message = ""
    try:
        status = json.loads(error.read().decode("utf-8", "replace"))
        if isinstance(status, dict):
            message = str(status.get("message", ""))
    except (OSError, ValueError):
        pass
    text = f"{error.code} {error.reason}"
    if message:
        text += f": {message}"
    hint = _HINTS.get(error.code)
    return f"{text}; {hint}" if hint else text


def node_zone(api: str, node_name: str, token: str, ca_file: Path, timeout: float) -> str | None:
    """The node's zone label, None when it has none. ApiRefused otherwise."""
    url = f"{api.rstrip('/')}/api/v1/nodes/{urllib.parse.quote(node_name, safe='')}"
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"the CA file {ca_file}: {getattr(exc, 'strerror', None) or exc}") from None
    # No ProxyHandler from the environment: the API server is in the cluster.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        raise ApiRefused(f"GET {url}: {_refusal(error)}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise ApiRefused(f"GET {url}: cannot reach the API server: {reason}") from None
    try:
        node = json.loads(body)
        labels = node.get("metadata", {}).get("labels") or {}
    except (ValueError, AttributeError):
        raise ApiRefused(f"GET {url}: the answer is not a Node object") from None
    zone = labels.get(ZONE_LABEL) if isinstance(labels, dict) else None
    return str(zone) if zone is not None else None


def _write(path: Path, text: str) -> None:
    scratch = path.with_name(f".{path.name}.new")
    scratch.write_text(text, encoding="utf-8")
    scratch.chmod(0o644)  # the node container reads it, maybe as another user
    os.replace(scratch, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="PATH", help="write the zone label here")
    parser.add_argument("--node-name", help=f"the Kubernetes node (default: ${NODE_NAME_ENV})")
    parser.add_argument(
        "--service-account-dir",
        default=SERVICE_ACCOUNT_DIR,
        metavar="DIR",
        help="where the token and ca.crt are (default: the standard mount)",
    )
    parser.add_argument(
        "--api-server",
        metavar="URL",
        help="default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, else " + DEFAULT_API_SERVER,
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S")


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``raftlog zone-from-node`` (cluster/cli.py)."""
    command = commands.add_parser(
        "zone-from-node", help="write this pod's Kubernetes node's zone label to a file (an init container)"
    )
    add_arguments(command)
    command.set_defaults(sync=run)


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, str, str, Path]:
    """(api, node name, token, CA file) or UsageError."""
    node_name = (args.node_name or environ.get(NODE_NAME_ENV, "")).strip()
    if not node_name:
        raise UsageError(
            f"no node name: set ${NODE_NAME_ENV} (env from fieldRef spec.nodeName) or --node-name"
        )
    if args.timeout <= 0:
        raise UsageError("--timeout must be > 0")
    api = args.api_server or api_server(environ)
    if urllib.parse.urlsplit(api).scheme != "https":
        raise UsageError(f"--api-server {api!r}: expected an https:// URL")
    directory = Path(args.service_account_dir)
    token = _read(directory / "token", "service account token")
    if not token:
        raise UsageError(f"the service account token {directory / 'token'} is empty")
    return api, node_name, token, directory / "ca.crt"


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        api, node_name, token, ca_file = _settings(args, os.environ)
        if not out.parent.is_dir():
            raise UsageError(f"--out {out}: the directory {out.parent} does not exist")
        zone = node_zone(api, node_name, token, ca_file, args.timeout)
        _write(out, zone or "")
    except UsageError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    except ApiRefused as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{PROG}: --out {out}: {error.strerror or error}", file=sys.stderr)
        return 1
    if zone:
        print(f"node {node_name}: zone {zone!r} written to {out}")
    else:
        print(
            f"{PROG}: warning: node {node_name} has no {ZONE_LABEL} label; wrote an empty {out} "
            "(the raftlog node runs without a zone)",
            file=sys.stderr,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
