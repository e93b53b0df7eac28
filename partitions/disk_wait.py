"""What a replica does about a full disk (partitions/disk_space.py has the
design): write through the group-commit writer, trying a write it refused
for room again until it fits, and tell which incoming messages a replica
below its reserve drops.

Invariants:

- ``write_when_room`` returns True only once the whole write set is in the
  database (durable if it asked for a sync): a refusal (``NoSpaceForWrite``)
  wrote nothing, so trying the very same write set again is safe, and no
  caller acts on the write before it returns. Any other failure is raised
  as it is (the writer is then failed for good: group_commit.py).
- It gives up only between attempts, when ``stopping()`` says so, and then
  returns False with nothing written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from partitions.group_commit import GroupCommitWriter
from partitions.raft_storage import PreparedWrite
from partitions.storage_errors import NoSpaceForWrite
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
