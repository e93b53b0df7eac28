"""``LeaderMap``: which node leads each partition group, as announced by the
leaders themselves — the pure rules (no I/O, no clock).

Why it exists: a node answers requests for every partition (DESIGN.md,
"the front door"), but hosts replicas of only some of them. For the groups
it hosts, its replica sees the leader and the Raft term directly. For the
others, nothing in the metadata says who leads (the controller stores the
desired replicas, not elections), so each leader announces the groups it
leads, with their terms, to every peer node (cluster/routing/leader_routing.py,
over the Raft transport), and every node merges what it hears here.

A claim is ``(leader node, term)`` for one group. The rules:

1. Higher term wins: Raft elects at most one leader per term, and a leader
   of a later term has displaced every earlier one. A claim of a lower
   term than the one held is ignored, whichever arrived first.
2. An equal-term claim changes nothing unless it names a higher node id.
   True claims never disagree within a term (rule 1's reason); the node-id
   order is there only so that the merge is commutative, associative and
   idempotent: applying any set of announcements in any order, any number
   of times, ends with the same map — each group's maximum claim by
   ``(term, leader)``. Lost, repeated and reordered announcements (the
   transport may lose and a reconnect may replay) are therefore harmless.
3. A claim lasts while its sender makes it: ``withdraw`` drops a sender's
   claims for the groups its latest announcement no longer names, or all
   of them once it has gone silent (leader_routing.py decides when). A
   claim of a higher term from another node is not touched. Without this a
   single claim of a huge term (a forged announcement from a node holding
   the cluster secret, or a bug) would outrank every true leader of the
   group for ever; with it, such a claim ends when its sender stops making
   it. The caller then merges the other senders' current claims again.
4. ``retain`` drops the groups the metadata no longer assigns (a deleted
   topic's partitions). Group ids are allocated upwards and never reused
   (cluster/controller/state.py, ``next_group_id``), so an id at or above
   the metadata's next id is a group this node's copy of the metadata has
   not applied yet, and is kept.
5. ``best_leader``: for a group this node hosts, its own replica's view
   (leader, term) competes with the announced claim by term; at an equal
   term the replica's view wins when it knows a leader (it saw the term
   directly). An unknown leader is 0.

Invariants (``check_invariants``): every stored claim has a positive group
id, a positive leader id and a positive term.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

NO_LEADER = 0


class InconsistentLeaderMap(AssertionError):
    """``check_invariants`` found a claim that breaks the module's rules."""


@dataclass(frozen=True, slots=True, order=True)
class LeaderClaim:
    """``leader`` leads its group in ``term`` (``leader`` 0: the holder of
    this view knows the term but no leader yet). Ordered by (term, leader):
    the larger claim is the newer one (module rules 1 and 2)."""

    term: int
    leader: int


class LeaderMap:
    """Group -> the newest leader claim heard for it."""

    __slots__ = ("_claims",)

    def __init__(self) -> None:
        self._claims: dict[int, LeaderClaim] = {}

    def learn(self, group: int, leader: int, term: int) -> bool:
        """Merge one claim; whether it changed the map. Claims with a
        non-positive group, leader or term carry nothing and are ignored."""
        if group <= 0 or leader <= 0 or term <= 0:
            return False
        claim = LeaderClaim(term, leader)
        held = self._claims.get(group)
        if held is not None and held >= claim:
            return False
        self._claims[group] = claim
        return True

    def announce(self, sender: int, groups_and_terms: Iterable[tuple[int, int]]) -> int:
        """Merge ``sender``'s announcement: it leads each ``(group, term)``.
        Returns how many groups changed."""
        changed = 0
        for group, term in groups_and_terms:
            changed += self.learn(group, sender, term)
        return changed

    def withdraw(self, sender: int, groups: Iterable[int]) -> list[int]:
        """Drop the claims ``sender`` holds for ``groups`` (module rule 3);
        returns the groups dropped (a group another node's claim holds is
        left as it is)."""
        dropped = []
        for group in groups:
            held = self._claims.get(group)
            if held is not None and held.leader == sender:
                del self._claims[group]
                dropped.append(group)
        return dropped

    def claim(self, group: int) -> LeaderClaim | None:
        return self._claims.get(group)

    def leader(self, group: int) -> int:
        """The announced leader of ``group``, ``NO_LEADER`` if none."""
        held = self._claims.get(group)
        return held.leader if held is not None else NO_LEADER

    def retain(self, assigned: Callable[[int], bool], next_group_id: int) -> int:
        """Drop the groups below ``next_group_id`` for which ``assigned`` is
        false (module rule 4); returns how many were dropped."""
        gone = [g for g in self._claims if g < next_group_id and not assigned(g)]
        for group in gone:
            del self._claims[group]
        return len(gone)

    def snapshot(self) -> dict[int, LeaderClaim]:
        """A copy of every held claim (tests, introspection)."""
        return dict(self._claims)

    def __len__(self) -> int:
        return len(self._claims)

    def check_invariants(self) -> None:
        for group, claim in self._claims.items():
            if group <= 0 or claim.leader <= 0 or claim.term <= 0:
                raise InconsistentLeaderMap(f"group {group}: claim {claim} has a non-positive id or term")


def best_leader(local: LeaderClaim | None, announced: LeaderClaim | None) -> int:
    """The leader to route to (module rule 5): ``local`` is this node's
    replica's view of the group (None when it hosts none), ``announced`` the
    map's claim. ``NO_LEADER`` when neither knows one."""
    if local is None:
        return announced.leader if announced is not None else NO_LEADER
    if announced is None or announced.term < local.term:
        return local.leader
    if announced.term > local.term:
        return announced.leader
    return local.leader or announced.leader
