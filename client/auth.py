"""Who the client is: the API key and tenant sent with every call.

Every request carries ``authorization: Bearer <api key>``. A tenant key acts
in its own tenant; an operator key acts in the tenant named by the
``raftlog-tenant`` header (``default`` when absent), so one operator key can
administer and use every tenant.

``call_metadata`` is the one place the headers are built; the
``CallCredentialsInterceptor`` adds them to every call on a channel, so no
stub call site has to remember them.

Invariants:

- The key is never logged and is left out of ``repr``.
- Headers a caller passed explicitly win over the ones added here (the
  server's forwarding hop relies on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

__all__ = [
    "AUTHORIZATION_HEADER",
    "TENANT_HEADER",
    "CallCredentialsInterceptor",
    "authorized_channel",
    "call_metadata",
]

AUTHORIZATION_HEADER = "authorization"
TENANT_HEADER = "raftlog-tenant"


def call_metadata(api_key: str | None, tenant: str | None) -> tuple[tuple[str, str], ...]:
    """The headers that say who is calling (empty when neither is given)."""
    headers: list[tuple[str, str]] = []
    if api_key:
        headers.append((AUTHORIZATION_HEADER, f"Bearer {api_key}"))
    if tenant:
        headers.append((TENANT_HEADER, tenant))
    return tuple(headers)


def _merged(
    details: grpc.aio.ClientCallDetails, extra: Sequence[tuple[str, str]]
) -> grpc.aio.ClientCallDetails:
    existing = list(details.metadata or ())
    present = {str(key) for key, _ in existing}
    metadata = grpc.aio.Metadata(*existing, *((k, v) for k, v in extra if k not in present))
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class CallCredentialsInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Adds the caller's identity headers to every call on a channel."""

    def __init__(self, headers: Sequence[tuple[str, str]]) -> None:
        self._headers = tuple(headers)

    def __repr__(self) -> str:  # never show the key
        return f"CallCredentialsInterceptor({[k for k, _ in self._headers]})"

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_merged(details, self._headers), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_merged(details, self._headers), request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(_merged(details, self._headers), request_iterator)

    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(_merged(details, self._headers), request_iterator)


def authorized_channel(
    address: str,
    api_key: str | None,
    tenant: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A plain ``grpc.aio`` channel whose every call says who is calling
    (for tools and scripts that use the generated stubs directly)."""
    headers = call_metadata(api_key, tenant)
    interceptors = [CallCredentialsInterceptor(headers)] if headers else None
    return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)
