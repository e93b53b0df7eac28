"""Whether a call came with a verified client certificate.

Only the internal listener asks for (and requires) a client certificate,
and gRPC admits a connection there only once the certificate verified
against the cluster CA; so a call with a peer identity in its auth context
arrived on the internal listener from a holder of a cluster certificate.
Calls on the public TLS listener, or in plaintext, have none.
"""

from __future__ import annotations

import grpc

__all__ = ["has_verified_peer_certificate"]


def has_verified_peer_certificate(context: grpc.aio.ServicerContext) -> bool:
    auth = context.auth_context()
    return bool(auth.get("x509_pem_cert")) and context.peer_identities() is not None
