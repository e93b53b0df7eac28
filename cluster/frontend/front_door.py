"""The front door: the one seam every public ``raftlog.v1`` call passes.

For each call to a service in ``PUBLIC_SERVICES`` the door, in this order:

1. authenticates (API key -> principal) and resolves the tenant
   (``auth.Authenticator.caller``: an unknown, revoked or expired key is
   ``UNAUTHENTICATED``), then checks the method once against
   ``key_scope.METHOD_ACCESS`` (``key_scope.check_method``): a tenant key
   on a method in ``OPERATOR_METHODS`` (the table's operator rows) is
   ``PERMISSION_DENIED OPERATOR_KEY_REQUIRED``, a client key on a method
   its role may not call ``PERMISSION_DENIED KEY_SCOPE`` (the handlers
   check the names it uses);
2. makes the caller the handler's ``current_caller()`` (a ``ContextVar``:
   grpc.aio runs every call in its own task, so it never leaks to another);
3. refuses a request whose bytes did not decode (``INVALID_ARGUMENT
   MALFORMED_REQUEST``) before the handler sees it: gRPC decodes with the
   method handler's ``request_deserializer`` before any behaviour runs,
   and a deserializer that raises ends the call ``UNKNOWN``; the door's
   deserializer returns a marker instead, which the door turns into the
   refusal (after authentication, so a caller without a key learns
   nothing about the method);
4. runs the ``stages`` around the handler, in order: on a node the quota
   stage (cluster/quotas/: charges the call, or refuses it over the
   tenant's rate) and then the audit stage (cluster/audit/stage.py: one
   event per admin change, so a call the quota refuses is not recorded).
   Without stages (a test) the door pays nothing for the seam;
5. maps whatever the handler raised to a status with a reason, once for
   every service: ``ServiceError`` as it is, ``ReplicaError`` and
   ``OffsetOutOfRange`` and ``PageError`` through ``grpc_errors``, anything
   else to ``INTERNAL`` with an error id, logged once here with its
   traceback and never sent to the client;
6. with ``calls`` (a node with a ``metrics_port``,
   cluster/telemetry/node_metrics.py), records the call's final status code
   and seconds, outside everything above: what the client receives, the
   door's own refusals (``UNAUTHENTICATED``, ``PERMISSION_DENIED``,
   ``MALFORMED_REQUEST``) and the handler's ``context.abort`` included; a
   call cancelled by its client or deadline as ``CANCELLED`` /
   ``DEADLINE_EXCEEDED``; a stream when it ends. Calls that never reach the
   door's handler (an unknown method: gRPC answers ``UNIMPLEMENTED``) are
   not counted.

Why an interceptor rather than a step each handler calls: it wraps every
method of every public service, including ones added later and server
streams, without the handler doing anything, so "forgot to authenticate" is
not a bug one handler can have; and the service name decides, so the
internal surfaces cannot be put behind it by accident.

Invariants:

- Only ``PUBLIC_SERVICES`` pass the door. ``INTERNAL_SERVICES`` (Raft
  transport, cluster join, NodeAdmin) admit only other nodes by their own
  rules, and health and reflection stay unauthenticated: the door returns
  their handlers untouched.
- A handler runs only after its caller is authenticated and its key's role
  may call the method, and reads it with ``current_caller()``; a
  long-lived call (a stream) checks it again with ``confirm_caller()``, so
  a revoked or expired key ends it (``confirming()`` is true meanwhile:
  the authenticator then refuses a key it no longer knows at once,
  instead of waiting for this node to catch up).
- A handler never receives a request that did not decode, unary or a
  message of a request stream: it gets a ``MALFORMED_REQUEST`` refusal
  instead, and nothing of the call's work is done.
- A call the handler ended itself (``context.abort``, e.g. a relayed
  forwarded error) keeps its status: the door lets ``grpc.aio.AbortError``
  through.
- Cheap on the hot path: the wrapped handler of each method is built once
  and cached; per call the door adds the authentication it replaces, one
  small admission object and a ``ContextVar`` set/reset. Without ``calls``
  it does no metric work at all (not even reading a clock): whether to
  count is decided once per method, when its handler is built.
- The door must be the server's only interceptor, or its last: it caches
  handlers by method name and relies on the handler it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

from cluster.controller import Principal
from cluster.frontend.grpc_errors import (
    ServiceError,
    abort,
    from_offset_error,
    from_page_error,
    from_replica_error,
    malformed_request,
)
from cluster.frontend.key_scope import OPERATOR_METHODS, check_method, operator_required
from cluster.primitives.pagination import PageError
from partitions.replica_errors import ReplicaError
from partitions.state_machine import OffsetOutOfRange
from raftlog.internal.v1 import join_pb2, node_admin_pb2, transport_pb2
from raftlog.v1 import admin_pb2, groups_pb2, log_pb2, metadata_pb2
from raftlog.v1.reasons import Reason

__all__ = [
    "INTERNAL_SERVICES",
    "OPERATOR_METHODS",
    "PUBLIC_SERVICES",
    "CallRecord",
    "CallRecorders",
    "Caller",
    "FrontDoor",
    "Identify",
    "Stage",
    "acting_as",
    "caller_tenant",
    "confirm_caller",
    "confirming",
    "current_caller",
    "operator_required",
]

log = logging.getLogger(__name__)

PUBLIC_SERVICES: frozenset[str] = frozenset(
    {
        log_pb2.DESCRIPTOR.services_by_name["LogService"].full_name,
        metadata_pb2.DESCRIPTOR.services_by_name["MetadataService"].full_name,
        admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
        groups_pb2.DESCRIPTOR.services_by_name["GroupService"].full_name,
    }
)
"""The client API: every method of these passes the door."""

INTERNAL_SERVICES: frozenset[str] = frozenset(
    {
        transport_pb2.DESCRIPTOR.services_by_name["RaftTransportService"].full_name,
        join_pb2.DESCRIPTOR.services_by_name["ClusterJoin"].full_name,
        node_admin_pb2.DESCRIPTOR.services_by_name["NodeAdmin"].full_name,
    }
)
"""Node-to-node surfaces on the same port: never through the public door."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a call comes from (``auth.Authenticator.caller`` finds out)."""

    principal: Principal
    tenant: str
    """The tenant the request acts in."""

    @property
    def is_operator(self) -> bool:
        return self.principal.is_operator


