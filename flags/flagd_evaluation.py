"""flagd's evaluation protocols on grpc.aio: ``flagd.evaluation.v1.Service`` and ``flagd.evaluation.v2.Service``.

Unmodified flagd providers in RPC mode call these (the Python provider speaks
v2; older providers and other languages v1). Messages are the generated stubs
shipped in ``openfeature-provider-flagd`` (one copy of each proto symbol per
process, shared with the provider).

Every call passes ``SdkGate`` (flags/sdk_auth.py) first: not ready is
UNAVAILABLE (transient, the provider retries), a refused key is
UNAUTHENTICATED or PERMISSION_DENIED. Then it reads ``live.serving(scope)``:
the caller's environment as one immutable snapshot.

==================== ==========================================================
outcome              answer
==================== ==========================================================
a value              ``value``, ``variant``, ``reason`` (STATIC, DEFAULT,
                     TARGETING_MATCH, ...), ``metadata`` (flag over flag set)
disabled flag, or    ``reason`` DISABLED / DEFAULT and ``metadata``; ``value``
no default variant   and ``variant`` unset (v2: absent; v1: zero values), so
                     the provider returns the application's default
unknown flag, or an  NOT_FOUND (an environment that does not exist, or was
unknown environment  deleted, serves an empty set)
wrong type           INVALID_ARGUMENT (the provider's TYPE_MISMATCH)
invalid targeting    DATA_LOSS (PARSE_ERROR)
targeting failed     FAILED_PRECONDITION (GENERAL): never UNKNOWN, which the
                     provider retries as if the server were flaky
==================== ==========================================================

``ResolveAll`` (v1 only) answers every enabled flag of the environment with
its own type (integers as ``double_value``, as flagd does), leaving out flags
whose evaluation fails; flag-set metadata on the response.

``EventStream``: ``provider_ready`` first (the provider waits for it), then a
``configuration_change`` with ``data.flags.<key>.type`` (write|update|delete)
for every change of the caller's environment, and ``keep_alive`` every
``keep_alive_s`` seconds of silence. RPC providers cache STATIC answers until
a ``configuration_change`` names the flag, so the watcher is registered
*before* ``provider_ready`` is sent: nothing that happens after the client
could first evaluate is missed.

Encoded once (flags/flagd_wire.py): answers and events go out as bytes
encoded once and shared. A ``configuration_change`` is encoded once per set of
changes for every stream that has the same; a Resolve* answer that cannot
depend on the request's context (reason STATIC or DISABLED: no targeting, or a
disabled flag) is kept per environment version (``Serving``) and flag, so the
next call for that flag skips evaluation and encoding. Answers that depend on
the context are evaluated every time and never kept.

Invariants: a stream holds exactly one watcher and releases it when the stream
ends for any reason (client gone, server stopping, key revoked); it starts no
task of its own (one keep-alive timer, re-armed as it fires, cancelled at the end). A key revoked while a stream is open ends the stream
(UNAUTHENTICATED) at once: the revoke wakes the streams of its environment,
which re-check their key. A kept answer belongs to one ``Serving`` object and
is dropped with it, so a change is never answered from before; kept answers
are bounded by (scopes kept) x (flags of the set) x (10 response types).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from openfeature.exception import ErrorCode, OpenFeatureError
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2 as v1_pb2
from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2_grpc as v1_grpc
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2 as v2_pb2
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc

from flags.evaluator import FlagdEvaluator
from flags.exposure_api import ExposureRecorder
from flags.flagd_values import context_from_struct, struct_from_mapping
from flags.flagd_wire import BoundedMemo, add_servicer
from flags.live import EnvUpdate, LiveFlags, Scope, Serving, Watcher
from flags.model import FlagState, VariantType
from flags.sdk_auth import SdkGate

__all__ = ["KEEP_ALIVE_S", "register_evaluation", "status_of"]

KEEP_ALIVE_S = 20.0
"""flagd's own keep-alive period on EventStream."""

