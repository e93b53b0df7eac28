"""The reconciler: make this node host what the controller says it should.

It watches the applied metadata (``ControllerReplica.version``) and, each
time it changed, compares the desired state with the local one:

- peers: the transport dials every registered node (at its ``--dial``
  override when there is one);
- replicas: every partition group the controller assigns to this node
  (voter or learner) is opened, bootstrapped with the assignment's members
  when the group is new; groups no longer assigned here are stopped.

Invariants:

- A new group is bootstrapped only from its first assignment (revision 1),
  which every initial member reads from the same committed entry, so all of
  them start with the same membership. A member added later (a learner of a
  moved replica) starts empty and is brought up by the group's leader
  (appends or a snapshot), never bootstrapped on its own.
- The reconciler only acts on applied (committed) metadata, and one pass at
  a time; a pass that fails is retried on the next change or after
  ``RETRY_S``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cluster.controller import Assignment, Topic
from cluster.controller_replica import ControllerReplica
from cluster.transport import RaftTransport
from partitions.replica import ReplicaConfig
from partitions.replica_host import ReplicaHost

log = logging.getLogger(__name__)

RETRY_S = 2.0


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
    passes: int = 0
    """Completed passes (tests and readiness wait on it)."""
    applied_version: int = -1
    """The controller version the last completed pass acted on."""

    async def run(self) -> None:
        version = -1
        while True:
            version = self.controller.version
            try:
                await self.reconcile()
                self.applied_version = version
                self.passes += 1
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
        for group, assignment in wanted.items():
            if self.host.replica(group) is None:
                await self._open(assignment)
        for group in [g for g in self.host.replicas if g not in wanted]:
            log.info("group %d is no longer assigned to node %d: stopping its replica", group, self.node_id)
            await self.host.remove_replica(group)

    async def _open(self, assignment: Assignment) -> None:
        topic = self.controller.state.topic(assignment.tenant, assignment.topic)
        if topic is None:  # deleted between the listing and now
            return
        config = self.replica_config(topic)
        if assignment.revision == 1:
            await self.host.add_replica(assignment.group, assignment.replicas, config, assignment.learners)
        else:
            await self.host.join_group(assignment.group, config)


async def wait_for(predicate: Callable[[], bool], interval: float = 0.05) -> None:
    """Poll ``predicate`` until it holds (cheap checks of local state)."""
    while not predicate():
        await asyncio.sleep(interval)
