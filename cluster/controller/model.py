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
- API key ids: ``api_keys.KEY_ID_LENGTH`` lowercase hex digits;
- partitions: 1 .. ``MAX_PARTITIONS`` per topic, and a new topic must fit
  the tenant's cap (``MAX_TENANT_PARTITIONS``) and the cluster's
  (``MAX_CLUSTER_PARTITIONS``): ``check_partitions``, the one rule the admin
  service applies before it places a topic and the state applies again;
- replication factor 1 .. ``MAX_REPLICATION_FACTOR``; retention: ``ms`` > 0
  and ``bytes`` >= 0 when set (``check_replication_factor``,
  ``check_retention``);
- a topic's cleanup settings (``TopicConfig``, ``check_topic_config``, the
  one rule the admin service applies before proposing and the state at
  apply): ``cleanup_policy`` one of ``CLEANUP_POLICIES``;
  ``min_compaction_lag_ms`` and ``delete_retention_ms`` 0 ..
  ``MAX_CONFIG_MS``; ``max_compaction_lag_ms`` unset or 1 ..
  ``MAX_CONFIG_MS`` and not below ``min_compaction_lag_ms``.

A problem description never quotes more than a short prefix of the value
it is about (``shown``): a request may carry a megabyte of name.

Invariants of the records themselves:

- ``Assignment.replicas`` (voters, preferred leader first) is never empty,
  and no node is in it twice or in both ``replicas`` and ``learners``;
  ``learners`` is sorted.
