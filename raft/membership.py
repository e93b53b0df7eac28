"""Membership changes, one server at a time, effective when appended.

Why one server at a time (Raft thesis §4.1) rather than joint consensus: any
majority of C and any majority of C±1 server intersect, so no two leaders can
be elected in one term across a single change. It is simpler to get right,
and the controller replaces a replica as add-learner → promote → remove, which
needs nothing more. Two rules make it safe:

1. A node uses the *latest* configuration in its log, committed or not, and
   falls back to the previous one if that entry is truncated away.
2. A leader proposes a change only when the previous one is committed and it
   has committed an entry of its own term (the fix for the bug Ongaro
   described on raft-dev in 2015: a new leader's stale configuration).

Invariant: ``MembershipLog`` holds (index, ConfState) pairs in increasing
index order, the first being the snapshot's configuration.
"""

from __future__ import annotations

import struct

from raft.errors import InvalidConfChange
from raft.types import ConfChange, ConfChangeType, ConfState

_HEADER = struct.Struct(">BQ")


def encode_conf_change(change: ConfChange) -> bytes:
    return _HEADER.pack(change.type, change.node_id) + change.context


def decode_conf_change(data: bytes) -> ConfChange:
    kind, node_id = _HEADER.unpack_from(data)
    return ConfChange(ConfChangeType(kind), node_id, bytes(data[_HEADER.size :]))


def validate_conf_change(conf: ConfState, change: ConfChange) -> None:
    """Raise InvalidConfChange if ``change`` cannot apply to ``conf``."""
    node = change.node_id
    if node <= 0:
        raise InvalidConfChange(f"node id must be positive, got {node}")
    if change.type == ConfChangeType.ADD_VOTER:
        if node in conf.voters:
            raise InvalidConfChange(f"node {node} is already a voter")
    elif change.type == ConfChangeType.ADD_LEARNER:
        if node in conf.learners:
            raise InvalidConfChange(f"node {node} is already a learner")
        if node in conf.voters and len(conf.voters) == 1:
            raise InvalidConfChange(f"cannot demote node {node}, the last voter")
    elif change.type == ConfChangeType.REMOVE_NODE:
        if node not in conf.all_nodes():
            raise InvalidConfChange(f"node {node} is not a member")
        if conf.voters == frozenset((node,)):
            raise InvalidConfChange(f"cannot remove node {node}, the last voter")


def apply_conf_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The configuration after ``change``; an invalid change leaves it as is
    (it was validated when proposed, so this only guards replays)."""
    try:
        validate_conf_change(conf, change)
    except InvalidConfChange:
        return conf
    node = frozenset((change.node_id,))
    if change.type == ConfChangeType.ADD_VOTER:
        return ConfState(voters=conf.voters | node, learners=conf.learners - node)
    if change.type == ConfChangeType.ADD_LEARNER:
        return ConfState(voters=conf.voters - node, learners=conf.learners | node)
    return ConfState(voters=conf.voters - node, learners=conf.learners - node)


class MembershipLog:
    """The configurations recorded in the log, latest last."""

    __slots__ = ("_history",)

    def __init__(self, base_index: int, base: ConfState) -> None:
        self._history: list[tuple[int, ConfState]] = [(base_index, base)]

    @property
    def current(self) -> ConfState:
        return self._history[-1][1]

    @property
    def last_change_index(self) -> int:
        return self._history[-1][0]

    def at(self, index: int) -> ConfState:
        """The configuration in force once the log is applied up to ``index``."""
        for entry_index, conf in reversed(self._history):
            if entry_index <= index:
                return conf
        return self._history[0][1]

    def append(self, index: int, change: ConfChange) -> ConfState:
        conf = apply_conf_change(self.current, change)
        self._history.append((index, conf))
        return conf

    def truncate_from(self, index: int) -> bool:
        """Forget configurations from entries at ``index`` or later (their
        entries were overwritten). Returns whether the current one changed."""
        before = len(self._history)
        while len(self._history) > 1 and self._history[-1][0] >= index:
            self._history.pop()
        return len(self._history) != before

    def reset(self, index: int, conf: ConfState) -> None:
        self._history = [(index, conf)]

    def compact(self, first_index: int) -> None:
        """Drop history no longer needed to answer ``at(i)`` for i >= first_index - 1."""
        keep = 0
        for n, (entry_index, _) in enumerate(self._history):
            if entry_index <= first_index - 1:
                keep = n
        del self._history[:keep]
