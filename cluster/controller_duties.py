"""What the controller leader does on its own, without being asked.

Liveness and repair: the leader watches every registered node through its
Raft transport (a peer is up while its pings arrive, cluster/transport/raft_transport.py).
A node silent for ``dead_after_s`` is marked dead (``SetNodeLiveness``),
and marked alive again when it is heard from. Every replica of a dead or
decommissioning node is moved to a live node (placement.py chooses; each
move is ``AddLearner``, ``PromoteLearner``, ``RemoveReplica`` proposed back
to back, so the assignment states where the group must end up). The
partition's own leader then moves the group's Raft membership there one
safe step at a time (cluster/reconciler.py: the new node joins as a
learner, becomes a voter only once it holds the whole log, and the old
node is removed last), so the metadata can run ahead of the data but the
group never loses its quorum or a committed entry.

Membership and balance: every registered node is made a member of group 0
(a learner when it is not a voter), so nodes that joined after the cluster
was made (cluster/internal/join.py) follow the metadata. While no dead or draining
node holds a replica, replicas are moved a few at a time from the
most to the least loaded nodes (``rebalance_plan``), so a new node, or one
that came back after its replicas were moved away, gets its share.

Bootstrap: a new cluster's metadata is made from the cluster file by
whichever node first leads group 0 — every node of the file registered
(address, controller eligibility, and the file's zone until the node
registers its own), the ``default`` tenant, the first
operator key, the file's topics in the default tenant, and the consumer
groups' internal topic (``__system/__consumer_offsets``) and the audit
topic (``__system/__audit``, cluster/audit/). Each step looks
at the applied state first, so a leader that takes over half-way finishes
the job and a restarted cluster does nothing.

Quota defaults: the cluster file's ``[quotas]`` is where the cluster's
default quotas are set. Whenever the applied defaults
(``ControllerState.quota_defaults``) differ from the file's laid over the
built-ins, the leader proposes ``SetQuota("", <the file's>)``, so a changed
file takes effect once a node started with it leads group 0 (and a key
removed from the file goes back to its built-in default).

The operator key is the one in the file ``raftlog serve --bootstrap-key-file``
names, read once at start (``read_bootstrap_key_file``; ``make run`` and
test clusters choose the key so they can hand it to users); otherwise the
leader issues one and writes it to ``<data dir>/operator.key`` (mode 0600)
*before* proposing it, so a key that commits is never lost.
``RAFTLOG_BOOTSTRAP_API_KEY`` (the clear key in the environment) still
works but is discouraged, and logged as such: a process's environment
outlives its use (``/proc/<pid>/environ``, child processes, crash reports)
and the key in it is an operator key for as long as it is not revoked.

Invariants:

- Only the leader of group 0 proposes, and only what the state it has
  applied lacks; every command is checked again when applied, so a stale
  view costs at most a rejected command, never a wrong state.
- A node is declared dead only by a leader that has itself watched it be
  silent for ``dead_after_s`` (a new leader starts watching from zero), so
  a leader change never shortens the grace period.
- The clear operator key never enters the log (only its salted hash).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cluster.audit.events import AUDIT_TOPIC
from cluster.controller import (
    CreateApiKey,
    CreateTenant,
    CreateTopic,
    Move,
    RegisterNode,
    Rejected,
    SetNodeLiveness,
    SetQuota,
    encode_command,
    issue_api_key,
    place_partitions,
    plan_decommission,
    rebalance_plan,
    replacements_for_dead_node,
)
from cluster.controller.api_keys import key_command, parse_api_key
from cluster.controller.commands import Command
from cluster.controller.quotas import BUILT_IN_DEFAULTS, overlay
from cluster.controller_replica import ControllerReplica
from cluster.groups.group_logs import OFFSETS_TOPIC, SYSTEM_TENANT
from cluster.private_file import write_private
from cluster.static_config import StaticCluster
from partitions.replica_errors import ReplicaError
from raft.errors import ProposalDropped
from raft.types import ConfChange, ConfChangeType

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
BOOTSTRAP_API_KEY_ENV = "RAFTLOG_BOOTSTRAP_API_KEY"
"""Discouraged (see the module docstring): use ``--bootstrap-key-file``."""
RECHECK_S = 1.0
CHANGE_TIMEOUT_S = 5.0
REBALANCE_INTERVAL_S = 5.0
REBALANCE_MOVES = 4


class BadBootstrapKey(ValueError):
    pass


def operator_key_command(clear_key: str) -> CreateApiKey:
    """The command that stores ``clear_key`` (an operator key chosen by
    whoever started the cluster) as a salted hash."""
    parsed = parse_api_key(clear_key)
    if parsed is None:
        raise BadBootstrapKey(
            "the bootstrap operator key is not an API key (expected rlk_<16 hex>_<43 base64url characters)"
        )
    key_id, secret = parsed
    return key_command(key_id, None, secret)


def read_bootstrap_key_file(path: Path) -> str:
    """The operator key in ``path`` (one line), checked: ``BadBootstrapKey``
    for anything else, ``OSError`` when it cannot be read. The message never
    shows the file's content."""
    key = path.read_text(encoding="ascii", errors="replace").strip()
    if parse_api_key(key) is None:
        raise BadBootstrapKey(
            f"{path}: not an API key (expected one line rlk_<16 hex>_<43 base64url characters>)"
        )
    return key


