"""The metadata commands: the data of the controller's (group 0) Raft entries.

Every NORMAL entry with data in the controller's log is one command; empty
entries and membership changes are not (the driver hands those to
``ControllerState.apply_noop``). Commands are proposed by the controller
leader, which chooses everything that needs judgement or randomness (replica
placement, API key salt and hash) *before* proposing, so that applying a
command needs only the command and the state: every node computes the same
result.

Encoding: binary, built from the ``wire`` primitives (big-endian, one
encoding per value). Binary rather than JSON because canonical bytes come for
free (no key order, whitespace, float or bool-versus-int questions) and the
decoder can be strict about every byte; the partition log's commands use the
same ``kind u8 | version u8`` header. The header, the kind numbers below
(``CommandKind``) and the versions this code reads are command_header.py's.

=================== ===== ================================================
command             kind  fields after ``kind u8 | version u8`` (version 1
                          unless the row says otherwise)
=================== ===== ================================================
CreateTenant        1     name text
DeleteTenant        2     name text
CreateApiKey        3     key_id text, is_operator flag, tenant text,
                          salt blob, digest blob
CreateApiKey v2     3     the v1 fields, then ``key_scope`` (below);
                          written only for a key that is not its
                          tenant's default (operator for no tenant, admin
                          otherwise) or that expires, so v1 bytes never
                          change
RevokeApiKey        4     key_id text
CreateTopic         5     tenant text, name text, partitions u32,
                          replication_factor u16, retention_ms opt_i64,
                          retention_bytes opt_i64, assignment: u32 count,
                          then ``ids`` per partition (preferred leader first)
CreateTopic v2      5     the v1 fields, then ``compaction`` (below); written
                          only when a compaction setting differs from its
                          default, so a topic that uses none of them is
                          still a v1 entry older nodes can apply
DeleteTopic         6     tenant text, name text
RegisterNode        7     node_id u64, address text, zone text,
                          controller_eligible flag
SetNodeLiveness     8     node_id u64, alive flag
DecommissionNode    9     node_id u64
RemoveNode          10    node_id u64
AddLearner          11    group u64, node_id u64, expected_revision u64
PromoteLearner      12    group u64, node_id u64, expected_revision u64,
                          position u16
RemoveReplica       13    group u64, node_id u64, expected_revision u64
AlterTopicConfig    14    tenant text, name text, topic_revision u64,
                          expected_config_revision u64, retention_ms
                          opt_i64, retention_bytes opt_i64, ``compaction``
SetQuota            15    tenant text ("" = the cluster defaults), then
                          the 8 ``quotas.QUOTA_FIELDS`` as opt_i64 each
SetApiKeyExpiry     16    key_id text, expires_at_ms i64 (0 = never)
=================== ===== ================================================

``compaction`` is ``cleanup_policy text, min_compaction_lag_ms i64,
delete_retention_ms i64, max_compaction_lag_ms opt_i64`` (the snapshot
writes the same; ``write_compaction``).

``key_scope`` is ``role text, produce_prefixes, consume_prefixes,
group_prefixes, expires_at_ms i64`` where each prefix list is ``u32 count``
then ``text`` each, sorted and distinct (the snapshot writes the same;
``write_key_scope``). These shared field encodings live in
field_codecs.py.

Invariants:

- ``decode_command(encode_command(c)) == c`` for every command, and bytes
  that decode re-encode to themselves (canonical form).
- A kind number is never reused, and a version's bytes never change
  (command_header.py). A command is written at the lowest version that can
  hold it, and a newer version's bytes that an older version could hold
  are malformed: one encoding per command.
- ``decode_command`` raises only ``MalformedCommand`` (bytes no version of
  this code writes: the state machine rejects the entry with
  ``INVALID_COMMAND``, the same on every node) or ``UnsupportedCommand`` (a
  kind or version this code does not know, written by a newer node: the
  controller replica must stop rather than apply the log differently).
- Encoding checks only that each value fits its field (``ValueError``);
  whether the command makes sense is decided when it is applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, get_args

from cluster.controller.command_header import (
    COMMAND_VERSION,
    HEADER_BYTES,
    NEWEST_VERSIONS,
    CommandError,
    CommandKind,
    MalformedCommand,
    UnsupportedCommand,
    read_header,
    write_header,
)
from cluster.controller.field_codecs import (
    read_compaction,
    read_key_scope,
    read_key_tenant,
    write_compaction,
    write_key_scope,
    write_key_tenant,
)
from cluster.controller.model import DEFAULT_DELETE_RETENTION_MS, KeyScope, TopicConfig, default_scope
from cluster.controller.quotas import QuotaLimits, read_quota, write_quota
from cluster.primitives.wire import Reader, WireError, Writer

__all__ = [
    "COMMAND_VERSION",
    "NEWEST_VERSIONS",
    "AddLearner",
    "AlterTopicConfig",
    "Command",
    "CommandError",
    "CommandKind",
    "CreateApiKey",
    "CreateTenant",
    "CreateTopic",
    "DecommissionNode",
    "DeleteTenant",
    "DeleteTopic",
    "MalformedCommand",
    "PromoteLearner",
    "RegisterNode",
    "RemoveNode",
    "RemoveReplica",
    "ReplicaChange",
    "RevokeApiKey",
    "SetApiKeyExpiry",
    "SetNodeLiveness",
    "SetQuota",
    "UnsupportedCommand",
    "decode_command",
    "encode_command",
]

_DEFAULT_COMPACTION: tuple[str, int, int, int | None] = ("delete", 0, DEFAULT_DELETE_RETENTION_MS, None)


# --- tenants and API keys --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateTenant:
    KIND: ClassVar[CommandKind] = CommandKind.CREATE_TENANT
    name: str

    def _write(self, w: Writer) -> None:
        w.text(self.name)

    @classmethod
    def _read(cls, r: Reader) -> CreateTenant:
        return cls(r.text("name"))


@dataclass(frozen=True, slots=True)
class DeleteTenant:
    """Delete an empty tenant (no topics); its API keys are revoked with it."""

    KIND: ClassVar[CommandKind] = CommandKind.DELETE_TENANT
    name: str

    def _write(self, w: Writer) -> None:
        w.text(self.name)

    @classmethod
    def _read(cls, r: Reader) -> DeleteTenant:
        return cls(r.text("name"))


@dataclass(frozen=True, slots=True)
class CreateApiKey:
    """Store an API key's salted hash (``api_keys.issue_api_key`` makes one).
    ``tenant`` None is an operator key. The clear key is never in the log.
    A key made before scopes existed has its tenant's default scope
    (``model.default_scope``, what version 1 means); ``expires_at_ms`` 0:
    never."""

    KIND: ClassVar[CommandKind] = CommandKind.CREATE_API_KEY
    key_id: str
    tenant: str | None
    salt: bytes
    digest: bytes
    scope: KeyScope
    expires_at_ms: int = 0

    @property
    def wire_version(self) -> int:
        """1 for a default-scope key that never expires (older nodes apply
        it), else 2."""
        return 1 if self.scope == default_scope(self.tenant) and self.expires_at_ms == 0 else 2

    def _write(self, w: Writer) -> None:
        w.text(self.key_id)
        write_key_tenant(w, self.tenant)
        w.blob(self.salt).blob(self.digest)
        if self.wire_version == 2:
            write_key_scope(w, self.scope, self.expires_at_ms)

    @classmethod
    def _read(cls, r: Reader, version: int = 1) -> CreateApiKey:
        key_id = r.text("key_id")
        tenant, salt, digest = read_key_tenant(r, key_id), r.blob("salt"), r.blob("digest")
        if version == 1:
            return cls(key_id, tenant, salt, digest, default_scope(tenant))
        scope, expires_at_ms = read_key_scope(r)
        if scope == default_scope(tenant) and expires_at_ms == 0:
            raise WireError(f"{r.what}: version 2 with the default scope and no expiry (version 1 holds it)")
        return cls(key_id, tenant, salt, digest, scope, expires_at_ms)


@dataclass(frozen=True, slots=True)
class RevokeApiKey:
    KIND: ClassVar[CommandKind] = CommandKind.REVOKE_API_KEY
    key_id: str

    def _write(self, w: Writer) -> None:
        w.text(self.key_id)

    @classmethod
    def _read(cls, r: Reader) -> RevokeApiKey:
        return cls(r.text("key_id"))


@dataclass(frozen=True, slots=True)
class SetApiKeyExpiry:
    """Make a key expire at ``expires_at_ms`` (Unix ms; 0: never): a
    rotation's grace period for the old key, or lifting an expiry."""

    KIND: ClassVar[CommandKind] = CommandKind.SET_API_KEY_EXPIRY
    key_id: str
    expires_at_ms: int

    def _write(self, w: Writer) -> None:
        w.text(self.key_id).i64(self.expires_at_ms)

    @classmethod
    def _read(cls, r: Reader) -> SetApiKeyExpiry:
        return cls(r.text("key_id"), r.i64("expires_at_ms"))