PROVIDER_READY = "provider_ready"
CONFIGURATION_CHANGE = "configuration_change"
KEEP_ALIVE = "keep_alive"

CONTEXT_FREE_REASONS = frozenset({"STATIC", "DISABLED"})
"""Reasons whose answer is the same for every request context (the evaluator's contract)."""
MAX_SCOPES_WITH_ANSWERS = 1024
MAX_CHANGE_MESSAGES = 256
"""Encoded configuration_change messages kept: every stream of a change asks within moments."""
RESOLVE_METHODS = ("ResolveBoolean", "ResolveString", "ResolveFloat", "ResolveInt", "ResolveObject")

_STATUS_OF_ERROR: Mapping[ErrorCode, grpc.StatusCode] = {
    ErrorCode.FLAG_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.TYPE_MISMATCH: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.PARSE_ERROR: grpc.StatusCode.DATA_LOSS,
}


def status_of(error: OpenFeatureError) -> grpc.StatusCode:
    """The status the flagd provider maps back to ``error``'s code (GENERAL and the rest: not retried)."""
    return _STATUS_OF_ERROR.get(error.error_code, grpc.StatusCode.FAILED_PRECONDITION)


# --- one flag -----------------------------------------------------------------------

M = TypeVar("M", bound=Message)

Resolve = Callable[[FlagdEvaluator, str, Any, Any], FlagResolutionDetails[Any]]

# Per RPC: how the evaluator resolves it, the caller default it passes (never
# sent: a result without a variant leaves the value unset), and the Python type
# the response's ``value`` takes.
_BOOLEAN: tuple[Resolve, Any] = (FlagdEvaluator.resolve_boolean_value, False)
_STRING: tuple[Resolve, Any] = (FlagdEvaluator.resolve_string_value, "")
_INTEGER: tuple[Resolve, Any] = (FlagdEvaluator.resolve_integer_value, 0)
_FLOAT: tuple[Resolve, Any] = (FlagdEvaluator.resolve_float_value, 0.0)
_OBJECT: tuple[Resolve, Any] = (FlagdEvaluator.resolve_object_value, {})


class _ResolveRequest(Protocol):
    flag_key: str

    def HasField(self, field_name: str) -> bool: ...

    @property
    def context(self) -> Struct: ...


class _Abort(Exception):
    """An evaluation outcome that is a gRPC status, not a response."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def resolve_details(
    serving: Serving | None, scope: Scope, flag_key: str, how: tuple[Resolve, Any], context: Struct | None
) -> FlagResolutionDetails[Any]:
    """One flag's evaluation, or ``_Abort`` with the status flagd answers."""
    if serving is None:
        raise _Abort(
            grpc.StatusCode.NOT_FOUND,
            f"flag {flag_key!r} not found: environment {scope.env!r} has no flags "
            "(it does not exist or was deleted)",
        )
    resolve, default = how
    try:
        return resolve(serving.evaluator, flag_key, default, context_from_struct(context))
    except OpenFeatureError as error:
        message = error.error_message or str(error)
        if error.error_code is ErrorCode.FLAG_NOT_FOUND:
            message = f"flag {flag_key!r} not found in environment {scope.env!r}"
        raise _Abort(status_of(error), message) from None


def fill_response(response: Any, details: FlagResolutionDetails[Any], is_object: bool) -> None:
    """``details`` into a Resolve*Response (v1 or v2: the same field names)."""
    response.reason = str(details.reason)
    if details.variant is not None:
        value = details.value
        if is_object:
            if not isinstance(value, Mapping):
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"variant {details.variant!r} is a {type(value).__name__}, not an object",
                )
            response.value.SetInParent()  # an empty object is still a value
            struct_from_mapping(value, response.value)
        else:
            response.value = value
        response.variant = details.variant
    if details.flag_metadata:
        struct_from_mapping(details.flag_metadata, response.metadata)


# --- the services ----------------------------------------------------------------------


