"""``StreamFetch`` on a real 3-node cluster, raw and through the SDK's
stream mode (``Consumer(fetch_mode="stream")``).

Checks: records produced before and after a stream opened arrive in order
and the stream stays open while it waits; a stream opened on a follower is
answered ``NOT_LEADER`` with the leader's address (streams are not
forwarded); another tenant's topic is ``NOT_FOUND``; a seek restarts the
consumer's stream at the new offset; and, with the leader SIGKILLed or
paused mid-stream, a stream-mode consumer reads every record exactly once,
in order; ``raftlog consume --stream`` prints what was produced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from client import Consumer, Producer
from client.admin import Admin
from client.auth import authorized_channel, call_metadata
from cluster.cli import main
from cluster.frontend.grpc_errors import error_info
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.v1 import log_pb2, log_pb2_grpc
from raftlog.v1.record_batch import decode_records

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(
        tmp_path_factory.mktemp("stream-fetch"),
        topics=[
            TopicSpec("ordered"),
            TopicSpec("live"),
            TopicSpec("seek"),
            TopicSpec("kill"),
            TopicSpec("pause"),
            TopicSpec("cli"),
        ],
    )
    c.start_all()
    yield c
    c.close()


def bootstrap(cluster: LocalCluster) -> list[str]:
    return list(cluster.addresses.values())


def streaming_consumer(cluster: LocalCluster, **options: Any) -> Consumer:
    return Consumer(bootstrap(cluster), api_key=cluster.api_key, fetch_mode="stream", **options)


async def produce(cluster: LocalCluster, topic: str, values: list[bytes]) -> None:
    async with Producer(bootstrap(cluster), api_key=cluster.api_key, linger_ms=1) as producer:
        for value in values:
            await producer.send(topic, value, partition=0)
        await producer.flush()


async def read_until(consumer: Consumer, count: int, timeout_s: float = 30.0) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        assert time.monotonic() < deadline, f"read {len(got)} of {count}"
        got.extend((r.offset, r.value or b"") for r in await consumer.poll(1.0))
    return got


def values(response: log_pb2.FetchResponse) -> list[tuple[int, bytes]]:
    return [(r.offset, r.value or b"") for b in response.batches for r in decode_records(b)]


async def test_a_stream_mode_consumer_reads_everything_in_order(cluster: LocalCluster) -> None:
    expected = [(i, f"o{i}".encode()) for i in range(500)]
    await produce(cluster, "ordered", [v for _, v in expected])
    async with streaming_consumer(cluster) as consumer:
        consumer.assign([("ordered", 0)])
        await consumer.seek_to_beginning()
        assert await read_until(consumer, len(expected)) == expected
        assert await consumer.poll(0.3) == []
        assert consumer.position(("ordered", 0)) == len(expected)


async def test_a_raw_stream_waits_for_records_produced_after_it_opened(cluster: LocalCluster) -> None:
    async with Consumer(bootstrap(cluster), api_key=cluster.api_key) as lookup:
        leader = await lookup.metadata.require_leader("live", 0)
    follower = next(a for a in cluster.addresses.values() if a != leader)
    headers = call_metadata(cluster.api_key, None)
    request = log_pb2.StreamFetchRequest(topic="live", partition=0, offset=0)
    async with grpc.aio.insecure_channel(follower) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await log_pb2_grpc.LogServiceStub(channel).StreamFetch(request, metadata=headers).read()
        info = error_info(caught.value)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert info is not None and (info.reason, info.leader_address) == ("NOT_LEADER", leader)
    # An authorized channel adds the key to streams too (client/auth.py).
    async with authorized_channel(leader, cluster.api_key) as channel:
        call = log_pb2_grpc.LogServiceStub(channel).StreamFetch(request)
        first = await asyncio.wait_for(call.read(), 10)
        assert (list(first.batches), first.high_watermark) == ([], 0)  # open, nothing yet
        await produce(cluster, "live", [b"a", b"b"])
        got: list[tuple[int, bytes]] = []
        while len(got) < 2:
            got += values(await asyncio.wait_for(call.read(), 10))
        await asyncio.sleep(0.5)  # idle: the stream waits, it does not end
        assert not call.done()
        await produce(cluster, "live", [b"c"])
        while len(got) < 3:
            got += values(await asyncio.wait_for(call.read(), 10))
        assert got == [(0, b"a"), (1, b"b"), (2, b"c")]
        call.cancel()


async def test_another_tenants_topic_is_not_found(cluster: LocalCluster) -> None:
    async with Admin(bootstrap(cluster), api_key=cluster.api_key) as operator:
        outsider = (await operator.create_tenant("outsider")).api_key.clear_text
    headers = call_metadata(outsider, None)
    async with grpc.aio.insecure_channel(cluster.addresses[1]) as channel:
        stub = log_pb2_grpc.LogServiceStub(channel)
        for topic in ("ordered", "no-such-topic"):  # the default tenant's, and a missing one
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.StreamFetch(
                    log_pb2.StreamFetchRequest(topic=topic, partition=0), metadata=headers
                ).read()
            info = error_info(caught.value)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert info is not None and info.reason == "UNKNOWN_TOPIC_OR_PARTITION"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.StreamFetch(
                log_pb2.StreamFetchRequest(topic="ordered", partition=0),
                metadata=call_metadata("rlk_0123456789abcdef_" + "A" * 43, None),
            ).read()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Through the SDK nothing of the other tenant's topic arrives. (Its
    # metadata lookup finds no leader for a topic it cannot see and keeps
    # retrying, in poll mode too, rather than raising: left as it is.)
    async with Consumer(bootstrap(cluster), api_key=outsider, fetch_mode="stream") as consumer:
        consumer.assign([("ordered", 0)])
        consumer.seek("ordered", 0, 0)
        assert await consumer.poll(2.0) == []


async def test_a_seek_restarts_the_stream_at_the_new_offset(cluster: LocalCluster) -> None:
    expected = [(i, f"s{i}".encode()) for i in range(50)]
    await produce(cluster, "seek", [v for _, v in expected])
    async with streaming_consumer(cluster) as consumer:
        consumer.assign([("seek", 0)])
        consumer.seek("seek", 0, 0)
        assert await read_until(consumer, 50) == expected
        consumer.seek("seek", 0, 17)
        assert await read_until(consumer, 33) == expected[17:]
        consumer.seek("seek", 0, 45)
        first = await consumer.poll(5.0, max_records=1)
        assert [(r.offset, r.value) for r in first] == [expected[45]]
        consumer.seek("seek", 0, 3)  # back, with records of the old stream still buffered
        assert await read_until(consumer, 47) == expected[3:]
        await produce(cluster, "seek", [b"s50"])
        assert await read_until(consumer, 1) == [(50, b"s50")]


def test_the_cli_consumes_with_stream(cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(produce(cluster, "cli", [f"{i}".encode() for i in range(30)]))
    code = main(
        [
            "--bootstrap",
            cluster.addresses[3],
            "--api-key",
            cluster.api_key,
            "consume",
            "cli",
            "--stream",
            "--from-beginning",
            "--max-records",
            "30",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [int(v) for v in out.split()] == list(range(30))


async def _follow_through(cluster: LocalCluster, topic: str, fault: str) -> None:
    """Produce ``topic`` steadily while a stream-mode consumer reads it;
    ``fault`` the leader mid-stream ("kill": SIGKILL then restart, "pause":
    SIGSTOP for a few seconds); every record must be read once, in order."""
    total = 2000
    # Short request timeouts: a paused leader holds requests (and streams)
    # until they time out.
    producer = Producer(bootstrap(cluster), api_key=cluster.api_key, linger_ms=2, request_timeout_s=1.0)
    consumer = streaming_consumer(cluster, request_timeout_s=1.0, stream_heartbeat_ms=300)
    consumer.assign([(topic, 0)])
    consumer.seek(topic, 0, 0)
    read: list[tuple[int, bytes]] = []

    async def write() -> None:
        for i in range(total):
            await producer.send(topic, f"m{i}".encode(), partition=0)
            if i % 100 == 99:
                await producer.flush()
                await asyncio.sleep(0.05)
        await producer.flush()

    async def consume() -> None:
        deadline = time.monotonic() + 90
        while len(read) < total:
            assert time.monotonic() < deadline, f"read {len(read)} of {total}"
            read.extend((r.offset, r.value or b"") for r in await consumer.poll(1.0))

    try:
        writer = asyncio.create_task(write())
        reader = asyncio.create_task(consume())
        while not read:
            await asyncio.sleep(0.05)
        victim = consumer.metadata.leader_node(topic, 0)
        assert victim is not None, "the consumer has been streaming from a known leader"
        read_before = len(read)
        if fault == "kill":
            await asyncio.to_thread(cluster.kill, victim)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(cluster.start, victim)
        else:
            cluster.pause(victim)
            # The stream to the paused node goes silent: no heartbeat for
            # stream_heartbeat_ms + request_timeout_s, and the consumer
            # moves to the new leader while this one is still stopped.
            deadline = time.monotonic() + 15
            while len(read) <= read_before + 100 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            moved_on = len(read) > read_before + 100
            cluster.resume(victim)
            assert moved_on, f"read nothing more while the leader was paused ({len(read)} of {total})"
        await asyncio.gather(writer, reader)
    finally:
        await producer.close()
        await consumer.close()
    assert 0 < read_before < total, "the fault did not happen while reading"
    assert read == [(i, f"m{i}".encode()) for i in range(total)]


async def test_a_killed_leader_mid_stream_loses_and_repeats_nothing(cluster: LocalCluster) -> None:
    await _follow_through(cluster, "kill", "kill")


async def test_a_paused_leader_mid_stream_loses_and_repeats_nothing(cluster: LocalCluster) -> None:
    await _follow_through(cluster, "pause", "pause")
