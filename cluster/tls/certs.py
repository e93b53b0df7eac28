"""``raftlog certs init DIR``: a development certificate authority and one
certificate per node, for ``make run TLS=1``, tests and trying TLS out.

Writes into ``DIR`` (created owner-only if missing):

- ``ca.pem`` / ``ca.key``: a self-signed CA (EC P-256, 10 years). Clients
  trust ``ca.pem`` (``--tls-ca`` / ``RAFTLOG_TLS_CA``); ``ca.key`` signs
  node certificates and never leaves the operator's machine.
- ``node{N}.pem`` / ``node{N}.key`` for N = 1..nodes: a certificate signed
  by the CA, valid both as a TLS server (the public port, the internal
  listener) and as a TLS client (a node dialling its peers' internal
  listener, which requires a certificate from the cluster CA). Subject
  alternative names: ``localhost``, ``127.0.0.1``, ``::1`` and every
  ``--host`` (a name, or an IP address).

Invariants:

- Every private key file is mode 0600 from its creation (``os.open`` with
  the mode; never created wider and narrowed later).
- An existing CA (``ca.pem`` and ``ca.key`` in ``DIR``) is reused: a rerun
  rewrites the node certificates (to add nodes or hosts) from the same CA,
  so clients that trust ``ca.pem`` keep working. ``--new-ca`` makes a new
  CA as well.
- Development only: production clusters bring certificates from their own
  PKI; the file format (PEM, PKCS#8 keys) is what any tool writes.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertFiles", "init_certs", "new_node_pair", "write_private_bytes"]

CA_DAYS = 3650
NODE_DAYS = 825
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class CertFiles:
    ca_cert: Path
    ca_key: Path
    nodes: dict[int, tuple[Path, Path]]
    """Node id -> (certificate, key)."""


def write_private_bytes(path: Path, data: bytes) -> None:
    """``path`` holds ``data``, mode 0600 from creation; replaced atomically
    (a node reloading its certificate never reads half a file)."""
    scratch = path.with_name(path.name + ".new")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(scratch, 0o600)  # an old scratch file may have had another mode
    os.replace(scratch, path)


def _write_public(path: Path, data: bytes) -> None:
    scratch = path.with_name(path.name + ".new")
    scratch.write_bytes(data)
    os.replace(scratch, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    # A minute back: a peer whose clock is slightly behind still accepts it.
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)


def _new_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raftlog development CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*DEFAULT_HOSTS, *hosts]):  # ordered, no repeats
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def new_node_pair(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, node_id: int, hosts: Sequence[str] = ()
) -> tuple[bytes, bytes]:
    """A node certificate (PEM) signed by the CA, and its key (PEM): server
    and client auth, SANs as in the module docstring."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"raftlog node {node_id}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=NODE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(_san(hosts), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if not (cert_path.exists() and key_path.exists()):
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: not a key made by raftlog certs init (expected EC)")
    return cert, key


def init_certs(directory: Path, nodes: int = 3, hosts: Sequence[str] = (), new_ca: bool = False) -> CertFiles:
    """Write the CA (kept when present, unless ``new_ca``) and ``nodes``
    node certificates into ``directory``; see the module docstring."""
    if nodes < 1:
        raise ValueError(f"--nodes must be at least 1, got {nodes}")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    loaded = None if new_ca else _load_ca(directory)
    if loaded is None:
        ca_cert, ca_key = _new_ca()
        write_private_bytes(directory / "ca.key", _key_pem(ca_key))
        _write_public(directory / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))
    else:
        ca_cert, ca_key = loaded
    written: dict[int, tuple[Path, Path]] = {}
    for node in range(1, nodes + 1):
        cert_pem, key_pem = new_node_pair(ca_cert, ca_key, node, hosts)
        cert_path, key_path = directory / f"node{node}.pem", directory / f"node{node}.key"
        write_private_bytes(key_path, key_pem)
        _write_public(cert_path, cert_pem)
        written[node] = (cert_path, key_path)
    return CertFiles(directory / "ca.pem", directory / "ca.key", written)
