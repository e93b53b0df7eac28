"""The internal door: the seam every call to an internal service passes
(``INTERNAL_SERVICES``: Raft transport, cluster join, NodeAdmin), on the
same port as the public API.

A call to one of those services is admitted only with a valid node proof
(cluster/internal/node_auth.py: made from the cluster secret, fresh, for
this method, not seen before); anything else ends ``UNAUTHENTICATED`` with
``REFUSAL``, before the handler runs and before a single request message is
read. Calls to other services pass untouched (the public ones then meet the
front door, cluster/frontend/front_door.py).

Invariants:

- No handler of an internal service runs for a call without exactly one
  proof, a valid one, whatever the method (an unknown method of an internal service is refused
  the same way, so the refusal does not even say which methods exist).
- The refusal says nothing about the cluster: the same fixed text for every
  reason (no proof, a bad MAC, stale, replayed), no cluster id, node id,
  name or address. The reason goes to this node's log (rate-limited: a
  flood of forged calls costs one line per ``LOG_EVERY_S``) and to
  ``refused_calls``.
- Checked once per call, at its start: a Raft transport stream is one call,
  so its batches pass no check at all.
- Must come before the front door in the server's interceptor list: the
  front door must be last (it caches the handlers it is given), and this
  door only asks the ones after it for the handler.
- With TLS on (``require_peer_certificate``, cluster/tls/__init__.py) an
  internal call also needs a verified client certificate in its auth
  context, which only the internal (mTLS) listener produces: internal
  services called on the public TLS listener are refused the same way.
  The proof is still required. The auth context is only visible to the
  handler, so this check runs at the start of a wrapper around the handler,
  before the service's own code (a unary request has been parsed by then).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from cluster.frontend.front_door import INTERNAL_SERVICES
from cluster.internal.node_auth import PROOF_METADATA_KEY, ProofChecker
from cluster.tls.peer import has_verified_peer_certificate

__all__ = ["REFUSAL", "InternalDoor", "proof_rule"]

log = logging.getLogger(__name__)

REFUSAL = "not allowed"
"""The whole text of every refusal (see the invariants)."""

LOG_EVERY_S = 10.0

Admit = Callable[[str, tuple[tuple[str, Any], ...]], bool]
"""``admit(method, invocation_metadata)``: whether the call may proceed."""


def proof_rule(checker: ProofChecker, clock: Callable[[], float] = time.time) -> Admit:
    """The no-TLS rule: exactly one node proof in the call's metadata, and
    a valid one. Two are refused: the door would check one while a handler
    reading the node a proof names (the transport's ``admit``, ``claimed_node``)
    might read the other, unchecked."""

    def admit(method: str, metadata: tuple[tuple[str, Any], ...]) -> bool:
        proofs = [value for key, value in metadata if key == PROOF_METADATA_KEY]
        if len(proofs) != 1:
            return False
        return checker.check(proofs[0], method, int(clock() * 1000)) is not None

    return admit


async def _refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)


def _behind_certificate_check(handler: grpc.RpcMethodHandler, refused: Callable[[], None]) -> Any:
    """``handler`` whose behaviour first checks for a verified peer
    certificate (refusing without one, like a missing proof)."""

    def checked(behavior: Any) -> Any:
        if behavior is None:
            return None
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if not has_verified_peer_certificate(context):
                    refused()
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)
                async for item in behavior(request, context):
                    yield item

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if not has_verified_peer_certificate(context):
                refused()
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)
            return await behavior(request, context)

        return call

    return handler._replace(
        unary_unary=checked(handler.unary_unary),
        unary_stream=checked(handler.unary_stream),
        stream_unary=checked(handler.stream_unary),
        stream_stream=checked(handler.stream_stream),
    )


def _refusal_like(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that refuses at once. No
    deserializer: nothing the caller sent is parsed."""
    if handler is None or handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_refuse)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_refuse)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_refuse)
    return grpc.stream_stream_rpc_method_handler(_refuse)


class InternalDoor(grpc.aio.ServerInterceptor):
    """The interceptor; see the module docstring."""

    def __init__(
        self,
        admit: Admit,
        services: frozenset[str] = INTERNAL_SERVICES,
        *,
        require_peer_certificate: bool = False,
    ) -> None:
        """``require_peer_certificate``: TLS is on (module docstring)."""
        self._admit = admit
        self._services = services
        self._require_peer_certificate = require_peer_certificate
        self.refused_calls = 0
        self._refused_since_log = 0
        self._last_log = -LOG_EVERY_S

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        # Not cached per method: a caller can name any path, and the slice
        # and set lookup cost less than a dict that could grow without end.
        if method[1 : method.rfind("/")] not in self._services:
            return await continuation(handler_call_details)
        if self._admit(method, tuple(handler_call_details.invocation_metadata or ())):
            handler = await continuation(handler_call_details)
            if self._require_peer_certificate and handler is not None:
                return _behind_certificate_check(handler, lambda: self._note_refusal(method))
            return handler
        self._note_refusal(method)
        return _refusal_like(await continuation(handler_call_details))

    def _note_refusal(self, method: str) -> None:
        self.refused_calls += 1
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            log.warning(
                "refused %d internal call(s) without a valid node proof or (with TLS) a cluster "
                "certificate (latest: %s); check that every node has this cluster's secret file, a clock "
                "within a minute and (with TLS) calls its peers' internal listener",
                self._refused_since_log,
                method,
            )
            self._refused_since_log = 0
            self._last_log = now
