"""The ``[tls]`` section of the cluster file, and where a node finds its
certificate files::

    [tls]
    ca_file = "certs/ca.pem"            # the cluster CA (clients trust it too)
    cert_file = "certs/node{id}.pem"    # {id}: the node id (one file set per node)
    key_file = "certs/node{id}.key"
    internal_port_offset = 10000        # the internal (mTLS) listener's port:
                                        # each node's port + this

Paths are relative to the cluster file's folder. ``RAFTLOG_TLS_CA``,
``RAFTLOG_TLS_CERT`` and ``RAFTLOG_TLS_KEY`` (paths, ``{id}`` allowed,
relative to the working directory) override the file's, per process. The
section turns TLS on; the variables alone do not.

Invariants: with ``[tls]`` present all three files are named (by the file
or the environment), the offset is 1-65535, and every node's internal port
(its port + offset) is a valid port distinct from every public address
(``check_ports``); otherwise ``ConfigError`` naming the setting.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CA_ENV",
    "CERT_ENV",
    "DEFAULT_INTERNAL_PORT_OFFSET",
    "KEY_ENV",
    "NodeTlsFiles",
    "TlsConfig",
    "check_ports",
    "internal_address",
    "parse_tls",
]

CA_ENV = "RAFTLOG_TLS_CA"
CERT_ENV = "RAFTLOG_TLS_CERT"
KEY_ENV = "RAFTLOG_TLS_KEY"
DEFAULT_INTERNAL_PORT_OFFSET = 10_000


def _config_error(message: str) -> Exception:
    # Imported here: cluster/static_config.py imports this module.
    from cluster.static_config import ConfigError

    return ConfigError(message)


@dataclass(frozen=True, slots=True)
class NodeTlsFiles:
    """One node's files, ``{id}`` filled in."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    internal_port_offset: int


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The ``[tls]`` section: path templates (absolute or relative to the
    cluster file's folder, already joined) and the offset."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    internal_port_offset: int = DEFAULT_INTERNAL_PORT_OFFSET

    def for_node(self, node_id: int, env: Mapping[str, str] | None = None) -> NodeTlsFiles:
        """The files of ``node_id``, environment overrides applied."""
        env = os.environ if env is None else env
        paths = []
        for setting, variable, template in (
            ("ca_file", CA_ENV, self.ca_file),
            ("cert_file", CERT_ENV, self.cert_file),
            ("key_file", KEY_ENV, self.key_file),
        ):
            chosen = env.get(variable) or template
            if not chosen:
                raise _config_error(f"[tls] {setting} is not set (set it in the cluster file or {variable})")
            paths.append(Path(chosen.replace("{id}", str(node_id))))
        return NodeTlsFiles(paths[0], paths[1], paths[2], self.internal_port_offset)


def parse_tls(section: Any, base_dir: Path) -> TlsConfig | None:
    """The ``[tls]`` table (None when absent: TLS off)."""
    if section is None:
        return None
    if not isinstance(section, dict):
        raise _config_error("[tls] must be a table")
    unknown = set(section) - {"ca_file", "cert_file", "key_file", "internal_port_offset"}
    if unknown:
        raise _config_error(f"[tls]: unknown settings {sorted(unknown)}")
    paths: dict[str, str] = {}
    for name in ("ca_file", "cert_file", "key_file"):
        value = section.get(name, "")
        if not isinstance(value, str):
            raise _config_error(f"[tls] {name} must be a path (a string), got {value!r}")
        paths[name] = str(base_dir / value) if value else ""
    offset = section.get("internal_port_offset", DEFAULT_INTERNAL_PORT_OFFSET)
    if not isinstance(offset, int) or isinstance(offset, bool) or not 1 <= offset <= 65535:
        raise _config_error(f"[tls] internal_port_offset must be an integer 1-65535, got {offset!r}")
    return TlsConfig(internal_port_offset=offset, **paths)


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise _config_error(f"address {address!r}: expected HOST:PORT")
    return host, int(port)


def internal_address(address: str, offset: int) -> str:
    """The internal listener of the node whose public address is ``address``."""
    host, port = _split(address)
    return f"{host}:{port + offset}"


def check_ports(addresses: Iterable[str], offset: int) -> None:
    """Every internal port is a valid port and is nobody's public port."""
    public = {_split(a) for a in addresses}
    for host, port in public:
        if port + offset > 65535:
            raise _config_error(
                f"[tls] internal_port_offset {offset}: node address {host}:{port} would need internal port "
                f"{port + offset} (> 65535); lower the offset"
            )
        if (host, port + offset) in public:
            raise _config_error(
                f"[tls] internal_port_offset {offset}: {host}:{port + offset} is both a node's public "
                "address and another's internal listener; pick another offset"
            )
