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
- Adding mTLS later: the door takes the admission rule as an argument
  (``admit``); a rule that accepts a verified peer certificate (from the
  call's auth context) slots in beside the proof rule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from cluster.frontend.front_door import INTERNAL_SERVICES
from cluster.internal.node_auth import PROOF_METADATA_KEY, ProofChecker

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

    def __init__(self, admit: Admit, services: frozenset[str] = INTERNAL_SERVICES) -> None:
        self._admit = admit
        self._services = services
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
            return await continuation(handler_call_details)
        self._note_refusal(method)
        return _refusal_like(await continuation(handler_call_details))

    def _note_refusal(self, method: str) -> None:
        self.refused_calls += 1
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            log.warning(
                "refused %d internal call(s) without a valid node proof (latest: %s); "
                "check that every node has this cluster's secret file and a clock within a minute",
                self._refused_since_log,
                method,
            )
            self._refused_since_log = 0
            self._last_log = now
