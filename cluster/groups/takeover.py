"""How a new coordinator takes its groups over at once: group metadata on
the offsets log.

The coordinator appends a ``GroupMetadataRecord`` (the whole group: members,
epochs, subscriptions, fencing, the target, and what each member holds,
``membership.GroupSnapshot``; keyed by group, so a compacted log keeps the
latest) whenever a group changes in a way a successor must know
(``Group.changes``: a join, a leave, an expiry or a fencing, a new target, a
grant, a revocation started or confirmed), and a ``GroupMetadataDeleted``
(a tombstone) when the group has no members any more. A heartbeat that only
refreshes a session appends nothing.

The argument, as numbered invariants (tests/groups/test_properties.py and
the simulation tests/groups/sim.py check 1-4 across coordinator moves):

1. Durable before answered: an answer to a join, heartbeat or leave is sent
   only once the log holds a record of the group at least as recent as the
   state the answer was computed from (``GroupCoordinator.unrecorded_change``,
   ``recorded_seq``; the service appends and waits, the same rule as for
   commits). A refusal needs no record: it only ever makes a member drop
   partitions. So every grant a member has read is in the log.
2. The log's latest group record describes, for every partition, a member
   that may hold it whenever any member may: holdings are added (grants)
   only under invariant 1, and a record that drops a holding is written
   only after the coordinator saw the holder let go (a current-epoch
   heartbeat without it, a leave, a new incarnation's join) or its session
   end. A release the log lacks (the coordinator died before recording it)
   only leaves a successor believing in a holder that has stopped: it
   waits for that member's next heartbeat or session end, never less.
3. A successor (``start``) restores every recorded group: members keep
   their epochs and what they hold; only what nobody holds can be granted,
   and at once. Each restored member's session restarts at the takeover
   plus ``failover_margin_ms``: the deposed leader may answer that
   member's heartbeats from memory (never a grant: that needs an append,
   which it cannot commit) until it notices it lost its quorum, and each
   answer lets the member consume one more session. A pending revocation
   gets a full ``rebalance_timeout_ms`` again (fencing is for liveness).
   A member the old coordinator fenced in its last moments is either
   recorded as fenced (restored fenced: its requests are refused, it holds
   its partitions until its restarted session ends, so nobody gets them
   while it may still consume), or its fencing was never recorded, and then
   no answer said so either except a refusal (which made it drop
   everything); restored unfenced, it keeps what it holds and is fenced
   again if it misses the restarted revocation deadline. Epochs continue
   above the restored group's and the new term's (``epoch_base``), so no
   epoch the old coordinator used is given again with other partitions.
4. What remains unknown needs the old fence: a coordinator of an older
   version recorded no group, so its start record (version 1) or a start
   record carrying ``unrecorded_holders`` makes the successor discard the
   group records before it and hold every grant for the longest session
   the log allows plus the margin (``membership`` invariant 5). Once that
   fence has passed, the coordinator appends a start record without the
   flag, and its successors take over at once again.

What ``__consumer_offsets`` needs to be compacted (``offsets``): every
record version 2 carries a key (commit: tenant/group/topic/partition;
coordinator: one key; group: tenant/group); a group's deletion is a
tombstone. Version-1 records carry no key and must be kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.groups.membership import GroupSnapshot
from cluster.groups.offsets import (
    CoordinatorStarted,
    GroupMetadataDeleted,
    GroupMetadataRecord,
    OffsetsLogRecord,
)

__all__ = ["TakeoverState"]


@dataclass(slots=True)
class TakeoverState:
    """What replaying the log tells a new coordinator about its predecessors'
    groups; ``apply`` every record in log order."""

    groups: dict[tuple[str, str], GroupSnapshot] = field(default_factory=dict)
    """The latest record of every group that has members (invariant 2)."""
    longest_session_ms: int = 0
    """The longest session any start record allows (the old fence's length)."""
    unrecorded_holders: bool = False
    """Invariant 4: the old fence is needed."""

    def apply(self, record: OffsetsLogRecord) -> None:
        if isinstance(record, CoordinatorStarted):
            self.longest_session_ms = max(self.longest_session_ms, record.max_session_timeout_ms)
            if record.unrecorded_holders:
                # Groups changed since without records: the fence covers them.
                self.groups.clear()
            self.unrecorded_holders = record.unrecorded_holders
        elif isinstance(record, GroupMetadataRecord):
            self.groups[(record.tenant, record.group)] = record.snapshot
        elif isinstance(record, GroupMetadataDeleted):
            self.groups.pop((record.tenant, record.group), None)
