"""Outgoing node-to-node channels: the one place a node opens a gRPC
channel to another node (Raft transport streams, join, NodeAdmin asks,
forwarded client calls, the reconciler's replica checks).

``dialer.dial(address, options)`` takes a node's *public* address (as the
cluster file and the metadata name it, or a ``--dial`` override). Without
TLS (``PLAIN``) it opens a plaintext channel to that address. With TLS
(``TlsDialer``) it opens a TLS channel to the internal listener at the same
host, port + ``internal_port_offset``, presenting this node's certificate
and trusting only the cluster CA (cluster/tls/__init__.py).

Invariants:

- ``generation`` changes exactly when the channel credentials do (a
  reloaded certificate, key or CA). A holder of long-lived channels
  compares it before reuse and replaces its channels when it moved
  (cluster/frontend/forwarding.py ``ChannelCache``); a channel opened per
  call or per stream picks up the new certificate by itself.
- A ``--dial`` proxy address gets the offset like any other address: with
  TLS the proxy must also forward port + offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import grpc

from cluster.tls.material import CertSource, channel_credentials
from cluster.tls.settings import internal_address

__all__ = ["PLAIN", "Dialer", "PlainDialer", "TlsDialer"]

Options = Sequence[tuple[str, Any]]


class Dialer(Protocol):
    @property
    def generation(self) -> int: ...

    def dial(self, address: str, options: Options = ()) -> grpc.aio.Channel: ...


class PlainDialer:
    """No TLS: plaintext to the address as given."""

    generation = 0

    def dial(self, address: str, options: Options = ()) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(address, options=list(options))


PLAIN = PlainDialer()


class TlsDialer:
    """mTLS to the internal listener (module docstring)."""

    def __init__(self, source: CertSource, internal_port_offset: int) -> None:
        self._source = source
        self._offset = internal_port_offset
        self._generation = 0
        self._credentials: grpc.ChannelCredentials | None = None

    @property
    def generation(self) -> int:
        return self._source.current().generation

    def _current_credentials(self) -> grpc.ChannelCredentials:
        material = self._source.current()
        if self._credentials is None or material.generation != self._generation:
            self._credentials = channel_credentials(material)
            self._generation = material.generation
        return self._credentials

    def dial(self, address: str, options: Options = ()) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(
            internal_address(address, self._offset), self._current_credentials(), options=list(options)
        )
