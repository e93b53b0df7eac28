"""Preferred leaders: hand leadership back to each partition's preferred replica.

Every partition has a preferred replica (the first of its assignment's
replicas) so leaders, and the CPU they cost, spread
evenly over the nodes. Elections do not respect it: the first node up wins
them, and a failover moves leaders away for good. Like Kafka's automatic
preferred-leader election, a leader that is not the preferred replica hands
leadership over once the preferred replica is alive and holds its whole log.

Invariant: only a leader acts, only towards a caught-up, live preferred
replica, through Raft's leader transfer (which itself waits for the target
to catch up and times out if it cannot), so the worst case is one extra
election; nothing here affects safety.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cluster.controller import Assignment
from partitions.replica import Replica


def hand_back_leadership(
    node_id: int,
    refs: Iterable[Assignment],
    replica_of: Callable[[int], Replica | None],
    peer_alive: Callable[[int], bool],
) -> list[int]:
    """Start a transfer for every partition this node leads but should not;
    returns the groups handed over."""
    moved = []
    for ref in refs:
        preferred = ref.preferred_leader
        if preferred == node_id:
            continue
        replica = replica_of(ref.group)
        if replica is None or not replica.is_leader:
            continue
        if peer_alive(preferred) and replica.caught_up(preferred):
            replica.transfer_leadership(preferred)
            moved.append(ref.group)
    return moved
