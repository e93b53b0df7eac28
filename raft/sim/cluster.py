"""A simulated cluster: nodes, disks, network and the event loop driving them.

Invariants:
- Virtual time only. Events sit in one heap ordered by (time, sequence
  number); the sequence number breaks ties in scheduling order, so the run
  is a pure function of the seed. Every random choice comes from a
  ``random.Random`` derived from the seed; node ids are iterated sorted.
- One event = one step: a node handles one input (tick, message, client
  call) and then its Ready batches until it has none, atomically -- except
  for an armed crash, which cuts a Ready at the point the nemesis chose
  (raft/sim/faults.py).
- The driver follows raft/ready.py: write snapshot, entries, hard state;
  send ``messages``; sync if ``must_sync``; send ``messages_after_persist``;
  apply the snapshot and committed entries to the state machine; answer read
  states; ``advance``.
- Every node ticks every ``TICK`` time units with its own phase; latencies
  are 1-5 units normally, so an election timeout (10-20 ticks) is 100-200.
- A crash loses the node's unsynced writes and its state machine; a restart
  builds a new RaftNode over the durable disk and rebuilds the state machine
  from the disk's snapshot. Removed members are stopped for good; ids are
  never reused (new ones come from a spare pool).
- The checker (raft/sim/checker.py) sees every log write, apply, role change
  and read as it happens; the run stops after the step that found the first
  violation.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import traceback
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import blake2b

from raft.config import RaftConfig
from raft.errors import ProposalDropped
from raft.node import RaftNode
from raft.ready import Ready
from raft.sim.checker import CONTRACT, EXCEPTION, SCREENING, Checker
from raft.sim.disk import Disk
from raft.sim.faults import (
    CRASH_AFTER_VOTE,
    CRASH_BEFORE_APPLY,
    CRASH_BEFORE_PERSISTED_MESSAGES,
    CRASH_BEFORE_SYNC,
)
from raft.sim.forgery import deliver_forged, impossible_drops
from raft.sim.network import LinkFaults, Network
from raft.sim.statemachine import BadSnapshotData, chain, encode_state, snapshot_state
from raft.storage import MemoryStorage
from raft.types import ConfChange, ConfChangeType, ConfState, Message, MessageType, Role

TICK = 10
ELECTION_TICK = 10
HEARTBEAT_TICK = 1

HAZARDS = {
    "ack-before-persist": "unsafe_ack_before_persist",
    "forget-vote-on-restart": "unsafe_forget_vote_on_restart",
    "commit-previous-term": "unsafe_commit_previous_term",
}

# Event kinds.
EV_TICK = 0
EV_DELIVER = 1
EV_DELIVER_SNAPSHOT = 2  # the copy of a snapshot whose fate the sender hears of
EV_CALL = 3
EV_RESTART = 4
EV_START = 5
EV_STOP = 6
EV_UNREACHABLE = 7
EV_SNAPSHOT_STATUS = 8
_EVENT_NAMES = (
    "tick",
    "deliver",
    "deliver",
    "call",
    "restart",
    "start",
    "stop",
    "unreachable",
    "snap-status",
)

_MAX_READIES_PER_STEP = 64

_Payload = Message | int | tuple[int, bool] | Callable[[], None] | None
_Event = tuple[int, int, int, int, _Payload]


@dataclass(slots=True)
class SimNode:
    id: int
    disk: Disk
    raft: RaftNode | None = None
    incarnation: int = 0
    sm_index: int = 0
    sm_hash: bytes = b""
    role: Role = Role.FOLLOWER
    term: int = 0
    armed: int = 0
    armed_restart: int = 0
    paused_until: int = 0
    retired: bool = False


@dataclass(slots=True)
class Stats:
    proposals: int = 0
    proposals_dropped: int = 0
    reads: int = 0
    reads_answered: int = 0
    transfers: int = 0
    conf_changes: int = 0
    snapshots_taken: int = 0
    snapshots_sent: int = 0
    crashes: int = 0
    restarts: int = 0
    messages: int = 0
    delivered: int = 0
    readies: int = 0
    applied: int = 0
    forged: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Cluster:
    def __init__(
        self,
        seed: int,
        nodes: int = 3,
        hazards: frozenset[str] = frozenset(),
        trace: bool = False,
        vary_config: bool = True,
    ) -> None:
        unknown = sorted(hazards - HAZARDS.keys())
        if unknown:
            raise ValueError(f"unknown hazard(s): {', '.join(unknown)}")
        master = random.Random(seed)
        self.seed = seed
        self.rng = random.Random(master.getrandbits(64))
        self.net = Network(random.Random(master.getrandbits(64)))
        self.fault_rng = random.Random(master.getrandbits(64))
        self.client_rng = random.Random(master.getrandbits(64))
        self.checker = Checker()
        self.stats = Stats()
        # Hazards break the rules that make some messages impossible; only
        # runs without them check that genuine messages pass screening.
        self._screen_genuine = not hazards
        self.now = 0
        self.steps = 0
        self.faults = 0  # node faults and bursts; the network counts its own
        self.faults_enabled = True
        self.base_rates = LinkFaults()
        self._queue: list[_Event] = []
        self._seq = 0
        self._fingerprint = array("q")
        self.trace: list[str] | None = [] if trace else None

        rng = self.rng
        # Every node's RaftConfig but its id. Flow control and the election
        # options vary by seed: safety must hold under all of them.
        self.config = RaftConfig(
            id=1,
            election_tick=ELECTION_TICK,
            heartbeat_tick=HEARTBEAT_TICK,
            unsafe_ack_before_persist="ack-before-persist" in hazards,
            unsafe_forget_vote_on_restart="forget-vote-on-restart" in hazards,
            unsafe_commit_previous_term="commit-previous-term" in hazards,
        )
        if vary_config:
            self.config = dataclasses.replace(
                self.config,
                max_size_per_msg=rng.choice((128, 1024, 1 << 20)),
                max_inflight_msgs=rng.choice((2, 16, 256)),
                max_committed_size_per_ready=rng.choice((None, None, 64)),
                pre_vote=rng.random() < 0.6,
                check_quorum=rng.random() < 0.7,
            )
            if self.config.check_quorum and rng.random() < 0.4:
                # Lease reads assume ticks run at the same rate everywhere:
                # these seeds get no pauses (raft/sim/faults.py).
                self.config = dataclasses.replace(self.config, read_only_lease_based=True)
            # Node traffic may hold elections (every delivery is traffic of
            # its sender's node: _deliver); safety must not notice.
            self.config = dataclasses.replace(
                self.config, leader_node_grace_ticks=rng.choice((0, 0, 3 * ELECTION_TICK))
            )
            # Followers may learn commits only from later appends and
            # heartbeats (what partition replicas run with).
            self.config = dataclasses.replace(self.config, broadcast_commit=rng.random() < 0.5)
        self.initial = list(range(1, nodes + 1))
        self.spare = list(range(nodes + 1, 2 * nodes + 3))  # nodes + 2 ids, never reused
        self.min_voters = min(3, nodes)
        self.nodes: dict[int, SimNode] = {}
        self.conf = ConfState(voters=frozenset(self.initial))
        self.conf_index = 1
        self._pending_start: set[int] = set()
        self._watched: dict[bytes, dict[int, int]] = {}
        self._payloads = 0

    # ------------------------------------------------------------------
    # set-up and the loop
    # ------------------------------------------------------------------

    def start(self) -> None:
        for nid in self.initial:
            sn = SimNode(nid, Disk(MemoryStorage.bootstrap(self.initial)))
            self.nodes[nid] = sn
            self._boot(sn)

    @property
    def failed(self) -> bool:
        return bool(self.checker.violations)

    @property
    def total_faults(self) -> int:
        return self.faults + self.net.faults

    def run(self, max_steps: int, stop: Callable[[], bool] | None = None) -> None:
        """Process up to ``max_steps`` events (fewer if the queue empties, a
        violation is found, or ``stop()`` turns true)."""
        queue = self._queue
        checker = self.checker
        fingerprint = self._fingerprint
        nodes = self.nodes
        limit = self.steps + max_steps
        while queue and self.steps < limit and not checker.violations:
            time, _, kind, nid, payload = heapq.heappop(queue)
            self.now = time
            self.steps += 1
            checker.step = self.steps
            checker.time = time
            fingerprint.append(time)
            fingerprint.append(kind)
            fingerprint.append(nid)
            if kind == EV_TICK:
                sn = nodes[nid]
                if sn.raft is not None and payload == sn.incarnation:
                    if sn.paused_until > time:
                        self._push(sn.paused_until, EV_TICK, nid, payload)
                    else:
                        self._push(time + TICK, EV_TICK, nid, payload)
                        self._tick(sn)
            elif kind in (EV_DELIVER, EV_DELIVER_SNAPSHOT):
                assert isinstance(payload, Message)
                self._deliver(payload, kind == EV_DELIVER_SNAPSHOT)
            elif kind == EV_CALL:
                assert callable(payload)
                payload()
            elif kind == EV_RESTART:
                sn = nodes[nid]
                if sn.raft is None and not sn.retired and payload == sn.incarnation:
                    self._log(f"restart n{nid}")
                    self.stats.restarts += 1
                    self._boot(sn)
            elif kind == EV_START:
                self._start_new(nid)
            elif kind == EV_STOP:
                self._retire(nid)
            elif kind == EV_UNREACHABLE:
                assert isinstance(payload, int)
                self._report_unreachable(nodes[nid], payload)
            elif kind == EV_SNAPSHOT_STATUS:
                assert isinstance(payload, tuple)
                self._report_snapshot(nodes[nid], *payload)
            if stop is not None and stop():
                break

    def call_later(self, delay: int, fn: Callable[[], None]) -> None:
        self._push(self.now + max(1, delay), EV_CALL, 0, fn)

    def every(self, first: int, gap: Callable[[], int], fn: Callable[[], None]) -> None:
        """Run ``fn`` after ``first`` units, then again after each ``gap()``."""

        def fire() -> None:
            fn()
            self.call_later(gap(), fire)

        self.call_later(first, fire)

    def fingerprint(self) -> str:
        tail = array("q")
        for nid in sorted(self.nodes):
            sn = self.nodes[nid]
            tail.extend((nid, sn.sm_index, sn.term, sn.incarnation))
        digest = blake2b(self._fingerprint.tobytes(), digest_size=16)
        digest.update(tail.tobytes())
        for nid in sorted(self.nodes):
            digest.update(self.nodes[nid].sm_hash)
        return digest.hexdigest()

    def _push(self, time: int, kind: int, nid: int, payload: _Payload) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (time, self._seq, kind, nid, payload))

    def _log(self, line: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now:7d} #{self.steps:<6d} {line}")

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

    def _crash(self, sn: SimNode, restart_after: int | None) -> None:
        sn.raft = None
        sn.disk.crash()
        sn.armed = 0
        sn.paused_until = 0
        sn.role = Role.FOLLOWER
        self.faults += 1
        self.stats.crashes += 1
        if restart_after is not None:
            self._push(self.now + max(1, restart_after), EV_RESTART, sn.id, sn.incarnation)

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
        self._log(f"forged ({kind}) to n{nid}: {_describe(m)}")
        try:
            problem = deliver_forged(raft, m)
        except Exception as exc:
            self._exception(sn, f"step of a forged message ({kind})", exc)
            return True
        if problem is not None:
            self.checker.violation(
                SCREENING, f"node {nid}: forged message ({kind}) {problem}: {_describe(m)}"
            )
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

    # ------------------------------------------------------------------
    # nodes
    # ------------------------------------------------------------------

    def _config(self, nid: int) -> RaftConfig:
        return dataclasses.replace(self.config, id=nid)

    def _boot(self, sn: SimNode) -> None:
        """(Re)start ``sn`` over its durable disk."""
        sn.incarnation += 1
        sn.armed = 0
        disk = sn.disk
        rng = random.Random(self.rng.getrandbits(64))
        try:
            snapshot = disk.snapshot()
            index, digest = snapshot_state(snapshot)
            # The state machine restarts from the snapshot, which may lie past
            # the compaction point (entries kept after it): tell the core.
            raft = RaftNode(self._config(sn.id), disk, rng, applied=index)
            first, last = disk.first_index(), disk.last_index()
            entries = disk.entries(first, last + 1) if last >= first else []
        except Exception as exc:
            self._exception(sn, "restart", exc)
            return
        sn.raft = raft
        sn.sm_index = index
        sn.sm_hash = digest
        sn.role = raft.role
        sn.term = raft.term
        checker = self.checker
        checker.log_reset(sn.id, index, snapshot.metadata.term, digest, entries)
        if index > 0:
            checker.applied(sn.id, index, snapshot.metadata.term, digest, raft.term)
        if raft.applied_index != index:
            checker.violation(
                CONTRACT,
                f"node {sn.id} restarted with applied index {raft.applied_index}, snapshot at {index}",
            )
        self._log(f"boot n{sn.id} term={raft.term} snapshot={index} log={first}..{last}")
        self._push(self.now + self.rng.randint(1, TICK), EV_TICK, sn.id, sn.incarnation)
        self._drive(sn, "ready", None)

    def _start_new(self, nid: int) -> None:
        self._pending_start.discard(nid)
        if nid in self.nodes:
            return
        sn = SimNode(nid, Disk())
        self.nodes[nid] = sn
        self._log(f"start new member n{nid}")
        self._boot(sn)

    def _retire(self, nid: int) -> None:
        sn = self.nodes.get(nid)
        if sn is None or sn.retired:
            return
        if nid in self.conf.all_nodes():
            return  # re-added meanwhile (cannot happen: ids are not reused)
        self._log(f"stop removed member n{nid}")
        sn.retired = True
        sn.raft = None
        sn.role = Role.FOLLOWER

    def _tick(self, sn: SimNode) -> None:
        self._drive(sn, "tick", _tick)

    def _report_unreachable(self, sn: SimNode, peer: int) -> None:
        if sn.paused_until > self.now:
            self._push(sn.paused_until, EV_UNREACHABLE, sn.id, peer)
        elif sn.raft is not None:
            self._drive(sn, "report_unreachable", lambda r: r.report_unreachable(peer))

    def _report_snapshot(self, sn: SimNode, peer: int, ok: bool) -> None:
        if sn.paused_until > self.now:
            self._push(sn.paused_until, EV_SNAPSHOT_STATUS, sn.id, (peer, ok))
        elif sn.raft is not None:
            self._drive(sn, "report_snapshot", lambda r: r.report_snapshot(peer, ok))

    def _deliver(self, m: Message, report: bool) -> None:
        self.stats.messages += 1
        sn = self.nodes.get(m.to)
        lost = sn is None or sn.raft is None or self.net.blocked(m.sender, m.to)
        if sn is not None and sn.paused_until > self.now and not lost:
            self._push(sn.paused_until, EV_DELIVER_SNAPSHOT if report else EV_DELIVER, m.to, m)
            return
        fingerprint = self._fingerprint
        fingerprint.append(m.type)
        fingerprint.append(m.sender)
        fingerprint.append(m.term)
        fingerprint.append(m.index)
        fingerprint.append(len(m.entries))
        fingerprint.append(m.commit)
        fingerprint.append(1 if lost else 0)
        if self.trace is not None:
            self._log(f"{'lost' if lost else 'deliver'} {_describe(m)}")
        if lost:
            if report:
                self._push(self.now + self.rng.randint(1, 5), EV_SNAPSHOT_STATUS, m.sender, (m.to, False))
            elif m.type == MessageType.APPEND:
                self._push(self.now + self.rng.randint(1, 5), EV_UNREACHABLE, m.sender, m.to)
            return
        assert sn is not None
        self.stats.delivered += 1
        raft = sn.raft
        assert raft is not None
        impossible = impossible_drops(raft) if self._screen_genuine else 0
        raft.heard_from_node(m.sender)  # the transport heard the sender's node
        self._drive(sn, "step", lambda r: r.step(m))
        if self._screen_genuine and impossible_drops(raft) != impossible:
            self.checker.violation(
                SCREENING, f"node {m.to} dropped a genuine message as impossible: {_describe(m)}"
            )
        if report:
            self._push(self.now + self.rng.randint(1, 5), EV_SNAPSHOT_STATUS, m.sender, (m.to, True))

    def _send(self, messages: tuple[Message, ...]) -> None:
        net = self.net
        now = self.now
        for m in messages:
            latencies = net.plan()
            snapshot = m.type == MessageType.SNAPSHOT
            if snapshot:
                self.stats.snapshots_sent += 1
                if not latencies:
                    self._push(now + self.rng.randint(1, 5), EV_SNAPSHOT_STATUS, m.sender, (m.to, False))
            first = True
            for latency in latencies:
                self._push(now + latency, EV_DELIVER_SNAPSHOT if snapshot and first else EV_DELIVER, m.to, m)
                first = False

    def _drive(self, sn: SimNode, what: str, fn: Callable[[RaftNode], None] | None) -> None:
        """Give ``sn`` one input, then handle its Readies until it has none."""
        raft = sn.raft
        assert raft is not None
        try:
            if fn is not None:
                fn(raft)
        except ProposalDropped:
            return
        except Exception as exc:
            self._exception(sn, what, exc)
            return
        try:
            count = 0
            while raft.has_ready():
                count += 1
                if count > _MAX_READIES_PER_STEP:
                    self.checker.violation(CONTRACT, f"node {sn.id} keeps having a Ready after {what}")
                    return
                if not self._handle_ready(sn, raft):
                    return  # crashed in the middle
        except Exception as exc:
            self._exception(sn, f"ready after {what}", exc)

    def _handle_ready(self, sn: SimNode, raft: RaftNode) -> bool:
        """One Ready, in the order of raft/ready.py. False if the node
        crashed part way (an armed crash)."""
        self.stats.readies += 1
        rd: Ready = raft.ready()
        disk = sn.disk
        checker = self.checker
        nid = sn.id
        # 1. write
        snapshot = rd.snapshot
        snap_state: tuple[int, bytes] | None = None
        if snapshot is not None:
            try:
                snap_state = snapshot_state(snapshot)
            except BadSnapshotData as exc:
                checker.violation(CONTRACT, f"node {nid} got an unusable snapshot: {exc}")
                return False
            disk.apply_snapshot(snapshot)
            checker.log_snapshot(nid, snap_state[0], snapshot.metadata.term, snap_state[1])
        if rd.entries:
            disk.append(rd.entries)
            checker.log_append(nid, rd.entries, leader=raft.role == Role.LEADER)
        hard_state = rd.hard_state
        if hard_state is not None:
            previous = disk.live.hard_state
            if not rd.must_sync and (hard_state.term != previous.term or hard_state.vote != previous.vote):
                checker.violation(CONTRACT, f"node {nid}: term/vote changed in a Ready without must_sync")
            disk.set_hard_state(hard_state)
        if (rd.entries or snapshot is not None) and not rd.must_sync:
            checker.violation(CONTRACT, f"node {nid}: entries or snapshot in a Ready without must_sync")
        self._observe(sn, raft)
        # ... sending what promises nothing meanwhile
        self._send(rd.messages)
        armed = sn.armed
        if armed == CRASH_BEFORE_SYNC and rd.must_sync:
            self._log(f"crash n{nid} after sending, before sync")
            self._crash(sn, sn.armed_restart)
            return False
        if rd.must_sync:
            disk.sync()
        # 2. messages that needed the persist
        if armed == CRASH_BEFORE_PERSISTED_MESSAGES and rd.must_sync and rd.messages_after_persist:
            self._log(f"crash n{nid} after sync, before persisted messages")
            self._crash(sn, sn.armed_restart)
            return False
        self._send(rd.messages_after_persist)
        if (armed == CRASH_BEFORE_APPLY and (rd.messages_after_persist or rd.committed_entries)) or (
            armed == CRASH_AFTER_VOTE and _grants_vote(rd)
        ):
            self._log(f"crash n{nid} before apply")
            self._crash(sn, sn.armed_restart)
            return False
        # 3. apply
        if snap_state is not None:
            index, digest = snap_state
            if index < sn.sm_index:
                checker.violation(
                    CONTRACT, f"node {nid} installs snapshot {index} behind applied {sn.sm_index}"
                )
            sn.sm_index = index
            sn.sm_hash = digest
            checker.applied(nid, index, snapshot.metadata.term if snapshot else 0, digest, raft.term)
        if rd.committed_entries:
            self._apply(sn, raft, rd)
        for read in rd.read_states:
            self.stats.reads_answered += 1
            checker.read_state(nid, read.index, read.context)
        # 4. advance
        raft.advance(rd)
        if sn.sm_index > self.conf_index:
            self.conf_index = sn.sm_index
            conf = raft.conf_state
            if conf != self.conf:
                self._conf_changed(conf)
        return True

    def _apply(self, sn: SimNode, raft: RaftNode, rd: Ready) -> None:
        checker = self.checker
        watched = self._watched
        nid = sn.id
        term = raft.term
        index = sn.sm_index
        digest = sn.sm_hash
        for entry in rd.committed_entries:
            if entry.index != index + 1:
                checker.violation(
                    CONTRACT, f"node {nid} was given index {entry.index} to apply after {index}"
                )
            index = entry.index
            digest = chain(digest, entry.term, entry.kind, entry.data)
            checker.applied(nid, index, entry.term, digest, term)
            if watched and entry.data in watched:
                watched[entry.data][nid] = index
        self.stats.applied += len(rd.committed_entries)
        sn.sm_index = index
        sn.sm_hash = digest

    def _observe(self, sn: SimNode, raft: RaftNode) -> None:
        role = raft.role
        term = raft.term
        if role == Role.LEADER and (sn.role != Role.LEADER or sn.term != term):
            self._log(f"n{sn.id} leads term {term}")
            self.checker.became_leader(sn.id, term)
            self._cross_check_leader(sn, raft)
        sn.role = role
        sn.term = term
        commit = raft.commit_index
        if commit > self.checker.max_commit:
            self.checker.max_commit = commit

    def _cross_check_leader(self, sn: SimNode, raft: RaftNode) -> None:
        """Leader completeness through the core's own eyes (``term_at``)."""
        checker = self.checker
        index = checker.completeness_index(raft.term)
        if index == 0:
            return
        term = checker.committed[index][0]
        if index < raft.first_index - 1:
            return  # compacted into the leader's snapshot
        if raft.term_at(index) != term:
            checker.violation(
                "leader-completeness",
                f"node {sn.id} leads term {raft.term} but term_at({index}) is {raft.term_at(index)}, "
                f"committed term is {term}",
            )

    def _conf_changed(self, conf: ConfState) -> None:
        old = self.conf
        self.conf = conf
        self._log(f"membership voters={sorted(conf.voters)} learners={sorted(conf.learners)}")
        for nid in sorted(conf.all_nodes()):
            if nid not in self.nodes and nid not in self._pending_start:
                self._pending_start.add(nid)
                self._push(self.now + self.rng.randint(1, 30), EV_START, nid, None)
        for nid in sorted(old.all_nodes() - conf.all_nodes()):
            self._push(self.now + self.rng.randint(0, 200), EV_STOP, nid, None)

    def _exception(self, sn: SimNode, what: str, exc: Exception) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        self.checker.violation(EXCEPTION, f"node {sn.id} {what}: {type(exc).__name__}: {exc}{where}")


def _grants_vote(rd: Ready) -> bool:
    for m in (*rd.messages, *rd.messages_after_persist):
        if m.type == MessageType.VOTE_RESPONSE and not m.reject:
            return True
    return False


def _tick(raft: RaftNode) -> None:
    raft.tick()


def _describe(m: Message) -> str:
    parts = [f"{m.type.name} {m.sender}->{m.to} t{m.term}"]
    if m.type in (MessageType.APPEND, MessageType.APPEND_RESPONSE, MessageType.VOTE, MessageType.PRE_VOTE):
        parts.append(f"i{m.index} lt{m.log_term}")
    if m.entries:
        parts.append(f"[{m.entries[0].index}..{m.entries[-1].index}]")
    if m.commit:
        parts.append(f"c{m.commit}")
    if m.reject:
        parts.append(f"reject hint={m.reject_hint}")
    if m.snapshot is not None:
        parts.append(f"snap@{m.snapshot.metadata.index}")
    if m.context:
        parts.append(f"ctx={m.context!r}")
    return " ".join(parts)