@dataclass(frozen=True, slots=True)
class SetQuota:
    """Replace ``tenant``'s whole quota override record with ``limits`` (a
    field None: the cluster default; all None removes the record).
    ``tenant`` "" sets the cluster defaults instead (a field None: the
    built-in default, ``quotas.BUILT_IN_DEFAULTS``)."""

    KIND: ClassVar[CommandKind] = CommandKind.SET_QUOTA
    tenant: str
    limits: QuotaLimits

    def _write(self, w: Writer) -> None:
        w.text(self.tenant)
        write_quota(w, self.limits)

    @classmethod
    def _read(cls, r: Reader) -> SetQuota:
        return cls(r.text("tenant"), read_quota(r))


# --- topics ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateTopic:
    """Create a topic with the replicas the proposer chose
    (``placement.place_partitions``): ``assignment[p]`` are partition
    ``p``'s replicas, preferred leader first. The compaction settings
    default to a ``delete`` topic's (version 1 carries none)."""

    KIND: ClassVar[CommandKind] = CommandKind.CREATE_TOPIC
    tenant: str
    name: str
    partitions: int
    replication_factor: int
    retention_ms: int | None
    retention_bytes: int | None
    assignment: tuple[tuple[int, ...], ...]
    cleanup_policy: str = "delete"
    min_compaction_lag_ms: int = 0
    delete_retention_ms: int = DEFAULT_DELETE_RETENTION_MS
    max_compaction_lag_ms: int | None = None

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

    def _compaction(self) -> tuple[str, int, int, int | None]:
        return (
            self.cleanup_policy,
            self.min_compaction_lag_ms,
            self.delete_retention_ms,
            self.max_compaction_lag_ms,
        )

    @property
    def wire_version(self) -> int:
        """1 while every compaction setting is its default (older nodes
        apply it), else 2."""
        return 1 if self._compaction() == _DEFAULT_COMPACTION else 2

    def _write(self, w: Writer) -> None:
        w.text(self.tenant).text(self.name).u32(self.partitions).u16(self.replication_factor)
        w.opt_i64(self.retention_ms).opt_i64(self.retention_bytes).u32(len(self.assignment))
        for replicas in self.assignment:
            w.ids(replicas)
        if self.wire_version == 2:
            write_compaction(w, self.config)

    @classmethod
    def _read(cls, r: Reader, version: int = 1) -> CreateTopic:
        tenant, name = r.text("tenant"), r.text("name")
        partitions, rf = r.u32("partitions"), r.u16("replication_factor")
        retention_ms, retention_bytes = r.opt_i64("retention_ms"), r.opt_i64("retention_bytes")
        count = r.u32("assignment (count)")
        # Each partition takes at least 2 bytes: a count beyond that is a lie
        # (and must not make us loop billions of times).
        if count * 2 > r.remaining:
            raise WireError(f"{r.what}: assignment count {count} runs past the end")
        assignment = tuple(r.ids(f"assignment[{p}]") for p in range(count))
        compaction = _DEFAULT_COMPACTION
        if version == 2:
            compaction = read_compaction(r)
            if compaction == _DEFAULT_COMPACTION:
                raise WireError(f"{r.what}: version 2 with default compaction settings (version 1 holds it)")
        return cls(tenant, name, partitions, rf, retention_ms, retention_bytes, assignment, *compaction)


