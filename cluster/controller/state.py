"""The metadata state machine: what the controller's Raft log (group 0) means.

Every node applies the committed entries of group 0 in log order to one
``ControllerState`` (``apply`` for command entries, ``apply_noop`` for the
rest) and answers questions from it: who an API key is, which topics a tenant
has, which partitions a node should host.

Pure and deterministic: no I/O, clock or randomness, and nothing depends on
hash or insertion order (every listing and the snapshot are sorted). So the
same entries give the same state and the same snapshot bytes on every node,
and a state restored from a snapshot at index ``I`` that then applies the
entries after ``I`` equals one that applied them all.

Invariants (``check_invariants`` verifies them; tests call it after every
command, ``restore`` on every snapshot):

- Applied indexes strictly increase. A command is validated completely
  before anything changes: a ``Rejected`` command leaves the state exactly
  as a no-op entry would (only ``applied_index`` moves).
- Every topic's tenant exists (deleting a tenant requires it to have no
  topics). Tenants, API keys and quotas: tenancy.py (``TenancyTables``,
  which this class is), with their own invariants.
- A tenant's topics fit its effective ``partitions`` and ``topics`` quota
  when they are created (``check_new_topic``, tenancy.py); lowering a quota later
  leaves existing topics alone.
- Every topic has one assignment per partition, in Raft groups allocated
  from ``next_group_id`` (starting at 1: group 0 is the controller) and
  never reused; there are no other assignments.
- Every replica and learner is a registered node; voters are never empty
  and never overlap learners. New replicas go only to live nodes (alive and
  not decommissioning); existing ones stay where they are until a replica
  change moves them.
- Node addresses are unique.
- A tenant sees only its own topics: every tenant-facing query takes the
  tenant and looks only under it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from cluster.controller.commands import (
    AddLearner,
    AlterTopicConfig,
    Command,
    CreateApiKey,
    CreateTenant,
    CreateTopic,
    DecommissionNode,
    DeleteTenant,
    DeleteTopic,
    MalformedCommand,
    PromoteLearner,
    RegisterNode,
    RemoveNode,
    RemoveReplica,
    RevokeApiKey,
    SetApiKeyExpiry,
    SetNodeLiveness,
    SetQuota,
    decode_command,
)
from cluster.controller.model import (
    MAX_NODE_ID,
    MAX_PARTITIONS,
    MAX_REPLICATION_FACTOR,
    Assignment,
    Node,
    Topic,
    check_address,
    check_replication_factor,
    check_topic_config,
    check_topic_name,
    check_zone,
    shown,
)
from cluster.controller.results import (
    Applied,
    ApplyResult,
    AssignmentChanged,
    Rejected,
    RejectReason,
    TopicCreated,
)
from cluster.controller.snapshot import ControllerImage, CorruptSnapshot, decode_image, encode_image
from cluster.controller.tenancy import InconsistentState, TenancyTables
from cluster.primitives.pagination import Listing, Page, int_key, paginate, text_key

__all__ = ["ControllerState", "InconsistentState"]

R = RejectReason


class ControllerState(TenancyTables):
    """The applied metadata (see the module docstring)."""

    __slots__ = ("_applied_index", "_assignments", "_groups_on_node", "_next_group_id", "_nodes", "_topics")

    def __init__(self) -> None:
        super().__init__()
        self._applied_index = 0
        self._next_group_id = 1
        self._topics: dict[str, dict[str, Topic]] = {}
        """tenant -> topic name -> topic; every tenant has an entry."""
        self._nodes: dict[int, Node] = {}
        self._assignments: dict[int, Assignment] = {}
        self._groups_on_node: dict[int, set[int]] = {}
        """Derived: node -> the groups it is a voter or learner of."""

    # --- snapshots ----------------------------------------------------------------

    def image(self) -> ControllerImage:
        """The whole state, every table sorted by its key."""
        return ControllerImage(
            applied_index=self._applied_index,
            next_group_id=self._next_group_id,
            tenants=tuple(self._tenants[n] for n in sorted(self._tenants)),
            api_keys=tuple(self._api_keys[k] for k in sorted(self._api_keys)),
            nodes=tuple(self._nodes[n] for n in sorted(self._nodes)),
            topics=tuple(
                self._topics[tenant][name]
                for tenant in sorted(self._topics)
                for name in sorted(self._topics[tenant])
            ),
            assignments=tuple(self._assignments[g] for g in sorted(self._assignments)),
            quota_defaults=self._quota_defaults,
            tenant_quotas=self.quota_overrides(),
        )

    def snapshot(self) -> bytes:
        """The state as snapshot bytes at ``applied_index``: equal states give
        equal bytes."""
        return encode_image(self.image())

    @classmethod
    def restore(cls, data: bytes, *, index: int | None = None) -> ControllerState:
        """The state in ``snapshot()`` bytes; with ``index``, the snapshot
        must be at that index. Raises ``CorruptSnapshot``."""
        image = decode_image(data)
        if index is not None and image.applied_index != index:
            raise CorruptSnapshot(
                f"controller snapshot is at index {image.applied_index}, but was stored at {index}"
            )
        state = cls()
        state._applied_index = image.applied_index
        state._next_group_id = image.next_group_id
        state._tenants = {t.name: t for t in image.tenants}
        state._api_keys = {k.key_id: k for k in image.api_keys}
        state._nodes = {n.node_id: n for n in image.nodes}
        state._quota_defaults = image.quota_defaults
        state._tenant_quotas = dict(image.tenant_quotas)
        state._topics = {name: {} for name in state._tenants}
        for topic in image.topics:
            state._topics.setdefault(topic.tenant, {})[topic.name] = topic
        for assignment in image.assignments:
            state._assignments[assignment.group] = assignment
            state._index_members(assignment.group, assignment.members)
        try:
            state.check_invariants()
        except InconsistentState as exc:
            raise CorruptSnapshot(
                f"controller snapshot at {image.applied_index} is inconsistent: {exc}"
            ) from None
        return state

    def copy(self) -> ControllerState:
        """An independent copy (e.g. to try a plan on)."""
        return ControllerState.restore(self.snapshot())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ControllerState):
            return NotImplemented
        return self.image() == other.image()

    # --- applying the log ---------------------------------------------------------

    @property
    def applied_index(self) -> int:
        return self._applied_index

    @property
    def next_group_id(self) -> int:
        return self._next_group_id

    def _check_next(self, index: int) -> None:
        if index <= self._applied_index:
            raise ValueError(f"entry {index} applied after entry {self._applied_index}: out of order")

    def apply_noop(self, index: int) -> None:
        """An entry that is not a command (a leader's empty entry, a
        membership change of group 0)."""
        self._check_next(index)
        self._applied_index = index

    def apply(self, index: int, data: bytes) -> ApplyResult:
        """Apply the command in entry ``index``. Raises ``UnsupportedCommand``
        (before changing anything) for a command from a newer version, and
        ``ValueError`` for an index not after ``applied_index``."""
        self._check_next(index)
        command: Command | MalformedCommand
        try:
            command = decode_command(data)
        except MalformedCommand as exc:
            command = exc
        self._applied_index = index
        if isinstance(command, MalformedCommand):
            return Rejected(R.INVALID_COMMAND, f"entry {index}: {command}")
        return self._execute(index, command)

    def _execute(self, index: int, command: Command) -> ApplyResult:
        match command:
            case CreateTenant():
                return self._create_tenant(index, command)
            case DeleteTenant():
                return self._delete_tenant(index, command)
            case CreateApiKey():
                return self._create_api_key(index, command)
            case RevokeApiKey():
                return self._revoke_api_key(index, command)
            case SetApiKeyExpiry():
                return self._set_api_key_expiry(index, command)
            case SetQuota():
                return self._set_quota(index, command)
            case CreateTopic():
                return self._create_topic(index, command)
            case AlterTopicConfig():
                return self._alter_topic_config(index, command)
            case DeleteTopic():
                return self._delete_topic(index, command)
            case RegisterNode():
                return self._register_node(index, command)
            case SetNodeLiveness():
                return self._set_liveness(index, command)
            case DecommissionNode():
                return self._decommission(index, command)
            case RemoveNode():
                return self._remove_node(index, command)
            case AddLearner() | PromoteLearner() | RemoveReplica():
                return self._change_replicas(index, command)

    # --- topics ---

    def _create_topic(self, index: int, c: CreateTopic) -> ApplyResult:
        topics = self._topics.get(c.tenant)
        if topics is None:
            return Rejected(R.UNKNOWN_TENANT, f"no tenant {shown(c.tenant)}")
        if problem := check_topic_name(c.name):
            return Rejected(R.INVALID_NAME, problem)
        if c.name in topics:
            return Rejected(R.TOPIC_EXISTS, f"tenant {shown(c.tenant)} already has a topic {shown(c.name)}")
        if rejected := self.check_new_topic(c.tenant, c.partitions):
            return rejected
        if problem := check_replication_factor(c.replication_factor):
            return Rejected(R.INVALID_REPLICATION_FACTOR, problem)
        live = sum(1 for node in self._nodes.values() if node.can_host)
        if c.replication_factor > live:
            return Rejected(
                R.REPLICATION_FACTOR_TOO_LARGE,
                f"replication factor {c.replication_factor} is more than the {live} live node(s)",
            )
        if rejected := check_topic_config(c.config):
            return rejected
        if rejected := self._check_assignment(c):
            return rejected
        first = self._next_group_id
        groups = tuple(range(first, first + c.partitions))
        self._next_group_id = first + c.partitions
        topics[c.name] = Topic(
            c.tenant,
            c.name,
            c.partitions,
            c.replication_factor,
            c.retention_ms,
            c.retention_bytes,
            index,
            groups,
            c.cleanup_policy,
            c.min_compaction_lag_ms,
            c.delete_retention_ms,
            c.max_compaction_lag_ms,
        )
        for partition, (group, replicas) in enumerate(zip(groups, c.assignment, strict=True)):
            self._assignments[group] = Assignment(group, c.tenant, c.name, index, partition, replicas, (), 1)
            self._index_members(group, replicas)
        return TopicCreated(index, index, groups)

    def _check_assignment(self, c: CreateTopic) -> Rejected | None:
        if len(c.assignment) != c.partitions:
            return Rejected(
                R.INVALID_ASSIGNMENT, f"{len(c.assignment)} replica lists for {c.partitions} partitions"
            )
        for partition, replicas in enumerate(c.assignment):
            if len(replicas) != c.replication_factor or len(set(replicas)) != len(replicas):
                return Rejected(
                    R.INVALID_ASSIGNMENT,
                    f"partition {partition}: replicas {list(replicas)} are not "
                    f"{c.replication_factor} distinct nodes",
                )
            for node_id in replicas:
                node = self._nodes.get(node_id)
                if node is None:
                    return Rejected(R.INVALID_ASSIGNMENT, f"partition {partition}: no node {node_id}")
                if not node.can_host:
                    return Rejected(R.NODE_UNAVAILABLE, f"partition {partition}: {_why_unavailable(node)}")
        return None

    def _alter_topic_config(self, index: int, c: AlterTopicConfig) -> ApplyResult:
        topics = self._topics.get(c.tenant)
        if topics is None:
            return Rejected(R.UNKNOWN_TENANT, f"no tenant {shown(c.tenant)}")
        topic = topics.get(c.name)
        if topic is None or topic.revision != c.topic_revision:
            return Rejected(R.UNKNOWN_TOPIC, f"tenant {shown(c.tenant)} has no topic {shown(c.name)}")
        if topic.config_revision != c.expected_config_revision:
            return Rejected(
                R.STALE_REVISION,
                f"topic {shown(c.name)}'s settings changed at entry {topic.config_revision}: "
                "read them again and retry",
            )
        if rejected := check_topic_config(c.config):
            return rejected
        config = c.config
        topics[c.name] = replace(
            topic,
            retention_ms=config.retention_ms,
            retention_bytes=config.retention_bytes,
            cleanup_policy=config.cleanup_policy,
            min_compaction_lag_ms=config.min_compaction_lag_ms,
            delete_retention_ms=config.delete_retention_ms,
            max_compaction_lag_ms=config.max_compaction_lag_ms,
            config_revision=index,
        )
        return Applied(index)

    def _delete_topic(self, index: int, c: DeleteTopic) -> ApplyResult:
        topics = self._topics.get(c.tenant)
        if topics is None:
            return Rejected(R.UNKNOWN_TENANT, f"no tenant {shown(c.tenant)}")
        topic = topics.pop(c.name, None)
        if topic is None:
            return Rejected(R.UNKNOWN_TOPIC, f"tenant {shown(c.tenant)} has no topic {shown(c.name)}")
        for group in topic.groups:
            assignment = self._assignments.pop(group)
            self._unindex_members(group, assignment.members)
        return Applied(index)

    # --- nodes ---

    def _register_node(self, index: int, c: RegisterNode) -> ApplyResult:
        if not 1 <= c.node_id <= MAX_NODE_ID:
            return Rejected(R.INVALID_NODE, f"node id must be 1-{MAX_NODE_ID}, got {c.node_id}")
        if problem := check_address(c.address) or check_zone(c.zone):
            return Rejected(R.INVALID_NODE, f"node {c.node_id}: {problem}")
        for other in self._nodes.values():
            if other.address == c.address and other.node_id != c.node_id:
                return Rejected(R.ADDRESS_IN_USE, f"node {other.node_id} is registered at {c.address}")
        existing = self._nodes.get(c.node_id)
        if existing is not None and existing.decommissioning:
            return Rejected(
                R.NODE_DECOMMISSIONING,
                f"node {c.node_id} is being decommissioned; remove it before reusing its id",
            )
        # (Re-)registering is what a starting node does: it is alive.
        self._nodes[c.node_id] = Node(c.node_id, c.address, c.zone, c.controller_eligible, alive=True)
        return Applied(index)

    def _set_liveness(self, index: int, c: SetNodeLiveness) -> ApplyResult:
        node = self._nodes.get(c.node_id)
        if node is None:
            return Rejected(R.UNKNOWN_NODE, f"no node {c.node_id}")
        if node.alive == c.alive:
            return Rejected(
                R.LIVENESS_UNCHANGED, f"node {c.node_id} is already {'alive' if c.alive else 'dead'}"
            )
        self._nodes[c.node_id] = replace(node, alive=c.alive)
        return Applied(index)

    def _decommission(self, index: int, c: DecommissionNode) -> ApplyResult:
        node = self._nodes.get(c.node_id)
        if node is None:
            return Rejected(R.UNKNOWN_NODE, f"no node {c.node_id}")
        if node.decommissioning:
            return Rejected(R.NODE_DECOMMISSIONING, f"node {c.node_id} is already being decommissioned")
        self._nodes[c.node_id] = replace(node, decommissioning=True)
        return Applied(index)

    def _remove_node(self, index: int, c: RemoveNode) -> ApplyResult:
        node = self._nodes.get(c.node_id)
        if node is None:
            return Rejected(R.UNKNOWN_NODE, f"no node {c.node_id}")
        if not node.decommissioning:
            return Rejected(R.NODE_NOT_DECOMMISSIONING, f"decommission node {c.node_id} before removing it")
        if groups := self._groups_on_node.get(c.node_id):
            return Rejected(
                R.NODE_HAS_REPLICAS,
                f"node {c.node_id} still has {len(groups)} replica(s) (e.g. group {min(groups)}): move them first",
            )
        del self._nodes[c.node_id]
        return Applied(index)

    # --- replica changes ---

    def _change_replicas(self, index: int, c: AddLearner | PromoteLearner | RemoveReplica) -> ApplyResult:
        a = self._assignments.get(c.group)
        if a is None:
            return Rejected(R.UNKNOWN_GROUP, f"no partition has group {c.group}")
        if a.revision != c.expected_revision:
            return Rejected(
                R.STALE_REVISION,
                f"group {c.group} is at revision {a.revision}, not {c.expected_revision}: plan again",
            )
        replicas, learners = a.replicas, a.learners
        match c:
            case AddLearner():
                node = self._nodes.get(c.node_id)
                if node is None:
                    return Rejected(R.UNKNOWN_NODE, f"no node {c.node_id}")
                if c.node_id in a.members:
                    return Rejected(R.ALREADY_REPLICA, f"node {c.node_id} already replicates group {c.group}")
                if not node.can_host:
                    return Rejected(R.NODE_UNAVAILABLE, _why_unavailable(node))
                learners = tuple(sorted((*learners, c.node_id)))
                self._index_members(c.group, (c.node_id,))
            case PromoteLearner():
                if c.node_id not in learners:
                    return Rejected(R.NOT_A_LEARNER, f"node {c.node_id} is not a learner of group {c.group}")
                if c.position > len(replicas):
                    return Rejected(
                        R.INVALID_POSITION, f"position {c.position} is past the {len(replicas)} voter(s)"
                    )
                node = self._nodes[c.node_id]
                if not node.can_host:
                    return Rejected(R.NODE_UNAVAILABLE, _why_unavailable(node))
                learners = tuple(n for n in learners if n != c.node_id)
                replicas = (*replicas[: c.position], c.node_id, *replicas[c.position :])
            case RemoveReplica():
                if c.node_id in learners:
                    learners = tuple(n for n in learners if n != c.node_id)
                elif c.node_id in replicas:
                    if len(replicas) == 1:
                        return Rejected(R.LAST_VOTER, f"node {c.node_id} is group {c.group}'s only voter")
                    replicas = tuple(n for n in replicas if n != c.node_id)
                else:
                    return Rejected(R.NOT_A_REPLICA, f"node {c.node_id} does not replicate group {c.group}")
                self._unindex_members(c.group, (c.node_id,))
        revision = a.revision + 1
        self._assignments[c.group] = replace(a, replicas=replicas, learners=learners, revision=revision)
        return AssignmentChanged(index, c.group, revision)

    def _index_members(self, group: int, nodes: Iterable[int]) -> None:
        for node_id in nodes:
            self._groups_on_node.setdefault(node_id, set()).add(group)

    def _unindex_members(self, group: int, nodes: Iterable[int]) -> None:
        for node_id in nodes:
            groups = self._groups_on_node[node_id]
            groups.discard(group)
            if not groups:
                del self._groups_on_node[node_id]

    def topic(self, tenant: str, name: str) -> Topic | None:
        return self._topics.get(tenant, {}).get(name)

    def topics_for(self, tenant: str) -> tuple[Topic, ...]:
        """``tenant``'s topics by name (none for an unknown tenant)."""
        topics = self._topics.get(tenant, {})
        return tuple(topics[name] for name in sorted(topics))

    def list_topics(self, tenant: str, page_size: int = 0, page_token: str = "") -> Page[Topic]:
        rows = [(text_key(t.name), t) for t in self.topics_for(tenant)]
        return paginate(Listing("topics", (tenant,)), rows, page_size, page_token)

    def partition(self, tenant: str, topic: str, partition: int) -> Assignment | None:
        """Partition ``partition`` of ``tenant``'s topic, or None."""
        found = self.topic(tenant, topic)
        if found is None or not 0 <= partition < found.partitions:
            return None
        return self._assignments[found.groups[partition]]

    def list_partitions(
        self, tenant: str, topic: str, page_size: int = 0, page_token: str = ""
    ) -> Page[Assignment]:
        """The partitions of ``tenant``'s topic in order (none for an unknown
        topic). A token is bound to the topic's revision: it does not carry
        over to a re-created topic of the same name."""
        found = self.topic(tenant, topic)
        rows = (
            [] if found is None else [(int_key(p), self._assignments[g]) for p, g in enumerate(found.groups)]
        )
        revision = "" if found is None else str(found.revision)
        return paginate(Listing("partitions", (tenant, topic, revision)), rows, page_size, page_token)

    # --- queries: nodes and assignments -------------------------------------------

    def node(self, node_id: int) -> Node | None:
        return self._nodes.get(node_id)

    def nodes(self) -> tuple[Node, ...]:
        """Every registered node, by id."""
        return tuple(self._nodes[n] for n in sorted(self._nodes))

    def list_nodes(self, page_size: int = 0, page_token: str = "") -> Page[Node]:
        rows = [(int_key(n.node_id), n) for n in self.nodes()]
        return paginate(Listing("nodes"), rows, page_size, page_token)

    def live_nodes(self) -> tuple[Node, ...]:
        """The nodes new replicas may go to (alive, not decommissioning)."""
        return tuple(n for n in self.nodes() if n.can_host)

    def assignment(self, group: int) -> Assignment | None:
        return self._assignments.get(group)

    def assignments(self) -> tuple[Assignment, ...]:
        """Every partition's assignment, by group."""
        return tuple(self._assignments[g] for g in sorted(self._assignments))

    def assignments_for_node(self, node_id: int) -> tuple[Assignment, ...]:
        """What ``node_id``'s reconciler should host (as voter or learner),
        by group: each with its topic, partition, replicas and revision."""
        return tuple(self._assignments[g] for g in sorted(self._groups_on_node.get(node_id, ())))

    # --- invariants ---------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise ``InconsistentState`` if any invariant does not hold."""
        applied = self._applied_index
        if self._next_group_id < 1:
            raise InconsistentState(f"next group id {self._next_group_id}")
        if sorted(self._topics) != sorted(self._tenants):
            raise InconsistentState("the topic table and the tenant table name different tenants")
        self._check_tenancy(applied)
        addresses: set[str] = set()
        for node_id, node in self._nodes.items():
            if node.node_id != node_id or not 1 <= node_id <= MAX_NODE_ID:
                raise InconsistentState(f"node {node_id}")
            if check_address(node.address) or check_zone(node.zone) or node.address in addresses:
                raise InconsistentState(f"node {node_id}: address {node.address!r} or zone {node.zone!r}")
            addresses.add(node.address)
        seen_groups: set[int] = set()
        for tenant_name, topics in self._topics.items():
            for name, topic in topics.items():
                where = f"topic {tenant_name}/{name}"
                if topic.tenant != tenant_name or topic.name != name or check_topic_name(name):
                    raise InconsistentState(where)
                if not 1 <= topic.partitions <= MAX_PARTITIONS or len(topic.groups) != topic.partitions:
                    raise InconsistentState(
                        f"{where}: {topic.partitions} partitions, {len(topic.groups)} groups"
                    )
                if not 1 <= topic.replication_factor <= MAX_REPLICATION_FACTOR or topic.revision > applied:
                    raise InconsistentState(f"{where}: replication factor or revision")
                if check_topic_config(topic.config) or not (
                    topic.config_revision == 0 or topic.revision < topic.config_revision <= applied
                ):
                    raise InconsistentState(f"{where}: settings or their revision")
                for partition, group in enumerate(topic.groups):
                    a = self._assignments.get(group)
                    if group in seen_groups or not 1 <= group < self._next_group_id or a is None:
                        raise InconsistentState(f"{where} partition {partition}: group {group}")
                    if (a.tenant, a.topic, a.partition, a.topic_revision) != (
                        tenant_name,
                        name,
                        partition,
                        topic.revision,
                    ):
                        raise InconsistentState(
                            f"{where} partition {partition}: assignment of group {group} is for another"
                        )
                    seen_groups.add(group)
        if seen_groups != set(self._assignments):
            raise InconsistentState(
                f"assignments of no topic: groups {sorted(set(self._assignments) - seen_groups)}"
            )
        index: dict[int, set[int]] = {}
        for group, a in self._assignments.items():
            members = a.members
            if a.group != group or not a.replicas or len(set(members)) != len(members) or a.revision < 1:
                raise InconsistentState(f"group {group}: replicas {a.replicas}, learners {a.learners}")
            if list(a.learners) != sorted(a.learners):
                raise InconsistentState(f"group {group}: learners {a.learners} not sorted")
            for node_id in members:
                if node_id not in self._nodes:
                    raise InconsistentState(f"group {group}: unregistered node {node_id}")
                index.setdefault(node_id, set()).add(group)
        if index != self._groups_on_node:
            raise InconsistentState("the node -> groups index is out of date")


def _why_unavailable(node: Node) -> str:
    if node.decommissioning:
        return f"node {node.node_id} is being decommissioned"
    return f"node {node.node_id} is dead"
