"""Checking admin requests and shaping admin answers (flags/admin_service.py's helpers).

Names, page sizes, JSON text and flag-set sizes are checked here before
anything is done for a request; the errors say what to fix. ``refused`` turns
what the writer or the log decided against a change into the same errors.

Invariants: the size limit is one, ``MAX_SET_BYTES`` (1 MiB of canonical
JSON), applied to the flag set as it would be after the change; JSON text
longer than ``MAX_REQUEST_TEXT`` is refused before it is parsed; list page
tokens name the listing they belong to and are refused elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import grpc

from flags.admin_errors import AdminError, shown
from flags.changes import Change
from flags.live import SdkKeyInfo
from flags.model import (
    MAX_SET_BYTES,
    Flag,
    FlagSet,
    InvalidDefinition,
    check_environment_name,
    check_flag_key,
    flagd_json,
)
from flags.store import Conflict, Rejected, RejectReason
from raftlog.flags.v1 import flags_pb2

C = grpc.StatusCode
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_REQUEST_TEXT = 4 * MAX_SET_BYTES
"""JSON text longer than this is refused before it is parsed (whatever its
canonical size, parsing megabytes is work a caller should not be able to ask for)."""


def bad_request(reason: str, message: str, **metadata: str) -> AdminError:
    return AdminError(C.INVALID_ARGUMENT, reason, message, metadata)


def env_name(name: str) -> str:
    if problem := check_environment_name(name):
        raise bad_request("INVALID_NAME", problem)
    return name


def flag_key(key: str) -> str:
    if problem := check_flag_key(key):
        raise bad_request("INVALID_NAME", problem)
    return key


def page_size(size: int) -> int:
    if size > MAX_PAGE_SIZE:
        raise bad_request(
            "INVALID_PAGE_SIZE", f"page_size is at most {MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE})"
        )
    return size or DEFAULT_PAGE_SIZE


def parse_json(text: str, what: str) -> Any:
    if len(text) > MAX_REQUEST_TEXT:
        raise too_large(len(text.encode("utf-8")))
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise bad_request("INVALID_JSON", f"{what} is not JSON: {error}") from None


def too_large(size: int) -> AdminError:
    return AdminError(
        C.RESOURCE_EXHAUSTED,
        "FLAG_SET_TOO_LARGE",
        f"an environment's flag set is at most {MAX_SET_BYTES} bytes (1 MiB) of canonical JSON; "
        f"this one would be {size} bytes: split it over environments or shrink targeting rules",
        {"limit_bytes": str(MAX_SET_BYTES), "size_bytes": str(size)},
    )


def check_set_size(flag_set: FlagSet) -> None:
    size = len(flagd_json(flag_set).encode("utf-8"))
    if size > MAX_SET_BYTES:
        raise too_large(size)


def invalid_definition(error: InvalidDefinition) -> AdminError:
    return bad_request("INVALID_DEFINITION", f"invalid definition: {error}")


def unknown_env(env: str) -> AdminError:
    return AdminError(
        C.NOT_FOUND,
        "UNKNOWN_ENVIRONMENT",
        f"no environment {shown(env)} in this tenant; list environments, or create it first",
        {"environment": env},
    )


def unknown_flag(env: str, flag: str) -> AdminError:
    return AdminError(
        C.NOT_FOUND,
        "UNKNOWN_FLAG",
        f"no flag {shown(flag)} in environment {shown(env)}; list its flags to see what exists",
        {"environment": env, "flag": flag},
    )


def refused(change: Change, result: Conflict | Rejected) -> AdminError:
    """The error for a write the writer's check or the log refused."""
    if isinstance(result, Conflict):
        return AdminError(
            C.FAILED_PRECONDITION,
            "VERSION_CONFLICT",
            f"{change.key} is at version {result.current}, not {result.expected}: "
            "read it again, then retry with the current version",
            {"current_version": str(result.current), "expected_version": str(result.expected)},
        )
    reason = result.reason
    if reason is RejectReason.UNKNOWN_ENVIRONMENT:
        return unknown_env(change.env)
    if reason is RejectReason.UNKNOWN_FLAG and change.flag is not None:
        return unknown_flag(change.env, change.flag)
    if reason is RejectReason.FLAG_EXISTS:
        what, name = ("flag", change.flag) if change.flag else ("environment", change.env)
        return AdminError(
            C.ALREADY_EXISTS,
            "FLAG_EXISTS" if change.flag else "ENVIRONMENT_EXISTS",
            f"{what} {shown(name or '')} exists; to replace it, send the version you read",
        )
    if reason is RejectReason.INVALID_DEFINITION:
        return bad_request("INVALID_DEFINITION", f"invalid definition: {result.message}")
    return AdminError(C.FAILED_PRECONDITION, str(reason), result.message)


def expected_or(explicit: bool, value: int, current: int) -> int:
    return value if explicit else current


def list_token(*parts: str) -> str:
    return base64.urlsafe_b64encode("\0".join(parts).encode()).decode("ascii").rstrip("=")


def token_after(token: str, scope: str) -> tuple[str, ...]:
    """The position a list page token continues after (refused elsewhere)."""
    try:
        parts = tuple(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split("\0"))
    except (binascii.Error, UnicodeDecodeError):
        parts = ()
    if len(parts) < 2 or parts[0] != scope:
        raise bad_request(
            "INVALID_PAGE_TOKEN", "this page token belongs to another listing; start from page 1"
        )
    return parts[1:]


def definition_message(key: str, version: int, flag: Flag) -> flags_pb2.FlagDefinition:
    return flags_pb2.FlagDefinition(
        flag=key,
        version=version,
        definition_json=json.dumps(flag.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        enabled=flag.enabled,
        variant_type=flag.variant_type.value,
    )


def key_message(info: SdkKeyInfo) -> flags_pb2.SdkKeyInfo:
    return flags_pb2.SdkKeyInfo(
        key_id=info.id,
        environment=info.env,
        name=info.name,
        created_by=info.created_by,
        created_ms=info.created_ms,
        revoked=info.revoked,
    )
