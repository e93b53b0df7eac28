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
  the tenant's partition quota (built-in default ``MAX_TENANT_PARTITIONS``)
  and the cluster's cap (``MAX_CLUSTER_PARTITIONS``): ``check_partitions``,
  which ``ControllerState.check_new_topic`` runs with the tenant's
  effective quota, the one rule the admin service applies before it places
  a topic and the state applies again;
- replication factor 1 .. ``MAX_REPLICATION_FACTOR``; retention: ``ms`` > 0
  and ``bytes`` >= 0 when set (``check_replication_factor``,
  ``check_retention``);
- a topic's cleanup settings (``TopicConfig``, ``check_topic_config``, the
  one rule the admin service applies before proposing and the state at
  apply): ``cleanup_policy`` one of ``CLEANUP_POLICIES``;
  ``min_compaction_lag_ms`` and ``delete_retention_ms`` 0 ..
  ``MAX_CONFIG_MS``; ``max_compaction_lag_ms`` unset or 1 ..
  ``MAX_CONFIG_MS`` and not below ``min_compaction_lag_ms``.

- API key scopes (``KeyScope``, ``check_key_scope``): role ``operator``
  exactly for a key of no tenant; ``admin`` (the whole tenant) or
  ``client`` for a tenant key. Only a client key has prefixes, and it has
  at least one: produce and consume topic-name prefixes and consumer-group
  prefixes, each "" (everything) or a prefix of a valid name, at most
  ``MAX_PREFIXES`` per list, kept sorted and distinct (one spelling per
  scope). A key's expiry ``expires_at_ms`` is 0 (never) or a Unix time in
  ms; an expired key still authenticates (``key_expired`` tells the door,
  which refuses it with ``API_KEY_EXPIRED``).

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
    "ADMIN_SCOPE",
    "CLEANUP_POLICIES",
    "DEFAULT_DELETE_RETENTION_MS",
    "MAX_CLUSTER_PARTITIONS",
    "MAX_CONFIG_MS",
    "MAX_NODE_ID",
    "MAX_PARTITIONS",
    "MAX_PREFIXES",
    "MAX_REPLICATION_FACTOR",
    "MAX_TENANT_PARTITIONS",
    "OPERATOR_SCOPE",
    "ROLES",
    "TENANT_NAME_MAX",
    "TOPIC_NAME_MAX",
    "ApiKeyInfo",
    "ApiKeyRecord",
    "Assignment",
    "KeyScope",
    "Node",
    "Principal",
    "Tenant",
    "Topic",
    "TopicConfig",
    "check_address",
    "check_key_scope",
    "check_name",
    "check_partitions",
    "check_replication_factor",
    "check_retention",
    "check_tenant_name",
    "check_topic_config",
    "check_topic_name",
    "check_zone",
    "default_scope",
    "key_expired",
    "shown",
]

TENANT_NAME_MAX = 63
TOPIC_NAME_MAX = 249
ZONE_MAX = 63
ADDRESS_MAX = 255
MAX_PARTITIONS = 10_000
"""Per topic: every partition is a Raft group every replica node hosts."""
MAX_TENANT_PARTITIONS = 1_000
"""Per tenant, all its topics together: the built-in default of the
``partitions`` quota (``quotas.BUILT_IN_DEFAULTS``; the cluster file's
``[quotas]`` and an operator's per-tenant quota override it). Enough for
the density benchmark's 1,000 idle partitions in one tenant."""
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
MAX_PREFIXES = 32
"""Per prefix list of a client key: a scope is a few name patterns, not an
access-control list (a key per application)."""
ROLES = ("operator", "admin", "client")
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


