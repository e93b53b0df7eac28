"""A node's TLS material (CA, certificate, key) read from files and
re-read when they change, and the gRPC credentials built from it.

Invariants:

- ``CertSource(files)`` raises ``ConfigError`` when a file is missing,
  unreadable, not PEM, or the certificate and key do not match: a node
  does not start with TLS it cannot serve.
- After that, ``current()`` never raises: a change is looked for at most
  once per ``CHECK_EVERY_S`` (size, mtime and inode of the three files);
  a changed set that reads and matches becomes the current material with
  ``generation`` + 1; one that does not (a half-done replacement, a typo)
  is logged and ignored, and the previous material stays in use.
- Thread-safe: gRPC calls the server credentials' fetcher on its own
  threads, the dialer calls ``current()`` on the event loop.
- ``server_credentials``: each credentials object hands gRPC a new
  configuration only when the generation moved since it last did, so an
  unchanged certificate costs a stat per second, not a re-parse per
  handshake.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cluster.tls.settings import NodeTlsFiles

__all__ = ["CHECK_EVERY_S", "CertSource", "Material", "channel_credentials", "server_credentials"]

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class Material:
    ca: bytes
    cert: bytes
    key: bytes
    generation: int


def _stamp(files: NodeTlsFiles) -> tuple[tuple[int, int, int], ...]:
    stamps = []
    for path in (files.ca_file, files.cert_file, files.key_file):
        st = os.stat(path)
        stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(stamps)


def _read(files: NodeTlsFiles) -> tuple[bytes, bytes, bytes]:
    """The three files, checked: PEM that parses, a key that matches the
    certificate. Raises ``ValueError`` / ``OSError`` saying which file."""
    ca, cert, key = (p.read_bytes() for p in (files.ca_file, files.cert_file, files.key_file))
    try:
        x509.load_pem_x509_certificates(ca)
    except ValueError:
        raise ValueError(f"{files.ca_file}: not a PEM certificate") from None
    try:
        leaf = x509.load_pem_x509_certificates(cert)[0]
    except ValueError:
        raise ValueError(f"{files.cert_file}: not a PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{files.key_file}: not an unencrypted PEM private key") from None
    if private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise ValueError(f"{files.key_file} is not the key of {files.cert_file}")
    return ca, cert, key


class CertSource:
    """See the module docstring."""

    def __init__(self, files: NodeTlsFiles, clock: Callable[[], float] = time.monotonic) -> None:
        from cluster.static_config import ConfigError

        self.files = files
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._stamp = _stamp(files)
            ca, cert, key = _read(files)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"[tls]: {exc}") from None
        self._material = Material(ca, cert, key, 1)
        self._checked_at = clock()

    def current(self) -> Material:
        with self._lock:
            now = self._clock()
            if now - self._checked_at >= CHECK_EVERY_S:
                self._checked_at = now
                self._reload_if_changed()
            return self._material

    def _reload_if_changed(self) -> None:
        try:
            stamp = _stamp(self.files)
            if stamp == self._stamp:
                return
            ca, cert, key = _read(self.files)
        except (OSError, ValueError) as exc:
            log.warning("TLS files changed but cannot be used yet (%s); still serving the previous ones", exc)
            return
        self._stamp = stamp
        old = self._material
        if (ca, cert, key) != (old.ca, old.cert, old.key):
            self._material = Material(ca, cert, key, old.generation + 1)
            log.info("TLS certificate reloaded from %s", self.files.cert_file)


def _server_config(material: Material) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.cert)], root_certificates=material.ca
    )


def server_credentials(source: CertSource, *, require_client_certificate: bool) -> grpc.ServerCredentials:
    """Credentials for one listener: the node's certificate, reloaded as in
    the module docstring; with ``require_client_certificate`` the handshake
    needs a client certificate signed by the CA (the internal listener)."""
    first = source.current()
    served = [first.generation]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        material = source.current()
        if material.generation == served[0]:
            return None  # gRPC keeps the configuration it has
        served[0] = material.generation
        return _server_config(material)

    return grpc.dynamic_ssl_server_credentials(
        _server_config(first), fetch, require_client_authentication=require_client_certificate
    )


def channel_credentials(material: Material) -> grpc.ChannelCredentials:
    """A node dialling a peer's internal listener: trusts the CA, presents
    the node's certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca, private_key=material.key, certificate_chain=material.cert
    )
