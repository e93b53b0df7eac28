"""What every part of a simulated cluster shares: the clock constants, the
event kinds, the per-node record, the counters and the cluster's state.

``ClusterBase`` declares, typed and once, every attribute the cluster's
layers read or write; ``Cluster.__init__`` (raft/sim/cluster.py) assigns
them. The layers stack: ``ClusterBase`` <- ``NodeDriver`` (raft/sim/driver.py:
node lifecycle and Ready handling) <- ``ClusterOperations``
(raft/sim/operations.py: what the nemesis, the workload and the liveness
check call) <- ``Cluster`` (the event loop).

Invariants:
- Events are ``(time, sequence, kind, node id, payload)`` and only
  ``_push`` makes them: the sequence number grows by one per event, so ties
  in time run in scheduling order and a run is a pure function of the seed.
- ``_log`` and ``describe`` only format text for the trace: they draw no
  random numbers and change no state, so tracing never changes a run.
"""

from __future__ import annotations

import heapq
import random
import traceback
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from raft.config import RaftConfig
from raft.node import RaftNode
from raft.sim.checker import EXCEPTION, Checker
from raft.sim.disk import Disk
from raft.sim.network import LinkFaults, Network
from raft.types import ConfState, Message, MessageType, Role

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


class ClusterBase:
    """The shared state of a simulated cluster (assigned by ``Cluster``)."""

    seed: int
    rng: random.Random  # the cluster's own choices: latencies, boot phases, reports
    net: Network
    fault_rng: random.Random  # the nemesis's
    client_rng: random.Random  # the workload's
    checker: Checker
    stats: Stats
    _screen_genuine: bool  # check that genuine messages pass screening
    now: int
    steps: int
    faults: int  # node faults and bursts; the network counts its own
    faults_enabled: bool
    base_rates: LinkFaults
    _queue: list[_Event]
    _seq: int
    _fingerprint: array[int]
    trace: list[str] | None
    config: RaftConfig  # every node's RaftConfig but its id
    initial: list[int]
    spare: list[int]  # ids for new members, never reused
    min_voters: int
    nodes: dict[int, SimNode]
    conf: ConfState  # the latest membership any node has applied
    conf_index: int
    _pending_start: set[int]
    _watched: dict[bytes, dict[int, int]]
    _payloads: int

    def _push(self, time: int, kind: int, nid: int, payload: _Payload) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (time, self._seq, kind, nid, payload))

    def _log(self, line: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now:7d} #{self.steps:<6d} {line}")

    def _exception(self, sn: SimNode, what: str, exc: Exception) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        self.checker.violation(EXCEPTION, f"node {sn.id} {what}: {type(exc).__name__}: {exc}{where}")


def describe(m: Message) -> str:
    """One message, for the trace."""
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