def check_partitions(
    partitions: int,
    tenant_partitions: int,
    cluster_partitions: int,
    tenant_limit: int | None = MAX_TENANT_PARTITIONS,
    tenant: str | None = None,
) -> Rejected | None:
    """Whether a new topic of ``partitions`` may be created by ``tenant``,
    which has ``tenant_partitions`` already and may have ``tenant_limit``
    (its partition quota; None: no limit), in a cluster with
    ``cluster_partitions``: None, or why not (``INVALID_PARTITIONS`` for a
    count no topic may have, ``QUOTA_EXCEEDED`` over the tenant's quota,
    ``TOO_MANY_PARTITIONS`` over the cluster's cap). O(1): callers count
    first (``ControllerState.check_new_topic`` does it all with the tenant's
    effective quota), and nothing is placed before it passed."""
    if not 1 <= partitions <= MAX_PARTITIONS:
        return Rejected(
            RejectReason.INVALID_PARTITIONS, f"a topic has 1-{MAX_PARTITIONS} partitions, not {partitions}"
        )
    if tenant_limit is not None and tenant_partitions + partitions > tenant_limit:
        who = "the tenant" if tenant is None else f"tenant {shown(tenant)}"
        return Rejected(
            RejectReason.QUOTA_EXCEEDED,
            f"{who} has {tenant_partitions} of its {tenant_limit} partitions; {partitions} more do not fit "
            f"(delete topics or ask an operator to raise the quota: "
            f"raftlog tenant quota set {tenant or 'TENANT'} --partitions N)",
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
class KeyScope:
    """What an API key may do in its tenant (the module docstring's rules).
    Prefix lists are stored sorted and distinct whatever order they were
    given in, so equal scopes are equal values and encode alike."""

    role: str = "admin"
    """``operator`` (no tenant), ``admin`` (everything in its tenant) or
    ``client`` (data calls on the topics and groups its prefixes match)."""
    produce_prefixes: tuple[str, ...] = ()
    consume_prefixes: tuple[str, ...] = ()
    group_prefixes: tuple[str, ...] = ()
    """Consumer groups a client key may use ("" = every group)."""

    def __post_init__(self) -> None:
        for name in ("produce_prefixes", "consume_prefixes", "group_prefixes"):
            object.__setattr__(self, name, tuple(sorted(set(getattr(self, name)))))

    @property
    def is_client(self) -> bool:
        return self.role == "client"

    def may_produce(self, topic: str) -> bool:
        """Whether the key may write to ``topic`` of its tenant."""
        return not self.is_client or _matches(self.produce_prefixes, topic)

    def may_consume(self, topic: str) -> bool:
        """Whether the key may read ``topic`` of its tenant."""
        return not self.is_client or _matches(self.consume_prefixes, topic)

    def may_use_group(self, group: str) -> bool:
        """Whether the key may join or commit for consumer group ``group``."""
        return not self.is_client or _matches(self.group_prefixes, group)


def _matches(prefixes: tuple[str, ...], name: str) -> bool:
    return any(name.startswith(prefix) for prefix in prefixes)


OPERATOR_SCOPE = KeyScope("operator")
ADMIN_SCOPE = KeyScope("admin")


def default_scope(tenant: str | None) -> KeyScope:
    """A key's scope when none is given: an operator key for no tenant, a
    tenant admin key otherwise (what every key was before scopes)."""
    return OPERATOR_SCOPE if tenant is None else ADMIN_SCOPE


def check_key_scope(tenant: str | None, scope: KeyScope) -> str | None:
    """What is wrong with ``scope`` for a key of ``tenant`` (None: an
    operator key), or None (the module docstring's rules)."""
    if scope.role not in ROLES:
        return f"key role {shown(scope.role)}: use one of {', '.join(ROLES)}"
    if (tenant is None) != (scope.role == "operator"):
        if tenant is None:
            return f"a key of no tenant is an operator key: role 'operator', not {shown(scope.role)}"
        return f"an operator key belongs to no tenant: give tenant {shown(tenant)}'s key role admin or client"
    lists = (
        ("produce", scope.produce_prefixes),
        ("consume", scope.consume_prefixes),
        ("group", scope.group_prefixes),
    )
    if not scope.is_client:
        if any(prefixes for _, prefixes in lists):
            return f"only a client key has prefixes (an {scope.role} key may use every topic and group)"
        return None
    if not any(prefixes for _, prefixes in lists):
        return 'a client key needs at least one produce, consume or group prefix ("" matches every name)'
    for what, prefixes in lists:
        if len(prefixes) > MAX_PREFIXES:
            return f"a client key has at most {MAX_PREFIXES} {what} prefixes, not {len(prefixes)}"
        for prefix in prefixes:
            if prefix and (len(prefix) > TOPIC_NAME_MAX or not _NAME.fullmatch(prefix)):
                return (
                    f'{what} prefix {shown(prefix)}: use "" (every name) or 1-{TOPIC_NAME_MAX} '
                    "letters, digits, '.', '_' or '-'"
                )
    return None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored API key: its salted hash, never its clear text."""

    key_id: str
    tenant: str | None
    """None: an operator key."""
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)
    created_index: int
    scope: KeyScope
    expires_at_ms: int = 0
    """Unix time in ms from which the key is refused; 0: never."""

    def info(self) -> ApiKeyInfo:
        return ApiKeyInfo(self.key_id, self.tenant, self.created_index, self.scope, self.expires_at_ms)


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What listings show of a key (not its hash)."""

    key_id: str
    tenant: str | None
    created_index: int
    scope: KeyScope
    expires_at_ms: int = 0


@dataclass(frozen=True, slots=True, init=False)
class Principal:
    """Who an authenticated request acts as, and what it may do.

    The one record whose scope may be left out (a test or tool that names a
    caller by its tenant alone): the explicit ``__init__`` below fills in
    ``default_scope(tenant)``, so ``scope`` is always a ``KeyScope``. The
    stored records (``ApiKeyRecord``, ``ApiKeyInfo``, ``CreateApiKey``) take
    it as a required field."""

    key_id: str
    tenant: str | None
    scope: KeyScope
    expires_at_ms: int
    """0: never expires (``key_expired``)."""

    def __init__(
        self, key_id: str, tenant: str | None, scope: KeyScope | None = None, expires_at_ms: int = 0
    ) -> None:
        # Frozen: fields are set once, here, the way dataclasses' own __init__ does.
        object.__setattr__(self, "key_id", key_id)
        object.__setattr__(self, "tenant", tenant)
        object.__setattr__(self, "scope", default_scope(tenant) if scope is None else scope)
        object.__setattr__(self, "expires_at_ms", expires_at_ms)

    @property
    def is_operator(self) -> bool:
        return self.tenant is None


def key_expired(principal: Principal, now_ms: int) -> bool:
    """Whether ``principal``'s key has expired at ``now_ms`` (Unix ms): the
    front door refuses it with ``API_KEY_EXPIRED`` rather than treating it
    as an unknown key, so its owner learns to rotate it."""
    return 0 < principal.expires_at_ms <= now_ms


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
