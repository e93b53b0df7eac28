"""Who the client is: the API key and tenant sent with every call.

Every request carries ``authorization: Bearer <api key>``. A tenant key acts
in its own tenant; an operator key acts in the tenant named by the
``raftlog-tenant`` header (``default`` when absent), so one operator key can
administer and use every tenant.

``call_metadata`` is the one place the headers are built;
``credentials_interceptors`` add them to every call on a channel (unary
and streaming), so no stub call site has to remember them.

Invariants:

- The key is never logged and is left out of ``repr``.
- Headers a caller passed explicitly win over the ones added here (the
  server's forwarding hop relies on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from raftlog.v1.headers import AUTHORIZATION, BEARER_PREFIX, TENANT

__all__ = [
    "AUTHORIZATION_HEADER",
    "TENANT_HEADER",
    "authorized_channel",
    "call_metadata",
    "credentials_interceptors",
]

AUTHORIZATION_HEADER = AUTHORIZATION
"""``raftlog.v1.headers.AUTHORIZATION`` (this name is kept for callers)."""
TENANT_HEADER = TENANT
"""``raftlog.v1.headers.TENANT`` (this name is kept for callers)."""


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
    metadata = grpc.aio.Metadata(*existing, *((k, v) for k, v in extra if k not in present))
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
) -> grpc.aio.Channel:
    """A plain ``grpc.aio`` channel whose every call says who is calling
    (for tools and scripts that use the generated stubs directly)."""
    interceptors = credentials_interceptors(call_metadata(api_key, tenant))
    return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)
