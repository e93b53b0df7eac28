"""``raftlog certs init`` (cluster/tls/certs.py, cluster/tls/cli.py): the
files, the chain, the names, the key modes; the ``[tls]`` section and the
reloading of certificate files (cluster/tls/settings.py, material.py)."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from cluster.cli import main as cli_main
from cluster.static_config import ConfigError, parse_cluster
from cluster.tls import material
from cluster.tls.certs import init_certs, new_node_pair
from cluster.tls.material import CertSource
from cluster.tls.settings import NodeTlsFiles, check_ports, internal_address


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_init_writes_a_ca_and_node_certificates_that_chain_to_it(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    assert (
        cli_main(
            ["certs", "init", str(directory), "--nodes", "2", "--host", "db.example", "--host", "10.1.2.3"]
        )
        == 0
    )
    ca = load(directory / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for node in (1, 2):
        cert = load(directory / f"node{node}.pem")
        cert.verify_directly_issued_by(ca)  # raises if not signed by the CA
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "db.example"}
        assert set(names.get_values_for_type(x509.IPAddress)) == {
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("::1"),
            ipaddress.ip_address("10.1.2.3"),
        }
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage)
    assert not (directory / "node3.pem").exists()
    for key in ("ca.key", "node1.key", "node2.key"):
        assert stat.S_IMODE((directory / key).stat().st_mode) == 0o600, key
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_rerun_keeps_the_ca_unless_asked(tmp_path: Path) -> None:
    first = init_certs(tmp_path, nodes=1)
    serial = load(first.ca_cert).serial_number
    again = init_certs(tmp_path, nodes=3)
    assert load(again.ca_cert).serial_number == serial
    load(again.nodes[3][0]).verify_directly_issued_by(load(again.ca_cert))
    assert load(init_certs(tmp_path, nodes=1, new_ca=True).ca_cert).serial_number != serial


def test_tls_section_paths_env_overrides_and_ports(tmp_path: Path) -> None:
    doc: dict[str, Any] = {
        "nodes": [{"id": 1, "address": "127.0.0.1:7001"}, {"id": 2, "address": "127.0.0.1:7002"}],
        "tls": {"ca_file": "c/ca.pem", "cert_file": "c/node{id}.pem", "key_file": "c/node{id}.key"},
    }
    cluster = parse_cluster(doc, tmp_path)
    assert cluster.tls is not None and cluster.tls.internal_port_offset == 10_000
    files = cluster.tls.for_node(2, env={})
    assert files.cert_file == tmp_path / "c/node2.pem" and files.ca_file == tmp_path / "c/ca.pem"
    override = cluster.tls.for_node(2, env={"RAFTLOG_TLS_KEY": "/k/n{id}.key"})
    assert override.key_file == Path("/k/n2.key") and override.cert_file == files.cert_file
    assert parse_cluster({"nodes": doc["nodes"]}, tmp_path).tls is None
    with pytest.raises(ConfigError, match="internal_port_offset"):
        parse_cluster({**doc, "tls": {**doc["tls"], "internal_port_offset": 0}}, tmp_path)
    with pytest.raises(ConfigError, match="unknown settings"):
        parse_cluster({**doc, "tls": {**doc["tls"], "ca": "x"}}, tmp_path)
    with pytest.raises(ConfigError, match="cert_file is not set"):
        parse_cluster({**doc, "tls": {"ca_file": "c/ca.pem"}}, tmp_path).tls.for_node(1, env={})  # type: ignore[union-attr]
    assert internal_address("127.0.0.1:7001", 10_000) == "127.0.0.1:17001"
    with pytest.raises(ConfigError, match="both a node's public address"):
        check_ports(["127.0.0.1:7001", "127.0.0.1:7002"], 1)
    with pytest.raises(ConfigError, match="> 65535"):
        check_ports(["127.0.0.1:60000"], 10_000)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cert_source_reloads_a_whole_new_pair_and_ignores_a_half_replaced_one(tmp_path: Path) -> None:
    made = init_certs(tmp_path, nodes=2)
    cert, key = made.nodes[1]
    files = NodeTlsFiles(made.ca_cert, cert, key, 10_000)
    clock = Clock()
    source = CertSource(files, clock)
    first = source.current()
    assert first.generation == 1 and first.cert == cert.read_bytes()

    # Only the certificate replaced (node 2's: another key): not used yet.
    cert.write_bytes(made.nodes[2][0].read_bytes())
    clock.now += material.CHECK_EVERY_S
    assert source.current().generation == 1
    # The key follows: the pair is whole again, and new.
    key.write_bytes(made.nodes[2][1].read_bytes())
    os.utime(key, ns=(1, 1))  # a distinct stamp even within one mtime tick
    clock.now += material.CHECK_EVERY_S
    assert source.current().generation == 2
    assert source.current().cert == made.nodes[2][0].read_bytes()
    # Not looked at again before CHECK_EVERY_S.
    new_cert, new_key = new_node_pair(
        x509.load_pem_x509_certificate(made.ca_cert.read_bytes()),
        _ca_key(made.ca_key),
        1,
    )
    cert.write_bytes(new_cert)
    key.write_bytes(new_key)
    assert source.current().generation == 2
    clock.now += material.CHECK_EVERY_S
    assert source.current().generation == 3


def _ca_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def test_a_node_with_unusable_tls_files_does_not_start(tmp_path: Path) -> None:
    made = init_certs(tmp_path, nodes=2)
    with pytest.raises(ConfigError, match="is not the key of"):
        CertSource(NodeTlsFiles(made.ca_cert, made.nodes[1][0], made.nodes[2][1], 1))
    with pytest.raises(ConfigError, match="No such file"):
        CertSource(NodeTlsFiles(made.ca_cert, tmp_path / "missing.pem", made.nodes[1][1], 1))
