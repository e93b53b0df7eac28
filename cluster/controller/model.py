"""The records of the controller's state, and the rules for their fields.

Every record is a frozen dataclass: the state replaces a record to change it,
so a record handed to a caller never changes under it.

Field rules (checked when a command is applied; ``check_*`` return a
problem description, or None when the value is fine):

- tenant names: ``[A-Za-z0-9._-]{1,63}``, not ``.`` or ``..``;
- topic names: ``[A-Za-z0-9._-]{1,249}``, not ``.`` or ``..`` (Kafka's rule:
  names may become file or metric names);
- zone labels: ``[A-Za-z0-9._-]{0,63}``, "" meaning "no zone";
- node addresses: ``host:port``, printable ASCII without spaces, at most 255
  characters, port 1-65535; node ids 1 .. 2**63-1;
- API key ids: ``api_keys.KEY_ID_LENGTH`` lowercase hex digits.

Invariants of the records themselves:

- ``Assignment.replicas`` (voters, preferred leader first) is never empty,
  and no node is in it twice or in both ``replicas`` and ``learners``;
  ``learners`` is sorted.
- ``Topic.groups[p]`` is the Raft group of partition ``p``; groups are never
  reused, so a re-created topic never shares a group (or its storage) with
  its predecessor; ``Topic.revision`` is the log index of its create command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "MAX_NODE_ID",
    "MAX_PARTITIONS",
    "MAX_REPLICATION_FACTOR",
    "TENANT_NAME_MAX",
    "TOPIC_NAME_MAX",
    "ApiKeyInfo",
    "ApiKeyRecord",
    "Assignment",
    "Node",
    "Principal",
    "Tenant",
    "Topic",
    "check_address",
    "check_tenant_name",
    "check_topic_name",
    "check_zone",
]

TENANT_NAME_MAX = 63
TOPIC_NAME_MAX = 249
ZONE_MAX = 63
ADDRESS_MAX = 255
MAX_PARTITIONS = 10_000
"""Per topic: every partition is a Raft group every replica node hosts."""
MAX_REPLICATION_FACTOR = 15
MAX_NODE_ID = 2**63 - 1

_NAME = re.compile(r"[A-Za-z0-9._-]+")
_ADDRESS_HOST = re.compile(r"[!-~]+")  # printable ASCII, no space


def _check_name(what: str, name: str, limit: int) -> str | None:
    if not 1 <= len(name) <= limit or not _NAME.fullmatch(name):
        return f"{what} name {name!r}: use 1-{limit} letters, digits, '.', '_' or '-'"
    if name in (".", ".."):
        return f"{what} name {name!r} is reserved"
    return None


def check_tenant_name(name: str) -> str | None:
    return _check_name("tenant", name, TENANT_NAME_MAX)


def check_topic_name(name: str) -> str | None:
    return _check_name("topic", name, TOPIC_NAME_MAX)


def check_zone(zone: str) -> str | None:
    if zone and (len(zone) > ZONE_MAX or not _NAME.fullmatch(zone)):
        return f"zone label {zone!r}: use 0-{ZONE_MAX} letters, digits, '.', '_' or '-'"
    return None


def check_address(address: str) -> str | None:
    host, _, port = address.rpartition(":")
    if (
        len(address) > ADDRESS_MAX
        or not _ADDRESS_HOST.fullmatch(host)
        or not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535)
    ):
        return f"address {address!r}: expected host:port (printable ASCII, at most {ADDRESS_MAX} characters)"
    return None


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    created_index: int


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored API key: its salted hash, never its clear text."""

    key_id: str
    tenant: str | None
    """None: an operator key."""
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)
    created_index: int

    def info(self) -> ApiKeyInfo:
        return ApiKeyInfo(self.key_id, self.tenant, self.created_index)


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What listings show of a key (not its hash)."""

    key_id: str
    tenant: str | None
    created_index: int


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an authenticated request acts as."""

    key_id: str
    tenant: str | None

    @property
    def is_operator(self) -> bool:
        return self.tenant is None


@dataclass(frozen=True, slots=True)
class Topic:
    tenant: str
    name: str
    partitions: int
    replication_factor: int
    retention_ms: int | None
    retention_bytes: int | None
    revision: int
    groups: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Node:
    node_id: int
    address: str
    zone: str
    controller_eligible: bool
    alive: bool = True
    decommissioning: bool = False

    @property
    def can_host(self) -> bool:
        """Whether new replicas may be placed here."""
        return self.alive and not self.decommissioning


@dataclass(frozen=True, slots=True)
class Assignment:
    """One partition's desired replicas: what each node's reconciler acts on.

    ``revision`` starts at 1 and grows by one with every change, so a
    proposer can plan several steps ahead (``expected_revision``)."""

    group: int
    tenant: str
    topic: str
    topic_revision: int
    partition: int
    replicas: tuple[int, ...]
    learners: tuple[int, ...]
    revision: int

    @property
    def preferred_leader(self) -> int:
        return self.replicas[0]

    @property
    def members(self) -> tuple[int, ...]:
        """Voters, then learners."""
        return self.replicas + self.learners
