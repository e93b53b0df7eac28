"""The reconciler: make this node host what the controller says it should.

It watches the applied metadata (``ControllerReplica.version``) and, each
time it changed, compares the desired state with the local one:

- peers: the transport dials every registered node (at its ``--dial``
  override when there is one);
- replicas: every partition group the controller assigns to this node
  (voter or learner) is opened, bootstrapped with the assignment's members
  when the group is new;
- retirement: a replica no longer assigned here keeps running (so the
  group keeps its redundancy while the replacement catches up; if it leads,
  it hands leadership on) until the group's leader has removed it from the
  membership and that removal has committed (its own commit index, or the
  leader's NodeAdmin, says so), then it stops and its data is deleted; a
  replica of a group that no longer exists (topic deleted) is deleted at
  once; one whose removal nobody confirms is stopped after
  ``UNASSIGNED_GRACE_S`` with its data kept;
- settings: a replica opens with its topic's settings (retention,
  compaction), and when the topic's ``config_revision`` moves (an
  ``AlterTopicConfig`` applied) every replica of it hosted here is given
  the new ones (``Replica.update_config``);
- membership: for every group this node leads, the group's Raft
  configuration is moved toward its assignment, one change at a time
  (``next_membership_step``): missing members join as learners, a learner
  the assignment lists as a replica is promoted only once it holds the
  leader's whole log, and members the assignment dropped are removed only
  after every assigned replica votes (a leader that must go hands its
  leadership to a caught-up replica first).

Invariants:

- A new group is bootstrapped only from its first assignment (revision 1),
  which every initial member reads from the same committed entry, so all of
  them start with the same membership. A member added later (a learner of a
  moved replica) starts empty and is brought up by the group's leader
  (appends or a snapshot), never bootstrapped on its own.
- The reconciler only acts on applied (committed) metadata, and one pass at
  a time; a pass that fails is retried on the next change or after
  ``RETRY_S`` (catching up is not a metadata change, so passes also run on
  that timer).
- A replica's data is deleted only once the group can no longer count it:
  its removal committed, or the group is gone. A deletion the disk has no
  room for (below its freeing floor, partitions/disk_space.py) stops the replica,
  keeps the data, and is retried at the start of every pass; it never
  fails the pass or the node. (Belt and braces: a member
  whose log is empty refuses every vote until a leader has given it a log,
  raft/election.py.)
- Membership changes never shrink the voters below the assignment's
  replicas that are already voters plus one: a dead voter is removed only
  after its replacement was promoted, so the group keeps its quorum.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc

from cluster.controller import Assignment, Topic
from cluster.controller_replica import ControllerReplica
from cluster.tls.dial import PLAIN, Dialer
from cluster.transport.raft_transport import RaftTransport
from partitions.replica import Replica, ReplicaConfig
from partitions.replica_errors import ReplicaError
from partitions.replica_host import ReplicaHost
from partitions.storage_errors import NoSpaceForWrite
from raft.errors import ProposalDropped
from raft.types import ConfChange, ConfChangeType
from raftlog.internal.node_proof import NODE_ADMIN_STATS
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc

log = logging.getLogger(__name__)

RETRY_S = 1.0
CHANGE_TIMEOUT_S = 5.0
UNASSIGNED_GRACE_S = 300.0
"""How long a replica moved off this node keeps serving when no leader of
its group confirms that it was removed."""
ASK_LEADER_S = 2.0
ASK_TIMEOUT_S = 1.0
"""How often a retiring replica asks its group's leader about its removal."""


