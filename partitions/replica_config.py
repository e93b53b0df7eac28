"""``ReplicaConfig``: how one replica drives its Raft group (timing, batch
and in-flight limits, hibernation, the partition's own settings), turned
into the pure core's ``RaftConfig`` per node.

Invariants: frozen (a replica's settings change only by replacing the
config, as the reconciler does after a topic alter); every replica runs
with check-quorum and pre-vote on and lease-based reads off; the leader's
node grace (``RaftConfig.leader_node_grace_ticks``) is bounded, three
election timeouts by default, so a leader replica wedged on a live node is
still replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from partitions.state_machine import PartitionConfig
from raft.config import RaftConfig

__all__ = ["ReplicaConfig"]


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """How a replica drives its Raft group; the defaults suit a laptop."""

    election_tick: int = 10
    heartbeat_tick: int = 2
    # Quiet ticks (everything replicated, committed, applied) before a leader
    # hibernates: two heartbeat rounds, so followers have learnt the commit.
    hibernate_after_ticks: int = 5
    max_batch_bytes: int = 1 << 20
    max_inflight_msgs: int = 256
    max_size_per_msg: int = 1 << 20
    max_uncommitted_bytes: int = 64 << 20
    max_committed_bytes_per_ready: int = 8 << 20
    hibernate: bool = True
    leader_node_grace_ticks: int | None = None
    """Ticks a follower keeps its silent leader while the transport still
    hears from the leader's node (``RaftNode.heard_from_node``): None is
    three election timeouts, 0 turns it off."""
    broadcast_commit: bool = True
    """``RaftConfig.broadcast_commit``: tell followers of a new commit index
    at once. Partition replicas run with it off (cluster/node.py): half the
    Raft messages per produced batch, and a follower's apply matters to no
    client (produces and fetches are answered by the leader). The
    controller keeps it on: every node's metadata follows its commits."""
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    unsafe_ack_before_commit: bool = False
    """TEST ONLY (failover drills' negative control): a produce is answered
    as soon as the leader accepts it, before it commits, so a leader kill
    loses acknowledged writes. Never set in production."""

    def raft_config(self, node_id: int) -> RaftConfig:
        return RaftConfig(
            id=node_id,
            election_tick=self.election_tick,
            heartbeat_tick=self.heartbeat_tick,
            check_quorum=True,
            pre_vote=True,
            max_inflight_msgs=self.max_inflight_msgs,
            max_size_per_msg=self.max_size_per_msg,
            max_uncommitted_size=self.max_uncommitted_bytes,
            max_committed_size_per_ready=self.max_committed_bytes_per_ready,
            read_only_lease_based=False,
            leader_node_grace_ticks=self.node_grace_ticks,
            broadcast_commit=self.broadcast_commit,
        )

    @property
    def node_grace_ticks(self) -> int:
        """``leader_node_grace_ticks`` with its default applied."""
        if self.leader_node_grace_ticks is None:
            return 3 * self.election_tick
        return self.leader_node_grace_ticks