# Answers kept for one environment version: (response type, flag key) ->
# (encoded answer, its variant, its reason): the last two for exposures.
_Answers = dict[tuple[type[Message], str], tuple[bytes, str | None, str]]


class _EvaluationCore:
    """What v1 and v2 share (the messages differ only in which fields are optional)."""

    def __init__(
        self, live: LiveFlags, gate: SdkGate, keep_alive_s: float, exposures: ExposureRecorder | None = None
    ) -> None:
        self.live = live
        self.gate = gate
        self.keep_alive_s = keep_alive_s
        self.exposures = exposures
        self._answers: BoundedMemo[Scope, tuple[Serving, _Answers]] = BoundedMemo(MAX_SCOPES_WITH_ANSWERS)
        self._changes: BoundedMemo[tuple[Callable[..., Message], tuple[tuple[str, Any], ...]], bytes] = (
            BoundedMemo(MAX_CHANGE_MESSAGES)
        )
        self._fixed_events: dict[tuple[Callable[..., Message], str], bytes] = {}
        self.open_streams = 0
        """EventStreams (v1 and v2) admitted and not yet ended (the streams gauge)."""

    def _answers_of(self, scope: Scope, serving: Serving) -> _Answers:
        kept = self._answers.get(scope)
        if kept is None or kept[0] is not serving:  # a new version: the old answers go with the old Serving
            kept = self._answers.put(scope, (serving, {}))
        return kept[1]

    async def resolve(
        self,
        request: _ResolveRequest,
        context: grpc.aio.ServicerContext,
        how: tuple[Resolve, Any],
        response_type: type[Message],
        is_object: bool = False,
    ) -> bytes:
        """The encoded answer (the method is registered without a response serializer)."""
        scope, _credentials = await self.gate.admit(context)
        serving = self.live.serving(scope)
        flag_key = request.flag_key
        answers = None
        if serving is not None:
            answers = self._answers_of(scope, serving)
            kept = answers.get((response_type, flag_key))
            if kept is not None:
                self._exposed(scope, request, flag_key, kept[1], kept[2])
                return kept[0]
        response = response_type()
        try:
            struct = request.context if request.HasField("context") else None
            details = resolve_details(serving, scope, flag_key, how, struct)
            fill_response(response, details, is_object)
        except _Abort as outcome:
            await _abort(context, outcome)
        encoded = response.SerializeToString()
        reason = str(details.reason)
        if answers is not None and reason in CONTEXT_FREE_REASONS:
            answers[(response_type, flag_key)] = (encoded, details.variant, reason)
        self._exposed(scope, request, flag_key, details.variant, reason)
        return encoded

    def _exposed(
        self, scope: Scope, request: _ResolveRequest, flag_key: str, variant: str | None, reason: str
    ) -> None:
        """An answer with a variant, to a context with a targeting key, is an
        exposure (flags/exposures.py: off the request path, never blocking)."""
        exposures = self.exposures
        if exposures is None or variant is None or not request.HasField("context"):
            return
        field = request.context.fields.get("targetingKey")
        if field is None or field.WhichOneof("kind") != "string_value" or not field.string_value:
            return
        version = self.live.store.flag_version(scope.tenant, scope.env, flag_key)
        exposures.record(scope, flag_key, variant, reason, field.string_value, version, "rpc")

    def fixed_event(self, event: Callable[..., Message], event_type: str) -> bytes:
        """``provider_ready`` or ``keep_alive``, encoded once."""
        key = (event, event_type)
        encoded = self._fixed_events.get(key)
        if encoded is None:
            encoded = self._fixed_events[key] = event(type=event_type).SerializeToString()
        return encoded

    def change_message(self, event: Callable[..., Message], update: EnvUpdate) -> bytes:
        """``change_event`` encoded, once for every stream woken with the same changes."""
        key = (event, tuple(update.changes.items()))
        encoded = self._changes.get(key)
        if encoded is None:
            encoded = self._changes.put(key, change_event(event, update).SerializeToString())
        return encoded


