"""Crash-test subject: write Raft-shaped workloads for several groups until killed.

Usage (from the repository root)::

    python -m tests.partitions.crash_writer STORE_DIR --seed 7 --groups 8

Each group gets a deterministic ``GroupWorkload`` (seeded by ``seed`` and the
group id) driven exactly like a replica driver would: prepare, write through
the node's ``GroupCommitWriter`` with ``sync=True``, apply. Only after a
write's future has resolved does it print, in one flushed write::

    ACK <group> <index>      one line per entry the write stored
    STEP <group> <n>         the write was the group's n-th (1-based)

so every line on stdout is a promise that the data is durable. The test
(test_crash.py) SIGKILLs this process at a random moment, reopens the store,
replays the same workloads and checks the promises.

Invariant: per group, at most one write is in flight at any time (like a
replica, which persists one Ready before the next), so after a crash a group
holds the state after its last acknowledged step or after the next one.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys

from partitions.group_commit import GroupCommitWriter
from partitions.node_store import NodeStore
from partitions.raft_storage import GroupStorage
from tests.partitions.workload import GroupWorkload

BIG_ENTRY_BYTES = 64 * 1024


def workload_for(seed: int, group: int) -> GroupWorkload:
    """The same workload in the writer and in the checker."""
    return GroupWorkload(random.Random(f"crash:{seed}:{group}"), big_entry_bytes=BIG_ENTRY_BYTES)


async def drive(group: int, seed: int, store: NodeStore, writer: GroupCommitWriter, steps: int) -> None:
    workload = workload_for(seed, group)
    storage = GroupStorage(store, group)
    for n in range(1, steps + 1):
        step = workload.next_step()
        prepared = step.prepare(storage)
        await writer.write(prepared.write_set, sync=True)
        storage.apply_prepared(prepared)
        floor = storage.first_index()
        entries = step.ready.entries if step.ready is not None else ()
        lines = [f"ACK {group} {e.index}\n" for e in entries if e.index >= floor]
        lines.append(f"STEP {group} {n}\n")
        sys.stdout.write("".join(lines))
        sys.stdout.flush()


async def main(path: str, seed: int, groups: int, steps: int) -> None:
    store = NodeStore(path)
    writer = GroupCommitWriter(store)
    async with asyncio.TaskGroup() as tg:
        for group in range(1, groups + 1):
            tg.create_task(drive(group, seed, store, writer, steps))
    writer.close()
    store.close()
    sys.stdout.write("FINISHED\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1_000_000, help="stop after this many writes per group")
    args = parser.parse_args()
    asyncio.run(main(args.path, args.seed, args.groups, args.steps))
