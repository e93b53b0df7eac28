"""Errors of the flag server's admin API (``raftlog.flags.v1``): a gRPC status
and a reason a program can switch on.

A refused call ends with its status code and message, and a
``grpc-status-details-bin`` trailer holding a ``google.rpc.Status`` with two
details: a ``google.rpc.ErrorInfo`` (``domain`` ``flags.raftlog``, ``reason``,
``metadata``: what generic gRPC tooling reads) and a ``raftlog.v1.ErrorInfo``
with the same reason, message and metadata (what the raftlog SDK's
``client.rpc_status.error_info`` reads). The cluster's own mapping lives in
``cluster/frontend/grpc_errors.py``; ``flags/`` may not import ``cluster``, so
this is its small counterpart.

Invariants:

- Every ``AdminError`` carries a reason in UPPER_SNAKE_CASE and a message that
  says what to fix; ``reason_of`` reads any of them back from a failed call and
  never raises (a damaged trailer must not hide the status code).
- Client-supplied text goes into a message only through ``shown`` (a short,
  escaped prefix): a caller cannot make the server echo a megabyte, or a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from raftlog.v1 import errors_pb2
from raftlog.v1.headers import STATUS_DETAILS

__all__ = ["DOMAIN", "AdminError", "ErrorDetails", "abort", "reason_of", "shown"]

DOMAIN = "flags.raftlog"
_SHOWN_LENGTH = 64


def shown(text: str) -> str:
    """``text`` as it may appear in a message: quoted and escaped (``repr``),
    at most ~64 characters of it."""
    if len(text) <= _SHOWN_LENGTH:
        return repr(text)
    return f"{text[:_SHOWN_LENGTH]!r}... ({len(text)} characters)"


class AdminError(Exception):
    """A refused admin call: ``code``, ``reason``, ``message``, ``metadata``."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})

    def trailer(self) -> tuple[tuple[str, bytes], ...]:
        google_info = any_pb2.Any()
        google_info.Pack(
            error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        )
        raftlog_info = any_pb2.Any()
        raftlog_info.Pack(
            errors_pb2.ErrorInfo(reason=self.reason, message=self.message, metadata=self.metadata)
        )
        status = status_pb2.Status(
            code=self.code.value[0], message=self.message, details=[google_info, raftlog_info]
        )
        return ((STATUS_DETAILS, status.SerializeToString()),)


async def abort(context: grpc.aio.ServicerContext, error: AdminError) -> NoReturn:
    await context.abort(error.code, error.message, trailing_metadata=error.trailer())
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """What a failed admin call said (for the CLI and tests)."""

    code: grpc.StatusCode | None
    reason: str
    message: str
    metadata: Mapping[str, str]


def reason_of(error: grpc.RpcError) -> ErrorDetails:
    """The status, reason, message and metadata of a failed call; reason ""
    when the call carried none (a transport failure, another server)."""
    code = _call(error, "code")
    message = _call(error, "details")
    details = ErrorDetails(
        code if isinstance(code, grpc.StatusCode) else None,
        "",
        message if isinstance(message, str) else "",
        {},
    )
    trailing = _call(error, "trailing_metadata") or ()
    try:
        items = list(trailing)  # type: ignore[call-overload]
    except TypeError:
        return details
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2) or item[0] != STATUS_DETAILS:
            continue
        if not isinstance(item[1], bytes | bytearray):
            continue
        try:
            status = status_pb2.Status.FromString(bytes(item[1]))
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return ErrorDetails(details.code, info.reason, details.message, dict(info.metadata))
        except DecodeError:
            return details
    return details


def _call(error: object, name: str) -> object:
    method = getattr(error, name, None)
    if method is None:
        return None
    try:
        return method()
    except Exception:  # a half-built error object must still say something
        return None