def bootstrap_key_from_env(environ: Mapping[str, str] = os.environ) -> str | None:
    """The discouraged ``RAFTLOG_BOOTSTRAP_API_KEY``, with a warning when set."""
    key = environ.get(BOOTSTRAP_API_KEY_ENV, "").strip()
    if not key:
        return None
    log.warning(
        "%s is set: the operator key stays in this process's environment; "
        "pass it with --bootstrap-key-file instead",
        BOOTSTRAP_API_KEY_ENV,
    )
    return key


@dataclass
class ControllerDuties:
    node_id: int
    controller: ControllerReplica
    cluster: StaticCluster
    data_dir: Path
    bootstrap_key: str | None = field(default=None, repr=False)  # a clear operator key
    peer_alive: Callable[[int], bool] = lambda _node: True
    dead_after_s: float = 10.0
    _silent_since: dict[int, float] = field(default_factory=dict)
    _reported_stuck: set[int] = field(default_factory=set)
    _last_rebalance: float = 0.0

    async def run(self) -> None:
        version = -1
        while True:
            if self.controller.is_leader:
                try:
                    await self.bootstrap()
                    await self.sync_quota_defaults()
                    await self.admit_learners()
                    await self.watch_nodes()
                    await self.repair()
                    await self.rebalance()
                except (
                    ReplicaError,
                    ProposalDropped,
                    TimeoutError,
                ) as exc:  # lost leadership, backpressure: look again
                    log.info("controller duties paused: %s", exc)
            else:
                self._silent_since.clear()
            version = await self.controller.wait_changed(version, timeout=RECHECK_S)

    async def sync_quota_defaults(self) -> None:
        """Make the applied cluster default quotas the cluster file's
        ``[quotas]`` (see the module docstring); nothing when they agree."""
        wanted = self.cluster.quota_defaults
        if self.controller.state.quota_defaults() != overlay(BUILT_IN_DEFAULTS, wanted):
            log.warning("setting the cluster's default quotas from the cluster file: %s", wanted)
            await self._submit(SetQuota("", wanted))

    async def admit_learners(self) -> None:
        """Make every registered node a member of group 0 (a learner unless
        it is a voter), so it follows the metadata: the voters' bootstrap
        membership only knows the nodes of their cluster file, not the ones
        that joined since (cluster/internal/join.py)."""
        for node in self.controller.state.nodes():
            if node.node_id not in self.controller.members:
                log.warning("adding node %d to the metadata controller as a learner", node.node_id)
                change = ConfChange(ConfChangeType.ADD_LEARNER, node.node_id)
                await asyncio.wait_for(self.controller.change_membership(change), CHANGE_TIMEOUT_S)

    async def rebalance(self) -> None:
        """Even out replica counts (a node that joined, or came back empty
        after its replicas were moved away, gets its share): at most
        ``REBALANCE_MOVES`` moves every ``REBALANCE_INTERVAL_S``, and only
        while no dead or decommissioning node holds a replica, so repair
        always goes first and the reconcilers are not flooded with
        catch-ups."""
        now = time.monotonic()
        state = self.controller.state
        if now - self._last_rebalance < REBALANCE_INTERVAL_S:
            return
        if any(state.assignments_for_node(n.node_id) for n in state.nodes() if not n.can_host):
            return  # repair or a drain is still under way
        self._last_rebalance = now
        for move in rebalance_plan(state, REBALANCE_MOVES).moves:
            await self._make_move(move, "rebalancing: ")

    async def watch_nodes(self) -> None:
        """Propose the liveness transitions this leader has observed."""
        now = time.monotonic()
        for node in self.controller.state.nodes():
            if node.node_id == self.node_id or self.peer_alive(node.node_id):
                self._silent_since.pop(node.node_id, None)
                if not node.alive:
                    log.warning("node %d is back: marking it alive", node.node_id)
                    await self._submit(SetNodeLiveness(node.node_id, True))
                continue
            since = self._silent_since.setdefault(node.node_id, now)
            if node.alive and now - since >= self.dead_after_s:
                log.warning("node %d silent for %.1fs: marking it dead", node.node_id, now - since)
                await self._submit(SetNodeLiveness(node.node_id, False))

    async def repair(self) -> None:
        """Move every replica off dead and decommissioning nodes."""
        for node in self.controller.state.nodes():
            state = self.controller.state
            if node.can_host:
                continue
            plan = (
                plan_decommission(state, node.node_id)
                if node.decommissioning
                else replacements_for_dead_node(state, node.node_id)
            )
            for group in set(plan.stuck) - self._reported_stuck:
                log.error(
                    "group %d cannot leave node %d: too few live voters or no live node to take it "
                    "(an operator must add nodes or bring nodes back)",
                    group,
                    node.node_id,
                )
            self._reported_stuck |= set(plan.stuck)
            for move in plan.moves:
                await self._make_move(move)

    def bootstrapped(self) -> bool:
        """Whether the applied state has everything the cluster file asks for."""
        return next(self._missing(), None) is None

    async def _make_move(self, move: Move, why: str = "") -> None:
        """Propose ``move``'s steps back to back, stopping at the first one
        rejected (the group changed under the plan: plan again next round)."""
        log.warning(
            "%smoving group %d's replica from node %d to node %d",
            why,
            move.group,
            move.old_node,
            move.new_node,
        )
        for step in move.steps:
            if not await self._submit(step):
                break

    async def _submit(self, command: Command) -> bool:
        """Propose ``command``; False (logged) if it was rejected."""
        result = await self.controller.submit(encode_command(command))
        if isinstance(result, Rejected):
            log.warning("%s rejected: %s (%s)", type(command).__name__, result.message, result.reason)
            return False
        return True

    async def bootstrap(self) -> None:
        for make in self._missing():
            await self._submit(await make())

    def _missing(self) -> Iterator[Callable[[], Awaitable[Command]]]:
        """What the applied state lacks of the bootstrap, as makers of the
        commands to propose, in order. Lazy: each check reads the state
        after the commands proposed before it (the system tenant before its
        topic; the file topics before the offsets topic, so that their Raft
        group ids stay 1..N)."""

        def ready(command: Command) -> Callable[[], Awaitable[Command]]:
            async def make() -> Command:
                return command

            return make

        voters = set(self.cluster.controller_voters())
        for spec in self.cluster.nodes:
            known = self.controller.state.node(spec.id)
            # The file's zone only for a node not registered yet: a node
            # learns its own zone when it starts (a pod's, raftlog serve
            # --zone) and keeps its registration's zone in step itself
            # (cluster/internal/join.py), so the leader never undoes it.
            wanted = (spec.address, spec.id in voters)
            if known is None or (known.address, known.controller_eligible) != wanted:
                zone = spec.zone if known is None else known.zone
                yield ready(RegisterNode(spec.id, spec.address, zone, spec.id in voters))
        for tenant in (DEFAULT_TENANT, SYSTEM_TENANT):
            if self.controller.state.tenant(tenant) is None:
                yield ready(CreateTenant(tenant))
        if not self.controller.state.list_api_keys(None).items:
            yield self._operator_key
        for topic in self.cluster.topics:
            if self.controller.state.topic(DEFAULT_TENANT, topic.name) is None:
                yield ready(
                    CreateTopic(
                        DEFAULT_TENANT,
                        topic.name,
                        topic.partitions,
                        len(topic.replicas),
                        topic.retention_ms,
                        topic.retention_bytes,
                        self.cluster.initial_assignment(topic),
                    )
                )
        state = self.controller.state
        if state.topic(SYSTEM_TENANT, OFFSETS_TOPIC) is None:
            # The consumer groups' internal topic (cluster/groups/group_logs.py):
            # compacted, since what it holds is state (the latest commit per
            # group and partition, the latest metadata per group; every
            # record is keyed and a deleted group is a tombstone), kept
            # forever (no time or size retention).
            partitions, rf = self.cluster.offsets_partitions, min(3, len(state.live_nodes()))
            yield ready(
                CreateTopic(
                    SYSTEM_TENANT,
                    OFFSETS_TOPIC,
                    partitions,
                    rf,
                    None,
                    None,
                    place_partitions(state, partitions, rf),
                    cleanup_policy="compact",
                )
            )
        state = self.controller.state
        if state.topic(SYSTEM_TENANT, AUDIT_TOPIC) is None:
            # The audit trail (cluster/audit/): one partition (one order for
            # rare events), kept forever (no retention), after the offsets
            # topic so that topic's Raft group ids stay what they were.
            rf = min(3, len(state.live_nodes()))
            yield ready(
                CreateTopic(SYSTEM_TENANT, AUDIT_TOPIC, 1, rf, None, None, place_partitions(state, 1, rf))
            )

    async def _operator_key(self) -> CreateApiKey:
        if self.bootstrap_key:
            return operator_key_command(self.bootstrap_key)
        issued = issue_api_key(None)
        path = self.data_dir / "operator.key"
        await asyncio.to_thread(write_private, path, issued.clear_text + "\n")
        log.warning(
            "bootstrap: issued the first operator key; it is in %s (readable by this user only)", path
        )
        return issued.command