Identify = Callable[[grpc.aio.ServicerContext], Awaitable[Caller]]
"""Who is calling, from the call's headers, or a ``ServiceError``
(``Authenticator.caller`` on a node)."""

Stage = Callable[[str, Caller, Any, grpc.aio.ServicerContext], AbstractAsyncContextManager[object]]
"""Runs around an admitted call: ``stage(method, caller, request, context)``
is entered before the handler and exited after it (with the handler's
exception, as raised, before the door maps it). ``request`` is the decoded
request message of a unary-request method, None for a request stream (the
stage must not consume it). A stage refuses a call by raising a
``ServiceError`` on entry (a quota: ``RESOURCE_EXHAUSTED``)."""

AddressOf = Callable[[int], str]

Refused = Callable[[str, Caller, grpc.aio.ServicerContext, ServiceError], None]
"""Told of a call the door refused after authenticating its caller (the key
may not call the method), before the refusal is sent: the audit records
such attempts (cluster/audit/stage.py). Never told of a call without a
valid key. Not awaited: a loop of refused calls must answer as fast as it
is refused, so the hook only takes note (the audit coalesces and queues)."""


CallRecord = Callable[[grpc.StatusCode, float], None]
"""Records one call of a method: its final status code and its seconds."""
CallRecorders = Callable[[str], CallRecord]
"""``calls(method_path)``: the recorder of one method, asked once per method
(``NodeMetrics.call_recorder``: its labels resolved then)."""

_clock = time.perf_counter
"""The clock calls are timed with (read only when calls are counted)."""


class _Malformed:
    """What the door's deserializer returns for bytes that did not decode."""

    __slots__ = ()


_MALFORMED = _Malformed()