@dataclass
class Reconciler:
    node_id: int
    controller: ControllerReplica
    host: ReplicaHost
    transport: RaftTransport
    replica_config: Callable[[Topic], ReplicaConfig]
    static_peers: Mapping[int, str]
    """Peers from the cluster file (already with ``--dial`` overrides):
    needed before the controller has registered anyone."""
    dial: Mapping[int, str] = field(default_factory=dict)
    prove: Callable[[str], tuple[tuple[str, str], ...]] = lambda _method: ()
    """Call metadata with this node's proof for an internal method (NodeAdmin
    admits only nodes of the cluster, cluster/internal/internal_door.py)."""
    dialer: Dialer = PLAIN
    """Opens channels to other nodes (cluster/tls/dial.py)."""
    applied_version: int = -1
    """The controller version the last completed pass acted on (the node
    is ready once it covers the bootstrapped metadata)."""
    _config_revisions: dict[int, tuple[int, int]] = field(default_factory=dict)
    """group -> (topic revision, config revision) its replica's settings
    came from."""
    _unassigned_since: dict[int, float] = field(default_factory=dict)
    _last_asked: dict[int, float] = field(default_factory=dict)

    async def run(self) -> None:
        version = -1
        while True:
            version = self.controller.version
            try:
                await self.reconcile()
                self.applied_version = version
            except Exception:
                log.exception("reconcile pass failed; retrying")
            await self.controller.wait_changed(version, timeout=RETRY_S)

    async def reconcile(self) -> None:
        state = self.controller.state
        peers = dict(self.static_peers)
        for node in state.nodes():
            if node.node_id != self.node_id:
                peers[node.node_id] = self.dial.get(node.node_id, node.address)
        self.transport.set_peers(peers)

        wanted = {a.group: a for a in state.assignments_for_node(self.node_id)}
        for group in sorted(self.host.undeleted.difference(wanted)):
            await self._delete(group)
        for group, assignment in wanted.items():
            if self.host.replica(group) is None:
                try:
                    await self._open(assignment)
                except NoSpaceForWrite as exc:
                    # Reopening a group whose old copy is not deleted yet
                    # (or bootstrapping one) on a full disk: next pass.
                    log.warning("group %d: not opened on node %d, disk full (%s)", group, self.node_id, exc)

        now = time.monotonic()
        for group, replica in list(self.host.replicas.items()):
            target = wanted.get(group)
            if target is None:
                await self._retire(replica, state.assignment(group), now)
                continue
            self._unassigned_since.pop(group, None)
            self._push_config(replica, target)
            if replica.is_leader:
                await self._converge(replica, target)

    async def _retire(self, replica: Replica, assignment: Assignment | None, now: float) -> None:
        """A replica the metadata no longer places here: it keeps serving
        until the group has removed it (handing over leadership first if it
        leads), then it stops and its data is deleted."""
        group = replica.group
        since = self._unassigned_since.setdefault(group, now)
        if assignment is None:
            log.info("group %d no longer exists: deleting its replica on node %d", group, self.node_id)
        elif self.node_id not in replica.committed_members:
            log.info("group %d removed node %d: deleting its replica", group, self.node_id)
        elif replica.is_leader:
            await self._converge(replica, assignment)
            return
        elif await self._removal_committed(replica, assignment, now):
            # A leader takes a removal into its membership when it appends
            # it, and stops sending to the removed node: this node will
            # rarely see the entry commit itself, so it asks.
            log.info("group %d committed the removal of node %d: deleting its replica", group, self.node_id)
        elif now - since >= UNASSIGNED_GRACE_S:
            # Nobody confirms the removal committed: this copy may still be
            # one of the group's quorum. Stop serving, keep the data.
            log.warning(
                "group %d: node %d unassigned for %.0fs and no committed removal seen: "
                "stopping its replica, keeping its data",
                group,
                self.node_id,
                UNASSIGNED_GRACE_S,
            )
            self._unassigned_since.pop(group, None)
            self._last_asked.pop(group, None)
            self._config_revisions.pop(group, None)
            await self.host.remove_replica(group)
            return
        else:
            return
        self._unassigned_since.pop(group, None)
        self._last_asked.pop(group, None)
        self._config_revisions.pop(group, None)
        await self._delete(group)

    async def _delete(self, group: int) -> None:
        """Stop ``group``'s replica here and delete its data; on a disk
        below its freeing floor the replica stays stopped and the host keeps the
        group in ``undeleted``, which every pass retries."""
        retry = group in self.host.undeleted
        try:
            await self.host.remove_replica(group, delete_data=True)
        except NoSpaceForWrite as exc:
            if not retry:  # once, not every pass while the disk stays full
                log.warning(
                    "group %d: replica on node %d stopped, its data not deleted yet: disk full (%s); "
                    "retried every pass until space returns",
                    group,
                    self.node_id,
                    exc,
                )
            return
        if retry:
            log.info("group %d: the data of its old replica on node %d is deleted", group, self.node_id)

    async def _removal_committed(self, replica: Replica, assignment: Assignment, now: float) -> bool:
        """Whether the group's leader has committed this node's removal (a
        committed membership without this node; asked at most every
        ``ASK_LEADER_S``; False when no leader answers)."""
        if now - self._last_asked.get(replica.group, 0.0) < ASK_LEADER_S:
            return False
        self._last_asked[replica.group] = now
        candidates = [replica.leader, *assignment.replicas]
        for node in dict.fromkeys(n for n in candidates if n and n != self.node_id):
            known = self.controller.state.node(node)
            if known is None:
                continue
            status = await _replica_status(
                self.dial.get(node, known.address), replica.group, self.prove, self.dialer
            )
            if status is not None and status.role == "LEADER":
                # Committed, not merely appended: an appended removal is
                # undone if the leader dies before it commits.
                return self.node_id not in status.committed_members
        return False

    def _push_config(self, replica: Replica, assignment: Assignment) -> None:
        """Give ``replica`` its topic's settings if they changed since it
        got them (an alter applied)."""
        topic = self.controller.state.topic(assignment.tenant, assignment.topic)
        if topic is None or topic.revision != assignment.topic_revision:
            return
        revisions = (topic.revision, topic.config_revision)
        if self._config_revisions.get(replica.group) == revisions:
            return
        # Also when nothing is remembered (a replica this reconciler did not
        # open): giving the same settings again changes nothing.
        log.info(
            "group %d: topic %s/%s settings at entry %d: updating the replica",
            replica.group,
            topic.tenant,
            topic.name,
            topic.config_revision,
        )
        replica.update_config(self.replica_config(topic).partition)
        self._config_revisions[replica.group] = revisions

    async def _converge(self, replica: Replica, assignment: Assignment) -> None:
        step = next_membership_step(
            self.node_id, replica.voters, replica.learners, assignment, replica.caught_up
        )
        if step is None:
            return
        if isinstance(step, int):
            log.info("group %d: handing leadership to node %d before leaving", assignment.group, step)
            replica.transfer_leadership(step)
            return
        log.info("group %d: %s node %d", assignment.group, step.type.name, step.node_id)
        try:
            await asyncio.wait_for(replica.change_membership(step), CHANGE_TIMEOUT_S)
        except (ReplicaError, ProposalDropped, TimeoutError) as exc:
            log.info(
                "group %d: membership change %s not made (%r); retrying later", assignment.group, step, exc
            )

    async def _open(self, assignment: Assignment) -> None:
        topic = self.controller.state.topic(assignment.tenant, assignment.topic)
        if topic is None:  # deleted between the listing and now
            return
        config = self.replica_config(topic)
        self._config_revisions[assignment.group] = (topic.revision, topic.config_revision)
        if assignment.revision == 1:
            await self.host.add_replica(assignment.group, assignment.replicas, config, assignment.learners)
        else:
            await self.host.join_group(assignment.group, config)


