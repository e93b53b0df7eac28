"""The node driver of a simulated cluster: each node's lifecycle (boot,
crash, start as a new member, retire) and the handling of its inputs and
Readies, with every step shown to the checker.

Invariants:
- One event = one step: a node handles one input (tick, message, client
  call) and then its Ready batches until it has none, atomically -- except
  for an armed crash, which cuts a Ready at the point the nemesis chose
  (raft/sim/faults.py). More than ``_MAX_READIES_PER_STEP`` Readies after
  one input is a contract violation (the core would never go quiet).
- A Ready is handled in the order of raft/ready.py: write snapshot, entries,
  hard state; send ``messages``; sync if ``must_sync``; send
  ``messages_after_persist``; apply the snapshot and committed entries to
  the state machine; answer read states; ``advance``.
- A crash loses the node's unsynced writes and its state machine; a boot
  builds a new RaftNode over the durable disk and rebuilds the state machine
  from the disk's snapshot. Removed members are stopped for good.
- The checker sees every log write, apply, role change and read as it
  happens; an exception out of the core is a violation, never a crash of
  the simulator.
- Random draws (report delays, boot phases, start/stop delays) come from
  ``self.rng`` in event order only, so a seed replays.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from raft.config import RaftConfig
from raft.errors import ProposalDropped
from raft.node import RaftNode
from raft.ready import Ready
from raft.sim.checker import CONTRACT, SCREENING
from raft.sim.cluster_base import (
    EV_DELIVER,
    EV_DELIVER_SNAPSHOT,
    EV_RESTART,
    EV_SNAPSHOT_STATUS,
    EV_START,
    EV_STOP,
    EV_TICK,
    EV_UNREACHABLE,
    TICK,
    ClusterBase,
    SimNode,
    describe,
)
from raft.sim.disk import Disk
from raft.sim.faults import (
    CRASH_AFTER_VOTE,
    CRASH_BEFORE_APPLY,
    CRASH_BEFORE_PERSISTED_MESSAGES,
    CRASH_BEFORE_SYNC,
)
from raft.sim.forgery import impossible_drops
from raft.sim.statemachine import BadSnapshotData, chain, snapshot_state
from raft.types import ConfState, Message, MessageType, Role

_MAX_READIES_PER_STEP = 64


class NodeDriver(ClusterBase):
    """Node lifecycle and Ready handling, on top of the shared state."""

    # ------------------------------------------------------------------
    # lifecycle: boot, start, retire, crash
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

    # ------------------------------------------------------------------
    # inputs: ticks, reports, messages in and out
    # ------------------------------------------------------------------

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
            self._log(f"{'lost' if lost else 'deliver'} {describe(m)}")
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
                SCREENING, f"node {m.to} dropped a genuine message as impossible: {describe(m)}"
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

    # ------------------------------------------------------------------
    # Readies, in the order of raft/ready.py
    # ------------------------------------------------------------------

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


def _grants_vote(rd: Ready) -> bool:
    for m in (*rd.messages, *rd.messages_after_persist):
        if m.type == MessageType.VOTE_RESPONSE and not m.reject:
            return True
    return False


def _tick(raft: RaftNode) -> None:
    raft.tick()
