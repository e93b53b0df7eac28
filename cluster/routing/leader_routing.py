"""``LeaderRouting``: ``leader_of(group)`` on every node, for every partition
group, whether or not this node hosts a replica of it — the asyncio glue
around ``LeaderMap`` (leader_map.py holds the rules and the why).

What it does:

- Announces: every ``check_interval_s`` it looks at which of this node's
  replicas lead, and in which term. When that set changed, and in any case
  every ``full_interval_s``, it hands the whole list (group ids and terms,
  a few bytes per group) to ``announce`` — the Raft transport, which sends
  it to every peer with their next batch (cluster/transport/peer_link.py
  keeps only the latest per peer and repeats it on every new stream, so a
  restarted peer learns everything as soon as it is reconnected). Changes
  are thus coalesced to at most one announcement per check interval.
- Listens: ``receive(from_node, pairs)`` (the transport's ``on_leaders``)
  merges what peers announce into the map. Each announcement is its
  sender's whole list, so a group missing from it is one the sender no
  longer claims: its claim is withdrawn (leader_map rule 3) and the other
  peers' current claims for the group are merged again.
- Forgets silent peers: the claims of a peer not heard from for
  ``silent_after_s`` (a live peer repeats its list every
  ``full_interval_s``) are withdrawn, checked with every periodic list. So
  a claim, even one of a huge term from a forging or buggy node holding
  the cluster secret, outlives its sender's last word by at most that.
- Forgets: when the applied metadata changes, and with every periodic
  list, groups it no longer assigns (deleted topics) are dropped from the
  map.
- Answers: ``leader_of(group)`` combines this node's own replica's view (when
  it hosts one) with the announced claim, by term (leader_map.best_leader);
  0 when nothing is known. Synchronous and O(1): the front end calls it per
  partition.

Why poll rather than be told: a replica reports leadership changes only to
its own subclass hook (partitions/raft_replica.py), and a scan of which
replicas lead is a dictionary walk with one attribute test each, done 10
times a second (this is the only cost idle partitions add). An unchanged
announcement from a peer (the periodic repeats) is recognised by one list
comparison and not merged again. Staleness is bounded by the check interval
for changes this node makes, and by the peer's next announcement for a
peer that missed one (the periodic full list).

Invariants:

- ``leader_of`` never blocks or raises, and returns a node id or 0.
- Only this node's leaders are announced, each with the term it leads in.
- Every claim in the map is in its sender's latest announcement, and that
  sender was heard within ``silent_after_s`` at the last periodic check.
- ``run`` is one task owned by the node (cancel it to stop); it holds no
  state that ``leader_of`` or ``receive`` need besides the map.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cluster.routing.leader_map import LeaderClaim, LeaderMap, best_leader

AnnounceFn = Callable[[Sequence[tuple[int, int]]], None]


class ReplicaView(Protocol):
    """What routing reads of one replica (partitions/raft_replica.py)."""

    @property
    def is_leader(self) -> bool: ...
    @property
    def leader(self) -> int: ...
    @property
    def term(self) -> int: ...


class Replicas(Protocol):
    """This node's partition replicas (partitions/replica_host.py)."""

    def replica(self, group: int) -> ReplicaView | None: ...
    @property
    def replicas(self) -> Mapping[int, ReplicaView]: ...


class AssignmentsView(Protocol):
    def assignment(self, group: int) -> object | None: ...
    @property
    def next_group_id(self) -> int: ...


class MetadataView(Protocol):
    """The applied metadata (cluster/controller_replica.py)."""

    @property
    def version(self) -> int: ...
    @property
    def state(self) -> AssignmentsView: ...


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    # How often this node checks which groups it leads: a change it makes
    # reaches its peers within this (plus a transport batch), and at most
    # one announcement per peer leaves per interval. Each check walks every
    # replica of the node: at 0.1 s that cost 1.4% of a core per node with
    # 1,000 idle partitions per node (`bench --quick --only density`: 3.4%
    # against 2.0% without routing), so 0.5 s. Meanwhile a node that hosts
    # no replica forwards to the old leader, which answers NOT_LEADER with
    # the new one: one more hop, never a wrong answer. (A leadership-change
    # callback from the replica driver would remove the walk altogether.)
    check_interval_s: float = 0.5
    # The whole list goes out at least this often even without a change:
    # what repairs a peer that lost an announcement (lost batches, a stream
    # broken before the announcement's batch was read).
    full_interval_s: float = 1.0
    # A peer not heard from for this long has its claims withdrawn: several
    # periodic lists, so a lost batch or a reconnect does not count.
    silent_after_s: float = 5.0

    def validate(self) -> None:
        if not 0 < self.check_interval_s <= self.full_interval_s < self.silent_after_s:
            raise ValueError(
                f"need 0 < check_interval_s ({self.check_interval_s}) <= full_interval_s "
                f"({self.full_interval_s}) < silent_after_s ({self.silent_after_s})"
            )


