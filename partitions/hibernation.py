"""Hibernation: when one replica of a Raft group stops ticking, and when it
starts again (idle groups cost nothing).

``Hibernation`` holds the decisions; the replica (partitions/raft_replica.py)
feeds it what happened, in its owner task, and acts on its verdicts: it
stops counting ticks and leaves the host's awake set on ``Verdict.SLEEP``,
and rejoins it on ``Verdict.WAKE`` or any waking input (``wake``).

Invariants:

- A leader whose followers all match its last index, with everything
  committed and applied, nothing in flight (``busy``: no pending proposal,
  nothing in the inbox) and no leadership transfer under way, is *quiet*.
  After ``after_ticks`` quiet ticks in a row it marks its next heartbeats
  ``quiesce`` (``quiescing``), and once one went out while it is still
  quiet it sleeps. A tick that finds it not quiet starts the count again.
- A follower that got such a heartbeat from its leader (``quiesce_heard``)
  sleeps once it knows a leader and has committed and applied its whole
  log.
- Asleep, a replica stays so only while nothing changed underneath: a
  leader while it is quiet, a follower while it is a follower with
  everything committed. Any other input wakes it (the replica decides which
  inputs wake: heartbeat responses and quiesce heartbeats do not).
- Safety never depends on this (reads do not use leases), only liveness,
  which the wake rules restore. ``enabled`` False: no replica ever quiesces.
"""

from __future__ import annotations

import enum

from raft.node import RaftNode
from raft.types import NO_NODE, Role

__all__ = ["Hibernation", "Verdict"]


class Verdict(enum.Enum):
    """What ``Hibernation.review`` asks the replica to do."""

    SLEEP = "sleep"
    WAKE = "wake"


class Hibernation:
    """The hibernation state of one replica (event loop only)."""

    __slots__ = (
        "_after_ticks",
        "_enabled",
        "_follower_may_sleep",
        "_node_id",
        "_quiesce_sent",
        "_quiet_ticks",
        "asleep",
        "quiescing",
    )

    def __init__(self, node_id: int, *, enabled: bool, after_ticks: int) -> None:
        self._node_id = node_id
        self._enabled = enabled
        self._after_ticks = after_ticks
        self.asleep = False
        """Not ticking: out of the host's awake set."""
        self.quiescing = False
        """The leader's next heartbeats carry ``quiesce``."""
        self._quiet_ticks = 0
        self._quiesce_sent = False
        self._follower_may_sleep = False

    def quiet_leader(self, node: RaftNode, busy: bool) -> bool:
        """Whether ``node`` leads with nothing left to do (module docstring)."""
        if node.role != Role.LEADER or busy or node.lead_transferee:
            return False
        last = node.last_index
        if node.commit_index != last or node.applied_index != last:
            return False
        for peer in node.effective_conf_state.all_nodes():
            if peer == self._node_id:
                continue
            pr = node.progress(peer)
            if pr is None or pr.match != last:
                return False
        return True

    def count_tick(self, node: RaftNode, busy: bool) -> None:
        """One tick went by: count it towards quiescing, or start again."""
        if not self._enabled:
            return
        if self.quiet_leader(node, busy):
            self._quiet_ticks += 1
            if self._quiet_ticks >= self._after_ticks:
                self.quiescing = True
        else:
            self._quiet_ticks = 0
            self.quiescing = False

    def quiesce_sent(self) -> None:
        """A heartbeat marked ``quiesce`` went out."""
        self._quiesce_sent = True

    def quiesce_heard(self) -> None:
        """This follower got a ``quiesce`` heartbeat from its current leader."""
        self._follower_may_sleep = True

    def review(self, node: RaftNode, busy: bool) -> Verdict | None:
        """After a round of the owner task: whether to sleep or wake now."""
        if self.asleep:
            # Still asleep only while nothing changed underneath.
            quiet = (
                self.quiet_leader(node, busy)
                if node.role == Role.LEADER
                else node.role == Role.FOLLOWER and node.commit_index == node.last_index
            )
            return None if quiet else Verdict.WAKE
        if self._quiesce_sent:
            self._quiesce_sent = False
            if self.quiet_leader(node, busy):
                return Verdict.SLEEP
            self.quiescing = False
        elif self._follower_may_sleep:
            self._follower_may_sleep = False
            if (
                node.role == Role.FOLLOWER
                and node.leader != NO_NODE
                and node.commit_index == node.last_index == node.applied_index
            ):
                return Verdict.SLEEP
        return None

    def sleep(self) -> None:
        self.asleep = True
        self.quiescing = False
        self._quiet_ticks = 0

    def wake(self) -> None:
        if self.asleep:
            self.asleep = False
            self._quiet_ticks = 0
            self.quiescing = False
            self._follower_may_sleep = False
