"""``ProgressTracker``: the leader's view of every member, votes and quorums.

Invariants:
- ``progress`` has exactly one entry per member of ``conf`` (voters and
  learners); learners never count toward a quorum.
- ``committed_index()`` is the largest index that a majority of voters hold;
  the caller still has to check its term (raft/log.py ``maybe_commit``).
"""

from __future__ import annotations

import enum

from raft.progress import Progress
from raft.types import ConfState


class VoteResult(enum.IntEnum):
    PENDING = 0
    WON = 1
    LOST = 2


class ProgressTracker:
    __slots__ = ("_max_inflight", "conf", "progress", "votes")

    def __init__(self, max_inflight: int) -> None:
        self._max_inflight = max_inflight
        self.conf = ConfState()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def set_conf(self, conf: ConfState, next_index: int) -> None:
        """Switch to ``conf``: new members start probing at ``next_index``;
        removed members are forgotten; promotions keep their progress."""
        self.conf = conf
        members = conf.all_nodes()
        for node in [n for n in self.progress if n not in members]:
            del self.progress[node]
        for node in sorted(members):
            pr = self.progress.get(node)
            if pr is None:
                pr = self.progress[node] = Progress(next_index, self._max_inflight)
            pr.is_learner = node in conf.learners

    def reset_progress(self, next_index: int) -> None:
        for node in list(self.progress):
            self.progress[node] = Progress(next_index, self._max_inflight, node in self.conf.learners)

    def quorum(self) -> int:
        return len(self.conf.voters) // 2 + 1

    def committed_index(self) -> int:
        voters = self.conf.voters
        if not voters:
            return 0
        matches = sorted((self.progress[v].match for v in voters), reverse=True)
        return matches[self.quorum() - 1]

    def quorum_active(self, self_id: int) -> bool:
        active = sum(1 for v in self.conf.voters if v == self_id or self.progress[v].recent_active)
        return active >= self.quorum()

    def record_vote(self, node: int, granted: bool) -> None:
        self.votes.setdefault(node, granted)

    def tally(self) -> VoteResult:
        granted = sum(1 for v in self.conf.voters if self.votes.get(v) is True)
        rejected = sum(1 for v in self.conf.voters if self.votes.get(v) is False)
        quorum = self.quorum()
        if granted >= quorum:
            return VoteResult.WON
        if rejected > len(self.conf.voters) - quorum:
            return VoteResult.LOST
        return VoteResult.PENDING

    def peers(self, self_id: int) -> list[int]:
        """Every member but ``self_id``, in a deterministic order."""
        return sorted(n for n in self.progress if n != self_id)