@dataclass(frozen=True, slots=True)
class DeleteTopic:
    KIND: ClassVar[CommandKind] = CommandKind.DELETE_TOPIC
    tenant: str
    name: str

    def _write(self, w: Writer) -> None:
        w.text(self.tenant).text(self.name)

    @classmethod
    def _read(cls, r: Reader) -> DeleteTopic:
        return cls(r.text("tenant"), r.text("name"))


@dataclass(frozen=True, slots=True)
class AlterTopicConfig:
    """Replace a topic's settings with ``config`` (all of them: the
    proposer merges the request into the settings it read). Applies only
    to the topic created at ``topic_revision`` whose ``config_revision`` is
    still ``expected_config_revision``, so two concurrent changes cannot
    silently undo each other and a re-created topic is never changed by a
    request meant for its predecessor."""

    KIND: ClassVar[CommandKind] = CommandKind.ALTER_TOPIC_CONFIG
    tenant: str
    name: str
    topic_revision: int
    expected_config_revision: int
    config: TopicConfig

    def _write(self, w: Writer) -> None:
        w.text(self.tenant).text(self.name).u64(self.topic_revision).u64(self.expected_config_revision)
        w.opt_i64(self.config.retention_ms).opt_i64(self.config.retention_bytes)
        write_compaction(w, self.config)

    @classmethod
    def _read(cls, r: Reader) -> AlterTopicConfig:
        tenant, name = r.text("tenant"), r.text("name")
        topic_revision, expected = r.u64("topic_revision"), r.u64("expected_config_revision")
        retention_ms, retention_bytes = r.opt_i64("retention_ms"), r.opt_i64("retention_bytes")
        policy, min_lag, delete_retention, max_lag = read_compaction(r)
        config = TopicConfig(retention_ms, retention_bytes, policy, min_lag, delete_retention, max_lag)
        return cls(tenant, name, topic_revision, expected, config)


