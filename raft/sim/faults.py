"""The nemesis: which fault to inject next, and when.

Invariants:
- Every choice comes from the nemesis's own seeded ``random.Random``, and
  the candidates it picks from are sorted node ids, so a seed replays.
- Every fault it injects is counted (``Cluster.faults`` or ``Network.faults``)
  and undone later by an event it schedules itself (restart, heal, restore)
  or, for clogged links, by later ``unclog`` actions in random order. Once
  the cluster heals it injects nothing, and the undo events find nothing
  left to undo.
- Pauses (a stopped process: no ticks, inputs queued) are not injected on
  seeds with lease reads, which assume every node's ticks run at one rate.
- Crashes come in two flavours: at once (between two events), and *armed*:
  the node crashes at a chosen point inside its next Ready that has something
  at stake (after sending ``messages`` but before the sync; after the sync but
  before ``messages_after_persist``; before applying; or after sending a vote
  grant). The first exposes an acknowledgement sent before the data it
  promises was durable, the last a vote forgotten by a restart.
- Forged messages (``forge``) are impossible ones only (raft/sim/forgery.py):
  the core must drop each without a trace, so they never change a run's
  outcome -- only a core that acts on one does.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from raft.sim.forgery import Forger, forgeable_peer

if TYPE_CHECKING:
    from raft.sim.cluster import Cluster

# Armed crash points inside a Ready (see Cluster._handle_ready).
CRASH_BEFORE_SYNC = 1
CRASH_BEFORE_PERSISTED_MESSAGES = 2
CRASH_BEFORE_APPLY = 3
# Like CRASH_BEFORE_APPLY, but only in a Ready that grants a vote.
CRASH_AFTER_VOTE = 4
CRASH_POINTS = (CRASH_BEFORE_SYNC, CRASH_BEFORE_PERSISTED_MESSAGES, CRASH_BEFORE_APPLY, CRASH_AFTER_VOTE)


def restart_delay(rng: random.Random) -> int:
    """Mostly quick restarts (they race with in-flight messages), some slow."""
    r = rng.random()
    if r < 0.5:
        return rng.randint(1, 20)
    if r < 0.85:
        return rng.randint(20, 150)
    return rng.randint(150, 600)


class Nemesis:
    def __init__(self, rng: random.Random, min_gap: int = 10, max_gap: int = 80) -> None:
        self._rng = rng
        self.min_gap = min_gap
        self.max_gap = max_gap
        actions: list[tuple[str, int, Callable[[Cluster], bool]]] = [
            ("crash", 3, self._crash),
            ("crash-leader", 3, self._crash_leader),
            ("arm-crash", 6, self._arm_crash),
            ("cascade", 3, self._cascade),
            ("election-storm", 2, self._election_storm),
            ("rolling-restart", 2, self._rolling_restart),
            ("split-vote", 3, self._split_vote),
            ("partition", 2, self._partition),
            ("isolate-leader", 2, self._isolate_leader),
            ("one-way", 2, self._one_way),
            ("clog", 2, self._clog),
            ("unclog", 2, self._unclog),
            ("drop-burst", 1, self._drop_burst),
            ("duplicate-burst", 1, self._duplicate_burst),
            ("delay-burst", 1, self._delay_burst),
            ("pause", 2, self._pause),
            ("heal-network", 1, self._heal_network),
            ("forge", 2, self._forge),
        ]
        self._names = [name for name, _, _ in actions]
        self._weights = [weight for _, weight, _ in actions]
        self._actions = {name: action for name, _, action in actions}
        self.counts: dict[str, int] = {}
        self._forger = Forger(rng)

    def next_delay(self) -> int:
        return self._rng.randint(self.min_gap, self.max_gap)

    def act(self, cluster: Cluster) -> str | None:
        """Inject one fault; returns its name, or None if none applied."""
        rng = self._rng
        name = rng.choices(self._names, self._weights)[0]
        if not self._actions[name](cluster):
            return None
        self.counts[name] = self.counts.get(name, 0) + 1
        return name

    # --- node faults ---

    def _crash(self, c: Cluster) -> bool:
        live = c.live_ids()
        if not live:
            return False
        return c.crash(self._rng.choice(live), restart_delay(self._rng))

    def _crash_leader(self, c: Cluster) -> bool:
        leader = c.leader_id()
        if leader is None:
            return self._crash(c)
        return c.crash(leader, restart_delay(self._rng))

    def _arm_crash(self, c: Cluster) -> bool:
        live = c.live_ids()
        if not live:
            return False
        rng = self._rng
        leader = c.leader_id()
        target = leader if leader is not None and rng.random() < 0.3 else rng.choice(live)
        return c.arm_crash(target, rng.choice(CRASH_POINTS), restart_delay(rng))

    def _cascade(self, c: Cluster) -> bool:
        """Arm a crash on a follower (quick restart), then take the leader
        out a moment later: the follower's last promise -- an ack or a vote
        -- is then what the next election depends on."""
        leader = c.leader_id()
        if leader is None:
            return self._arm_crash(c)
        followers = [n for n in c.live_ids() if n != leader]
        if not followers:
            return False
        rng = self._rng
        armed = rng.choice(followers)
        c.arm_crash(armed, rng.choice(CRASH_POINTS), rng.randint(1, 30))
        others = [n for n in followers if n != armed]
        if others and rng.random() < 0.5:
            # Keep another follower from hearing the leader meanwhile, so
            # the armed one's promise is the one that counts.
            isolated = rng.choice(others)
            c.net.partition([[isolated], [n for n in c.node_ids() if n != isolated]])
            c.call_later(rng.randint(50, 300), c.net.heal_partition)
        if rng.random() < 0.7:
            restart = restart_delay(rng)

            def crash_leader() -> None:
                if c.faults_enabled:
                    c.crash(leader, restart)

            c.call_later(rng.randint(2, 60), crash_leader)
        else:
            rest = [n for n in c.node_ids() if n != leader]

            def isolate_leader() -> None:
                if c.faults_enabled:
                    c.net.partition([[leader], rest])

            c.call_later(rng.randint(2, 60), isolate_leader)
            c.call_later(rng.randint(100, 500), c.net.heal_partition)
        return True

    def _election_storm(self, c: Cluster) -> bool:
        """Take the leader out, then crash voters with quick restarts while
        the next elections run: each crash lands right after the node's
        next durable promise (typically a vote) left."""
        rng = self._rng
        leader = c.leader_id()
        if leader is not None:
            c.crash(leader, restart_delay(rng))
        for _ in range(rng.randint(1, 3)):
            delay = rng.randint(50, 300)
            point = CRASH_AFTER_VOTE if rng.random() < 0.7 else rng.choice(CRASH_POINTS)
            restart = rng.randint(1, 40)

            def arm(point: int = point, restart: int = restart) -> None:
                live = c.live_ids()
                if c.faults_enabled and live:
                    c.arm_crash(self._rng.choice(live), point, restart)

            c.call_later(delay, arm)
        return True

    def _rolling_restart(self, c: Cluster) -> bool:
        """Crash every node in turn, each down for a while, overlapping:
        nodes miss elections and come back with stale terms and forgotten
        (volatile) state while others are mid-election."""
        rng = self._rng
        order = c.node_ids()
        rng.shuffle(order)
        at = 0
        for nid in order:
            at += rng.randint(20, 200)
            down = rng.randint(1, 250)
            armed = rng.random() < 0.5

            def crash(nid: int = nid, down: int = down, armed: bool = armed) -> None:
                if not c.faults_enabled:
                    return
                if armed:
                    c.arm_crash(nid, CRASH_AFTER_VOTE, down)
                else:
                    c.crash(nid, down)

            c.call_later(at, crash)
        return True

    def _split_vote(self, c: Cluster) -> bool:
        """Restart the leader, then have every other node campaign at once
        while the restarted node -- the one free to vote -- crashes right
        after its next durable promise and comes straight back."""
        rng = self._rng
        voter = c.leader_id()
        if voter is None:
            return False
        down = rng.randint(1, 20)
        c.crash(voter, down)
        restart = rng.randint(1, 6)

        def storm() -> None:
            live = c.live_ids()
            if not c.faults_enabled or voter not in live:
                return
            c.arm_crash(voter, CRASH_AFTER_VOTE, restart)
            for nid in live:
                if nid != voter:
                    c.campaign(nid)

        c.call_later(down + rng.randint(1, 10), storm)
        return True

    def _pause(self, c: Cluster) -> bool:
        live = c.live_ids()
        if not live or c.config.read_only_lease_based:
            return False  # a paused clock breaks what lease reads assume
        rng = self._rng
        leader = c.leader_id()
        target = leader if leader is not None and rng.random() < 0.5 else rng.choice(live)
        return c.pause(target, rng.randint(20, 300))

    # --- network faults ---

    def _partition(self, c: Cluster) -> bool:
        ids = c.node_ids()
        if len(ids) < 2:
            return False
        rng = self._rng
        shuffled = list(ids)
        rng.shuffle(shuffled)
        cut = rng.randint(1, len(shuffled) - 1)
        c.net.partition([shuffled[:cut], shuffled[cut:]])
        c.call_later(rng.randint(50, 500), c.net.heal_partition)
        return True

    def _isolate_leader(self, c: Cluster) -> bool:
        leader = c.leader_id()
        if leader is None:
            return self._partition(c)
        rest = [n for n in c.node_ids() if n != leader]
        c.net.partition([[leader], rest])
        c.call_later(self._rng.randint(50, 500), c.net.heal_partition)
        return True

    def _one_way(self, c: Cluster) -> bool:
        ids = c.node_ids()
        if len(ids) < 2:
            return False
        rng = self._rng
        a, b = rng.sample(ids, 2)
        if rng.random() < 0.5 and (leader := c.leader_id()) is not None and leader != b:
            a = leader  # a leader that can send but not hear (or the reverse)
            if rng.random() < 0.5:
                a, b = b, a
        net = c.net
        net.cut(a, b)
        c.call_later(rng.randint(30, 400), lambda: net.restore_cut(a, b))
        return True

    def _clog(self, c: Cluster) -> bool:
        ids = c.node_ids()
        if len(ids) < 2:
            return False
        rng = self._rng
        a, b = rng.sample(ids, 2)
        c.net.clog(a, b, both_ways=rng.random() < 0.7)
        return True

    def _unclog(self, c: Cluster) -> bool:
        return c.net.unclog_one() is not None

    def _burst(self, c: Cluster, field: str, low: float, high: float) -> bool:
        rng = self._rng
        rates = c.net.rates
        setattr(rates, field, rng.uniform(low, high))
        c.faults += 1

        def restore() -> None:
            setattr(c.net.rates, field, getattr(c.base_rates, field))

        c.call_later(rng.randint(50, 400), restore)
        return True

    def _drop_burst(self, c: Cluster) -> bool:
        return self._burst(c, "drop", 0.1, 0.5)

    def _duplicate_burst(self, c: Cluster) -> bool:
        return self._burst(c, "duplicate", 0.1, 0.4)

    def _delay_burst(self, c: Cluster) -> bool:
        return self._burst(c, "spike", 0.1, 0.5)

    # --- forged messages ---

    def _forge(self, c: Cluster) -> bool:
        """An attacker's burst: a few impossible messages, each built when
        it arrives against the target's state then (raft/sim/forgery.py).
        Half the bursts aim at the leader, where acknowledgements and
        heartbeat echoes can be impossible."""
        live = c.live_ids()
        if not live:
            return False
        rng = self._rng
        leader = c.leader_id()
        target = leader if leader is not None and rng.random() < 0.5 else rng.choice(live)
        for _ in range(rng.randint(1, 6)):

            def inject() -> None:
                if not c.faults_enabled:
                    return
                peer = forgeable_peer(self._rng, c.node_ids(), target)
                c.inject(target, lambda raft: self._forger.forge(raft, peer))

            c.call_later(rng.randint(1, 40), inject)
        return True

    def _heal_network(self, c: Cluster) -> bool:
        net = c.net
        net.heal_partition()
        while net.unclog_one() is not None:
            pass
        return True
