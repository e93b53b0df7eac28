"""What a simulated cluster offers the nemesis, the workload and the
liveness check: observation, faults and client operations.

Invariants:
- Observation reads state and changes nothing (``unique_payload`` only
  counts, ``watch`` only registers).
- A down or paused node does not answer client operations, nor take a
  forged message or a snapshot request: the call does nothing (False or
  None where it returns something).
- Every fault injected here is counted in ``faults`` and undone by an
  event it schedules itself (restart) or by ``heal``.
- Every operation the core accepts is followed by the node's Readies
  (``_drive``), inside the same step.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from raft.errors import ProposalDropped
from raft.node import RaftNode
from raft.sim.checker import CONTRACT, SCREENING
from raft.sim.cluster_base import describe
from raft.sim.driver import NodeDriver
from raft.sim.forgery import deliver_forged
from raft.sim.network import LinkFaults
from raft.sim.statemachine import encode_state
from raft.types import ConfChange, ConfChangeType, Message, Role


class ClusterOperations(NodeDriver):
    """The cluster's surface for the nemesis, the workload and the liveness check."""

    # ------------------------------------------------------------------
    # observation for the nemesis, the workload and the liveness check
    # ------------------------------------------------------------------

    def node_ids(self) -> list[int]:
        """Ids of members that exist and are not retired (up or down)."""
        return [nid for nid in sorted(self.nodes) if not self.nodes[nid].retired]

    def live_ids(self) -> list[int]:
        return [nid for nid in sorted(self.nodes) if self.nodes[nid].raft is not None]

    def leader_id(self) -> int | None:
        """The live leader with the highest term, if any."""
        best: tuple[int, int] | None = None
        for nid in sorted(self.nodes):
            raft = self.nodes[nid].raft
            if raft is not None and raft.role == Role.LEADER and (best is None or raft.term > best[0]):
                best = (raft.term, nid)
        return best[1] if best is not None else None

    def voters_of(self, nid: int) -> list[int]:
        raft = self.nodes[nid].raft
        return sorted(raft.conf_state.voters) if raft is not None else []

    def raft(self, nid: int) -> RaftNode | None:
        sn = self.nodes.get(nid)
        return sn.raft if sn is not None else None

    def watch(self, payload: bytes) -> dict[int, int]:
        """Node -> index for the nodes that applied an entry carrying
        ``payload``, kept up to date from now on (nodes that skip the entry
        by installing a snapshot do not show up)."""
        return self._watched.setdefault(payload, {})

    def applied_index(self, nid: int) -> int:
        """The index ``nid``'s state machine is at (0 if down or unknown)."""
        sn = self.nodes.get(nid)
        return sn.sm_index if sn is not None and sn.raft is not None else 0

    def unique_payload(self, prefix: bytes = b"p") -> bytes:
        self._payloads += 1
        return b"%s%d" % (prefix, self._payloads)

    # ------------------------------------------------------------------
    # faults (called by the nemesis)
    # ------------------------------------------------------------------

    def crash(self, nid: int, restart_after: int | None) -> bool:
        sn = self.nodes[nid]
        if sn.raft is None:
            return False
        self._log(f"crash n{nid}")
        self._crash(sn, restart_after)
        return True

    def arm_crash(self, nid: int, point: int, restart_after: int) -> bool:
        sn = self.nodes[nid]
        if sn.raft is None or sn.armed:
            return False
        sn.armed = point
        sn.armed_restart = restart_after
        self.faults += 1
        return True

    def pause(self, nid: int, duration: int) -> bool:
        sn = self.nodes[nid]
        if sn.raft is None or sn.paused_until > self.now:
            return False
        sn.paused_until = self.now + duration
        self.faults += 1
        self._log(f"pause n{nid} for {duration}")
        return True

    def heal(self) -> None:
        """Stop injecting faults and undo every one still in force."""
        self._log("heal")
        self.faults_enabled = False
        self.base_rates = LinkFaults()
        self.net.heal()
        for nid in sorted(self.nodes):
            sn = self.nodes[nid]
            sn.armed = 0
            sn.paused_until = 0
            if sn.raft is None and not sn.retired:
                self.stats.restarts += 1
                self._boot(sn)

    def inject(self, nid: int, forge: Callable[[RaftNode], tuple[str, Message]]) -> bool:
        """Deliver to ``nid`` a forged message built against its state now
        (an attacker on the network, raft/sim/forgery.py). It must be
        dropped without a trace; anything else is a violation."""
        sn = self.nodes[nid]
        raft = sn.raft
        if raft is None or sn.paused_until > self.now:
            return False
        kind, m = forge(raft)
        self.faults += 1
        self.stats.forged += 1
        self.stats.extra[f"forged.{kind}"] = self.stats.extra.get(f"forged.{kind}", 0) + 1
        self._log(f"forged ({kind}) to n{nid}: {describe(m)}")
        try:
            problem = deliver_forged(raft, m)
        except Exception as exc:
            self._exception(sn, f"step of a forged message ({kind})", exc)
            return True
        if problem is not None:
            self.checker.violation(SCREENING, f"node {nid}: forged message ({kind}) {problem}: {describe(m)}")
        return True

    # ------------------------------------------------------------------
    # client operations (called by the workload); a down or paused node
    # does not answer them
    # ------------------------------------------------------------------

    def propose(self, nid: int, data: bytes | None = None) -> int | None:
        """Propose at ``nid``; the index, or None if it was dropped."""
        sn = self.nodes[nid]
        raft = sn.raft
        if raft is None or sn.paused_until > self.now:
            return None
        payload = data if data is not None else self.unique_payload()
        self.stats.proposals += 1
        was_leader = raft.role == Role.LEADER
        try:
            index = raft.propose(payload)
        except ProposalDropped:
            self.stats.proposals_dropped += 1
            return None
        except Exception as exc:
            self._exception(sn, "propose", exc)
            return None
        if not was_leader:
            self.checker.violation(CONTRACT, f"node {nid} ({raft.role.name}) accepted a proposal")
        self._log(f"propose n{nid} {payload!r} -> {index}")
        self._drive(sn, "ready", None)
        return index

    def read_index(self, nid: int) -> None:
        sn = self.nodes[nid]
        if sn.raft is None or sn.paused_until > self.now:
            return
        context = self.unique_payload(b"r")
        self.stats.reads += 1
        self.checker.read_requested(nid, context)
        self._log(f"read n{nid} {context!r}")
        self._drive(sn, "read_index", lambda r: r.read_index(context))

    def transfer_leader(self, nid: int, to: int) -> None:
        sn = self.nodes[nid]
        if sn.raft is None or sn.paused_until > self.now:
            return
        self.stats.transfers += 1
        self._log(f"transfer n{nid} -> n{to}")
        self._drive(sn, "transfer_leader", lambda r: r.transfer_leader(to))

    def campaign(self, nid: int) -> None:
        sn = self.nodes[nid]
        if sn.raft is None or sn.paused_until > self.now:
            return
        self._log(f"campaign n{nid}")
        self._drive(sn, "campaign", lambda r: r.campaign())

    def change_membership(self, nid: int, rng: random.Random) -> None:
        """Propose one random, sensible membership change at leader ``nid``."""
        sn = self.nodes[nid]
        raft = sn.raft
        if raft is None or sn.paused_until > self.now:
            return
        conf = raft.conf_state
        voters = sorted(conf.voters)
        learners = sorted(conf.learners)
        options: list[ConfChange] = []
        if self.spare:
            options.append(ConfChange(ConfChangeType.ADD_LEARNER, self.spare[0]))
        for learner in learners:
            options.append(ConfChange(ConfChangeType.ADD_VOTER, learner))
            options.append(ConfChange(ConfChangeType.REMOVE_NODE, learner))
        if len(voters) > self.min_voters:
            for voter in voters:
                options.append(ConfChange(ConfChangeType.ADD_LEARNER, voter))
                options.append(ConfChange(ConfChangeType.REMOVE_NODE, voter))
        if not options:
            return
        change = rng.choice(options)
        try:
            index = raft.propose_conf_change(change)
        except ProposalDropped:
            return
        except Exception as exc:
            self._exception(sn, "propose_conf_change", exc)
            return
        if self.spare and change.node_id == self.spare[0]:
            self.spare.pop(0)
        self.stats.conf_changes += 1
        self._log(f"conf-change n{nid} {change.type.name} n{change.node_id} -> {index}")
        self._drive(sn, "ready", None)

    def take_snapshot(self, nid: int, keep: int = 0) -> None:
        """The application snapshots ``nid``'s applied state and compacts
        the log, keeping ``keep`` entries before the snapshot index."""
        sn = self.nodes[nid]
        raft = sn.raft
        if raft is None or sn.paused_until > self.now:
            return
        index = sn.sm_index
        if index != raft.applied_index:
            self.checker.violation(
                CONTRACT,
                f"node {nid} reports applied index {raft.applied_index}, its state machine is at {index}",
            )
            return
        disk = sn.disk
        if index <= disk.snapshot().metadata.index:
            return
        try:
            snapshot = disk.create_snapshot(index, raft.conf_state, encode_state(index, sn.sm_hash))
            compact_to = index - keep
            if compact_to >= disk.first_index():
                disk.compact(compact_to)
                self.checker.log_compact(nid, compact_to, disk.term(compact_to))
        except Exception as exc:
            self._exception(sn, "snapshot", exc)
            return
        self.stats.snapshots_taken += 1
        self._log(
            f"snapshot n{nid} at {index} (term {snapshot.metadata.term}), log from {disk.first_index()}"
        )
