"""A synchronous, loss-free test network for scenario tests of ``RaftNode``.

Each node has a ``MemoryStorage`` that stands for its disk; ``process()``
runs every node's Ready exactly as the storage contract says (persist, then
send the after-persist messages, then apply, then advance). Messages are
queued and delivered only by ``deliver()``, so a test controls the order and
can cut, drop or inspect traffic between any two nodes.

Invariant: nothing here is random except through the seeded rng per node.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from raft.config import RaftConfig
from raft.node import RaftNode
from raft.progress import Progress
from raft.ready import Ready
from raft.storage import MemoryStorage
from raft.types import Entry, EntryKind, Message, MessageType, ReadState, Role


@dataclass
class Member:
    node: RaftNode
    storage: MemoryStorage
    applied: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)


class Network:
    def __init__(
        self,
        voters: Iterable[int],
        learners: Iterable[int] = (),
        seed: int = 1,
        **config: object,
    ) -> None:
        self.voters = sorted(voters)
        self.learners = sorted(learners)
        self.seed = seed
        self.config = config
        self.members: dict[int, Member] = {}
        self.queue: list[Message] = []
        self.cut: set[tuple[int, int]] = set()
        self.dropped: list[Message] = []
        self.sent: list[Message] = []
        for node_id in [*self.voters, *self.learners]:
            self.add_member(node_id, MemoryStorage.bootstrap(self.voters, self.learners))

    def config_for(self, node_id: int) -> RaftConfig:
        return RaftConfig(id=node_id, **self.config)  # type: ignore[arg-type]

    def add_member(self, node_id: int, storage: MemoryStorage | None = None) -> Member:
        storage = storage if storage is not None else MemoryStorage()
        node = RaftNode(self.config_for(node_id), storage, random.Random(self.seed * 1000 + node_id))
        member = Member(node, storage)
        self.members[node_id] = member
        return member

    def restart(self, node_id: int) -> RaftNode:
        """Crash and restart ``node_id`` from its storage (everything in the
        harness storage is synced)."""
        old = self.members[node_id]
        member = self.add_member(node_id, old.storage)
        member.applied = []
        return member.node

    def node(self, node_id: int) -> RaftNode:
        return self.members[node_id].node

    # --- driving ---

    def process(self, node_id: int) -> None:
        node = self.members[node_id].node
        while node.has_ready():
            self.handle_ready(node_id, node.ready())

    def handle_ready(self, node_id: int, rd: Ready) -> None:
        """Carry out one Ready of ``node_id`` as the contract says and advance."""
        member = self.members[node_id]
        self.sent.extend(rd.messages)
        self.queue.extend(rd.messages)
        member.storage.persist(rd)
        self.sent.extend(rd.messages_after_persist)
        self.queue.extend(rd.messages_after_persist)
        member.applied.extend(rd.committed_entries)
        member.read_states.extend(rd.read_states)
        member.node.advance(rd)

    def process_all(self) -> None:
        for node_id in sorted(self.members):
            self.process(node_id)

    def deliver(
        self,
        until_quiet: bool = True,
        only: Callable[[Message], bool] | None = None,
        max_rounds: int = 10_000,
    ) -> list[Message]:
        """Deliver queued messages (those matching ``only``) until none are
        left; returns what was delivered."""
        delivered: list[Message] = []
        for _ in range(max_rounds):
            self.process_all()
            batch = [m for m in self.queue if only is None or only(m)]
            if not batch:
                return delivered
            self.queue = [m for m in self.queue if not (only is None or only(m))]
            for m in batch:
                if (m.sender, m.to) in self.cut or m.to not in self.members:
                    self.dropped.append(m)
                    continue
                delivered.append(m)
                self.members[m.to].node.step(m)
                self.process(m.to)
            if not until_quiet:
                return delivered
        raise AssertionError("the network did not go quiet")

    def tick(self, node_id: int, times: int = 1) -> None:
        for _ in range(times):
            self.node(node_id).tick()
            self.process(node_id)

    def tick_all(self, times: int = 1) -> None:
        for _ in range(times):
            for node_id in sorted(self.members):
                self.tick(node_id)
            self.deliver()

    def elect(self, node_id: int) -> RaftNode:
        self.node(node_id).campaign()
        self.deliver()
        node = self.node(node_id)
        assert node.role == Role.LEADER, f"node {node_id} did not win: {node.role.name}"
        return node

    def isolate(self, node_id: int) -> None:
        for other in self.members:
            if other != node_id:
                self.cut |= {(node_id, other), (other, node_id)}

    def heal(self) -> None:
        self.cut.clear()

    def drop_queued(self) -> None:
        self.dropped.extend(self.queue)
        self.queue.clear()

    def drop(self, which: Callable[[Message], bool]) -> list[Message]:
        """Lose the queued messages matching ``which``; returns them."""
        lost = [m for m in self.queue if which(m)]
        self.queue = [m for m in self.queue if not which(m)]
        self.dropped.extend(lost)
        return lost

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every link between nodes of different ``groups`` (nodes in
        no group keep their links)."""
        sets = [set(g) for g in groups]
        for a, group_a in enumerate(sets):
            for group_b in sets[a + 1 :]:
                for x in group_a:
                    for y in group_b:
                        self.cut |= {(x, y), (y, x)}

    def propose(self, node_id: int, data: bytes) -> int:
        """Propose ``data`` at ``node_id`` and run its Ready (nothing is
        delivered); returns the entry's index."""
        index = self.node(node_id).propose(data)
        self.process(node_id)
        return index

    def tick_until(self, done: Callable[[], bool], max_ticks: int = 500) -> int:
        """``tick_all`` until ``done()``; returns the ticks it took."""
        for ticks in range(max_ticks + 1):
            if done():
                return ticks
            self.tick_all()
        raise AssertionError(f"condition not reached within {max_ticks} ticks")

    # --- inspection ---

    def leader(self) -> int | None:
        leaders = [i for i, m in self.members.items() if m.node.role == Role.LEADER]
        return max(leaders, key=lambda i: self.node(i).term) if leaders else None

    def applied_data(self, node_id: int) -> list[bytes]:
        return [e.data for e in self.members[node_id].applied if e.kind == EntryKind.NORMAL and e.data]

    def sent_of(self, kind: MessageType, sender: int | None = None, to: int | None = None) -> list[Message]:
        return [
            m
            for m in self.sent
            if m.type == kind and (sender is None or m.sender == sender) and (to is None or m.to == to)
        ]

    def log(self, node_id: int) -> list[Entry]:
        """Every entry ``node_id`` holds after its snapshot, in order."""
        node = self.node(node_id)
        return node.log.entries(node.first_index, node.last_index + 1)

    def progress(self, leader_id: int, peer: int) -> Progress:
        """Leader ``leader_id``'s replication state for ``peer``."""
        pr = self.node(leader_id).progress(peer)
        assert pr is not None, f"node {leader_id} is not a leader tracking node {peer}"
        return pr

    def leaders(self) -> list[int]:
        return sorted(i for i, m in self.members.items() if m.node.role == Role.LEADER)
