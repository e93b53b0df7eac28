"""``raftlog.flags.v1.FlagEventsService``: tracking events over gRPC (port 8013).

``Track`` takes the same events as HTTP ``POST /raftlog/v1/track``
(flags/tracking.py) and applies the same rules (``parse_events``), with a
server SDK key checked exactly as flagd's RPCs check it (``SdkGate``:
``authorization: Bearer rlf_…`` or the ``flagd-selector`` header; client keys
never reach the gRPC ports). ``register_events(server, live, sink)`` adds it.

Invariants:

- A batch is validated in full before anything is written: INVALID_ARGUMENT
  wrote nothing.
- An OK answer means every event of the batch is durable on the tenant's
  ``__tracking`` (``ExposureSink.track``); UNAVAILABLE (retryable) when that
  is not known in time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc

from flags.exposures import EventLogError, ExposureSink
from flags.live import LiveFlags
from flags.sdk_auth import SdkGate
from flags.tracking import InvalidBody, parse_events
from raftlog.flags.v1 import flags_pb2, flags_pb2_grpc

__all__ = ["FlagEvents", "register_events"]


class FlagEvents(flags_pb2_grpc.FlagEventsServiceServicer):
    def __init__(self, live: LiveFlags, sink: ExposureSink, is_ready: Callable[[], bool]) -> None:
        self._gate = SdkGate(live, is_ready)
        self._sink = sink

    async def Track(
        self, request: flags_pb2.TrackRequest, context: grpc.aio.ServicerContext
    ) -> flags_pb2.TrackResponse:
        scope, _ = await self._gate.admit(context)
        try:
            events = parse_events({"events": [_as_json(i, e) for i, e in enumerate(request.events)]})
        except InvalidBody as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.details)
        try:
            await self._sink.track(scope, events)
        except EventLogError as error:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"the events could not be made durable; retry: {error}"
            )
        return flags_pb2.TrackResponse(accepted=len(events))


def _as_json(index: int, event: flags_pb2.TrackEvent) -> dict[str, Any]:
    """The HTTP body's shape of one event, for the shared validation."""
    item: dict[str, Any] = {"name": event.name, "targetingKey": event.targeting_key}
    if event.HasField("value"):
        item["value"] = event.value
    if event.attributes_json:
        try:
            item["attributes"] = json.loads(event.attributes_json, parse_constant=_no_constant)
        except (ValueError, RecursionError) as error:
            raise InvalidBody(
                "INVALID_EVENT", f"events[{index}].attributes_json is not JSON: {error}"
            ) from None
    return item


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def register_events(
    server: grpc.aio.Server,
    live: LiveFlags,
    sink: ExposureSink,
    *,
    is_ready: Callable[[], bool] = lambda: True,
) -> None:
    """Add ``FlagEventsService`` to ``server``."""
    flags_pb2_grpc.add_FlagEventsServiceServicer_to_server(FlagEvents(live, sink, is_ready), server)
