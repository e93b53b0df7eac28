"""``RaftReplica``: the asyncio driver of one Raft group member, whatever
its state machine.

One task (``run``) owns the replica's ``RaftNode``, the writes of its
``GroupStorage`` and its state machine. Everyone else reaches it through
its inbox (``deliver``, ``tick``, ``peer_changed``, ``campaign``,
``transfer_leadership``, proposals: the ``ReplicaInbox`` mixin,
partitions/replica_inbox.py) or reads applied state synchronously.
Subclasses say what the log means: the partition replica
(partitions/replica.py) and the metadata controller (cluster/controller_replica.py).

Invariants:

- A Ready is handled in the order raft/ready.py prescribes: ``messages`` go
  out first (the leader's appends leave before its own sync, thesis
  §10.2.1), then the write is made durable through the node's group-commit
  writer, then ``messages_after_persist`` (votes and acks promise what is now
  on disk), then committed entries are applied, then ``advance``. No input
  reaches the node between ``ready()`` and ``advance()``: inputs wait in the
  inbox and batch into the next Ready, which is how proposals arriving during
  a sync share the next one.
- A proposal completes only after its entry committed and was applied here,
  with what the state machine returned. If this replica loses leadership (or
  stops) first, the proposal fails with ``OutcomeUnknown``: the entry may
  still commit under the next leader.
- Hibernation (idle groups cost nothing; partitions/hibernation.py decides
  when): asleep, a replica does not tick. Any input wakes it but heartbeat
  responses and quiesce heartbeats (a peer going down or coming back does).
  Safety never depends on ticks (``read_only_lease_based`` stays off), only
  liveness, which the wake rules restore.
- Ticks reach the node in the order they arrived relative to the inbox's
  messages (a tick is an inbox item): a follower whose owner task was busy
  steps the leader messages that were already waiting before the ticks that
  came after them, so a backlog never adds up to a spurious election.
- ``node_heard`` (the transport heard from a node: any traffic, of any
  group) reaches the node through the inbox too, and only for a follower of
  that node or a leader (``RaftNode.heard_from_node``; its grace is bounded
  by ``leader_node_grace_ticks``); anyone else drops it in O(1).
- A full disk (partitions/disk_space.py) loses and half-writes nothing: a
  write refused for room (``NoSpaceForWrite``) is tried again, the same
  write set with the Ready in hand, until it fits (disk_wait.py), so nothing
  that depends on it happens first; a refused commit-index-only write is
  dropped (Raft never needs it durable). Below the reserve, partition
  replicas (``drops_appends_when_disk_low``) drop incoming entries, answering
  only with a disk-low notice their leader's driver keeps (disk_wait.py).
- Telemetry changes nothing the replica does or answers; what it records
  and what that costs per proposal is ``ReplicaTelemetry``'s
  (partitions/replica_telemetry.py), reached through ``_telemetry``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from partitions.disk_space import DiskSpace
from partitions.disk_wait import FullPeers, write_when_room
from partitions.group_commit import GroupCommitWriter
from partitions.hibernation import Hibernation, Verdict
from partitions.proposal_timing import ProposalTiming
from partitions.raft_storage import GroupStorage, PreparedWrite, bootstrap_ready
from partitions.replica_config import ReplicaConfig as ReplicaConfig  # re-exported: replica.py
from partitions.replica_errors import Backpressure, NotLeaderError, OutcomeUnknown, ReplicaStopped

# The inbox moved to replica_inbox.py; every name it took from here can
# still be imported from here (the unused ones are the ``X as X`` imports).
from partitions.replica_inbox import _NON_WAKING as _NON_WAKING
from partitions.replica_inbox import (
    _SIGNALS,
    ReplicaInbox,
    _Campaign,
    _Inbound,
    _Input,
    _NodeHeard,
    _Proposal,
    _Tick,
    _TransferLeader,
)
from partitions.replica_inbox import _TICK as _TICK
from partitions.replica_inbox import _PeerChange as _PeerChange
from partitions.replica_telemetry import ReplicaCounters as ReplicaCounters  # re-exported: replica.py
from partitions.replica_telemetry import ReplicaTelemetry
from partitions.storage_errors import NoSpaceForWrite
from raft.errors import ConfChangePending, InvalidConfChange, NotLeader, ProposalDropped, TooManyUncommitted
from raft.node import RaftNode
from raft.ready import Ready
from raft.types import ConfChange, EntryKind, Message, MessageType, Role

SendFn = Callable[[int, int, Message, bool], None]
"""``send(to_node, group, message, quiesce)``: hand a message to the transport
(never blocks; the transport may drop it, Raft tolerates loss)."""


class StateMachine(Protocol):
    """What a replica applies committed entries to."""

    def apply(self, index: int, data: bytes) -> Any: ...

    def apply_noop(self, index: int) -> None: ...


SM = TypeVar("SM", bound=StateMachine)


log = logging.getLogger(__name__)


_Waiting = tuple[int, asyncio.Future[Any], int, ProposalTiming | None]
"""A proposal appended to the log, waiting for its entry to apply: its
term, its caller's future, when it was proposed and its marks, if timed
(a tuple: one is made per proposal, and a dataclass costs 20 times more)."""


class _StoppedWhileWaiting(Exception):
    """``close()`` came while a write waited for room: ``run`` ends quietly."""


class RaftReplica(ReplicaInbox, Generic[SM]):
    """One member of a Raft group on this node. Create with ``await
    cls.open``, run ``run()`` in a task, stop with ``close()``.

    Subclasses implement ``_restore`` (the state machine at a snapshot) and
    may override ``_settle`` (turn an apply result into a proposal's
    answer), ``_on_applied`` (after entries were applied) and
    ``_housekeeping`` (periodic work in the owner task)."""

    drops_appends_when_disk_low: ClassVar[bool] = False
    """Whether, below the disk reserve, incoming entries are dropped
    (module docstring)."""

    def __init__(
        self,
        group: int,
        node_id: int,
        storage: GroupStorage,
        writer: GroupCommitWriter,
        send: SendFn,
        config: ReplicaConfig,
        awake: set[RaftReplica[Any]] | None = None,
        counters: ReplicaCounters | None = None,
        disk: DiskSpace | None = None,
    ) -> None:
        self.group = group
        self._disk = disk
        self.disk_dropped_messages = 0
        """Appends and snapshots dropped because the disk was below its reserve."""
        self._full_peers = FullPeers()  # peers whose disks said they are full (disk_wait.py)
        self.node_id = node_id
        self._storage = storage
        self._writer = writer
        self._send_fn = send
        self._config = config
        snapshot = storage.snapshot()
        self._sm: SM = self._restore(snapshot.metadata.index, snapshot.data)
        self._node = RaftNode(
            config.raft_config(node_id), storage, random.Random(), applied=snapshot.metadata.index
        )
        self._telemetry = ReplicaTelemetry(self._node, node_id, counters or ReplicaCounters())
        self._seen_leadership = (self._node.role, self._node.leader)
        self._inbox: deque[_Input] = deque()
        self._signals = 0  # _Tick and _NodeHeard items in the inbox (never "busy")
        self._signal = asyncio.Event()
        self._pending: dict[int, _Waiting] = {}
        self._housekeeping_due = False
        self._snapshots_sent: list[int] = []
        self._stopping = False
        self._stopped = False
        self._background_failure: BaseException | None = None
        self._hibernation = Hibernation(
            node_id, enabled=config.hibernate, after_ticks=config.hibernate_after_ticks
        )
        self._awake = awake if awake is not None else set()
        self._awake.add(self)

    @classmethod
    async def open(
        cls,
        group: int,
        node_id: int,
        storage: GroupStorage,
        writer: GroupCommitWriter,
        send: SendFn,
        config: ReplicaConfig,
        *,
        voters: list[int],
        learners: list[int] | None = None,
        awake: set[RaftReplica[Any]] | None = None,
        counters: ReplicaCounters | None = None,
        bootstrap: bool = True,
        disk: DiskSpace | None = None,
    ) -> Self:
        """Open the replica, bootstrapping its group with ``voters`` (and
        ``learners``) if this node has never stored anything for it. With
        ``bootstrap`` False an empty replica stays empty until the group's
        leader sends it the log (a member added to a running group)."""
        state = storage.state
        if bootstrap and state.snapshot.index == 0 and state.last_index == 0:
            prepared = storage.prepare(bootstrap_ready(voters, learners or ()))
            await write_when_room(writer, prepared, lambda: False)
            storage.apply_prepared(prepared)
        return cls(group, node_id, storage, writer, send, config, awake, counters, disk)

    # --- what subclasses define --------------------------------------------

    def _restore(self, index: int, data: bytes) -> SM:
        raise NotImplementedError

    def _settle(self, future: asyncio.Future[Any], result: Any) -> None:
        """Answer a proposal whose entry applied with ``result``."""
        future.set_result(result)

    def _on_applied(self) -> None:
        """Called after a Ready's committed entries were applied."""

    def _on_leader_changed(self) -> None:
        """Called after a Ready in which this replica's role or its known
        leader changed."""

    async def _housekeeping(self) -> None:
        """Work requested with ``request_housekeeping``, run between Readys."""

    # --- observation -------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._node.role == Role.LEADER

    @property
    def leader(self) -> int:
        return self._node.leader

    @property
    def hibernating(self) -> bool:
        return self._hibernation.asleep

    @property
    def members(self) -> frozenset[int]:
        return self._node.effective_conf_state.all_nodes()

    @property
    def committed_members(self) -> frozenset[int]:
        """Voters and learners as of the commit index (a removal counts
        here only once it committed)."""
        return self._node.committed_conf_state.all_nodes()

    @property
    def voters(self) -> frozenset[int]:
        return self._node.effective_conf_state.voters

    @property
    def learners(self) -> frozenset[int]:
        return self._node.effective_conf_state.learners

    @property
    def term(self) -> int:
        return self._node.term

    @property
    def election_timeouts(self) -> int:
        """Elections this replica started because its leader went silent."""
        return self._node.election_timeouts

    @property
    def dropped_messages(self) -> dict[str, int]:
        """Peers' messages the Raft core refused, by reason
        (raft/screening.py): a copy, so a reader never sees it change."""
        return self._telemetry.dropped_messages()

    @property
    def elections_started(self) -> dict[str, int]:
        """Elections this replica started, by why (the node's metrics)."""
        return self._telemetry.elections_started()

    def follower_lag(self) -> list[tuple[int, int, int]]:
        """``(peer, entries, bytes)`` each member lacks of this leader's log
        (empty unless it leads): entries after its acknowledged match, and
        their bytes as recorded (``LogBytes``; estimated at the average
        entry size for entries older than the record kept)."""
        return self._telemetry.follower_lag()

    @property
    def serves_its_term(self) -> bool:
        """Whether this replica leads and has applied an entry of its own
        term: everything committed by earlier leaders is applied here (what
        a new leader must wait for before answering from its state)."""
        node = self._node
        return (
            node.role == Role.LEADER
            and node.term_at(node.commit_index) == node.term
            and node.applied_index >= node.commit_index
        )

    def caught_up(self, peer: int) -> bool:
        """Whether this leader knows ``peer`` holds its whole log."""
        progress = self._node.progress(peer)
        return progress is not None and progress.match == self._node.last_index

    # --- the owner task ----------------------------------------------------

    async def run(self) -> None:
        try:
            while not self._stopping:
                if self._background_failure is not None:
                    raise ReplicaStopped(
                        f"group {self.group}: a storage write failed"
                    ) from self._background_failure
                if not self._inbox and not self._housekeeping_due:
                    self._signal.clear()
                    await self._signal.wait()
                    continue
                self._consume_inputs()
                while self._node.has_ready():
                    await self._handle_ready(self._node.ready())
                if self._housekeeping_due:
                    self._housekeeping_due = False
                    await self._housekeeping()
                self._update_hibernation()
        except _StoppedWhileWaiting:
            pass  # closed while a write waited for disk space: nothing was acknowledged
        finally:
            self._stopped = True
            self._awake.discard(self)
            self._fail_pending(ReplicaStopped(f"replica of group {self.group} stopped"))

    def close(self) -> None:
        """Ask ``run`` to stop after the Ready in hand; the caller awaits the
        task."""
        self._stopping = True
        self._signal.set()

    def _check_running(self) -> None:
        if self._stopped or self._stopping:
            raise ReplicaStopped(f"replica of group {self.group} is stopped")

    def _consume_inputs(self) -> None:
        node = self._node
        inbox = self._inbox
        while inbox:
            item = inbox.popleft()
            if isinstance(item, _Inbound):
                self._step(item)
            elif isinstance(item, _Tick):
                self._signals -= 1
                timeouts, leader = node.election_timeouts, node.leader
                node.tick()
                if node.election_timeouts != timeouts:
                    # Rare and telling (a leader gone, or one that could not
                    # be heard in time under load): say which group and whom.
                    log.info(
                        "group %d: election timeout, leader %d was silent (term %d)",
                        self.group,
                        leader,
                        node.term,
                    )
                self._hibernation.count_tick(node, self._busy())
            elif isinstance(item, _NodeHeard):
                self._signals -= 1
                node.heard_from_node(item.node)
            elif isinstance(item, _Proposal):
                self._propose(item)
            elif isinstance(item, _Campaign):
                node.campaign()
            elif isinstance(item, _TransferLeader):
                if node.role == Role.LEADER and item.to != self.node_id:
                    node.transfer_leader(item.to)
            elif not item.alive and node.role == Role.LEADER:
                node.report_unreachable(item.node)

    def _step(self, item: _Inbound) -> None:
        node = self._node
        message = item.message
        node.step(message)
        if (
            item.quiesce
            and message.type == MessageType.HEARTBEAT
            and node.role == Role.FOLLOWER
            and node.leader == message.sender
            and node.term == message.term
        ):
            self._hibernation.quiesce_heard()

    def _propose(self, item: _Proposal) -> None:
        if item.future.done():  # the caller gave up before it was proposed
            return
        node = self._node
        try:
            if isinstance(item.data, ConfChange):
                index = node.propose_conf_change(item.data)
            else:
                index = node.propose(item.data)
        except TooManyUncommitted:
            item.future.set_exception(
                Backpressure(f"group {self.group}: too many bytes waiting to commit; retry shortly")
            )
        except (ConfChangePending, InvalidConfChange) as exc:
            item.future.set_exception(exc)  # the caller retries later or gives up
        except (NotLeader, ProposalDropped):
            item.future.set_exception(NotLeaderError(self.group, node.leader))
        else:
            timing = item.timing
            if timing is not None:
                timing.index = index
                self._telemetry.timed += 1
            self._pending[index] = (node.term, item.future, item.proposed_ns, timing)

    async def _handle_ready(self, ready: Ready) -> None:
        node = self._node
        telemetry = self._telemetry
        # The moment this replica learned its committed entries committed.
        committed_ns = time.monotonic_ns() if self._pending and ready.committed_entries else 0
        self._send_all(ready.messages)
        prepared = self._storage.prepare(ready)
        if prepared.sync:
            telemetry.counters.synced_entries += len(ready.entries)
        if telemetry.timed and ready.entries:
            await telemetry.write_marked(self._write, prepared, ready.entries, self._pending)
        elif prepared.sync or prepared.empty:
            await self._write(prepared)
        else:
            # No entries, snapshot, term or vote (those force a sync): only
            # the commit index moved. Raft does not need it durable (a
            # restarted node relearns it from the leader), so it is queued
            # behind this group's earlier writes and not waited for; waiting
            # would put a writer-thread round trip on every proposal's path.
            assert not ready.entries and ready.snapshot is None
            self._writer.submit(prepared.write_set, sync=False).add_done_callback(self._background_write_done)
            self._storage.apply_prepared(prepared)
        if ready.snapshot is not None:
            meta = ready.snapshot.metadata
            self._sm = self._restore(meta.index, ready.snapshot.data)
            telemetry.snapshot_installed()
        if ready.entries:
            telemetry.record_sizes(ready.entries)
        self._send_all(ready.messages_after_persist)
        self._apply(ready, committed_ns)
        node.advance(ready)
        for peer in self._snapshots_sent:
            node.report_snapshot(peer, True)
        self._snapshots_sent.clear()
        if node.role != Role.LEADER and self._pending:
            self._fail_pending(OutcomeUnknown(self.group, node.leader))
        if ready.committed_entries or ready.snapshot is not None:
            self._on_applied()
        if (node.role, node.leader) != self._seen_leadership:
            self._seen_leadership = (node.role, node.leader)
            self._on_leader_changed()

    def _background_write_done(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            return
        if isinstance(future.exception(), NoSpaceForWrite):
            return  # only a commit index, which Raft never needs durable
        if future.exception() is not None:
            # The writer is failed for good: stop this replica (run() raises).
            self._background_failure = future.exception()
            self._signal.set()

    async def _write(self, prepared: PreparedWrite) -> None:
        if not prepared.empty and not await write_when_room(self._writer, prepared, lambda: self._stopping):
            raise _StoppedWhileWaiting
        self._storage.apply_prepared(prepared)

    def _send_all(self, messages: tuple[Message, ...]) -> None:
        send = self._send_fn
        group = self.group
        quiescing = self._hibernation.quiescing
        for m in messages:
            quiesce = quiescing and m.type == MessageType.HEARTBEAT
            if quiesce:
                self._hibernation.quiesce_sent()
            elif m.type == MessageType.SNAPSHOT:
                self._snapshots_sent.append(m.to)
                self._telemetry.snapshot_sent()
            send(m.to, group, m, quiesce)

    def _apply(self, ready: Ready, committed_ns: int) -> None:
        sm = self._sm
        pending = self._pending
        telemetry = self._telemetry
        latency = telemetry.counters.commit_latency
        for entry in ready.committed_entries:
            if entry.kind == EntryKind.NORMAL and entry.data:
                result = sm.apply(entry.index, entry.data)
            else:
                sm.apply_noop(entry.index)
                # A membership change answers its proposer with None; an
                # empty leader entry has no proposer.
                result = None
            waiter = pending.pop(entry.index, None) if pending else None
            if waiter is None:
                continue
            term, future, proposed_ns, timing = waiter
            ours = term == entry.term  # else another leader's entry took the index
            if ours:
                latency.observe((committed_ns - proposed_ns) / 1e9)
            if timing is not None:
                telemetry.timed -= 1
                if ours:
                    timing.committed_ns = committed_ns
            if future.done():
                continue
            if not ours or (result is None and entry.kind == EntryKind.NORMAL):
                future.set_exception(OutcomeUnknown(self.group, self._node.leader))
            elif entry.kind != EntryKind.NORMAL:
                future.set_result(None)  # a membership change took effect
            else:
                self._settle(future, result)
            if timing is not None and ours:
                telemetry.mark_applied(timing, future)

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        self._telemetry.timed = 0
        for _, future, _, _ in pending.values():
            if not future.done():
                future.set_exception(error)
        for item in self._inbox:
            if isinstance(item, _Proposal) and not item.future.done():
                item.future.set_exception(error)

    async def _snapshot_and_compact(self, index: int, data: bytes) -> None:
        """Store ``data`` as the state at ``index`` and drop the log up to it
        (a follower that needs what was dropped gets the snapshot)."""
        conf = self._node.conf_state_at(index)
        # Both writes free space (WriteSet.frees_space), so they pass a disk
        # below its floor: the snapshot replaces the stored one and holds no
        # more than it plus the entries it covers, which the compaction
        # drops (adding one small truncation record).
        snapshot = self._storage.create_snapshot(index, conf, data)
        snapshot.write_set.mark_freeing()
        await self._write(snapshot)
        compaction = self._storage.compact(index)
        compaction.write_set.mark_freeing()
        await self._write(compaction)

    # --- hibernation -------------------------------------------------------

    def _busy(self) -> bool:
        """Proposals in flight or inputs waiting: never quiet."""
        return bool(self._pending) or len(self._inbox) > self._signals

    def _update_hibernation(self) -> None:
        verdict = self._hibernation.review(self._node, self._busy())
        if verdict is Verdict.SLEEP:
            self._sleep()
        elif verdict is Verdict.WAKE:
            self._wake()

    def _sleep(self) -> None:
        self._hibernation.sleep()
        # Not busy: the inbox holds only signals, which a sleeper drops.
        self._inbox = deque(item for item in self._inbox if not isinstance(item, _SIGNALS))
        self._signals = 0
        self._awake.discard(self)

    def _wake(self) -> None:
        self._hibernation.wake()
        if not self._stopped:
            self._awake.add(self)
