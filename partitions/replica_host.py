"""``ReplicaHost``: every partition replica of one node, their storage and clock.

The host owns the node's ``NodeStore`` (one RocksDB), its group-commit
writer, one task per group member (in one ``asyncio.TaskGroup``: each
partition ``Replica``, and through ``add_group`` the metadata controller),
the tick clock and the retention timer. The transport and the front end
talk to replicas through it.

Invariants:

- Only awake replicas are ticked: the ticker walks the ``awake`` set, which a
  replica leaves when it hibernates. 1,000 idle partitions cost one timer.
  ``node_heard`` walks the same set (a hibernating follower needs no
  liveness: it does not tick).
- One ``DiskSpace`` guard (partitions/disk_space.py) per host watches the
  data directory's filesystem; the writer and every replica share it, so a
  full disk refuses client data and stalls writes instead of failing them.
- A replica task that fails (its storage writer failed, a driver bug) fails
  the host: the task group cancels every replica and ``__aexit__`` re-raises.
  A node whose disk failed must restart and recover from the WAL rather than
  acknowledge anything more (see partitions/group_commit.py).
- The data directory is 0700 and the process umask keeps group and others
  out of everything created in it (partitions/owner_only.py).
- A group whose replica was removed with its data either has no data left
  here or is in ``undeleted`` (its deletion was refused below the disk's
  freeing floor): it is never opened again before that deletion is written, so a
  copy the group stopped counting never comes back with its old log.
- ``close`` stops replicas first, then the writer (writing what is pending),
  then the store, so nothing acknowledged is left unwritten.
- Counters the node's metrics read only grow: ``elections_started`` keeps
  the counts of replicas removed from this host.
- Once ``start_draining`` was called (the node is stopping: NodeAdmin's
  ``HandOffLeadership``), no replica here takes leadership by transfer, for
  the rest of the host's life: every inbound ``TIMEOUT_NOW`` (Raft's
  leader-transfer trigger) is dropped and counted in ``refused_transfers``,
  so the peer's transfer times out there after an election timeout and its
  leader stays. Nothing else changes: a replica still votes, and still
  campaigns when its election timeout fires, so a dead leader is replaced
  even when only draining nodes are left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from partitions.disk_space import (
    DEFAULT_MIN_FREE_BYTES,
    DEFAULT_REFRESH_S,
    DiskSpace,
    FreeSpaceProbe,
    statvfs_free_bytes,
)
from partitions.group_commit import GroupCommitWriter
from partitions.node_store import NodeStore, StoreOptions, StoreStats
from partitions.owner_only import make_owner_only_dir, restrict_umask
from partitions.raft_replica import RaftReplica
from partitions.raft_storage import GroupStorage
from partitions.replica import Replica, ReplicaConfig, ReplicaCounters, SendFn
from raft.types import Message, MessageType

R = TypeVar("R", bound=RaftReplica[Any])


@dataclass(frozen=True, slots=True)
class HostConfig:
    tick_interval_s: float = 0.05
    retention_check_interval_s: float = 30.0
    replica: ReplicaConfig = field(default_factory=ReplicaConfig)
    store: StoreOptions = field(default_factory=StoreOptions)
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    """The data disk's reserve (partitions/disk_space.py)."""
    disk_probe: FreeSpaceProbe = statvfs_free_bytes
    """How free space is read (tests pass a fake disk)."""
    disk_refresh_s: float = DEFAULT_REFRESH_S


