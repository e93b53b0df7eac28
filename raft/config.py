"""Configuration of one ``RaftNode``.

Invariants checked by ``validate()``: ``heartbeat_tick < election_tick``;
``check_quorum`` is on whenever reads are lease based (a lease without
check-quorum would let a deposed leader serve stale reads).
"""

from __future__ import annotations

from dataclasses import dataclass

from raft.errors import RaftError


class InvalidConfig(RaftError):
    """A RaftConfig that cannot work; the message says which setting."""


@dataclass(frozen=True, slots=True)
class RaftConfig:
    id: int
    # Ticks without hearing from a leader before a follower campaigns; the
    # actual timeout is randomized in [election_tick, 2 * election_tick).
    election_tick: int = 10
    # A leader sends heartbeats every heartbeat_tick ticks.
    heartbeat_tick: int = 1
    # A leader steps down when it has not heard from a quorum for an
    # election timeout; followers ignore votes while they have a live leader.
    check_quorum: bool = True
    # Candidates first ask whether they could win, so a partitioned node
    # rejoining does not bump every term and depose a healthy leader.
    pre_vote: bool = True
    # Flow control: appends in flight per follower and bytes per append.
    max_inflight_msgs: int = 256
    max_size_per_msg: int = 1 << 20
    # Backpressure: refuse proposals while uncommitted entries exceed this
    # many bytes (None: unlimited).
    max_uncommitted_size: int | None = None
    # Bytes of committed entries handed out per Ready (None: all).
    max_committed_size_per_ready: int | None = None
    # Serve reads on the leader lease instead of a heartbeat round while a
    # quorum acknowledged a heartbeat within the last election_tick - 2
    # ticks. Safe only when every node's ticks run at nearly the same rate;
    # a node restarted with this on stays out of elections for one timeout.
    read_only_lease_based: bool = False
    # Ticks a follower may go without a message from its leader in this
    # group and still not campaign, as long as the host keeps hearing from
    # the leader's node (``RaftNode.heard_from_node``: any traffic, of any
    # group). A host under load may delay one group's heartbeats behind its
    # own disk writes while the node is plainly alive; a leader replica that
    # is wedged on a live node is still replaced once this runs out.
    # 0: node traffic is ignored (the classic timer).
    leader_node_grace_ticks: int = 0
    # When the leader's commit index moves, send every follower an append
    # carrying it at once (etcd's behaviour: followers apply as soon as
    # they can). Off: followers learn it from the next append, which under
    # load follows within milliseconds, or the next heartbeat (at most
    # heartbeat_tick ticks): each entry then costs two messages per
    # follower instead of four (an empty append and its answer), and the
    # followers one Ready instead of two. Safety does not depend on it.
    broadcast_commit: bool = True

    # --- test-only hazards: each breaks one rule so the simulator can prove
    # its checker catches the violation. Never enable them elsewhere. ---
    unsafe_ack_before_persist: bool = False
    unsafe_forget_vote_on_restart: bool = False
    unsafe_commit_previous_term: bool = False

    def validate(self) -> None:
        if self.id <= 0:
            raise InvalidConfig(f"id must be a positive integer, got {self.id}")
        if self.heartbeat_tick <= 0:
            raise InvalidConfig("heartbeat_tick must be at least 1")
        if self.election_tick <= self.heartbeat_tick:
            raise InvalidConfig(
                f"election_tick ({self.election_tick}) must exceed heartbeat_tick ({self.heartbeat_tick})"
            )
        if self.max_inflight_msgs <= 0:
            raise InvalidConfig("max_inflight_msgs must be at least 1")
        if self.max_size_per_msg <= 0:
            raise InvalidConfig("max_size_per_msg must be positive")
        if self.max_uncommitted_size is not None and self.max_uncommitted_size <= 0:
            raise InvalidConfig("max_uncommitted_size must be positive (or None for no limit)")
        if self.max_committed_size_per_ready is not None and self.max_committed_size_per_ready <= 0:
            raise InvalidConfig("max_committed_size_per_ready must be positive (or None for no limit)")
        if self.leader_node_grace_ticks < 0:
            raise InvalidConfig("leader_node_grace_ticks must not be negative (0 turns it off)")
        if self.read_only_lease_based and not self.check_quorum:
            raise InvalidConfig("read_only_lease_based requires check_quorum")
