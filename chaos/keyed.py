"""The compacted topic's part of a drill: keyed updates and tombstones,
compaction asked for during the faults, and a consumer's read of every
compacted partition from offset 0 after the heal.

Writes (``write_keyed``): each compacted topic has ``keys`` keys
(``k000``...); key i is owned by producer ``i % producers`` and lives in
partition ``(i // producers) % partitions`` (sent there explicitly), so one
producer writes each key, on one idempotent stream: the acknowledged writes
of a key are in the log in the order they were sent, and its last
acknowledged write is the one with the highest ``version``. Each write is an
``Attempt`` with the key, the key's next version, and a value naming tenant,
topic, partition, key, version and producer (unique in the drill); about one
in ``tombstone_every`` writes is a tombstone (a null value; the attempt's
value is then its label only). Outcomes are classified as for the other
topics (chaos/workload.py's ``classify``).

Compaction (``compact_periodically``): every ``every_s`` (jittered), every
compacted topic is asked to compact now (``Admin.compact_topic``, without
waiting), so passes run while leaders are killed, paused or cut off; a call
that fails is recorded as an event and the loop goes on (the partition side
may also not compact at all: the check never assumes it did). After the
heal, ``compact_and_scan`` asks once more and waits for the leaders' copies
(at most ``wait_s``), then ``scan`` reads every compacted partition from
offset 0 up to its high watermark with a plain consumer (no group, no
proxy) into ``History.scans`` (it stops early after 3 s without a new
record, and records how far it got).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping, Sequence

from chaos.cluster import ChaosCluster, TopicTarget
from chaos.history import TP, Attempt, History, Outcome, ScanRecord
from client import Consumer, Producer, RecordMetadata
from client.errors import RaftlogError

__all__ = ["KEYS", "compact_once", "compact_periodically", "key_name", "scan", "write_keyed"]

KEYS = 96
"""Keys per compacted topic: a few dozen updates of each in a smoke drill."""


def key_name(index: int) -> bytes:
    return f"k{index:03d}".encode()


async def write_keyed(
    producer: Producer,
    target: TopicTarget,
    k: int,
    producers: int,
    rate: float,
    history: History,
    rng: random.Random,
    stop: asyncio.Event,
    classify: Callable[[BaseException], Outcome],
    *,
    keys: int = KEYS,
    tombstone_every: int = 10,
) -> None:
    """Producer ``k``'s keyed writes to ``target`` at about ``rate``
    records/s until ``stop`` (module docstring)."""
    mine = [i for i in range(keys) if i % producers == k]
    if not mine:
        return
    versions = dict.fromkeys(mine, 0)
    seqs = [0] * target.partitions
    interval = 1.0 / rate
    while not stop.is_set():
        i = rng.choice(mine)
        partition = (i // producers) % target.partitions
        version = versions[i]
        versions[i] += 1
        seq = seqs[partition]
        seqs[partition] += 1
        tombstone = rng.randrange(tombstone_every) == 0
        label = f"{target.tenant}/{target.topic}/{partition}/{key_name(i).decode()}/v{version}/p{k}"
        if tombstone:
            label += "/tombstone"
        attempt = Attempt(
            label.encode(),
            target.tenant,
            target.topic,
            partition,
            k,
            seq,
            history.clock(),
            key=key_name(i),
            version=version,
            tombstone=tombstone,
        )
        history.attempts.append(attempt)
        try:
            future = await producer.send(
                target.topic, None if tombstone else attempt.value, key=attempt.key, partition=partition
            )
        except RaftlogError as exc:
            attempt.fail(Outcome.FAILED, f"not sent: {exc.reason}", history.clock())
        else:
            future.add_done_callback(_resolver(attempt, history, classify))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval * rng.uniform(0.5, 1.5)):
                await stop.wait()


def _resolver(
    attempt: Attempt, history: History, classify: Callable[[BaseException], Outcome]
) -> Callable[[asyncio.Future[RecordMetadata]], None]:
    def resolve(future: asyncio.Future[RecordMetadata]) -> None:
        now = history.clock()
        if future.cancelled():
            attempt.fail(Outcome.UNKNOWN, "cancelled", now)
            return
        error = future.exception()
        if error is None:
            meta = future.result()
            assert (meta.topic, meta.partition) == attempt.tp, meta
            attempt.succeed(meta.offset, now)
        else:
            attempt.fail(classify(error), str(getattr(error, "reason", type(error).__name__)), now)

    return resolve


async def compact_once(
    cluster: ChaosCluster, targets: Sequence[TopicTarget], history: History, *, wait: bool, timeout_s: float
) -> None:
    """Ask every compacted topic to compact now; the answer (or the error)
    goes into the history's events."""
    for target in targets:
        try:
            answered = await cluster.compact(target, wait=wait, timeout_s=timeout_s)
        except (RaftlogError, TimeoutError) as exc:
            history.event(f"compact {target.topic}: {getattr(exc, 'reason', type(exc).__name__)}")
        else:
            what = "done" if wait else "asked"
            history.event(f"compact {target.topic}: {answered}/{target.partitions} partitions {what}")


