"""How fast is the Raft core alone? Committed proposals per second.

Three ``RaftNode``s over ``MemoryStorage`` exchange messages in-process with
no faults and no I/O, exactly as the storage contract orders it (persist,
send, apply, advance). The leader gets ``batch`` proposals of ``size`` bytes
per round; a round delivers every message once. The figure is the number of
entries applied on *every* node divided by wall time, so it includes the
followers' work. It bounds what one partition's Raft can do on one core.

Run: ``python -m bench.raft_core [--seconds S] [--size B] [--batch N]``;
prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from raft.config import RaftConfig
from raft.node import RaftNode
from raft.storage import MemoryStorage
from raft.types import Message, Role


def _drain(node: RaftNode, storage: MemoryStorage, outbox: list[Message]) -> int:
    """Run every pending Ready of ``node``; returns entries applied."""
    applied = 0
    while node.has_ready():
        ready = node.ready()
        outbox.extend(ready.messages)
        storage.persist(ready)
        outbox.extend(ready.messages_after_persist)
        applied += len(ready.committed_entries)
        node.advance(ready)
    return applied


def measure(seconds: float = 3.0, size: int = 1024, batch: int = 64, nodes: int = 3) -> dict[str, float]:
    ids = list(range(1, nodes + 1))
    storages = {i: MemoryStorage.bootstrap(ids) for i in ids}
    cluster = {i: RaftNode(RaftConfig(id=i), storages[i], random.Random(i)) for i in ids}
    outbox: list[Message] = []
    cluster[1].campaign()
    payload = b"x" * size
    applied = dict.fromkeys(ids, 0)
    proposed = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        leader = cluster[1]
        if leader.role == Role.LEADER:
            for _ in range(batch):
                leader.propose(payload)
            proposed += batch
        for i in ids:
            applied[i] += _drain(cluster[i], storages[i], outbox)
        messages, outbox = outbox, []
        for m in messages:
            cluster[m.to].step(m)
        if time.perf_counter() >= deadline:
            break
    # Let the last proposals finish so the count is of committed entries.
    for _ in range(10):
        for i in ids:
            applied[i] += _drain(cluster[i], storages[i], outbox)
        messages, outbox = outbox, []
        for m in messages:
            cluster[m.to].step(m)
    elapsed = time.perf_counter() - start
    applied_min = min(applied.values())
    return {
        "raft_core_proposals_s": round(applied_min / elapsed),
        "raft_core_mb_s": round(applied_min * size / elapsed / 1e6, 1),
        "proposed": proposed,
        "applied_on_every_node": applied_min,
        "seconds": round(elapsed, 2),
        "entry_bytes": size,
        "proposals_per_round": batch,
        "nodes": nodes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    print(json.dumps(measure(args.seconds, args.size, args.batch)))


if __name__ == "__main__":
    main()
