"""Reading a failed gRPC call: its status values and the
``raftlog.v1.ErrorInfo`` it carried (``client.errors.from_rpc_error`` turns
them into an SDK exception).

Invariants: nothing here raises for any error object or trailer: a
damaged trailer or a half-built error must not hide the status code behind
a parse error.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from raftlog.v1 import errors_pb2
from raftlog.v1.headers import STATUS_DETAILS

__all__ = ["call_value", "error_info"]


def error_info(trailing_metadata: object) -> errors_pb2.ErrorInfo | None:
    """The ``raftlog.v1.ErrorInfo`` in a call's trailing metadata, or None
    when there is none or it cannot be decoded (a damaged trailer must not
    hide the status code behind a parse error)."""
    if not trailing_metadata:
        return None
    try:
        items = list(trailing_metadata)  # type: ignore[call-overload]
    except TypeError:
        return None
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            continue
        key, value = item
        if key != STATUS_DETAILS or not isinstance(value, bytes | bytearray):
            continue
        try:
            status = status_pb2.Status.FromString(bytes(value))
            for detail in status.details:
                if detail.Is(errors_pb2.ErrorInfo.DESCRIPTOR):
                    info = errors_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info
        except DecodeError:
            return None
    return None


def call_value(error: grpc.RpcError, name: str) -> object:
    """``error.<name>()`` (``code``, ``details``, ``trailing_metadata``), or
    None when the error has no such method or it fails."""
    method = getattr(error, name, None)
    if method is None:
        return None
    try:
        return method()
    except Exception:  # a half-built error object must still map to something
        return None