async def compact_periodically(
    cluster: ChaosCluster,
    targets: Sequence[TopicTarget],
    history: History,
    rng: random.Random,
    stop: asyncio.Event,
    every_s: float = 3.0,
) -> None:
    """``compact_once`` every ``every_s`` (0.5-1.5 times) until ``stop``."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every_s * rng.uniform(0.5, 1.5)):
                await stop.wait()
        if not stop.is_set():
            await compact_once(cluster, targets, history, wait=False, timeout_s=2.0)


async def scan(
    cluster: ChaosCluster,
    targets: Sequence[TopicTarget],
    history: History,
    ends: Mapping[TP, int] | None,
    timeout_s: float = 20.0,
) -> None:
    """Read every partition of ``targets`` from offset 0 up to ``ends``
    (high watermarks; without them, past every acknowledged offset and
    until a second of nothing new) into ``history.scans`` and
    ``history.scan_ends``."""
    for target in targets:
        tps = [(target.topic, p) for p in range(target.partitions)]
        goal = {tp: 0 for tp in tps}
        for attempt in history.attempts:
            if attempt.tp in goal and attempt.offset is not None:
                goal[attempt.tp] = max(goal[attempt.tp], attempt.offset + 1)
        if ends is not None:
            goal.update({tp: ends[tp] for tp in tps if tp in ends})
        consumer = Consumer(
            cluster.bootstrap,
            api_key=cluster.key_for(target.tenant),
            client_id=f"chaos-scan-{target.topic}",
            fetch_max_wait_ms=200,
            api_timeout_s=10.0,
        )
        reached = {tp: 0 for tp in tps}
        try:
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp[0], tp[1], 0)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            idle_since = loop.time()
            while loop.time() < deadline:
                idle = loop.time() - idle_since
                # Done at the goal (without known ends, after a second of
                # nothing new); also after 3 s of nothing new short of it
                # (a position may stop short of the end: reported below).
                if idle > 3.0 or (
                    all(reached[tp] >= goal[tp] for tp in tps) and (ends is not None or idle > 1.0)
                ):
                    break
                try:
                    records = await consumer.poll(0.3)
                except RaftlogError as exc:
                    history.event(f"scan {target.topic}: {exc.reason}")
                    await asyncio.sleep(0.2)
                    continue
                if records:
                    idle_since = loop.time()
                for r in records:
                    history.scans.append(ScanRecord(r.topic, r.partition, r.offset, r.key, r.value))
                for tp in tps:
                    position = consumer.position(tp)
                    if position is not None:
                        reached[tp] = max(reached[tp], position)
        finally:
            with contextlib.suppress(Exception):
                await consumer.close()
        for tp in tps:
            history.scan_ends[tp] = reached[tp]
            if reached[tp] < goal[tp]:
                history.event(f"scan {tp[0]}/{tp[1]}: reached {reached[tp]} of {goal[tp]}")
