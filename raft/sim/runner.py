"""Run one seed of one profile and say what happened.

Profiles:
- ``safety``: aggressive faults for ``steps`` events; safety checked at
  every step.
- ``liveness``: the same faults for ``steps`` events, then everything heals
  (all nodes up, network whole, no more faults or disruptive client calls).
  Within ``LIVENESS_BOUND`` time units a leader acknowledged by every live
  voter must exist and a fresh proposal must be applied on every member --
  else a liveness violation. Safety is checked throughout.
- ``none``: no faults at all (throughput measurements).
``all`` (CLI and ``run_profiles``) runs ``safety`` then ``liveness``.

Invariant: a result is a pure function of (seed, nodes, profile, hazards,
steps); ``fingerprint`` digests the whole event trace, so two runs of one
seed can be compared cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raft.sim.checker import LIVENESS, Violation
from raft.sim.cluster import ELECTION_TICK, TICK, Cluster
from raft.sim.faults import Nemesis
from raft.sim.network import LinkFaults
from raft.sim.workload import Workload
from raft.types import Role

PROFILES = ("safety", "liveness", "none")
DEFAULT_STEPS = 5000
ELECTION_TIMEOUT = ELECTION_TICK * TICK
# After healing: a leader and a committed proposal within this many time
# units (30 election timeouts).
LIVENESS_BOUND = 30 * ELECTION_TIMEOUT
# Events the liveness phase may take at most (a guard; the bound is time).
_LIVENESS_MAX_STEPS = 500_000
# Background message faults while the nemesis is active.
_BASE_RATES = LinkFaults(drop=0.02, duplicate=0.02, spike=0.02)


@dataclass(frozen=True, slots=True)
class SeedResult:
    seed: int
    nodes: int
    profile: str
    steps: int
    faults: int
    violations: tuple[Violation, ...]
    fingerprint: str
    hazards: frozenset[str] = frozenset()
    max_steps: int = DEFAULT_STEPS
    stats: dict[str, int] = field(default_factory=dict)
    trace: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.violations

    def replay_command(self) -> str:
        command = f"python -m raft.sim --seeds {self.seed} --nodes {self.nodes} --profile {self.profile}"
        if self.max_steps != DEFAULT_STEPS:
            command += f" --steps {self.max_steps}"
        for hazard in sorted(self.hazards):
            command += f" --hazard {hazard}"
        return command


def run_seed(
    seed: int,
    nodes: int = 3,
    profile: str = "safety",
    hazards: frozenset[str] = frozenset(),
    steps: int = DEFAULT_STEPS,
    trace: bool = False,
) -> SeedResult:
    """Run one seed of one profile (``safety``, ``liveness`` or ``none``)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (expected one of {', '.join(PROFILES)})")
    faulty = profile != "none"
    cluster = Cluster(seed, nodes=nodes, hazards=hazards, trace=trace)
    if faulty:
        cluster.base_rates = LinkFaults(
            drop=_BASE_RATES.drop, duplicate=_BASE_RATES.duplicate, spike=_BASE_RATES.spike
        )
        cluster.net.rates = LinkFaults(
            drop=_BASE_RATES.drop, duplicate=_BASE_RATES.duplicate, spike=_BASE_RATES.spike
        )
    cluster.start()
    workload = Workload(cluster.client_rng, disruptive=faulty)
    nemesis = Nemesis(cluster.fault_rng)

    def client() -> None:
        workload.act(cluster)

    def fault() -> None:
        if cluster.faults_enabled:
            nemesis.act(cluster)

    cluster.every(workload.next_delay(), workload.next_delay, client)
    if faulty:
        cluster.every(nemesis.next_delay(), nemesis.next_delay, fault)
    cluster.run(steps)
    if profile == "liveness" and not cluster.failed:
        workload.disruptive = False
        check_liveness(cluster)

    stats = {
        "proposals": cluster.stats.proposals,
        "proposals_dropped": cluster.stats.proposals_dropped,
        "applied": cluster.stats.applied,
        "max_applied": cluster.checker.max_applied,
        "reads": cluster.stats.reads,
        "reads_answered": cluster.stats.reads_answered,
        "terms_with_leader": len(cluster.checker.leaders),
        "crashes": cluster.stats.crashes,
        "restarts": cluster.stats.restarts,
        "snapshots_taken": cluster.stats.snapshots_taken,
        "snapshots_sent": cluster.stats.snapshots_sent,
        "conf_changes": cluster.stats.conf_changes,
        "messages": cluster.stats.messages,
        "delivered": cluster.stats.delivered,
        "readies": cluster.stats.readies,
        "time": cluster.now,
        "checks": cluster.checker.checks,
        "forged": cluster.stats.forged,
    }
    stats.update(sorted(cluster.stats.extra.items()))
    for name, count in sorted(nemesis.counts.items()):
        stats["nemesis." + name] = count
    return SeedResult(
        seed=seed,
        nodes=nodes,
        profile=profile,
        steps=cluster.steps,
        faults=cluster.total_faults,
        violations=tuple(cluster.checker.violations),
        fingerprint=cluster.fingerprint(),
        hazards=hazards,
        max_steps=steps,
        stats=stats,
        trace=tuple(cluster.trace or ()),
    )


