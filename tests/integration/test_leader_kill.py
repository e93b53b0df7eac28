"""Three real node processes: replication, and SIGKILL of the leader mid-stream.

The kill drill runs idempotent producers continuously against one partition
and, round after round, SIGKILLs whichever node last acknowledged (the
leader) at a random moment, then restarts it. Afterwards every node is
stopped and each replica's log is read straight from its RocksDB
(cluster/replica_dump.py). The checks, each of which a broken node would fail:

- every acknowledged record is on every replica, exactly once, at the offset
  its acknowledgement gave (lost or moved ⇒ fail);
- no record appears twice (a retried batch appended again ⇒ fail);
- no record that was never sent;
- each producer's records are in the order it sent them;
- all replicas hold identical logs.

``RAFTLOG_KILL_ROUNDS`` sets the rounds (20 in CI; ``make kill-drill`` runs
more) and ``RAFTLOG_KILL_SEED`` replays a schedule.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.replica_dump import read_replica_log
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.v1.record_batch import Record, decode_records, encode_batch
from tests.integration.log_client import LogClient

ROUNDS = int(os.environ.get("RAFTLOG_KILL_ROUNDS", "20"))
pytestmark = pytest.mark.timeout(120 + 15 * ROUNDS)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, topics=[TopicSpec("t", partitions=1)])
    c.start_all()
    yield c
    c.close()


async def test_a_partition_replicates_across_processes(cluster: LocalCluster) -> None:
    client = LogClient(cluster.addresses, cluster.api_key)
    try:
        offsets = []
        for i in range(50):
            batch = encode_batch([Record(value=f"{i}-{j}".encode()) for j in range(4)])
            offsets.append((await client.produce("t", 0, batch)).base_offset)
        assert offsets == [4 * i for i in range(50)]
        fetched = [(r.offset, r.value) for b in await client.fetch_all("t", 0) for r in decode_records(b)]
        assert fetched == [(4 * i + j, f"{i}-{j}".encode()) for i in range(50) for j in range(4)]
    finally:
        await client.close()
    await asyncio.sleep(1.0)  # let followers learn the final commit index
    assert set(cluster.stop_all().values()) == {0}
    logs = [read_replica_log(n, cluster.data_dir(n), group=1) for n in cluster.node_ids]
    for log in logs:
        assert log.records == fetched, f"node {log.node} differs"


async def test_leader_sigkill_mid_stream_loses_duplicates_and_reorders_nothing(cluster: LocalCluster) -> None:
    seed = int(os.environ.get("RAFTLOG_KILL_SEED", str(random.randrange(1 << 30))))
    print(f"kill drill seed={seed} rounds={ROUNDS}")
    rng = random.Random(seed)
    client = LogClient(cluster.addresses, cluster.api_key)
    node_of = {address: node for node, address in cluster.addresses.items()}
    acked: dict[bytes, int] = {}
    sent: set[bytes] = set()
    order: dict[int, list[bytes]] = {}
    stop = asyncio.Event()

    async def producer(n: int) -> None:
        producer_id, epoch = await client.init_producer()
        sequence = 0
        order[n] = []
        while not stop.is_set():
            values = [f"p{n}-s{sequence + j}".encode() for j in range(rng.randint(1, 4))]
            sent.update(values)
            batch = encode_batch(
                [Record(value=v) for v in values],
                producer_id=producer_id,
                producer_epoch=epoch,
                base_sequence=sequence,
            )
            response = await client.produce("t", 0, batch)
            for j, value in enumerate(values):
                acked[value] = response.base_offset + j
            order[n].extend(values)
            sequence += len(values)

    tasks = [asyncio.create_task(producer(n)) for n in range(3)]
    kills = 0
    try:
        for _ in range(ROUNDS):
            await asyncio.sleep(rng.uniform(0.1, 0.6))
            before = len(acked)
            address = client.leader_hint.get(("t", 0))
            if address is None:
                continue
            victim = node_of[address]
            await asyncio.to_thread(cluster.kill, victim)
            kills += 1
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            await asyncio.to_thread(cluster.start, victim)
            deadline = time.monotonic() + 20
            while len(acked) <= before:  # progress resumed after the kill
                assert time.monotonic() < deadline, "no write acknowledged within 20 s of a leader kill"
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await client.close()
    assert kills >= ROUNDS // 2, f"only {kills} kills in {ROUNDS} rounds"
    await asyncio.sleep(1.5)  # followers learn the final commit, groups go quiet
    assert set(cluster.stop_all().values()) == {0}

    logs = [read_replica_log(n, cluster.data_dir(n), group=1) for n in cluster.node_ids]
    reference = max(logs, key=lambda log: len(log.records))
    for log in logs:
        values = [v for _, v in log.records]
        assert len(values) == len(set(values)), f"node {log.node}: a record appears twice"
        assert [o for o, _ in log.records] == list(range(len(values))), (
            f"node {log.node}: offsets not contiguous"
        )
        assert set(values) <= sent, f"node {log.node}: records nobody sent"
        assert log.records == reference.records[: len(log.records)], f"node {log.node}: logs diverge"
        position = dict((v, o) for o, v in log.records)
        missing = [v for v in acked if v not in position]
        assert not missing, f"node {log.node}: {len(missing)} acknowledged records lost, e.g. {missing[:3]}"
        moved = [v for v, o in acked.items() if position[v] != o]
        assert not moved, f"node {log.node}: acknowledged records at other offsets: {moved[:3]}"
        for n, values_in_order in order.items():
            offsets = [position[v] for v in values_in_order]
            assert offsets == sorted(offsets), f"node {log.node}: producer {n} reordered"
    print(
        f"kills={kills} acked={len(acked)} sent={len(sent)} attempts={client.attempts.sent} "
        f"retries={client.attempts.retries} errors={client.attempts.errors}"
    )
