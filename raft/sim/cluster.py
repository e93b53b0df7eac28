"""A simulated cluster: nodes, disks, network and the event loop driving them.

``Cluster`` is built in layers: the shared state and event kinds
(raft/sim/cluster_base.py), the node driver -- lifecycle and Ready handling
(raft/sim/driver.py) --, the surface for the nemesis, the workload and the
liveness check (raft/sim/operations.py), and here the construction from a
seed and the event loop. Every name this module used to define is still
importable from it.

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
from array import array
from collections.abc import Callable
from hashlib import blake2b

from raft.config import RaftConfig
from raft.sim.checker import Checker
from raft.sim.cluster_base import (
    ELECTION_TICK,
    EV_CALL,
    EV_DELIVER,
    EV_DELIVER_SNAPSHOT,
    EV_RESTART,
    EV_SNAPSHOT_STATUS,
    EV_START,
    EV_STOP,
    EV_TICK,
    EV_UNREACHABLE,
    HAZARDS,
    HEARTBEAT_TICK,
    TICK,
    SimNode,
    Stats,
)
from raft.sim.disk import Disk
from raft.sim.network import LinkFaults, Network
from raft.sim.operations import ClusterOperations
from raft.storage import MemoryStorage
from raft.types import ConfState, Message

__all__ = [
    "ELECTION_TICK",
    "EV_CALL",
    "EV_DELIVER",
    "EV_DELIVER_SNAPSHOT",
    "EV_RESTART",
    "EV_SNAPSHOT_STATUS",
    "EV_START",
    "EV_STOP",
    "EV_TICK",
    "EV_UNREACHABLE",
    "HAZARDS",
    "HEARTBEAT_TICK",
    "TICK",
    "Cluster",
    "SimNode",
    "Stats",
]


class Cluster(ClusterOperations):
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
        self._queue = []
        self._seq = 0
        self._fingerprint = array("q")
        self.trace = [] if trace else None

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
        self.nodes = {}
        self.conf = ConfState(voters=frozenset(self.initial))
        self.conf_index = 1
        self._pending_start = set()
        self._watched = {}
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