# --- nodes -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisterNode:
    """Add a node, or update a registered node's address, zone and
    eligibility (a restarted node may come back elsewhere). ``zone`` ""
    means no zone label."""

    KIND: ClassVar[CommandKind] = CommandKind.REGISTER_NODE
    node_id: int
    address: str
    zone: str
    controller_eligible: bool

    def _write(self, w: Writer) -> None:
        w.u64(self.node_id).text(self.address).text(self.zone).flag(self.controller_eligible)

    @classmethod
    def _read(cls, r: Reader) -> RegisterNode:
        return cls(r.u64("node_id"), r.text("address"), r.text("zone"), r.flag("controller_eligible"))


@dataclass(frozen=True, slots=True)
class SetNodeLiveness:
    """A liveness transition the controller leader observed (heartbeats
    themselves are not commands)."""

    KIND: ClassVar[CommandKind] = CommandKind.SET_NODE_LIVENESS
    node_id: int
    alive: bool

    def _write(self, w: Writer) -> None:
        w.u64(self.node_id).flag(self.alive)

    @classmethod
    def _read(cls, r: Reader) -> SetNodeLiveness:
        return cls(r.u64("node_id"), r.flag("alive"))


@dataclass(frozen=True, slots=True)
class DecommissionNode:
    """Start draining a node: no new replicas go to it; the proposer then
    moves its replicas away (``placement.plan_decommission``)."""

    KIND: ClassVar[CommandKind] = CommandKind.DECOMMISSION_NODE
    node_id: int

    def _write(self, w: Writer) -> None:
        w.u64(self.node_id)

    @classmethod
    def _read(cls, r: Reader) -> DecommissionNode:
        return cls(r.u64("node_id"))


