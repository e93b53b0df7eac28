"""Issue 15's acceptance test for compacted topics, on 3 real node processes.

A compacted topic (RF 3) gets 100,000 updates over 1,000 keys (then
tombstones, and some tombstoned keys set again) while compaction is held
back (``min_compaction_lag_ms`` of an hour); the hold is lifted and a pass
asked for, and the partition's leader is SIGKILLed in the middle of its pass
(seen from its stats: part of its copy rewritten, not all of it); more
updates and tombstones go through the failover; a second pass runs to the
end on the new leader (``compact_topic(wait=True)``); the killed node comes
back. Then:

- reading the topic from offset 0 returns each key at most once in the
  compacted range, so at most 1,000 records plus the uncompacted tail, and
  the key -> latest value view the reads give is exactly the acknowledged
  one (every key's latest acknowledged value, tombstoned keys absent);
- a fourth node joins and is given a replica of every partition (one of the
  original nodes is decommissioned, so each of its replicas must move to
  the new node);
- after ``stop_all`` every replica's copy, read offline from its RocksDB
  (``cluster.replica_dump.read_keyed_records``), has strictly increasing
  offsets, the same key -> latest view as the acknowledged one, and the
  same records as the other replicas below the compaction target (the
  design's "identical bytes").

Tombstones are dropped as soon as allowed (``delete_retention_ms`` 0), so the
tombstone floor is exercised too. One partition: its pass (about 5 MB, a
few cleaner steps of 1 MiB) lasts long enough for the kill to land inside
it; spread over three partitions each pass was over before a poll saw it.

Negative controls run while writing it: every node started with
``--unsafe-compaction-drops-latest`` fails the read check (708 keys of 945);
only node 3 with it (and the read check off) fails the offline check on
node 3's copy.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from pathlib import Path

import grpc
import pytest

from client import Consumer, Producer
from client.admin import Admin
from client.batches import RecordMetadata
from client.errors import UnavailableError
from cluster.replica_dump import read_keyed_records
from harness.local_cluster import LocalCluster
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc
from raftlog.v1 import admin_pb2
from tests.integration.replica_moves import wait_for_raft

pytestmark = pytest.mark.timeout(180)

TOPIC = "latest"
PARTITIONS = 1
KEYS = 1000
UPDATES = 100_000
SEED = 15
HOLD_MS = 3_600_000

Key = bytes
# key -> (partition, offset, value); value None: a tombstone.
Acked = dict[Key, tuple[int, int, bytes | None]]


def _key(n: int) -> Key:
    return f"k{n:04d}".encode()


def _value(key: Key, i: int) -> bytes:
    return f"{key.decode()}={i:07d}".encode().ljust(24, b".")


async def _produce(cluster: LocalCluster, sends: Iterable[tuple[Key, bytes | None]], acked: Acked) -> None:
    """Send every (key, value), wait for all acknowledgements, and keep in
    ``acked`` each key's record with the highest acknowledged offset."""
    live = [a for n, a in cluster.addresses.items() if n in cluster.processes]
    async with Producer(live, api_key=cluster.api_key, retry_backoff_max_ms=200) as producer:
        pending = [(key, value, await producer.send(TOPIC, value, key=key)) for key, value in sends]
        await producer.flush()
        for key, value, future in pending:
            meta: RecordMetadata = await future
            known = acked.get(key)
            if known is None or meta.offset > known[1]:
                acked[key] = (meta.partition, meta.offset, value)


def _latest_view(acked: Acked) -> dict[Key, bytes]:
    return {key: value for key, (_, _, value) in acked.items() if value is not None}


