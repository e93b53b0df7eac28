"""What a replica does about a full disk (partitions/disk_space.py has the
design): write through the group-commit writer, trying a write it refused
for room again until it fits; tell which incoming messages a replica
below its reserve drops; and let a leader learn that its followers' disks
are full, so it refuses a produce that could not commit instead of leaving
the client to time out.

The last one, without touching the Raft core (its messages must stay a
deterministic function of its inputs): a follower that drops an append for
lack of room answers it, from its driver, with a *disk-low notice*: a
heartbeat response to the sender whose ``context`` is ``DISK_LOW_NOTICE``
(a Raft message, so it crosses the transport like any other, with no wire
change). The receiving driver takes it out before the core would see it
and records the peer in ``FullPeers``. A peer counts as full until it
stores new entries (an accepted append response beyond its known match)
or ``FULL_PEER_TTL_S`` passes without a new notice. While a follower is
full and lagging, the leader resends it entries on every heartbeat
response (raft/leader.py), so notices keep coming about every heartbeat
interval. A leader refuses produce (``DiskFull``, naming the full nodes)
when its voters with room are fewer than a quorum. The produce(s) proposed
before the first notice arrived stay pending and commit once space
returns: the leader could not know.

Invariants:

- ``write_when_room`` returns True only once the whole write set is in the
  database (durable if it asked for a sync): a refusal (``NoSpaceForWrite``)
  wrote nothing, so trying the very same write set again is safe, and no
  caller acts on the write before it returns. Any other failure is raised
  as it is (the writer is then failed for good: group_commit.py).
- It gives up only between attempts, when ``stopping()`` says so, and then
  returns False with nothing written.
- A disk-low notice never reaches a Raft core, and the core never makes one
  (``is_disk_low_notice`` is checked before anything is stepped).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection

from partitions.group_commit import GroupCommitWriter
from partitions.raft_storage import PreparedWrite
from partitions.storage_errors import NoSpaceForWrite
from raft.progress import Progress
from raft.types import Message, MessageType

DISK_RETRY_S = 0.1
"""How often a write refused for room is tried again (about half the
guard's refresh interval: sooner would mostly re-read the same answer)."""


def carries_data(message: Message) -> bool:
    """An append with entries, or a snapshot: what a full disk cannot take."""
    return (
        message.type == MessageType.APPEND and bool(message.entries)
    ) or message.type == MessageType.SNAPSHOT


async def write_when_room(
    writer: GroupCommitWriter, prepared: PreparedWrite, stopping: Callable[[], bool]
) -> bool:
    """Write ``prepared``, trying again every ``DISK_RETRY_S`` while the
    writer refuses it for room; False if ``stopping()`` turned true first
    (nothing written)."""
    while True:
        try:
            await writer.write(prepared.write_set, sync=prepared.sync)
            return True
        except NoSpaceForWrite:
            if stopping():
                return False
            await asyncio.sleep(DISK_RETRY_S)
            if stopping():
                return False


DISK_LOW_NOTICE = b"raftlog:disk-low"
"""The ``context`` of a disk-low notice (module docstring)."""

FULL_PEER_TTL_S = 2.0
"""How long a notice counts without a new one: notices come about every
heartbeat interval while the peer stays full (0.1 s by default), a
snapshot's retries every election timeout (0.5 s)."""


def disk_low_notice(dropped: Message) -> Message:
    """What a follower below its reserve answers an append it dropped."""
    return Message(
        MessageType.HEARTBEAT_RESPONSE,
        to=dropped.sender,
        sender=dropped.to,
        term=dropped.term,
        context=DISK_LOW_NOTICE,
    )


def is_disk_low_notice(message: Message) -> bool:
    return message.type == MessageType.HEARTBEAT_RESPONSE and message.context == DISK_LOW_NOTICE


class FullPeers:
    """The peers of one group whose disks said they are full (module
    docstring). Event loop only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heard: dict[int, float] = {}

    def heard(self, node: int) -> None:
        """``node`` dropped an append for lack of room."""
        self._heard[node] = self._clock()

    def answered(self, response: Message, progress: Callable[[int], Progress | None]) -> None:
        """An append response arrived: its sender stored entries beyond
        what the leader knew it had, so it has room again."""
        node = response.sender
        if node not in self._heard or response.reject:
            return
        known = progress(node)
        if known is None or response.index > known.match:
            del self._heard[node]

    def full(self) -> frozenset[int]:
        """The peers that said so within ``FULL_PEER_TTL_S``."""
        now = self._clock()
        for node, at in list(self._heard.items()):
            if now - at > FULL_PEER_TTL_S:
                del self._heard[node]
        return frozenset(self._heard)

    def blocking_quorum(self, voters: Collection[int], node_id: int) -> tuple[int, ...]:
        """The full voters, sorted, when without them the voters left (this
        node counts as having room: it checks its own disk itself) are fewer
        than a quorum; () when a write can still commit."""
        if not self._heard:
            return ()
        full = sorted((self.full() & frozenset(voters)) - {node_id})
        if len(voters) - len(full) >= len(voters) // 2 + 1:
            return ()
        return tuple(full)


def quorum_full_refusal(group: int, full: tuple[int, ...], voters: int) -> str:
    """What a produce refused for its followers' disks is told."""
    nodes = ", ".join(str(n) for n in full)
    return (
        f"the data disks of node(s) {nodes}, which hold replicas of this partition (group {group}), are below "
        f"their reserve (min_free_bytes), so a write cannot reach a quorum of its {voters} replicas: it is "
        "refused until space is freed there (reads still work); free space on those nodes (or lower "
        "retention), or move the partition's replicas"
    )
