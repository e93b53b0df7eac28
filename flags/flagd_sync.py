"""flagd's sync protocol on grpc.aio: ``flagd.sync.v1.FlagSyncService``.

In-process flagd providers stream ``SyncFlags`` and evaluate locally; each
message is a complete flags.json document (``Serving.configuration``, never a
delta), so a provider that missed messages is whole again after the next one.

============== =================================================================
RPC            answer
============== =================================================================
SyncFlags      the environment's document on connect (that makes the provider
               ready), then one per change of the environment; changes that
               arrive while a message is being sent coalesce into the next one,
               and a document equal to the last one sent is not sent again. An
               environment that does not exist (or was deleted) is the empty
               set ``{"flags":{}}``: the stream stays open and serves the
               environment once it exists.
FetchAllFlags  the document now (same scoping).
GetMetadata    UNIMPLEMENTED: the provider calls it without any header before
               every SyncFlags and treats UNIMPLEMENTED (only) as "no metadata".
============== =================================================================

Authentication and readiness are ``SdkGate``'s (flags/sdk_auth.py); these two
RPCs also accept the key in the deprecated body field ``selector`` (when the
``flagd-selector`` header is empty), since older providers send only that.

A version's document is encoded once (``SyncFlagsResponse`` bytes, kept with
its ``Serving``) and the same bytes go to every stream (flags/flagd_wire.py):
SyncFlags is registered without a response serializer.

Invariants: the watcher is registered before the first document is read, so
every change after it reaches the stream; a stream holds exactly one watcher
and releases it when it ends for any reason (client gone, deadline, server
stopping, key revoked: a revoke wakes the streams of its environment, which
re-check their key at once). Encoded documents are kept for at most
``MAX_KEPT_DOCUMENTS`` environments, each for its current ``Serving`` only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2, sync_pb2_grpc

from flags.flagd_wire import BoundedMemo, add_servicer
from flags.live import LiveFlags, Scope, Serving
from flags.sdk_auth import SdkGate

__all__ = ["EMPTY_CONFIGURATION", "FlagSync", "register_sync"]

EMPTY_CONFIGURATION = '{"flags":{}}'
GET_METADATA_MESSAGE = "GetMetadata is not served: flag sets carry their metadata in flags.json"
MAX_KEPT_DOCUMENTS = 1024
_EMPTY_RESPONSE = sync_pb2.SyncFlagsResponse(flag_configuration=EMPTY_CONFIGURATION).SerializeToString()


def configuration(live: LiveFlags, scope: Scope) -> str:
    """The environment's flags.json now (the empty set when it does not exist)."""
    serving = live.serving(scope)
    return EMPTY_CONFIGURATION if serving is None else serving.configuration


class FlagSync:
    def __init__(self, live: LiveFlags, gate: SdkGate) -> None:
        self.live = live
        self.gate = gate
        self._encoded: BoundedMemo[Scope, tuple[Serving, bytes]] = BoundedMemo(MAX_KEPT_DOCUMENTS)
        self.open_streams = 0
        """SyncFlags streams admitted and not yet ended (the streams gauge)."""

    def encoded_document(self, scope: Scope) -> bytes:
        """The environment's ``SyncFlagsResponse`` now, encoded once per version."""
        serving = self.live.serving(scope)
        if serving is None:
            return _EMPTY_RESPONSE
        kept = self._encoded.get(scope)
        if kept is None or kept[0] is not serving:
            encoded = sync_pb2.SyncFlagsResponse(flag_configuration=serving.configuration).SerializeToString()
            kept = self._encoded.put(scope, (serving, encoded))
        return kept[1]

    async def SyncFlags(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        scope, found = await self.gate.admit(context, request.selector)
        with self.live.watch(scope) as watcher:
            self.open_streams += 1
            try:
                sent = self.encoded_document(scope)
                yield sent
                while True:
                    await watcher.next()
                    if not self.gate.still_grants(found, scope):
                        await self.gate.recheck(context, found, scope)
                    document = self.encoded_document(scope)
                    # Usually the very object sent to the other streams: no compare of the bytes.
                    if document is not sent and document != sent:
                        sent = document
                        yield document
            finally:
                self.open_streams -= 1

    async def FetchAllFlags(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> sync_pb2.FetchAllFlagsResponse:
        scope, _found = await self.gate.admit(context, request.selector)
        return sync_pb2.FetchAllFlagsResponse(flag_configuration=configuration(self.live, scope))

    async def GetMetadata(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> sync_pb2.GetMetadataResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, GET_METADATA_MESSAGE)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover


def register_sync(
    server: grpc.aio.Server, live: LiveFlags, *, is_ready: Callable[[], bool]
) -> Callable[[], int]:
    """Add ``flagd.sync.v1.FlagSyncService`` to ``server``; returns how many
    SyncFlags streams are open now (for the streams gauge, flags/telemetry.py)."""
    servicer = FlagSync(live, SdkGate(live, is_ready))
    add_servicer(server, sync_pb2_grpc.add_FlagSyncServiceServicer_to_server, servicer, raw=("SyncFlags",))
    return lambda: servicer.open_streams