def next_membership_step(
    me: int,
    voters: frozenset[int],
    learners: frozenset[int],
    assignment: Assignment,
    caught_up: Callable[[int], bool],
) -> ConfChange | int | None:
    """The next safe change that brings a group's Raft membership (as its
    leader ``me`` sees it) toward ``assignment``: a ``ConfChange`` to
    propose, a node id to hand leadership to, or None when there is
    nothing to do now."""
    members = voters | learners
    wanted_voters = set(assignment.replicas)
    wanted = wanted_voters | set(assignment.learners)
    missing = sorted(wanted - members, key=assignment.members.index)
    if missing:
        return ConfChange(ConfChangeType.ADD_LEARNER, missing[0])
    for node in assignment.replicas:
        if node in learners and caught_up(node):
            return ConfChange(ConfChangeType.ADD_VOTER, node)
    extra = sorted(members - wanted)
    for node in extra:
        if node in learners:
            return ConfChange(ConfChangeType.REMOVE_NODE, node)
    if extra and wanted_voters <= voters:
        if me in extra:
            heirs = [n for n in assignment.replicas if n != me and caught_up(n)]
            return heirs[0] if heirs else None
        return ConfChange(ConfChangeType.REMOVE_NODE, extra[0])
    return None


async def _replica_status(
    address: str, group: int, prove: Callable[[str], tuple[tuple[str, str], ...]], dialer: Dialer = PLAIN
) -> node_admin_pb2.ReplicaStats | None:
    """``group``'s replica on the node at ``address``, as that node reports
    it (None: unreachable, refused, or no such replica there)."""
    async with dialer.dial(address) as channel:
        try:
            stats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
                node_admin_pb2.StatsRequest(groups=[group]),
                timeout=ASK_TIMEOUT_S,
                metadata=prove(NODE_ADMIN_STATS),
            )
        except grpc.aio.AioRpcError:
            return None
    return next((r for r in stats.partitions if r.group == group), None)


async def wait_for(predicate: Callable[[], bool], interval: float = 0.05) -> None:
    """Poll ``predicate`` until it holds (cheap checks of local state)."""
    # Polled: the states it watches (controller applied index, reconciler
    # passes, bootstrap) are read from several owners, none of which signals
    # an event for it; the checks cost microseconds.
    while not predicate():  # noqa: ASYNC110
        await asyncio.sleep(interval)