def run_profiles(
    seed: int,
    nodes: int = 3,
    profile: str = "all",
    hazards: frozenset[str] = frozenset(),
    steps: int = DEFAULT_STEPS,
    trace: bool = False,
) -> list[SeedResult]:
    """``run_seed`` for one profile, or for safety and liveness if ``all``."""
    profiles = ("safety", "liveness") if profile == "all" else (profile,)
    return [run_seed(seed, nodes, p, hazards, steps, trace) for p in profiles]


class _Liveness:
    """Polls every tick after healing: first an acknowledged leader, then a
    fresh proposal applied on every member."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.healed_at = cluster.now
        self.deadline = cluster.now + LIVENESS_BOUND
        self.done = False
        self.payload: bytes | None = None
        self.proposed_at = 0
        self.applied: dict[int, int] = {}

    def poll(self) -> None:
        if self.done:
            return
        c = self.cluster
        if c.now > self.deadline:
            self.done = True
            what = (
                "no leader acknowledged by all voters"
                if self.payload is None
                else "proposal not applied everywhere"
            )
            c.checker.violation(
                LIVENESS,
                f"{what} {c.now - self.healed_at} time units after healing; {self._describe()}",
            )
            return
        if self.payload is None:
            leader = self._acknowledged_leader()
            if leader is None:
                return
            payload = c.unique_payload(b"liveness-")
            self.applied = c.watch(payload)
            if c.propose(leader, payload) is None:
                return
            self.payload = payload
            self.proposed_at = c.now
            return
        if self.applied:
            # Committed at this index; members past it hold it (applied or
            # by snapshot -- state machine safety is checked elsewhere).
            index = min(self.applied.values())
            members = sorted(c.conf.all_nodes())
            if all(c.applied_index(n) >= index for n in members) and self._acknowledged_leader() is not None:
                self.done = True
            return
        if not self.applied and c.now - self.proposed_at > 5 * ELECTION_TIMEOUT:
            self.payload = None  # lost with its leader: propose again

    def _acknowledged_leader(self) -> int | None:
        c = self.cluster
        voters = sorted(c.conf.voters)
        for nid in c.live_ids():
            raft = c.raft(nid)
            if raft is None or raft.role != Role.LEADER:
                continue
            for voter in voters:
                other = c.raft(voter)
                if other is None or other.leader != nid or other.term != raft.term:
                    break
            else:
                return nid
        return None

    def _describe(self) -> str:
        c = self.cluster
        parts = [f"voters={sorted(c.conf.voters)} learners={sorted(c.conf.learners)}"]
        for nid in sorted(c.nodes):
            raft = c.raft(nid)
            if raft is None:
                parts.append(f"n{nid}: {'retired' if c.nodes[nid].retired else 'down'}")
                continue
            parts.append(
                f"n{nid}: {raft.role.name} term={raft.term} leader={raft.leader} commit={raft.commit_index} "
                f"applied={raft.applied_index} last={raft.last_index}"
            )
        return "; ".join(parts)


def check_liveness(cluster: Cluster) -> None:
    """Heal ``cluster`` and run it until it has recovered (a leader every
    voter follows, a fresh proposal applied on every member) or
    ``LIVENESS_BOUND`` has passed, which is a liveness violation."""
    cluster.heal()
    probe = _Liveness(cluster)
    cluster.every(TICK, lambda: TICK, probe.poll)
    cluster.run(_LIVENESS_MAX_STEPS, stop=lambda: probe.done)
    if not probe.done and not cluster.failed:
        cluster.checker.violation(LIVENESS, f"no recovery within {_LIVENESS_MAX_STEPS} events after healing")