def _tolerant(decode: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``decode``, returning ``_MALFORMED`` where it would raise: gRPC
    answers a raising deserializer with ``UNKNOWN`` and no reason."""
    if decode is None:
        return None

    def decode_or_mark(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception:  # DecodeError, and anything else a parser may raise on bad bytes
            return _MALFORMED

    return decode_or_mark


async def _screened(requests: AsyncIterator[Any], method: str) -> AsyncIterator[Any]:
    """A request stream that ends the call at its first malformed message."""
    async for request in requests:
        if request is _MALFORMED:
            raise malformed_request(method)
        yield request


class _Admission:
    """What the door knows about the call in progress."""

    __slots__ = ("caller", "identify")

    def __init__(self, caller: Caller, identify: Identify) -> None:
        self.caller = caller
        self.identify = identify


_ADMISSION: ContextVar[_Admission] = ContextVar("raftlog_front_door_admission")
_CONFIRMING: ContextVar[bool] = ContextVar("raftlog_front_door_confirming", default=False)


def current_caller() -> Caller:
    """The caller of the call being handled, as the door authenticated it."""
    admission = _ADMISSION.get(None)
    if admission is None:
        raise RuntimeError("no caller: this code is not running inside a call admitted by the front door")
    return admission.caller


async def confirm_caller(context: grpc.aio.ServicerContext) -> Caller:
    """Authenticate the current call again (its key may have been revoked,
    its tenant deleted, since the door admitted it): for calls that last."""
    admission = _ADMISSION.get(None)
    if admission is None:
        raise RuntimeError("no caller: this code is not running inside a call admitted by the front door")
    token = _CONFIRMING.set(True)
    try:
        caller = await admission.identify(context)
    finally:
        _CONFIRMING.reset(token)
    admission.caller = caller
    return caller


def confirming() -> bool:
    """Whether the ``Identify`` running now checks a call already admitted
    again (``confirm_caller``) rather than admitting a new one."""
    return _CONFIRMING.get()


async def caller_tenant(context: grpc.aio.ServicerContext) -> str:
    """The current caller's tenant (``GroupService``'s default ``tenant_of``)."""
    return current_caller().tenant


@contextlib.contextmanager
def acting_as(caller: Caller, identify: Identify | None = None) -> Iterator[None]:
    """Run a handler as ``caller`` without a gRPC call through the door (a
    test, a tool calling a servicer method directly)."""

    async def same(_context: grpc.aio.ServicerContext) -> Caller:
        return caller

    token = _ADMISSION.set(_Admission(caller, identify or same))
    try:
        yield
    finally:
        _ADMISSION.reset(token)


class FrontDoor(grpc.aio.ServerInterceptor):
    """The interceptor; see the module docstring."""

    def __init__(
        self,
        identify: Identify,
        address_of: AddressOf,
        stages: Sequence[Stage] = (),
        refused: Refused | None = None,
        calls: CallRecorders | None = None,
    ) -> None:
        """``address_of(node_id)``: the address named in a ``NOT_LEADER``
        answer; ``stages``: see ``Stage``; ``refused``: see ``Refused``;
        ``calls``: see ``CallRecorders`` (None: calls are not counted)."""
        self._refused = refused
        self._calls = calls
        self._identify = identify
        self._address_of = address_of
        self._stages = tuple(stages)
        # method path -> (the handler gRPC found, what the door serves instead)
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        served = self._wrap(method, handler) if is_public(method) else handler
        self._handlers[method] = (handler, served)
        return served

    # --- one call ------------------------------------------------------------------

    async def _admit(self, method: str, context: grpc.aio.ServicerContext) -> _Admission:
        caller = await self._identify(context)
        try:
            check_method(method, caller.principal)  # operator methods, and a client key's data path
        except ServiceError as refusal:
            if self._refused is not None:
                self._refused(method, caller, context, refusal)
            raise
        return _Admission(caller, self._identify)

    def _service_error(self, method: str, error: Exception) -> ServiceError:
        if isinstance(error, ServiceError):
            return error
        if isinstance(error, ReplicaError):
            leader = getattr(error, "leader", 0)
            return from_replica_error(error, self._address_of(leader) if leader else "")
        if isinstance(error, OffsetOutOfRange):
            return from_offset_error(error)
        if isinstance(error, PageError):
            return from_page_error(error)
        error_id = uuid.uuid4().hex[:12]
        log.error("%s failed unexpectedly (error id %s)", method, error_id, exc_info=error)
        return ServiceError(
            grpc.StatusCode.INTERNAL,
            Reason.INTERNAL,
            f"the node failed to answer {method} (error id {error_id}, in its log); "
            "retry, and report the id if it persists",
        )

    def _unary(
        self,
        method: str,
        behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
        request_stream: bool,
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        """``behaviour`` (a unary answer, or a stream written with
        ``context.write``) behind the door."""
        stages = self._stages

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = None
            try:
                admission = await self._admit(method, context)
                token = _ADMISSION.set(admission)
                request = self._decoded(method, request, request_stream)
                if not stages:
                    return await behaviour(request, context)
                seen = None if request_stream else request
                async with AsyncExitStack() as around:
                    for stage in stages:
                        await around.enter_async_context(stage(method, admission.caller, seen, context))
                    return await behaviour(request, context)
            except grpc.aio.AbortError:
                raise  # the handler ended the call itself, with its status
            except Exception as error:
                await abort(context, self._service_error(method, error))
            finally:
                if token is not None:
                    _ADMISSION.reset(token)

        return admitted

    def _generator(
        self,
        method: str,
        behaviour: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]],
        request_stream: bool,
    ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        """A stream handler written as an async generator, behind the door."""
        stages = self._stages

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            token = None
            try:
                admission = await self._admit(method, context)
                token = _ADMISSION.set(admission)
                request = self._decoded(method, request, request_stream)
                seen = None if request_stream else request
                async with AsyncExitStack() as around:
                    for stage in stages:
                        await around.enter_async_context(stage(method, admission.caller, seen, context))
                    async for response in behaviour(request, context):
                        yield response
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await abort(context, self._service_error(method, error))
            finally:
                if token is not None:
                    _ADMISSION.reset(token)

        return admitted

    @staticmethod
    def _decoded(method: str, request: Any, request_stream: bool) -> Any:
        """The request as the handler may see it (a stream: screened as it
        is read), or the ``MALFORMED_REQUEST`` refusal."""
        if request_stream:
            return _screened(request, method)
        if request is _MALFORMED:
            raise malformed_request(method)
        return request

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        decode, encode = _tolerant(handler.request_deserializer), handler.response_serializer
        record = self._calls(method) if self._calls is not None else None
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _counted(self._unary(method, handler.unary_unary, False), record), decode, encode
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _counted(self._unary(method, handler.stream_unary, True), record), decode, encode
            )
        streaming = handler.unary_stream or handler.stream_stream
        assert streaming is not None, f"{method}: a method handler with no behaviour"
        request_stream = handler.stream_stream is not None
        wrapped = (
            _counted_stream(self._generator(method, streaming, request_stream), record)
            if inspect.isasyncgenfunction(streaming)
            else _counted(self._unary(method, streaming, request_stream), record)
        )
        make = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream is not None
            else grpc.stream_stream_rpc_method_handler
        )
        return make(wrapped, decode, encode)


def is_public(method: str) -> bool:
    """Whether the gRPC path ``/package.Service/Method`` is a public call."""
    return method[1 : method.rfind("/")] in PUBLIC_SERVICES


# --- counting calls (step 6) -------------------------------------------------------------


_DEADLINE_SLACK_S = 0.05
"""A call cancelled this close to its deadline ended by the deadline: the
server's copy of it (the client's timeout, counted from when the headers
arrived) ends a moment after the client's, whose cancel may arrive first."""


def _final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status the client receives: the one the call ended with (the
    door's ``abort`` sets it), else what ended the call without one."""
    code = context.code()
    if code is not None:
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= _DEADLINE_SLACK_S:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _counted(
    behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], record: CallRecord | None
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """``behaviour`` with its status and seconds recorded; itself when
    calls are not counted (nothing added per call)."""
    if record is None:
        return behaviour

    async def counted(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = _clock()
        try:
            answer = await behaviour(request, context)
        except BaseException as error:
            record(_final_code(context, error), _clock() - start)
            raise
        record(_final_code(context, None), _clock() - start)
        return answer

    return counted


def _counted_stream(
    behaviour: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]], record: CallRecord | None
) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    """``_counted`` for a stream written as an async generator: recorded
    when the stream ends, however it ends."""
    if record is None:
        return behaviour

    async def counted(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        start = _clock()
        responses = behaviour(request, context)
        try:
            async for response in responses:
                yield response
        except BaseException as error:
            record(_final_code(context, error), _clock() - start)
            raise
        finally:
            # Closed here, in the call's own context (the door's generator
            # resets its ContextVar in its finally), not by the collector.
            await responses.aclose()  # type: ignore[attr-defined]
        record(_final_code(context, None), _clock() - start)

    return counted
