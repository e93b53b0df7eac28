"""flags/flagd_wire.py: pass-through registration keeps the generated paths and
deserializers, and memos stay within their bound."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2_grpc

from flags.flagd_wire import BoundedMemo, add_servicer


class Servicer:
    """The three methods the generated registration reads (never called here)."""

    def SyncFlags(self, request: Any, context: Any) -> Any: ...

    def FetchAllFlags(self, request: Any, context: Any) -> Any: ...

    def GetMetadata(self, request: Any, context: Any) -> Any: ...


class Recorder:
    """The two registration calls of a grpc.aio server, recorded."""

    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.registered: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.registered[service] = handlers


def test_only_the_raw_methods_lose_their_response_serializer() -> None:
    generated, ours = Recorder(), Recorder()
    servicer = Servicer()
    sync_pb2_grpc.add_FlagSyncServiceServicer_to_server(servicer, generated)  # type: ignore[arg-type]
    add_servicer(ours, sync_pb2_grpc.add_FlagSyncServiceServicer_to_server, servicer, raw=("SyncFlags",))
    (service,) = generated.registered
    assert list(ours.registered) == [service] == ["flagd.sync.v1.FlagSyncService"]
    expected, got = generated.registered[service], ours.registered[service]
    assert got.keys() == expected.keys()
    for name, handler in got.items():
        assert handler.request_deserializer == expected[name].request_deserializer
        assert handler.response_streaming == expected[name].response_streaming
        if name == "SyncFlags":
            assert handler.response_serializer is None
        else:
            assert handler.response_serializer == expected[name].response_serializer
    (generic,) = ours.generic
    details = type("Details", (), {"method": f"/{service}/SyncFlags", "invocation_metadata": ()})()
    assert generic.service(details).response_serializer is None


def test_a_raw_method_the_service_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="SyncFlag"):
        add_servicer(
            Recorder(),
            sync_pb2_grpc.add_FlagSyncServiceServicer_to_server,
            Servicer(),
            raw=("SyncFlag",),
        )


def test_bounded_memo_drops_the_oldest() -> None:
    memo: BoundedMemo[int, str] = BoundedMemo(3)
    for n in range(10):
        assert memo.put(n, str(n)) == str(n)
        assert len(memo) <= 3
    assert [memo.get(n) for n in range(6, 10)] == [None, "7", "8", "9"]
    memo.put(8, "again")  # replacing an entry drops nothing
    assert [memo.get(n) for n in (7, 8, 9)] == ["7", "again", "9"]