class LeaderRouting:
    """Construct with this node's replicas; pass ``receive`` to the
    transport as ``on_leaders``, run ``run(transport.announce_leaders,
    controller)`` as a task, and give ``leader_of`` to the front end."""

    def __init__(
        self,
        node_id: int,
        replicas: Replicas,
        config: RoutingConfig = RoutingConfig(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        config.validate()
        self.node_id = node_id
        self.config = config
        self._replicas = replicas
        self._clock = clock
        self.map = LeaderMap()
        self.announcements_sent = 0
        self.announcements_received = 0
        self._heard: dict[int, Sequence[tuple[int, int]]] = {}  # the last announcement per peer
        self._claims_of: dict[int, dict[int, int]] = {}  # the same, as group -> term
        self._heard_at: dict[int, float] = {}  # when each peer last announced (clock)

    def leader_of(self, group: int) -> int:
        """The node id of ``group``'s leader as this node best knows it, 0
        if unknown (see the module docstring)."""
        replica = self._replicas.replica(group)
        local = LeaderClaim(replica.term, replica.leader) if replica is not None else None
        return best_leader(local, self.map.claim(group))

    def receive(self, from_node: int, groups_and_terms: Sequence[tuple[int, int]]) -> None:
        """``from_node`` announced that it leads each ``(group, term)``."""
        self.announcements_received += 1
        self._heard_at[from_node] = self._clock()
        if self._heard.get(from_node) == groups_and_terms:
            # Merging is idempotent, so a repeat changes nothing, except
            # that it would bring back a group forget_deleted dropped.
            return
        claims = dict(groups_and_terms)
        before = self._claims_of.get(from_node, {})
        self._heard[from_node] = groups_and_terms
        self._claims_of[from_node] = claims
        self.map.announce(from_node, groups_and_terms)
        self._withdraw(from_node, [g for g in before if g not in claims])

    def forget_silent(self) -> int:
        """Withdraw every claim of the peers not heard from for
        ``silent_after_s``; how many peers that was."""
        cutoff = self._clock() - self.config.silent_after_s
        silent = [node for node, at in self._heard_at.items() if at < cutoff]
        for node in silent:
            del self._heard_at[node]
            self._heard.pop(node, None)
            groups = self._claims_of.pop(node, {})
            self._withdraw(node, list(groups))
        return len(silent)

    def _withdraw(self, sender: int, groups: list[int]) -> None:
        """``sender`` no longer claims ``groups``: drop its claims and merge
        the other peers' current ones for those groups (they may have been
        outranked by the claim just dropped)."""
        if not groups:
            return
        for group in self.map.withdraw(sender, groups):
            for node, claims in self._claims_of.items():
                term = claims.get(group)
                if term is not None and node != sender:
                    self.map.learn(group, node, term)

    def leading(self) -> dict[int, int]:
        """The groups this node's replicas lead now, with their terms."""
        return {group: r.term for group, r in self._replicas.replicas.items() if r.is_leader}

    def forget_deleted(self, state: AssignmentsView) -> int:
        """Drop the claims of groups ``state`` no longer assigns (deleted
        topics; leader_map rule 4); how many were dropped."""
        return self.map.retain(lambda g: state.assignment(g) is not None, state.next_group_id)

    async def run(self, announce: AnnounceFn, metadata: MetadataView) -> None:
        """Announce this node's leaders and prune deleted groups, forever."""
        loop = asyncio.get_running_loop()
        config = self.config
        sent: dict[int, int] | None = None
        sent_at = 0.0
        seen_version: int | None = None
        while True:
            leading = self.leading()
            now = loop.time()
            periodic = now - sent_at >= config.full_interval_s
            if leading != sent or periodic:
                announce(sorted(leading.items()))
                self.announcements_sent += 1
                sent, sent_at = leading, now
            # Also periodically: a deleted group's leader may announce it
            # until its own reconciler retires the replica.
            if metadata.version != seen_version or periodic:
                seen_version = metadata.version
                self.forget_deleted(metadata.state)
            if periodic:
                self.forget_silent()
            await asyncio.sleep(config.check_interval_s)
