"""A fake Kubernetes API server on loopback HTTPS, enough for
``raftlog zone-from-node`` (cluster/cli_zone.py): ``GET /api/v1/nodes/NAME``.

    with FakeKubeApi(tmp_path, nodes={"n1": {"topology.kubernetes.io/zone": "a"}}) as api:
        api.url                 # https://127.0.0.1:PORT
        api.ca_file             # the CA its certificate is signed by
        api.service_account_dir(tmp_path / "sa")  # token + ca.crt, as a pod mounts them
        api.requests            # [(path, Authorization header)] as received

Invariants: the certificate is a development one (cluster/tls/certs.py,
SANs localhost, 127.0.0.1, ::1) from a CA made for this server; only the
bearer token ``TOKEN`` is accepted (401 otherwise, as the API server
answers); ``refuse_with`` makes every request fail with that status and a
Kubernetes ``Status`` body (e.g. 403 for a missing RBAC grant); an unknown
node is a 404 Status.
"""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from cluster.tls.certs import init_certs

__all__ = ["TOKEN", "FakeKubeApi"]

TOKEN = "fake-service-account-token-0123456789"
_NODE_PATH = "/api/v1/nodes/"


def _status(code: int, reason: str, message: str) -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    ).encode()


class FakeKubeApi:
    def __init__(
        self, directory: Path, nodes: dict[str, dict[str, str]], refuse_with: int | None = None
    ) -> None:
        self.nodes = nodes
        self.refuse_with = refuse_with
        self.requests: list[tuple[str, str | None]] = []
        certs = init_certs(directory / "kube-api-certs", nodes=1)
        self.ca_file = certs.ca_cert
        cert, key = certs.nodes[1]
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.socket = self._context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def service_account_dir(self, directory: Path, token: str = TOKEN) -> Path:
        """``token`` and ``ca.crt`` as the pod's projected volume holds them."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(token + "\n", encoding="utf-8")
        (directory / "ca.crt").write_bytes(self.ca_file.read_bytes())
        return directory

    def _answer(self, path: str, authorization: str | None) -> tuple[int, bytes]:
        if authorization != f"Bearer {TOKEN}":
            return 401, _status(401, "Unauthorized", "Unauthorized")
        if self.refuse_with is not None:
            return self.refuse_with, _status(
                self.refuse_with,
                "Forbidden",
                'nodes "x" is forbidden: User "system:serviceaccount:raftlog:raftlog" cannot get '
                'resource "nodes" in API group "" at the cluster scope',
            )
        name = path.removeprefix(_NODE_PATH)
        if not path.startswith(_NODE_PATH) or name not in self.nodes:
            return 404, _status(404, "NotFound", f'nodes "{name}" not found')
        node: dict[str, Any] = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name}}
        if self.nodes[name]:
            node["metadata"]["labels"] = self.nodes[name]
        return 200, json.dumps(node).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                authorization = self.headers.get("Authorization")
                api.requests.append((self.path, authorization))
                code, body = api._answer(self.path, authorization)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet test output

        return Handler

    def __enter__(self) -> FakeKubeApi:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
