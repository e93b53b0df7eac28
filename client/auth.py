"""Who the client is: the API key and tenant sent with every call.

Every request carries ``authorization: Bearer <api key>``. A tenant key acts
in its own tenant; an operator key acts in the tenant named by the
``raftlog-tenant`` header (``default`` when absent), so one operator key can
administer and use every tenant.

TLS: ``channel_credentials(tls_ca)`` is the one place the SDK decides
between plaintext and TLS. ``tls_ca`` is the path of the cluster's CA
certificate (PEM); ``None`` (the default everywhere) means
``$RAFTLOG_TLS_CA`` if set, else plaintext; ``""`` means plaintext even when
the variable is set. The file is read once, when the client is made; a
missing or unreadable file is a ``ValueError`` naming it (before anything
is sent). The server's certificate must then chain to that CA and name the
host dialled (``raftlog certs init`` puts localhost and 127.0.0.1 in).

``call_metadata`` is the one place the headers are built;
``credentials_interceptors`` add them to every call on a channel (unary
and streaming), so no stub call site has to remember them, together with
the caller's OpenTelemetry trace context when a span is current
(client/trace_context.py).

Invariants:

- The key is never logged and is left out of ``repr``.
- Headers a caller passed explicitly win over the ones added here (the
  server's forwarding hop relies on it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import grpc

from client.trace_context import trace_headers
from raftlog.v1.headers import AUTHORIZATION, BEARER_PREFIX, TENANT

__all__ = [
    "AUTHORIZATION_HEADER",
    "TENANT_HEADER",
    "TLS_CA_ENV",
    "authorized_channel",
    "call_metadata",
    "channel_credentials",
    "credentials_interceptors",
    "open_channel",
]

AUTHORIZATION_HEADER = AUTHORIZATION
"""``raftlog.v1.headers.AUTHORIZATION`` (this name is kept for callers)."""
TENANT_HEADER = TENANT
"""``raftlog.v1.headers.TENANT`` (this name is kept for callers)."""


TLS_CA_ENV = "RAFTLOG_TLS_CA"
"""The CA file the SDK trusts when no ``tls_ca`` is given."""


def channel_credentials(tls_ca: str | os.PathLike[str] | None = None) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting the CA in ``tls_ca`` (see the module
    docstring for None and ""), or None for plaintext."""
    path = os.environ.get(TLS_CA_ENV, "") if tls_ca is None else os.fspath(tls_ca)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            ca = f.read()
    except OSError as exc:
        raise ValueError(
            f"tls_ca {path}: cannot read the CA certificate ({exc.strerror or exc}); "
            f"give the cluster's ca.pem (--tls-ca or ${TLS_CA_ENV})"
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in ca:
        raise ValueError(f"tls_ca {path}: not a PEM certificate; give the cluster's ca.pem")
    return grpc.ssl_channel_credentials(root_certificates=ca)


def open_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel: TLS with ``credentials``, plaintext with None."""
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=list(options), interceptors=interceptors)


def call_metadata(api_key: str | None, tenant: str | None) -> tuple[tuple[str, str], ...]:
    """The headers that say who is calling (empty when neither is given)."""
    headers: list[tuple[str, str]] = []
    if api_key:
        headers.append((AUTHORIZATION_HEADER, f"{BEARER_PREFIX}{api_key}"))
    if tenant:
        headers.append((TENANT_HEADER, tenant))
    return tuple(headers)


def _merged(
    details: grpc.aio.ClientCallDetails, extra: Sequence[tuple[str, str]]
) -> grpc.aio.ClientCallDetails:
    existing = list(details.metadata or ())
    present = {str(key) for key, _ in existing}
    # The trace context is read here, in the call's own task (a copy of the
    # caller's context), so it is the span current where the call was made.
    added = (*extra, *trace_headers())
    metadata = grpc.aio.Metadata(*existing, *((k, v) for k, v in added if k not in present))
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _Headers:
    def __init__(self, headers: Sequence[tuple[str, str]]) -> None:
        self._headers = tuple(headers)

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}({[k for k, _ in self._headers]})"


# grpc.aio files an interceptor object under the first call type it
# implements only (unary-unary before the rest), so one object that
# implemented all four would never see a stream: one class per call type.
# grpc ships no type stubs, so its interceptor bases are Any to mypy.


class _UnaryUnary(_Headers, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_merged(details, self._headers), request)


class _UnaryStream(_Headers, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_merged(details, self._headers), request)


class _StreamUnary(_Headers, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(_merged(details, self._headers), request_iterator)


class _StreamStream(_Headers, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(_merged(details, self._headers), request_iterator)


def credentials_interceptors(headers: Sequence[tuple[str, str]]) -> list[grpc.aio.ClientInterceptor] | None:
    """Interceptors that add ``headers`` to every call on a channel, of
    every call type (None when there are no headers)."""
    if not headers:
        return None
    return [_UnaryUnary(headers), _UnaryStream(headers), _StreamUnary(headers), _StreamStream(headers)]


def authorized_channel(
    address: str,
    api_key: str | None,
    tenant: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
    tls_ca: str | os.PathLike[str] | None = None,
) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel whose every call says who is calling (for
    tools and scripts that use the generated stubs directly); TLS as
    ``tls_ca`` says (module docstring)."""
    interceptors = credentials_interceptors(call_metadata(api_key, tenant))
    return open_channel(address, channel_credentials(tls_ca), options, interceptors)