async def _compact(admin: Admin, *, wait: bool, timeout: float = 90.0) -> list[admin_pb2.PartitionCompaction]:
    """``compact_topic``, asked again while a leader is unreachable (a pass
    is harmless to repeat) and, with ``wait``, until every partition is done."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await admin.compact_topic(TOPIC, wait=wait)
            if not wait or all(p.done for p in result):
                return result
        except UnavailableError:
            pass
        assert time.monotonic() < deadline, "compact_topic never finished"
        await asyncio.sleep(0.3)


async def _kill_a_leader_mid_pass(
    cluster: LocalCluster, groups: list[int], targets: dict[int, int], timeout: float = 30.0
) -> str:
    """Poll the partition leaders, as fast as they answer, until one is in
    the middle of a pass: it has rewritten part of its copy
    (``compacted_bytes`` > 0) but not cleaned it to its last offset, or its
    cleaned offset is short of the pass's target (``targets``: group ->
    target, filled in by the caller once ``compact_topic`` answered). SIGKILL
    it and return what it reported. Fails when no pass is seen under way.
    Started before the pass is: a pass over a few MB takes about a second."""
    deadline = time.monotonic() + timeout
    channels = {n: grpc.aio.insecure_channel(cluster.addresses[n]) for n in cluster.processes}
    request = node_admin_pb2.StatsRequest(groups=groups)
    last: list[str] = []
    try:
        while time.monotonic() < deadline:
            answers = await asyncio.gather(
                *(
                    node_admin_pb2_grpc.NodeAdminStub(c).Stats(
                        request, timeout=5, metadata=cluster.node_admin_metadata()
                    )
                    for c in channels.values()
                )
            )
            for node, stats in zip(channels, answers, strict=True):
                for r in stats.partitions:
                    if (
                        r.role == "LEADER"
                        and r.compacted_bytes > 0
                        and r.cleaned_offset < r.high_watermark - 1
                    ):
                        cluster.kill(node)
                        return (
                            f"node {node} killed while leading group {r.group}: {r.compacted_bytes} bytes "
                            f"removed, cleaned to {r.cleaned_offset} of {r.high_watermark - 1}"
                        )
            last = [
                f"{node}/{r.group}: {r.role} {r.cleaned_offset}/{r.high_watermark} {r.compacted_bytes}"
                for node, stats in zip(channels, answers, strict=True)
                for r in stats.partitions
            ]
    finally:
        for channel in channels.values():
            await channel.close()
    raise AssertionError(f"no pass seen under way: {last}")


async def _replica_stats(
    cluster: LocalCluster, groups: list[int]
) -> dict[tuple[int, int], node_admin_pb2.ReplicaStats]:
    """(node, group) -> that replica's ``ReplicaStats``, from every running node."""
    found: dict[tuple[int, int], node_admin_pb2.ReplicaStats] = {}
    for node in list(cluster.processes):
        async with grpc.aio.insecure_channel(cluster.addresses[node]) as channel:
            stats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
                node_admin_pb2.StatsRequest(groups=groups), timeout=5, metadata=cluster.node_admin_metadata()
            )
        for r in stats.partitions:
            found[(node, r.group)] = r
    return found


