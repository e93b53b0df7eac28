"""Serialize once, send many: flagd services that answer with bytes already encoded.

A change reaches every open stream of its environment: 1,000 EventStream or
SyncFlags streams would otherwise each build and encode the same message. So
the streaming methods (and the Resolve* answers, which repeat too) are
registered with a pass-through response serializer: their handlers yield or
return ``bytes``, encoded once and shared (``BoundedMemo``), and gRPC sends
them as they are. Clients see the same wire messages as before.

``add_servicer`` registers a servicer through the generated
``add_..._to_server`` function (so the method paths, request deserializers
and registered-method table are exactly the generated ones), replacing only
the response serializer of the methods named ``raw``.

Invariants: a method in ``raw`` must answer ``bytes`` (an encoded message of
its response type); every name in ``raw`` is a method of the service (checked
at registration, a typo would otherwise send unserialized objects); a memo
holds at most ``max_entries`` values (oldest dropped first), so callers can
key it by anything a request names without growing memory without bound.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import grpc

__all__ = ["BoundedMemo", "add_servicer"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Capture:
    """Stands in for a server while a generated ``add_..._to_server`` runs."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        pass  # the same handlers come again through add_registered_method_handlers

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self.services[service] = dict(handlers)


def add_servicer(
    server: grpc.aio.Server,
    add_to_server: Callable[[Any, Any], None],
    servicer: Any,
    *,
    raw: Collection[str],
) -> None:
    """``add_to_server(servicer, server)``, except that the methods in ``raw``
    answer pre-serialized ``bytes`` (no response serializer)."""
    capture = _Capture()
    add_to_server(servicer, capture)
    if len(capture.services) != 1:
        raise RuntimeError(
            f"expected one service from {add_to_server.__name__}, got {list(capture.services)}"
        )
    ((service, handlers),) = capture.services.items()
    unknown = set(raw) - handlers.keys()
    if unknown:
        raise ValueError(f"{service} has no method {sorted(unknown)}")
    for name in raw:
        handlers[name] = handlers[name]._replace(response_serializer=None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


class BoundedMemo(Generic[K, V]):
    """A dict of at most ``max_entries`` values; the oldest goes first."""

    __slots__ = ("_values", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._values: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: K) -> V | None:
        return self._values.get(key)

    def put(self, key: K, value: V) -> V:
        values = self._values
        if key not in values and len(values) >= self.max_entries:
            del values[next(iter(values))]
        values[key] = value
        return value
