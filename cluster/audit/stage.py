"""The audit stage: one audit event for every admin call that changes
something, run by the front door around the call (front_door.Stage).

Which calls: every ``AdminService`` method but the read-only ones
(events.READ_ONLY_METHODS), whatever the outcome — done (``ok``), refused
by the handler or the controller (``refused``, with the status, the
``Reason`` and the message), or ended without an answer (``unknown``: the
client cancelled; the change may or may not have been made). A call the
door refuses before the stages run because the key may not call the method
(a tenant key on an operator-only method) is recorded too, through
``refused_at_door``, which the door calls with the authenticated caller —
without waiting for the write, and coalesced (one event per key, method and
reason a second, with a ``count``; writer.py, door_refusals.py): such a
call costs its caller nothing else, so a loop of them must not cost a
replicated append each, nor crowd the admin changes out of the queue. A
call without a valid key is not recorded (there is nobody to name, and
anyone could fill the topic with them: the door's log has them).

One event per call, written by the node the client called: it knows the
client's address. An admin change that node forwards to the controller
leader arrives there with the forwarding node's proof
(``forwarding.FORWARDED_CHANGE_PROOF``); the leader's stage, seeing a valid
proof, records nothing, and the forwarding node records the outcome the
leader relayed. A client that sends ``raftlog-no-forward`` itself has no
proof, so it cannot hide a call from the audit.

Order among stages: after the quota stage (cluster/node.py), so a call the
quota refuses is not recorded — rate-limited flooding must not turn into
audit appends — while a count-quota refusal made by the controller
(``QUOTA_EXCEEDED`` on a create) is.

Invariants:

- The event is built from the caller, the request, the outcome and the
  handler's notes (call_notes.py: the id of a key the call created) —
  never from the response (where a created key's clear text is) — and the
  request passes ``events.target_of`` (no secret-named field).
- A call the stages ran answers only once its event is durable or
  ``AuditWriter.record`` gave up waiting (logged; retried in the
  background); a call refused at the door never waits for the audit. The handler's
  outcome is never changed by the audit: its exception is re-raised as it
  was, and an audit failure raises nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, Protocol

import grpc

from cluster.audit.call_notes import CallNotes, taking_notes
from cluster.audit.events import (
    CREATED_KEY_ID,
    AuditEvent,
    is_audited,
    method_name,
    new_event_id,
    refusal_message,
    target_of,
)
from cluster.frontend.forwarding import FORWARDED_CHANGE_PROOF
from cluster.frontend.front_door import Caller
from cluster.frontend.grpc_errors import ServiceError, from_replica_error, info_in
from cluster.internal.node_auth import PROOF_METADATA_KEY, ProofChecker
from partitions.replica_errors import ReplicaError
from raftlog.v1.reasons import Reason

__all__ = ["AuditStage"]


class Recorder(Protocol):
    async def record(self, event: AuditEvent) -> bool: ...
    def record_door_refusal(self, event: AuditEvent) -> None: ...


class AuditStage:
    """``stage(method, caller, request, context)``; see the module docstring."""

    def __init__(
        self,
        node_id: int,
        writer: Recorder,
        checker: ProofChecker | None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        """``checker``: this cluster's node proofs (None: no call counts as
        forwarded — a single node, or a test)."""
        self._node_id = node_id
        self._writer = writer
        self._checker = checker
        self._clock_ms = clock_ms

    def __call__(
        self, method: str, caller: Caller, request: Any, context: grpc.aio.ServicerContext
    ) -> contextlib.AbstractAsyncContextManager[object]:
        if not is_audited(method) or self._forwarded(context):
            return contextlib.nullcontext()
        return self._around(method, caller, request, context)

    def refused_at_door(
        self, method: str, caller: Caller, context: grpc.aio.ServicerContext, refusal: ServiceError
    ) -> None:
        """Record a call the door refused for its key (before any stage),
        without waiting: the writer coalesces and queues it."""
        if is_audited(method) and not self._forwarded(context):
            self._writer.record_door_refusal(
                self._event(method, caller, None, context, self._clock_ms(), refusal=refusal)
            )

    def _forwarded(self, context: grpc.aio.ServicerContext) -> bool:
        if self._checker is None:
            return False
        proofs = [v for k, v in context.invocation_metadata() or () if k == PROOF_METADATA_KEY]
        return len(proofs) == 1 and (
            self._checker.check(proofs[0], FORWARDED_CHANGE_PROOF, self._clock_ms()) is not None
        )

    @contextlib.asynccontextmanager
    async def _around(
        self, method: str, caller: Caller, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        started = self._clock_ms()
        with taking_notes() as notes:
            try:
                yield
            except asyncio.CancelledError:
                event = self._event(method, caller, request, context, started, notes, cancelled=True)
                await self._writer.record(event)
                raise
            except BaseException as error:
                refusal = _refusal(error, context)
                await self._writer.record(
                    self._event(method, caller, request, context, started, notes, refusal=refusal)
                )
                raise
            await self._writer.record(self._event(method, caller, request, context, started, notes))

    def _event(
        self,
        method: str,
        caller: Caller,
        request: Any,
        context: grpc.aio.ServicerContext,
        time_ms: int,
        notes: CallNotes | None = None,
        *,
        refusal: ServiceError | None = None,
        cancelled: bool = False,
    ) -> AuditEvent:
        principal = caller.principal
        event = AuditEvent(
            id=new_event_id(),
            time_ms=time_ms,
            node=self._node_id,
            peer=context.peer() or "",
            key_id=principal.key_id,
            key_tenant=principal.tenant,
            tenant=caller.tenant,
            method=method_name(method),
            target=target_of(request),
        )
        if notes is not None and notes.created_key_id:
            # Also on a refusal: a rotation whose second step failed did
            # create its new key.
            event = replace(event, target={**event.target, CREATED_KEY_ID: notes.created_key_id})
        if cancelled:
            return replace(event, outcome="unknown", code="CANCELLED", message="the caller went away")
        if refusal is None:
            return event
        return replace(
            event,
            outcome="refused",
            code=refusal.code.name,
            reason=str(refusal.info.reason),
            message=refusal_message(refusal.info.message),
        )


def _refusal(error: BaseException, context: grpc.aio.ServicerContext) -> ServiceError:
    """What the call answers for ``error``, as the door will map it."""
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, ReplicaError):
        return from_replica_error(error)
    if isinstance(error, grpc.aio.AbortError):
        # The handler ended the call itself: a forwarded change's relayed
        # answer (forwarding.relay_error), status and details set on the context.
        code = context.code()
        info = info_in(context.trailing_metadata() or ())
        status = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
        if info is not None:
            try:
                reason = Reason(info.reason)
            except ValueError:
                reason = Reason.INTERNAL
            return ServiceError(status, reason, info.message)
        return _other(status, context.details() or "the call ended without a reason")
    return _other(grpc.StatusCode.INTERNAL, f"{type(error).__name__} (the node's log has it)")


def _other(code: grpc.StatusCode, message: str) -> ServiceError:
    return ServiceError(code, Reason.INTERNAL, message)