def change_event(event: Callable[..., M], update: EnvUpdate) -> M:
    """A ``configuration_change`` naming every changed flag of ``update``."""
    data = Struct()
    flags = data.get_or_create_struct("flags")
    for key, change_type in update.changes.items():
        flags.get_or_create_struct(key)["type"] = str(change_type)
    return event(type=CONFIGURATION_CHANGE, data=data)


class _KeepAlive:
    """Wakes a stream's watcher once ``period`` seconds passed without a message:
    one timer per stream, re-armed when it fires, so a change costs a clock read
    rather than a timer set and cancelled."""

    __slots__ = ("_due", "_handle", "_last_sent", "_loop", "_period", "_watcher")

    def __init__(self, watcher: Watcher, period: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._period = period
        self._watcher = watcher
        self._due = False
        self._last_sent = self._loop.time()
        self._handle = self._loop.call_at(self._last_sent + period, self._fire)

    def sent(self) -> None:
        self._last_sent = self._loop.time()

    def _fire(self) -> None:
        deadline = self._last_sent + self._period
        if self._loop.time() < deadline:  # a message went out meanwhile: not silent yet
            self._handle = self._loop.call_at(deadline, self._fire)
            return
        self._due = True
        self._watcher.wake()

    def due(self) -> bool:
        """Whether a keep-alive is due now (after the watcher woke); re-arms the timer."""
        if not self._due:
            return False
        self._due = False
        now = self._loop.time()
        silent = now - self._last_sent >= self._period
        self._handle = self._loop.call_at((now if silent else self._last_sent) + self._period, self._fire)
        return silent

    def cancel(self) -> None:
        self._handle.cancel()


async def event_stream(
    core: _EvaluationCore, event: Callable[..., Message], request: Any, context: grpc.aio.ServicerContext
) -> AsyncGenerator[bytes, None]:
    """EventStream (v1 or v2: ``event`` is the response type), see the module docstring."""
    gate = core.gate
    scope, found = await gate.admit(context)
    with core.live.watch(scope) as watcher:
        keep_alive = _KeepAlive(watcher, core.keep_alive_s)
        core.open_streams += 1
        try:
            yield core.fixed_event(event, PROVIDER_READY)
            keep_alive.sent()
            while True:
                update = await watcher.next()  # a change, a revoke, or the keep-alive timer
                if not gate.still_grants(found, scope):
                    await gate.recheck(context, found, scope)
                if update.changes:
                    yield core.change_message(event, update)
                    keep_alive.sent()
                if keep_alive.due():
                    yield core.fixed_event(event, KEEP_ALIVE)
                    keep_alive.sent()
        finally:
            core.open_streams -= 1
            keep_alive.cancel()


async def _abort(context: grpc.aio.ServicerContext, outcome: _Abort) -> NoReturn:
    await context.abort(outcome.code, outcome.message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


class EvaluationV2:
    """``flagd.evaluation.v2.Service``: optional value and variant (unset: the caller's default)."""

    def __init__(self, core: _EvaluationCore) -> None:
        self.core = core
        # grpc.aio streams from an async generator function (a partial of one counts): no
        # forwarding generator between gRPC and the stream, one frame less per message.
        self.EventStream = functools.partial(event_stream, core, v2_pb2.EventStreamResponse)

    async def ResolveBoolean(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return await self.core.resolve(request, context, _BOOLEAN, v2_pb2.ResolveBooleanResponse)

    async def ResolveString(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return await self.core.resolve(request, context, _STRING, v2_pb2.ResolveStringResponse)

    async def ResolveFloat(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return await self.core.resolve(request, context, _FLOAT, v2_pb2.ResolveFloatResponse)

    async def ResolveInt(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return await self.core.resolve(request, context, _INTEGER, v2_pb2.ResolveIntResponse)

    async def ResolveObject(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return await self.core.resolve(request, context, _OBJECT, v2_pb2.ResolveObjectResponse, True)


class EvaluationV1:
    """``flagd.evaluation.v1.Service``: the same answers with zero values for "unset", plus ResolveAll."""

    def __init__(self, core: _EvaluationCore) -> None:
        self.core = core
        self.EventStream = functools.partial(event_stream, core, v1_pb2.EventStreamResponse)  # as in v2

    async def ResolveBoolean(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return await self.core.resolve(request, context, _BOOLEAN, v1_pb2.ResolveBooleanResponse)

    async def ResolveString(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return await self.core.resolve(request, context, _STRING, v1_pb2.ResolveStringResponse)

    async def ResolveFloat(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return await self.core.resolve(request, context, _FLOAT, v1_pb2.ResolveFloatResponse)

    async def ResolveInt(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return await self.core.resolve(request, context, _INTEGER, v1_pb2.ResolveIntResponse)

    async def ResolveObject(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return await self.core.resolve(request, context, _OBJECT, v1_pb2.ResolveObjectResponse, True)

    async def ResolveAll(self, request: Any, context: grpc.aio.ServicerContext) -> v1_pb2.ResolveAllResponse:
        core = self.core
        scope, _credentials = await core.gate.admit(context)
        response = v1_pb2.ResolveAllResponse()
        serving = core.live.serving(scope)
        flag_set = core.live.store.flag_set(scope.tenant, scope.env)
        if serving is None or flag_set is None:
            return response
        struct = request.context if request.HasField("context") else None
        for key, flag in flag_set.flags.items():
            if flag.state is FlagState.DISABLED:
                continue  # as flagd: ResolveAll leaves disabled flags out
            how = _RESOLVE_ALL[flag.variant_type]
            try:
                details = resolve_details(serving, scope, key, how, struct)
            except _Abort:
                continue  # one broken flag does not hide the others
            fill_any_flag(response.flags[key], details)
        metadata = serving.evaluator.get_flag_set_metadata()
        if metadata:
            struct_from_mapping(metadata, response.metadata)
        return response


_RESOLVE_ALL: Mapping[VariantType, tuple[Resolve, Any]] = {
    VariantType.BOOLEAN: _BOOLEAN,
    VariantType.STRING: _STRING,
    VariantType.INTEGER: _FLOAT,  # AnyFlag has no integer: flagd sends every number as a double
    VariantType.FLOAT: _FLOAT,
    VariantType.OBJECT: _OBJECT,
}


def fill_any_flag(flag: Any, details: FlagResolutionDetails[Any]) -> None:
    flag.reason = str(details.reason)
    if details.variant is not None:
        flag.variant = details.variant
        value = details.value
        if isinstance(value, bool):
            flag.bool_value = value
        elif isinstance(value, str):
            flag.string_value = value
        elif isinstance(value, (int, float)):
            flag.double_value = float(value)
        elif isinstance(value, Mapping):
            flag.object_value.SetInParent()
            struct_from_mapping(value, flag.object_value)
    if details.flag_metadata:
        struct_from_mapping(details.flag_metadata, flag.metadata)


def register_evaluation(
    server: grpc.aio.Server,
    live: LiveFlags,
    *,
    is_ready: Callable[[], bool],
    keep_alive_s: float = KEEP_ALIVE_S,
    exposures: ExposureRecorder | None = None,
) -> Callable[[], int]:
    """Add ``flagd.evaluation.v1.Service`` and ``flagd.evaluation.v2.Service``
    to ``server``; every answer with a variant to a context with a targeting
    key is recorded on ``exposures`` (source ``rpc``). Returns how many
    EventStreams are open now (for the streams gauge, flags/telemetry.py)."""
    core = _EvaluationCore(live, SdkGate(live, is_ready), keep_alive_s, exposures)
    raw = (*RESOLVE_METHODS, "EventStream")  # encoded by the handlers (module docstring)
    add_servicer(server, v1_grpc.add_ServiceServicer_to_server, EvaluationV1(core), raw=raw)
    add_servicer(server, v2_grpc.add_ServiceServicer_to_server, EvaluationV2(core), raw=raw)
    return lambda: core.open_streams
