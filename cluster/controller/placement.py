"""Replica placement: where new replicas go, and the moves that fix a node.

Pure functions of a ``ControllerState``, used by the controller leader
*before* it proposes: the chosen replicas travel inside the command
(``CreateTopic.assignment``, the steps of a ``Move``), so applying stays
deterministic and never runs placement.

Rules, in priority order, for every replica placed:

1. only on live nodes (alive, not decommissioning), never twice in a group;
2. spread across zones: a node whose zone already holds fewer of the
   group's replicas wins (nodes without a zone label never compete on
   zone), so a group spans ``min(replicas, zones)`` zones;
3. the least loaded zone (replicas per live node in it; an unlabelled node
   counts as a zone of its own);
4. fewest replicas (voters and learners) on the node;
5. fewest preferred-leader slots on the node (for a new topic, and for the
   replacement of a preferred leader);
6. lowest node id: every tie is broken by id, so the same state gives the
   same plan on every node and in every run (never dict or arrival order).

A new topic's preferred leaders are then evened out among its own
partitions: a slot moves to another replica of the same partition (or along
a chain of partitions) while some node leads two more than another.

Invariants:

- ``place_partitions`` returns, per partition, ``replication_factor``
  distinct live nodes with the preferred leader first; on a cluster where
  every zone has the same number of nodes (or none has a label), starting
  from an equal load, per-node replica counts end within one of each other,
  and so do preferred-leader counts (for one topic: leaders of topics
  placed earlier are not moved).
- A ``Move`` replaces one replica in three membership steps, each one Raft
  configuration change: ``AddLearner`` (the new node catches up without
  voting), ``PromoteLearner`` (it takes the old node's position, so the
  preferred-leader slot moves with it), ``RemoveReplica`` (the old node).
  The steps carry the revisions the group will have when each applies
  (``r``, ``r+1``, ``r+2``): if anything else changes the group in between,
  the next step is rejected (``STALE_REVISION``). The driver proposes a
  step only after the previous one is applied (and, before a promotion,
  after the learner has caught up), and abandons a move at its first
  rejected step and plans again from the state: a later step's revision
  could match again by coincidence. Plans live only in the leader's memory;
  a new leader plans afresh.
- A plan moves any group at most once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from cluster.controller.commands import AddLearner, PromoteLearner, RemoveReplica, ReplicaChange
from cluster.controller.model import MAX_PARTITIONS, MAX_REPLICATION_FACTOR, Assignment, Node
from cluster.controller.state import ControllerState

__all__ = [
    "Move",
    "PlacementError",
    "Plan",
    "place_partitions",
    "plan_decommission",
    "rebalance_plan",
    "replacements_for_dead_node",
]


class PlacementError(ValueError):
    """The request cannot be placed (too few live nodes, wrong node state)."""


@dataclass(frozen=True, slots=True)
class Move:
    """Replace ``old_node`` by ``new_node`` in ``group`` (``new_node`` 0:
    only drop ``old_node``, a learner of an unfinished move)."""

    group: int
    old_node: int
    new_node: int
    steps: tuple[ReplicaChange, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    moves: tuple[Move, ...]
    stuck: tuple[int, ...] = ()
    """Groups that need a move but cannot get one: no live node is left to
    take the replica, or too few of the group's voters are alive to commit a
    membership change (that needs an operator)."""


class _Load:
    """Replica and preferred-leader counts per node, and replica counts per
    zone of the live nodes, updated as a plan grows."""

    __slots__ = ("leaders", "replicas", "zone_of", "zone_replicas", "zone_size")

    def __init__(self, state: ControllerState) -> None:
        self.replicas: Counter[int] = Counter()
        self.leaders: Counter[int] = Counter()
        for a in state.assignments():
            self.replicas.update(a.members)
            self.leaders[a.preferred_leader] += 1
        self.zone_of = {n.node_id: n.zone for n in state.live_nodes() if n.zone}
        self.zone_size = Counter(self.zone_of.values())
        self.zone_replicas: Counter[str] = Counter()
        for node_id, zone in self.zone_of.items():
            self.zone_replicas[zone] += self.replicas[node_id]

    def add(self, node_id: int, leader: bool) -> None:
        self._count(node_id, 1, leader)

    def remove(self, node_id: int, leader: bool) -> None:
        self._count(node_id, -1, leader)

    def _count(self, node_id: int, delta: int, leader: bool) -> None:
        self.replicas[node_id] += delta
        if leader:
            self.leaders[node_id] += delta
        zone = self.zone_of.get(node_id)
        if zone is not None:
            self.zone_replicas[zone] += delta

    def zone_load(self, node: Node) -> Fraction:
        """Replicas per live node in ``node``'s zone (a node without a zone
        label is a zone of its own)."""
        if node.zone and node.zone in self.zone_size:
            return Fraction(self.zone_replicas[node.zone], self.zone_size[node.zone])
        return Fraction(self.replicas[node.node_id])


def _pick(candidates: Sequence[Node], taken: Sequence[Node], load: _Load, leader: bool) -> Node | None:
    """The best candidate not in ``taken`` to join a group whose other
    replicas are ``taken``: fewest of the group in its zone, then the least
    loaded zone, then the fewest replicas (and preferred-leader slots when
    ``leader``), then the lowest id."""
    taken_ids = {n.node_id for n in taken}
    in_group = Counter(n.zone for n in taken if n.zone)
    best: tuple[int, Fraction, int, int, int] | None = None
    chosen: Node | None = None
    for node in candidates:
        if node.node_id in taken_ids:
            continue
        key = (
            in_group[node.zone] if node.zone else 0,
            load.zone_load(node),
            load.replicas[node.node_id],
            load.leaders[node.node_id] if leader else 0,
            node.node_id,
        )
        if best is None or key < best:
            best, chosen = key, node
    return chosen


def place_partitions(
    state: ControllerState, partitions: int, replication_factor: int
) -> tuple[tuple[int, ...], ...]:
    """Replicas for a new topic's partitions (``CreateTopic.assignment``),
    preferred leader first, given the load already in ``state``."""
    # Bounded before any work: the admin service checks the caps first
    # (model.check_partitions); this guards any other caller.
    if not 1 <= partitions <= MAX_PARTITIONS or not 1 <= replication_factor <= MAX_REPLICATION_FACTOR:
        raise PlacementError(f"cannot place {partitions} partition(s) of {replication_factor} replica(s)")
    live = state.live_nodes()
    if replication_factor > len(live):
        raise PlacementError(
            f"replication factor {replication_factor} is more than the {len(live)} live node(s)"
        )
    load = _Load(state)
    result: list[list[int]] = []
    for _ in range(partitions):
        chosen: list[Node] = []
        for _ in range(replication_factor):
            node = _pick(live, chosen, load, leader=True)
            assert node is not None  # replication_factor <= len(live)
            chosen.append(node)
        # The preferred leader: of the chosen nodes, the one leading least.
        leader = min(chosen, key=lambda n: (load.leaders[n.node_id], load.replicas[n.node_id], n.node_id))
        replicas = [leader.node_id, *(n.node_id for n in chosen if n is not leader)]
        for position, node_id in enumerate(replicas):
            load.add(node_id, leader=position == 0)
        result.append(replicas)
    _even_out_leaders(result, load.leaders, sorted(n.node_id for n in live))
    return tuple(tuple(replicas) for replicas in result)


def _even_out_leaders(partitions: list[list[int]], leaders: Counter[int], nodes: list[int]) -> None:
    """Move preferred-leader slots among the new ``partitions`` (within each
    one's replicas) until no node leads two more than another it can hand a
    slot to, directly or along a chain of partitions. Each shift lowers the
    sum of squared leader counts, so this ends."""
    while True:
        for source in sorted(nodes, key=lambda n: (-leaders[n], n)):
            path = _leader_path(partitions, leaders, source)
            if path is not None:
                break
        else:
            return
        for p, new_leader in path:
            replicas = partitions[p]
            i = replicas.index(new_leader)
            replicas[0], replicas[i] = replicas[i], replicas[0]
        leaders[source] -= 1
        leaders[path[-1][1]] += 1


def _leader_path(
    partitions: list[list[int]], leaders: Counter[int], source: int
) -> list[tuple[int, int]] | None:
    """A shortest chain of (partition, next leader) from ``source`` to a node
    leading at least two fewer partitions, by breadth-first search."""
    came_from: dict[int, tuple[int, int] | None] = {source: None}
    queue = [source]
    for node in queue:
        for p, replicas in enumerate(partitions):
            if replicas[0] != node:
                continue
            for other in sorted(replicas[1:]):
                if other in came_from:
                    continue
                came_from[other] = (p, node)
                if leaders[other] + 2 <= leaders[source]:
                    path = []
                    at = other
                    while (step := came_from[at]) is not None:
                        path.append((step[0], at))
                        at = step[1]
                    return path[::-1]
                queue.append(other)
    return None


def _move_steps(a: Assignment, old: int, new: int) -> tuple[ReplicaChange, ...]:
    r = a.revision
    position = a.replicas.index(old)
    return (
        AddLearner(a.group, new, r),
        PromoteLearner(a.group, new, r + 1, position),
        RemoveReplica(a.group, old, r + 2),
    )


def _has_quorum(state: ControllerState, a: Assignment) -> bool:
    alive = sum(1 for n in a.replicas if (node := state.node(n)) is not None and node.alive)
    return alive > len(a.replicas) // 2


def _evacuate(state: ControllerState, node_id: int) -> Plan:
    """Moves that take every replica off ``node_id``."""
    load = _Load(state)
    candidates = [n for n in state.live_nodes() if n.node_id != node_id]
    moves: list[Move] = []
    stuck: list[int] = []
    for a in state.assignments_for_node(node_id):
        if node_id in a.learners:
            # An unfinished move towards this node: drop the learner; the
            # move's remaining steps will be rejected as stale.
            moves.append(Move(a.group, node_id, 0, (RemoveReplica(a.group, node_id, a.revision),)))
            load.remove(node_id, leader=False)
            continue
        if not _has_quorum(state, a):
            stuck.append(a.group)
            continue
        others = [state.node(n) for n in a.members if n != node_id]
        leader = a.preferred_leader == node_id
        new = _pick(candidates, [n for n in others if n is not None], load, leader=leader)
        if new is None:
            stuck.append(a.group)
            continue
        moves.append(Move(a.group, node_id, new.node_id, _move_steps(a, node_id, new.node_id)))
        load.remove(node_id, leader)
        load.add(new.node_id, leader)
    return Plan(tuple(moves), tuple(stuck))


def replacements_for_dead_node(state: ControllerState, node_id: int) -> Plan:
    """Moves that replace every replica on dead node ``node_id`` by one on a
    live node."""
    node = state.node(node_id)
    if node is None or node.alive:
        raise PlacementError(f"node {node_id} is {'not registered' if node is None else 'alive'}")
    return _evacuate(state, node_id)


def plan_decommission(state: ControllerState, node_id: int) -> Plan:
    """Moves that drain decommissioning node ``node_id`` (propose
    ``DecommissionNode`` first, so nothing new lands on it meanwhile)."""
    node = state.node(node_id)
    if node is None or not node.decommissioning:
        raise PlacementError(
            f"node {node_id} is {'not registered' if node is None else 'not being decommissioned'}"
        )
    return _evacuate(state, node_id)


def _labelled_zones(nodes: Iterable[Node | None]) -> int:
    return len({n.zone for n in nodes if n is not None and n.zone})


def rebalance_plan(state: ControllerState, max_moves: int) -> Plan:
    """Up to ``max_moves`` moves from the most to the least loaded live
    nodes (a node that just joined gets its fair share), until their
    replica counts are within one of each other. A move never lowers the
    number of zones its group spans and never touches a group with a move
    in flight (one with learners); it prefers to move preferred-leader slots
    only when that also evens out the leader counts.

    Zone spread can forbid every direct move: with zones a, b, c and rf 2,
    node 1 (zone a, 6 replicas) may share each of its groups with a zone c
    node, so none may go to node 12 (zone c, 4 replicas), though a balanced
    placement exists. Then the plan moves a replica through a third node:
    1 -> 7 with one of 1's groups, 7 -> 12 with one of 7's groups that may
    go to zone c; 7 ends where it started (see ``_best_chain``)."""
    live = state.live_nodes()
    load = _Load(state)
    moved: set[int] = set()
    moves: list[Move] = []
    while len(moves) < max_moves:
        chain = _best_chain(state, live, load, moved)
        if not chain:
            break
        # A two-move chain may be cut at ``max_moves``: its first move only
        # swaps the counts of its source and middle node (see below), and
        # the next plan finds the second one as a direct move.
        for move in chain[: max_moves - len(moves)]:
            a = state.assignment(move.group)
            assert a is not None
            leader = a.preferred_leader == move.old_node
            load.remove(move.old_node, leader)
            load.add(move.new_node, leader)
            moved.add(move.group)
            moves.append(move)
    return Plan(tuple(moves))


def _best_chain(state: ControllerState, live: Sequence[Node], load: _Load, moved: set[int]) -> list[Move]:
    """One direct move from a node to one holding at least two fewer
    replicas (the most loaded source first, then the least loaded
    destination), else two moves ``src -> mid -> dst`` of two groups.

    Either lowers the sum of squared replica counts, so rebalancing ends.
    A chain is tried only when no node has a direct move, so ``mid`` holds
    exactly one fewer replica than ``src`` (with as many or more, its move to
    ``dst`` would be a direct one; with two fewer, so would ``src``'s)."""
    by_load = sorted(live, key=lambda n: (load.replicas[n.node_id], n.node_id))
    pairs = [
        (src, dst)
        for src in reversed(by_load)
        for dst in by_load
        if load.replicas[src.node_id] - load.replicas[dst.node_id] >= 2
    ]
    for src, dst in pairs:
        move = _one_move(state, load, moved, src, dst)
        if move is not None:
            return [move]
    for src, dst in pairs:
        for mid in by_load:
            if mid.node_id in (src.node_id, dst.node_id):
                continue
            first = _one_move(state, load, moved, src, mid)
            if first is None:
                continue
            second = _one_move(state, load, moved | {first.group}, mid, dst)
            if second is not None:
                return [first, second]
    return []


def _one_move(state: ControllerState, load: _Load, skip: set[int], src: Node, dst: Node) -> Move | None:
    """The best group (not in ``skip``) to move from ``src`` to ``dst``
    without lowering its zone spread: a preferred-leader slot only if that
    evens out the leader counts, then the lowest group id."""
    move_leader = load.leaders[src.node_id] > load.leaders[dst.node_id] + 1
    options = []
    for a in state.assignments_for_node(src.node_id):
        if a.group in skip or a.learners or dst.node_id in a.members:
            continue
        members = [state.node(n) for n in a.members]
        after = [n for n in members if n is not None and n.node_id != src.node_id] + [dst]
        if _labelled_zones(after) < _labelled_zones(members):
            continue
        is_leader = a.preferred_leader == src.node_id
        options.append((is_leader != move_leader, a.group, a))
    if not options:
        return None
    _, _, a = min(options, key=lambda o: (o[0], o[1]))
    return Move(a.group, src.node_id, dst.node_id, _move_steps(a, src.node_id, dst.node_id))