@dataclass(frozen=True, slots=True)
class RemoveNode:
    """Forget a decommissioned node that holds no replicas any more."""

    KIND: ClassVar[CommandKind] = CommandKind.REMOVE_NODE
    node_id: int

    def _write(self, w: Writer) -> None:
        w.u64(self.node_id)

    @classmethod
    def _read(cls, r: Reader) -> RemoveNode:
        return cls(r.u64("node_id"))


# --- replica changes (one membership step each) -----------------------------------


@dataclass(frozen=True, slots=True)
class AddLearner:
    """Add ``node_id`` to ``group`` as a learner (receives the log, does not
    vote). Applies only if the group's revision is ``expected_revision``."""

    KIND: ClassVar[CommandKind] = CommandKind.ADD_LEARNER
    group: int
    node_id: int
    expected_revision: int

    def _write(self, w: Writer) -> None:
        w.u64(self.group).u64(self.node_id).u64(self.expected_revision)

    @classmethod
    def _read(cls, r: Reader) -> AddLearner:
        return cls(r.u64("group"), r.u64("node_id"), r.u64("expected_revision"))


@dataclass(frozen=True, slots=True)
class PromoteLearner:
    """Make learner ``node_id`` a voter at ``position`` in the replica list
    (0 = preferred leader; the voters from there on move one place back)."""

    KIND: ClassVar[CommandKind] = CommandKind.PROMOTE_LEARNER
    group: int
    node_id: int
    expected_revision: int
    position: int

    def _write(self, w: Writer) -> None:
        w.u64(self.group).u64(self.node_id).u64(self.expected_revision).u16(self.position)

    @classmethod
    def _read(cls, r: Reader) -> PromoteLearner:
        return cls(r.u64("group"), r.u64("node_id"), r.u64("expected_revision"), r.u16("position"))


@dataclass(frozen=True, slots=True)
class RemoveReplica:
    """Remove voter or learner ``node_id`` from ``group``."""

    KIND: ClassVar[CommandKind] = CommandKind.REMOVE_REPLICA
    group: int
    node_id: int
    expected_revision: int

    def _write(self, w: Writer) -> None:
        w.u64(self.group).u64(self.node_id).u64(self.expected_revision)

    @classmethod
    def _read(cls, r: Reader) -> RemoveReplica:
        return cls(r.u64("group"), r.u64("node_id"), r.u64("expected_revision"))


Command = (
    CreateTenant
    | DeleteTenant
    | CreateApiKey
    | RevokeApiKey
    | CreateTopic
    | DeleteTopic
    | RegisterNode
    | SetNodeLiveness
    | DecommissionNode
    | RemoveNode
    | AddLearner
    | PromoteLearner
    | RemoveReplica
    | AlterTopicConfig
    | SetQuota
    | SetApiKeyExpiry
)
"""Every command."""

ReplicaChange = AddLearner | PromoteLearner | RemoveReplica
"""The commands that change one group's replicas by one step."""

_CLASSES: dict[int, type[Command]] = {cls.KIND: cls for cls in get_args(Command)}
_NAMES: dict[int, str] = {kind: cls.__name__ for kind, cls in _CLASSES.items()}


def encode_command(command: Command) -> bytes:
    """The entry data for ``command``. Raises ``ValueError`` for a value that
    does not fit its field."""
    versioned = command if isinstance(command, CreateTopic | CreateApiKey) else None
    version = versioned.wire_version if versioned is not None else COMMAND_VERSION
    w = write_header(command.KIND, version)
    command._write(w)
    return bytes(w)


def decode_command(data: bytes) -> Command:
    """The command in one entry's data (see the module docstring for what
    it raises)."""
    kind, version = read_header(data, _NAMES)
    cls = _CLASSES[kind]
    reader = Reader(data, cls.__name__, start=HEADER_BYTES)
    try:
        if cls is CreateTopic or cls is CreateApiKey:
            command: Command = cls._read(reader, version)
        else:
            command = cls._read(reader)
        reader.finish()
    except WireError as exc:
        raise MalformedCommand(str(exc)) from None
    return command
