"""The inbox of a ``RaftReplica`` (partitions/raft_replica.py): the records
it holds and the methods any task on the event loop calls to fill it
(``deliver``, ``tick``, ``node_heard``, ``peer_changed``, ``campaign``,
``transfer_leadership``, ``propose``, ``change_membership``,
``request_housekeeping``).

``ReplicaInbox`` is a mixin of ``RaftReplica``, a slice of the same object
rather than a component: its methods read the attributes declared on it,
which ``RaftReplica.__init__`` sets, and a call to one costs what it did
when it was defined in ``RaftReplica`` (a wrapper would add a call per
message and per proposal). The owner task, which empties the inbox, stays
in partitions/raft_replica.py.

Invariants:

- Nothing here changes the ``RaftNode``: these methods only read it (role,
  leader, progress) and append to the inbox, then set ``_signal`` so the
  owner task wakes; only the owner task steps the node.
- Every input joins the inbox's tail, ticks included, so the owner task
  takes them in the order they arrived (why that matters for ticks: the
  invariants of partitions/raft_replica.py).
- ``_signals`` counts the ``_Tick`` and ``_NodeHeard`` items in the inbox:
  each append of one adds one (the owner task subtracts as it takes them,
  and a replica going to sleep drops them all and sets it to zero). They
  never wake a sleeper: a hibernating replica drops them here.
- Any other input wakes a hibernating replica before it is queued, except
  a heartbeat response or a quiesce heartbeat (``deliver``).
- A disk-low notice never enters the inbox (the Raft core never sees one:
  partitions/disk_wait.py), and below the disk reserve a replica that
  ``drops_appends_when_disk_low`` answers a message carrying entries with a
  notice instead of queuing it.
- A proposal is refused at once, queuing nothing, if the replica is stopped
  or stopping (``ReplicaStopped``) or does not lead (``NotLeaderError``);
  otherwise it is queued with the future that will answer it, and its
  proposal time and timing marks are taken in the caller's task.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from partitions.disk_space import DiskSpace
from partitions.disk_wait import FullPeers, carries_data, disk_low_notice, is_disk_low_notice
from partitions.hibernation import Hibernation
from partitions.proposal_timing import ProposalTiming, next_proposal_timing
from partitions.replica_errors import NotLeaderError
from raft.node import RaftNode
from raft.types import ConfChange, Message, MessageType, Role

if TYPE_CHECKING:
    from partitions.raft_replica import SendFn


@dataclass(frozen=True, slots=True)
class _Inbound:
    message: Message
    quiesce: bool


@dataclass(frozen=True, slots=True)
class _Proposal:
    data: bytes | ConfChange  # a ConfChange: a membership change
    future: asyncio.Future[Any]
    proposed_ns: int
    timing: ProposalTiming | None


@dataclass(frozen=True, slots=True)
class _PeerChange:
    node: int
    alive: bool


@dataclass(frozen=True, slots=True)
class _Campaign:
    pass


@dataclass(frozen=True, slots=True)
class _TransferLeader:
    to: int


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


_TICK = _Tick()  # one instance: a tick carries nothing


@dataclass(frozen=True, slots=True)
class _NodeHeard:
    node: int


_Input = _Inbound | _Proposal | _PeerChange | _Campaign | _TransferLeader | _Tick | _NodeHeard
_SIGNALS = (_Tick, _NodeHeard)
"""Inbox items that are clock or liveness signals, not work: they never
make a replica busy (hibernation) nor wake one."""

_NON_WAKING = frozenset({MessageType.HEARTBEAT_RESPONSE})


class ReplicaInbox:
    """The inputs of one ``RaftReplica``; its state is set by
    ``RaftReplica.__init__`` (partitions/raft_replica.py)."""

    group: int
    node_id: int
    drops_appends_when_disk_low: ClassVar[bool]
    disk_dropped_messages: int
    _disk: DiskSpace | None
    _full_peers: FullPeers
    _send_fn: SendFn
    _node: RaftNode
    _hibernation: Hibernation
    _inbox: deque[_Input]
    _signals: int
    _signal: asyncio.Event
    _housekeeping_due: bool

    if TYPE_CHECKING:
        # Defined by ``RaftReplica`` (declared for mypy only, so nothing
        # stands between a call and the real method at run time).
        @property
        def members(self) -> frozenset[int]: ...
        def _wake(self) -> None: ...
        def _check_running(self) -> None: ...

    # --- inputs (any task on the event loop) -------------------------------

    def _enqueue(self, item: _Input, *, wake: bool = True) -> None:
        """Queue ``item`` for the owner task, waking a hibernating replica
        first unless ``wake`` is False."""
        if wake:
            self._wake()
        self._inbox.append(item)
        self._signal.set()

    def deliver(self, message: Message, quiesce: bool = False) -> None:
        if is_disk_low_notice(message):  # for this driver, never the Raft core (disk_wait.py)
            self._full_peers.heard(message.sender)
            return
        disk = self._disk
        if self.drops_appends_when_disk_low and disk is not None and carries_data(message) and disk.low:
            self.disk_dropped_messages += 1
            self._send_fn(message.sender, self.group, disk_low_notice(message), False)
            return
        if message.type == MessageType.APPEND_RESPONSE:
            self._full_peers.answered(message, self._node.progress)
        wake = self._hibernation.asleep and not quiesce and message.type not in _NON_WAKING
        self._enqueue(_Inbound(message, quiesce), wake=wake)

    def tick(self) -> None:
        if not self._hibernation.asleep:
            # Queued, not counted: the node sees it after the messages that
            # arrived before it (module docstring).
            self._inbox.append(_TICK)
            self._signals += 1
            self._signal.set()

    def node_heard(self, node: int) -> None:
        """The transport heard from ``node`` (any traffic). Kept only by a
        follower whose leader is ``node`` and by a leader (its check-quorum):
        anyone else, or a hibernating replica, drops it here."""
        raft = self._node
        role = raft.role
        if self._hibernation.asleep or not (
            (role == Role.FOLLOWER and raft.leader == node) or role == Role.LEADER
        ):
            return
        self._inbox.append(_NodeHeard(node))
        self._signals += 1
        self._signal.set()

    def peer_changed(self, node: int, alive: bool) -> None:
        """The transport saw ``node`` go down or come back."""
        if node in self.members:
            self._enqueue(_PeerChange(node, alive))

    def request_housekeeping(self) -> None:
        """Run ``_housekeeping`` at the next quiet moment."""
        self._housekeeping_due = True
        self._signal.set()

    def campaign(self) -> None:
        """Ask this replica to stand for election now (tests, leader moves)."""
        self._enqueue(_Campaign())

    def transfer_leadership(self, to: int) -> None:
        """Hand leadership to ``to`` if this replica leads (Raft leader
        transfer: ``to`` is brought up to date, then told to campaign)."""
        self._enqueue(_TransferLeader(to))

    async def propose(self, data: bytes) -> Any:
        """Append ``data`` to the log; returns what applying it gave once it
        committed (through ``_settle``). Raises ``NotLeaderError``,
        ``Backpressure``, ``OutcomeUnknown`` or ``ReplicaStopped``."""
        return await self._submit(data)

    async def change_membership(self, change: ConfChange) -> None:
        """Propose a membership change; returns once it applied here (one
        change at a time: Raft refuses a second while one is pending)."""
        await self._submit(change)

    def _submit(self, data: bytes | ConfChange) -> asyncio.Future[Any]:
        """Queue a proposal for the owner task; the future answers it."""
        self._check_running()
        if self._node.role != Role.LEADER:
            raise NotLeaderError(self.group, self._node.leader)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        proposed_ns = time.monotonic_ns()
        timing = next_proposal_timing.get()  # in the caller's task: its context
        if timing is not None:
            timing.proposed_ns = proposed_ns
        self._enqueue(_Proposal(data, future, proposed_ns, timing))
        return future
