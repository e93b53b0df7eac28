"""The client workload: what the application asks of the cluster, and when.

Invariants:
- Every choice comes from the workload's own seeded ``random.Random`` over
  sorted candidates, so a seed replays.
- Payloads are unique (a counter), so an applied entry names its proposal.
- Proposals go mostly to the leader; some go to a random node, where
  anything but a leader must refuse with ``ProposalDropped`` (the cluster
  checks that).
- ``disruptive`` operations (leader transfers, membership changes, forced
  campaigns) are not faults, but they stop with the faults when the cluster
  heals, so the liveness bound measures recovery, not new churn.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raft.sim.cluster import Cluster


class Workload:
    def __init__(
        self,
        rng: random.Random,
        disruptive: bool = True,
        min_gap: int = 2,
        max_gap: int = 12,
        max_keep: int = 10,
    ) -> None:
        self._rng = rng
        # Entries the application keeps before its snapshot when compacting.
        self.max_keep = max_keep
        self.disruptive = disruptive
        self.min_gap = min_gap
        self.max_gap = max_gap
        actions: list[tuple[str, float, bool, Callable[[Cluster], None]]] = [
            ("propose", 8, False, self._propose_to_leader),
            ("propose-anywhere", 2, False, self._propose_anywhere),
            ("read", 3, False, self._read),
            ("snapshot", 1, False, self._snapshot),
            ("transfer", 0.6, True, self._transfer),
            ("membership", 1, True, self._membership),
            ("campaign", 0.3, True, self._campaign),
        ]
        self._all = actions
        self.counts: dict[str, int] = {}

    def next_delay(self) -> int:
        return self._rng.randint(self.min_gap, self.max_gap)

    def act(self, cluster: Cluster) -> str:
        actions = [a for a in self._all if self.disruptive or not a[2]]
        name, _, _, action = self._rng.choices(actions, [a[1] for a in actions])[0]
        self.counts[name] = self.counts.get(name, 0) + 1
        action(cluster)
        return name

    def _propose_to_leader(self, c: Cluster) -> None:
        leader = c.leader_id()
        if leader is not None:
            c.propose(leader)
        else:
            self._propose_anywhere(c)

    def _propose_anywhere(self, c: Cluster) -> None:
        live = c.live_ids()
        if live:
            c.propose(self._rng.choice(live))

    def _read(self, c: Cluster) -> None:
        live = c.live_ids()
        if live:
            c.read_index(self._rng.choice(live))

    def _snapshot(self, c: Cluster) -> None:
        live = c.live_ids()
        if live:
            c.take_snapshot(self._rng.choice(live), keep=self._rng.randint(0, self.max_keep))

    def _transfer(self, c: Cluster) -> None:
        leader = c.leader_id()
        if leader is None:
            return
        voters = [v for v in c.voters_of(leader) if v != leader]
        if not voters:
            return
        rng = self._rng
        asker = leader if rng.random() < 0.7 else rng.choice(c.live_ids())
        c.transfer_leader(asker, rng.choice(voters))

    def _membership(self, c: Cluster) -> None:
        leader = c.leader_id()
        if leader is not None:
            c.change_membership(leader, self._rng)

    def _campaign(self, c: Cluster) -> None:
        live = c.live_ids()
        if live:
            c.campaign(self._rng.choice(live))