- ``Topic.groups[p]`` is the Raft group of partition ``p``; groups are never
  reused, so a re-created topic never shares a group (or its storage) with
  its predecessor; ``Topic.revision`` is the log index of its create command
  (it names the topic's incarnation, so a config change never moves it);
  ``Topic.config_revision`` is the index of its last config change (0:
  none since it was created).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cluster.controller.results import Rejected, RejectReason

__all__ = [
    "CLEANUP_POLICIES",
    "DEFAULT_DELETE_RETENTION_MS",
    "MAX_CLUSTER_PARTITIONS",
    "MAX_CONFIG_MS",
    "MAX_NODE_ID",
    "MAX_PARTITIONS",
    "MAX_REPLICATION_FACTOR",
    "MAX_TENANT_PARTITIONS",
    "TENANT_NAME_MAX",
    "TOPIC_NAME_MAX",
    "ApiKeyInfo",
    "ApiKeyRecord",
    "Assignment",
    "Node",
    "Principal",
    "Tenant",
    "Topic",
    "TopicConfig",
    "check_address",
    "check_name",
    "check_partitions",
    "check_replication_factor",
    "check_retention",
    "check_tenant_name",
    "check_topic_config",
    "check_topic_name",
    "check_zone",
    "shown",
]

TENANT_NAME_MAX = 63
TOPIC_NAME_MAX = 249
ZONE_MAX = 63
ADDRESS_MAX = 255
MAX_PARTITIONS = 10_000
"""Per topic: every partition is a Raft group every replica node hosts."""
MAX_TENANT_PARTITIONS = 1_000
"""Per tenant, all its topics together: the default partition quota until
per-tenant quotas exist (a later issue makes it a tenant setting). Enough
for the density benchmark's 1,000 idle partitions in one tenant."""
MAX_CLUSTER_PARTITIONS = 10_000
"""All tenants together (the internal ``__system`` topics included): what a
small cluster's nodes can host as Raft groups.

Both caps are part of the state machine's rules (``check_partitions`` runs
at apply too): lowering one makes a node reject a create that an older node
applied, so a change must come with a versioned rule once clusters are
upgraded in place."""
MAX_REPLICATION_FACTOR = 15
CLEANUP_POLICIES = ("delete", "compact", "compact,delete")
"""Kafka's spellings: ``delete`` drops old batches by retention only;
``compact`` keeps the latest record per key (and drops tombstones after
``delete_retention_ms``); ``compact,delete`` does both."""
DEFAULT_DELETE_RETENTION_MS = 86_400_000
"""How long a tombstone survives compaction by default: 24 hours."""
MAX_CONFIG_MS = 100 * 365 * 86_400_000
"""A century: the longest lag or tombstone retention a topic may ask for
(beyond it a value is a typo, and time arithmetic stays far from i64)."""
MAX_NODE_ID = 2**63 - 1
SHOWN_MAX = 64
"""How much of a client-supplied value a message quotes (``shown``)."""

_NAME = re.compile(r"[A-Za-z0-9._-]+")
_ADDRESS_HOST = re.compile(r"[!-~]+")  # printable ASCII, no space


def shown(value: str) -> str:
    """``value`` as an error message or ``ErrorInfo.metadata`` may quote it:
    ``repr``-escaped (no control characters or newlines reach a log line),
    and past ``SHOWN_MAX`` characters only a prefix, an ellipsis and the
    length, so an error never echoes a huge client-supplied name back."""
    if len(value) <= SHOWN_MAX:
        return repr(value)
    return f"{value[:SHOWN_MAX]!r}... ({len(value)} characters)"


def check_name(what: str, name: str, limit: int) -> str | None:
    """The naming rule of tenants, topics and consumer groups:
    ``[A-Za-z0-9._-]{1,limit}``, not ``.`` or ``..``."""
    if not 1 <= len(name) <= limit or not _NAME.fullmatch(name):
        return f"{what} name {shown(name)}: use 1-{limit} letters, digits, '.', '_' or '-'"
    if name in (".", ".."):
        return f"{what} name {shown(name)} is reserved"
    return None


def check_tenant_name(name: str) -> str | None:
    return check_name("tenant", name, TENANT_NAME_MAX)


def check_topic_name(name: str) -> str | None:
    return check_name("topic", name, TOPIC_NAME_MAX)


def check_partitions(partitions: int, tenant_partitions: int, cluster_partitions: int) -> Rejected | None:
    """Whether a new topic of ``partitions`` may be created by a tenant that
    has ``tenant_partitions`` already, in a cluster with
    ``cluster_partitions``: None, or why not (``INVALID_PARTITIONS`` for a
    count no topic may have, ``TOO_MANY_PARTITIONS`` for one that does not
    fit a cap). O(1): callers count first (``ControllerState.partition_counts``),
    and nothing is placed before it passed."""
    if not 1 <= partitions <= MAX_PARTITIONS:
        return Rejected(
            RejectReason.INVALID_PARTITIONS, f"a topic has 1-{MAX_PARTITIONS} partitions, not {partitions}"
        )
    if tenant_partitions + partitions > MAX_TENANT_PARTITIONS:
        return Rejected(
            RejectReason.TOO_MANY_PARTITIONS,
            f"the tenant has {tenant_partitions} of its {MAX_TENANT_PARTITIONS} partitions; "
            f"{partitions} more do not fit (delete topics first)",
        )
    if cluster_partitions + partitions > MAX_CLUSTER_PARTITIONS:
        return Rejected(
            RejectReason.TOO_MANY_PARTITIONS,
            f"the cluster hosts {cluster_partitions} of its {MAX_CLUSTER_PARTITIONS} partitions; "
            f"{partitions} more do not fit",
        )
    return None


def check_replication_factor(replication_factor: int) -> str | None:
    if not 1 <= replication_factor <= MAX_REPLICATION_FACTOR:
        return f"replication factor must be 1-{MAX_REPLICATION_FACTOR}, got {replication_factor}"
    return None


def check_retention(retention_ms: int | None, retention_bytes: int | None) -> str | None:
    if retention_ms is not None and retention_ms <= 0:
        return f"retention_ms must be positive or unset, got {retention_ms}"
    if retention_bytes is not None and retention_bytes < 0:
        return f"retention_bytes must be 0 or more, or unset, got {retention_bytes}"
    return None


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """A topic's settings that may change after it was created (the
    ``AlterTopicConfig`` command replaces all of them at once)."""

    retention_ms: int | None = None
    retention_bytes: int | None = None
    cleanup_policy: str = "delete"
    min_compaction_lag_ms: int = 0
    delete_retention_ms: int = DEFAULT_DELETE_RETENTION_MS
    max_compaction_lag_ms: int | None = None

    @property
    def compacted(self) -> bool:
        return self.cleanup_policy in ("compact", "compact,delete")


def check_topic_config(config: TopicConfig) -> Rejected | None:
    """Whether ``config`` is a valid set of topic settings: None, or why
    not (``INVALID_RETENTION`` or ``INVALID_TOPIC_CONFIG``, the message
    naming the setting and what values it takes)."""
    if problem := check_retention(config.retention_ms, config.retention_bytes):
        return Rejected(RejectReason.INVALID_RETENTION, problem)
    if config.cleanup_policy not in CLEANUP_POLICIES:
        return Rejected(
            RejectReason.INVALID_TOPIC_CONFIG,
            f"cleanup_policy {shown(config.cleanup_policy)}: use one of {', '.join(CLEANUP_POLICIES)}",
        )
    for setting, value in (
        ("min_compaction_lag_ms", config.min_compaction_lag_ms),
        ("delete_retention_ms", config.delete_retention_ms),
    ):
        if not 0 <= value <= MAX_CONFIG_MS:
            return Rejected(
                RejectReason.INVALID_TOPIC_CONFIG,
                f"{setting} must be 0-{MAX_CONFIG_MS} (milliseconds), got {value}",
            )
    lag = config.max_compaction_lag_ms
    if lag is not None and not max(1, config.min_compaction_lag_ms) <= lag <= MAX_CONFIG_MS:
        return Rejected(
            RejectReason.INVALID_TOPIC_CONFIG,
            f"max_compaction_lag_ms must be unset or from max(1, min_compaction_lag_ms = "
            f"{config.min_compaction_lag_ms}) to {MAX_CONFIG_MS} (milliseconds), got {lag}",
        )
    return None


def check_zone(zone: str) -> str | None:
    if zone and (len(zone) > ZONE_MAX or not _NAME.fullmatch(zone)):
        return f"zone label {shown(zone)}: use 0-{ZONE_MAX} letters, digits, '.', '_' or '-'"
    return None


def check_address(address: str) -> str | None:
    host, _, port = address.rpartition(":")
    if (
        len(address) > ADDRESS_MAX
        or not _ADDRESS_HOST.fullmatch(host)
        or not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535)
    ):
        return f"address {shown(address)}: expected host:port (printable ASCII, at most {ADDRESS_MAX} characters)"
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
    cleanup_policy: str = "delete"
    min_compaction_lag_ms: int = 0
    delete_retention_ms: int = DEFAULT_DELETE_RETENTION_MS
    max_compaction_lag_ms: int | None = None
    config_revision: int = 0
    """The log index of the last ``AlterTopicConfig`` applied to it; 0:
    its settings are those it was created with."""

    @property
    def config(self) -> TopicConfig:
        return TopicConfig(
            self.retention_ms,
            self.retention_bytes,
            self.cleanup_policy,
            self.min_compaction_lag_ms,
            self.delete_retention_ms,
            self.max_compaction_lag_ms,
        )


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