async def _wait_copies_settled(
    cluster: LocalCluster, replicas: dict[int, set[int]], targets: dict[int, int], timeout: float = 60.0
) -> None:
    """Until every replica of each group runs, has applied what the others
    did and has cleaned its copy up to the group's target."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await _replica_stats(cluster, sorted(replicas))
        pending = []
        for group, nodes in replicas.items():
            mine = [stats.get((n, group)) for n in nodes]
            applied = {getattr(s, "applied_index", None) for s in mine}
            cleaned = [getattr(s, "cleaned_offset", -1) for s in mine]
            if None in applied or len(applied) != 1 or min(cleaned) < targets[group]:
                pending.append((group, sorted(nodes), applied, cleaned, targets[group]))
        if not pending:
            return
        assert time.monotonic() < deadline, (
            f"copies not settled (group, nodes, applied, cleaned, target): {pending}"
        )
        await asyncio.sleep(0.3)


async def _read_topic(cluster: LocalCluster) -> dict[int, list[tuple[int, Key | None, bytes | None]]]:
    """Every record of every partition from offset 0, through the SDK."""
    live = [a for n, a in cluster.addresses.items() if n in cluster.processes]
    tps = [(TOPIC, p) for p in range(PARTITIONS)]
    async with Consumer(live, api_key=cluster.api_key) as consumer:
        consumer.assign(tps)
        await consumer.seek_to_end()
        ends = {tp: consumer.position(tp) or 0 for tp in tps}
        await consumer.seek_to_beginning()
        found: dict[int, list[tuple[int, Key | None, bytes | None]]] = {p: [] for p in range(PARTITIONS)}
        deadline = time.monotonic() + 30
        while any((consumer.position(tp) or 0) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, (
                f"read stuck at {[consumer.position(tp) for tp in tps]} of {ends}"
            )
            for r in await consumer.poll(1.0, max_records=10_000):
                found[r.partition].append((r.offset, r.key, r.value))
        return found


def _view(records: Iterable[tuple[int, Key | None, bytes | None]]) -> dict[Key, bytes]:
    """Key -> latest value, applying the records in order (a tombstone
    removes its key); asserts offsets strictly increase."""
    view: dict[Key, bytes] = {}
    last = -1
    for offset, key, value in records:
        assert offset > last, f"offset {offset} after {last}"
        last = offset
        assert key is not None
        if value is None:
            view.pop(key, None)
        else:
            view[key] = value
    return view


async def test_compacted_topic_survives_a_leader_kill_mid_pass_and_a_new_replica(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    acked: Acked = {}
    cluster = LocalCluster(tmp_path, nodes=3, topics=[])
    cluster.start_all()
    try:
        async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as admin:
            created = await admin.create_topic(
                TOPIC,
                PARTITIONS,
                3,
                cleanup_policy="compact",
                # No pass while the updates go in (neither asked nor automatic):
                # the first pass then has the whole log to clean, long enough
                # to kill its leader in the middle of it.
                min_compaction_lag_ms=HOLD_MS,
                delete_retention_ms=0,
            )
            group_of = {a.partition: a.raft_group for a in created.assignments}

            # 100,000 updates over 1,000 keys; then 100 tombstones, and 20 of
            # those keys set again.
            updates: list[tuple[Key, bytes | None]] = [
                (_key(i % KEYS), _value(_key(i % KEYS), i)) for i in range(UPDATES)
            ]
            updates += [(_key(n), None) for n in range(100)]
            updates += [(_key(n), _value(_key(n), UPDATES + n)) for n in range(20)]
            await _produce(cluster, updates, acked)

            # The hold lifted (a pass starts on its own on every leader: the
            # whole log is dirty) and a pass asked for too; the leader of a
            # partition whose pass is under way is SIGKILLed.
            started: dict[int, int] = {}
            watch = asyncio.create_task(_kill_a_leader_mid_pass(cluster, sorted(group_of.values()), started))
            await asyncio.sleep(0.2)
            await admin.alter_topic_config(TOPIC, min_compaction_lag_ms=0)
            answers = await _compact(admin, wait=False)
            started.update((group_of[a.partition], a.target_offset) for a in answers)
            killed = await watch
            victim = int(killed.split()[1])
            print(killed)

            # Updates and tombstones through the failover, then a pass to the end.
            more: list[tuple[Key, bytes | None]] = []
            for i in range(3000):
                key = _key(rng.randrange(KEYS))
                more.append((key, _value(key, UPDATES + 100 + i)))
            more += [(_key(n), None) for n in range(100, 150)]
            await _produce(cluster, more, acked)
            finished = await _compact(admin, wait=True)
            targets = {group_of[p.partition]: p.target_offset for p in finished}

            await asyncio.to_thread(cluster.start, victim)
            originals = {group: {1, 2, 3} for group in group_of.values()}
            await _wait_copies_settled(cluster, originals, targets)

            # Reading from 0: each key at most once up to the target, so at
            # most 1,000 records plus the tail; the view is the acknowledged one.
            read = await _read_topic(cluster)
            tail = 0
            for partition, records in read.items():
                target = targets[group_of[partition]]
                compacted_keys = [key for offset, key, _ in records if offset <= target]
                assert len(compacted_keys) == len(set(compacted_keys)), f"partition {partition}: a key twice"
                tail += sum(1 for offset, _, _ in records if offset > target)
            assert sum(len(r) for r in read.values()) <= KEYS + tail
            expected = _latest_view(acked)
            seen: dict[Key, bytes] = {}
            for records in read.values():
                seen |= _view(records)
            assert seen == expected, _diff(seen, expected)

            # A fourth node; one original node decommissioned, so every
            # partition it held (all of them) moves to the new node.
            new = await asyncio.to_thread(cluster.add_node)
            leaving = 1 if victim != 1 else 2
            await admin.decommission_node(leaving)
            final = await _wait_moved(admin, leaving, new)
            await wait_for_raft(cluster, final, timeout=90)
            await _wait_copies_settled(cluster, final, targets)
        await asyncio.to_thread(cluster.stop_all)

        # Every replica's copy, read offline from its RocksDB.
        for partition, group in group_of.items():
            copies = {
                node: [(r.offset, r.key, r.value) for r in read_keyed_records(cluster.data_dir(node), group)]
                for node in sorted(final[group])
            }
            want = {k: v for k, v in expected.items() if acked[k][0] == partition}
            for node, records in copies.items():
                view = _view(records)
                assert view == want, f"node {node} partition {partition}: {_diff(view, want)}"
            compacted = {
                node: [r for r in records if r[0] <= targets[group]] for node, records in copies.items()
            }
            reference = compacted[new]
            for node, records in compacted.items():
                assert records == reference, (
                    f"partition {partition}: node {node} holds {len(records)} records up to the target, "
                    f"node {new} {len(reference)}; first difference "
                    f"{next((a, b) for a, b in zip([*records, None], [*reference, None], strict=False) if a != b)}"
                )
    finally:
        cluster.close()


async def _wait_moved(admin: Admin, leaving: int, new: int, timeout: float = 90.0) -> dict[int, set[int]]:
    """Until no partition of the topic is on ``leaving`` and every one is on
    ``new``; returns raft group -> replicas."""
    deadline = time.monotonic() + timeout
    while True:
        described = await admin.describe_topic(TOPIC)
        replicas = {a.raft_group: set(a.replicas) for a in described.assignments}
        if all(leaving not in nodes and new in nodes for nodes in replicas.values()):
            return replicas
        assert time.monotonic() < deadline, f"replicas {replicas}: node {leaving} still holds, or {new} lacks"
        await asyncio.sleep(0.5)


def _diff(got: dict[Key, bytes], want: dict[Key, bytes]) -> str:
    missing = sorted(set(want) - set(got))[:5]
    extra = sorted(set(got) - set(want))[:5]
    wrong = sorted(k for k in set(got) & set(want) if got[k] != want[k])[:5]
    return (
        f"{len(got)} keys, want {len(want)}; missing {missing}, unexpected {extra}, "
        f"wrong {[(k, got[k], want[k]) for k in wrong]}"
    )