class ReplicaHost:
    def __init__(self, node_id: int, data_dir: Path, send: SendFn, config: HostConfig | None = None) -> None:
        self.node_id = node_id
        self.data_dir = data_dir
        self.config = config or HostConfig()
        self._send = send
        self._replicas: dict[int, Replica] = {}
        self._others: dict[int, RaftReplica[Any]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._undeleted: set[int] = set()
        self.awake: set[RaftReplica[Any]] = set()
        self.counters = ReplicaCounters()
        self._retired_elections: dict[str, int] = {}
        self._store: NodeStore | None = None
        self._writer: GroupCommitWriter | None = None
        self.disk = DiskSpace(
            data_dir,
            self.config.min_free_bytes,
            probe=self.config.disk_probe,
            refresh_s=self.config.disk_refresh_s,
        )
        self._task_group: asyncio.TaskGroup | None = None
        self._closing = False
        self._clocks: list[asyncio.Task[None]] = []
        self._draining = False
        self.refused_transfers = 0
        """Leader transfers to a replica here refused while draining
        (``TIMEOUT_NOW`` messages dropped)."""

    # --- lifecycle ---

    async def __aenter__(self) -> ReplicaHost:
        # Owner-only from the start (partitions/owner_only.py): the umask
        # before anything is created in the data directory, which is 0700.
        restrict_umask()
        make_owner_only_dir(self.data_dir)
        self._store = await asyncio.to_thread(NodeStore, self.data_dir / "store", self.config.store)
        self._writer = GroupCommitWriter(self._store, name=f"raftlog-writer-{self.node_id}", disk=self.disk)
        self._task_group = asyncio.TaskGroup()
        await self._task_group.__aenter__()
        self._clocks = [
            self._task_group.create_task(self._tick_loop(), name="raftlog-ticker"),
            self._task_group.create_task(self._retention_loop(), name="raftlog-retention"),
        ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self._closing = True
        for clock in self._clocks:
            clock.cancel()
        for member in self._members():
            member.close()
        try:
            assert self._task_group is not None
            await self._task_group.__aexit__(exc_type, exc, tb)
            return None
        finally:
            if self._writer is not None:
                await asyncio.to_thread(self._writer.close)
            if self._store is not None:
                await asyncio.to_thread(self._store.close)

    @property
    def started(self) -> bool:
        """Whether ``__aenter__`` made the store and the writer."""
        return self._writer is not None

    @property
    def writer(self) -> GroupCommitWriter:
        assert self._writer is not None, "the host is not started"
        return self._writer

    # --- replicas ---

    async def add_replica(
        self,
        group: int,
        voters: Iterable[int],
        config: ReplicaConfig | None = None,
        learners: Iterable[int] = (),
    ) -> Replica:
        """Open (bootstrapping if new) and start this node's replica of
        partition group ``group``; an existing replica is returned as it is."""
        existing = self._replicas.get(group)
        if existing is not None:
            return existing
        await self._finish_deletion(group)
        replica = await self._open(Replica, group, voters, learners, config or self.config.replica)
        self._replicas[group] = replica
        return replica

    async def join_group(self, group: int, config: ReplicaConfig | None = None) -> Replica:
        """Open this node's replica of a running partition group it was just
        added to: empty, it learns the log and membership from the leader."""
        existing = self._replicas.get(group)
        if existing is not None:
            return existing
        await self._finish_deletion(group)
        replica = await self._open(Replica, group, (), (), config or self.config.replica, bootstrap=False)
        self._replicas[group] = replica
        return replica

    async def add_group(
        self,
        kind: type[R],
        group: int,
        voters: Iterable[int],
        config: ReplicaConfig | None = None,
        learners: Iterable[int] = (),
        *,
        bootstrap: bool = True,
    ) -> R:
        """Open and start a member of a group that is not a partition (the
        metadata controller); the caller keeps it. Ticked, fed and stopped
        like the partition replicas. ``bootstrap`` False: a new member
        starts empty and learns the group from its leader."""
        assert group not in self._replicas and group not in self._others, f"group {group} is open"
        replica = await self._open(
            kind, group, voters, learners, config or self.config.replica, bootstrap=bootstrap
        )
        self._others[group] = replica
        return replica

    async def remove_replica(self, group: int, *, delete_data: bool = False) -> None:
        """Stop this node's replica of ``group``; with ``delete_data`` also
        delete everything it stored (synced), so the group reads as new here.

        Delete only when the group can no longer count this copy (its
        removal from the membership committed, or the group no longer
        exists): a voter that forgets entries it acknowledged leaves them
        with one copy fewer, and could let a stale leader win.

        A deletion only deletes, so it passes the disk's floor; below the
        freeing floor (partitions/disk_space.py) its write is refused
        (``NoSpaceForWrite``, raised here): the replica stays stopped, its
        data stays stored and the group stays in ``undeleted`` until a
        later ``remove_replica(group, delete_data=True)`` gets it written
        (or opening the group again does)."""
        replica = self._replicas.pop(group, None)
        task = self._tasks.pop(group, None)
        if replica is not None:
            for reason, count in replica.elections_started.items():
                self._retired_elections[reason] = self._retired_elections.get(reason, 0) + count
        if replica is not None and task is not None:
            replica.close()
            await asyncio.wait((task,))
        elif group not in self._undeleted:
            return
        if delete_data:
            await self._delete_data(group)

    @property
    def undeleted(self) -> frozenset[int]:
        """Groups whose replica was stopped to be deleted but whose data is
        still stored: the deletion's write was refused for lack of room."""
        return frozenset(self._undeleted)

    async def _delete_data(self, group: int) -> None:
        assert self._store is not None, "the host is not started"
        # Marked before writing: a refused write leaves the mark, so the
        # deletion is retried and the group never reopens on the old data.
        self._undeleted.add(group)
        storage = GroupStorage(self._store, group)
        prepared = await asyncio.to_thread(storage.destroy)
        await self.writer.write(prepared.write_set, sync=prepared.sync)
        storage.apply_prepared(prepared)
        self._undeleted.discard(group)

    async def _finish_deletion(self, group: int) -> None:
        """Before opening ``group`` again: the deletion it is owed first
        (``NoSpaceForWrite`` while the disk has no room)."""
        if group in self._undeleted:
            await self._delete_data(group)

    async def _open(
        self,
        kind: type[R],
        group: int,
        voters: Iterable[int],
        learners: Iterable[int],
        config: ReplicaConfig,
        *,
        bootstrap: bool = True,
    ) -> R:
        assert self._store is not None and self._task_group is not None, "the host is not started"
        replica = await kind.open(
            group,
            self.node_id,
            GroupStorage(self._store, group),
            self.writer,
            self._send,
            config,
            voters=sorted(voters),
            learners=sorted(learners),
            awake=self.awake,
            counters=self.counters,
            bootstrap=bootstrap,
            disk=self.disk,
        )
        self._tasks[group] = self._task_group.create_task(replica.run(), name=f"raftlog-replica-{group}")
        return replica

    def election_timeouts(self) -> int:
        """Elections the open groups' replicas here started because their
        leader went silent (a stopped replica's count goes with it)."""
        return sum(member.election_timeouts for member in self._members())

    def dropped_peer_messages(self) -> int:
        """Peers' messages the open groups' Raft cores here refused
        (raft/screening.py: impossible ones, and elections from
        non-voters); a stopped replica's count goes with it. Messages for a
        group not open here are not counted: they are expected while
        replicas move or topics are deleted, and would hide the others."""
        return sum(sum(member.dropped_messages.values()) for member in self._members())

    def elections_started(self) -> dict[str, int]:
        """Elections the group members here started, by reason
        (``RaftReplica.elections_started``), removed replicas' included."""
        totals = dict(self._retired_elections)
        for member in self._members():
            for reason, count in member.elections_started.items():
                totals[reason] = totals.get(reason, 0) + count
        return totals

    def members(self) -> list[RaftReplica[Any]]:
        """Every group member open here: partition replicas, then the others
        (the metadata controller)."""
        return self._members()

    def store_stats(self) -> StoreStats | None:
        """RocksDB's figures (None before the host started or after it closed)."""
        store = self._store
        if store is None or store.closed:
            return None
        return store.stats()

    def _members(self) -> list[RaftReplica[Any]]:
        """Every group member open here: partition replicas and the others."""
        return [*self._replicas.values(), *self._others.values()]

    def replica(self, group: int) -> Replica | None:
        return self._replicas.get(group)

    @property
    def replicas(self) -> dict[int, Replica]:
        return self._replicas

    # --- draining ---

    def start_draining(self) -> None:
        """From now on, refuse every leader transfer to a replica here (see
        the module docstring). Idempotent; there is no way back: a draining
        node is about to stop."""
        self._draining = True

    @property
    def draining(self) -> bool:
        return self._draining

    # --- inputs from the transport ---

    def deliver(self, messages: Iterable[tuple[int, Message, bool]]) -> None:
        """Hand ``(group, message, quiesce)`` triples to their replicas;
        messages for groups this node does not host are dropped (the sender
        retries, as for any lost message), and so is a ``TIMEOUT_NOW``
        while draining (the transfer times out at the leader)."""
        replicas = self._replicas
        others = self._others
        draining = self._draining
        for group, message, quiesce in messages:
            if draining and message.type == MessageType.TIMEOUT_NOW:
                self.refused_transfers += 1
                continue
            replica = replicas.get(group) or others.get(group)
            if replica is not None:
                replica.deliver(message, quiesce)

    def peer_changed(self, node: int, alive: bool) -> None:
        for member in self._members():
            member.peer_changed(node, alive)

    def node_heard(self, node: int) -> None:
        """The transport heard from ``node`` (any traffic; it reports each
        peer about once a tick): every awake member is told, and keeps it
        only if it follows ``node`` or leads (``RaftReplica.node_heard``)."""
        for replica in self.awake:
            replica.node_heard(node)

    # --- clocks ---

    async def _tick_loop(self) -> None:
        interval = self.config.tick_interval_s
        while not self._closing:
            await asyncio.sleep(interval)
            for replica in list(self.awake):
                replica.tick()

    async def _retention_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.config.retention_check_interval_s)
            for replica in self._replicas.values():
                replica.request_retention()
