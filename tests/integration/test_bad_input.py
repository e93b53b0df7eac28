"""Bad input over gRPC on a real 3-node cluster: each case gets the right
status code and reason, and changes nothing (the high watermark and the log
stay as they were)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Iterator

import crc32c
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from client.auth import authorized_channel
from cluster.frontend.grpc_errors import error_info
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc
from raftlog.v1 import log_pb2, log_pb2_grpc, metadata_pb2, metadata_pb2_grpc
from raftlog.v1.record_batch import HEADER_SIZE, Record, decode_records, encode_batch
from tests.integration.log_client import LogClient

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("bad-input"), topics=[TopicSpec("t", partitions=1)])
    c.start_all()
    yield c
    c.close()


@pytest.fixture
async def leader(cluster: LocalCluster) -> AsyncIterator[log_pb2_grpc.LogServiceStub]:
    client = LogClient(cluster.addresses, cluster.api_key)
    await client.produce("t", 0, encode_batch([Record(value=b"warm-up")]))
    address = client.leader_hint[("t", 0)]
    await client.close()
    channel = authorized_channel(address, cluster.api_key)
    yield log_pb2_grpc.LogServiceStub(channel)
    await channel.close()


async def _high_watermark(stub: log_pb2_grpc.LogServiceStub) -> int:
    response = await stub.ListOffsets(log_pb2.ListOffsetsRequest(topic="t", partition=0), timeout=5)
    return int(response.high_watermark)


async def _rejected(
    stub: log_pb2_grpc.LogServiceStub, request: log_pb2.ProduceRequest
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Produce(request, timeout=5)
    detail = error_info(info.value)
    assert detail is not None, "every failure carries an ErrorInfo"
    assert detail.message, "and says what is wrong"
    return info.value.code(), detail.reason


def _wrong_count(batch: bytes) -> bytes:
    """The header claims one more record than the batch holds (CRC fixed up,
    so only the count check can catch it)."""
    data = bytearray(batch)
    count_at = HEADER_SIZE - 4
    struct.pack_into(">i", data, count_at, struct.unpack_from(">i", data, count_at)[0] + 1)
    last_delta_at = 19
    struct.pack_into(">i", data, last_delta_at, struct.unpack_from(">i", data, last_delta_at)[0] + 1)
    struct.pack_into(">I", data, 13, crc32c.crc32c(bytes(data[17:])))
    return bytes(data)


async def test_bad_batches_get_clear_errors_and_change_nothing(leader: log_pb2_grpc.LogServiceStub) -> None:
    good = encode_batch([Record(value=b"a"), Record(value=b"b")])
    corrupt = bytearray(good)
    corrupt[-1] ^= 0x01
    cases = {
        "CORRUPT_BATCH": (bytes(corrupt), grpc.StatusCode.INVALID_ARGUMENT),
        "BAD_RECORD_COUNT": (_wrong_count(good), grpc.StatusCode.INVALID_ARGUMENT),
        "BATCH_TOO_LARGE": (encode_batch([Record(value=b"x" * (1 << 20))]), grpc.StatusCode.INVALID_ARGUMENT),
        "BATCH_TOO_SHORT": (b"\x00" * 10, grpc.StatusCode.INVALID_ARGUMENT),
    }
    before = await _high_watermark(leader)
    for reason, (data, code) in cases.items():
        got = await _rejected(leader, log_pb2.ProduceRequest(topic="t", partition=0, batch=data))
        assert got == (code, reason)
    assert await _high_watermark(leader) == before


async def test_a_fenced_producer_epoch_is_refused_and_changes_nothing(
    leader: log_pb2_grpc.LogServiceStub,
) -> None:
    pid = 4242

    def batch(epoch: int, sequence: int, value: bytes) -> log_pb2.ProduceRequest:
        data = encode_batch(
            [Record(value=value)], producer_id=pid, producer_epoch=epoch, base_sequence=sequence
        )
        return log_pb2.ProduceRequest(topic="t", partition=0, batch=data)

    await leader.Produce(batch(1, 0, b"epoch-1"), timeout=5)
    await leader.Produce(batch(2, 0, b"epoch-2"), timeout=5)  # a new epoch fences epoch 1
    before = await _high_watermark(leader)
    assert await _rejected(leader, batch(1, 1, b"zombie")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_PRODUCER_EPOCH",
    )
    assert await _rejected(leader, batch(2, 5, b"gap")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "OUT_OF_ORDER_SEQUENCE",
    )
    assert await _high_watermark(leader) == before
    fetched = await leader.Fetch(log_pb2.FetchRequest(topic="t", partition=0, offset=0), timeout=5)
    values = [r.value for b in fetched.batches for r in decode_records(b)]
    assert b"zombie" not in values and b"gap" not in values


async def test_unknown_partitions_and_offsets_out_of_range(leader: log_pb2_grpc.LogServiceStub) -> None:
    for topic, partition in (("nope", 0), ("t", 7)):
        code, reason = await _rejected(
            leader,
            log_pb2.ProduceRequest(
                topic=topic, partition=partition, batch=encode_batch([Record(value=b"x")])
            ),
        )
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_TOPIC_OR_PARTITION")
    high = await _high_watermark(leader)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await leader.Fetch(log_pb2.FetchRequest(topic="t", partition=0, offset=high + 100), timeout=5)
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    detail = error_info(info.value)
    assert detail is not None and detail.reason == "OFFSET_OUT_OF_RANGE"
    assert detail.metadata["high_watermark"] == str(high)


async def test_a_follower_forwards_to_the_leader_once(
    cluster: LocalCluster, leader: log_pb2_grpc.LogServiceStub
) -> None:
    client = LogClient(cluster.addresses, cluster.api_key)
    await client.produce("t", 0, encode_batch([Record(value=b"x")]))
    leader_address = client.leader_hint[("t", 0)]
    await client.close()
    follower_address = next(a for a in cluster.addresses.values() if a != leader_address)
    batch = encode_batch([Record(value=b"through a follower")])
    async with authorized_channel(follower_address, cluster.api_key) as channel:
        stub = log_pb2_grpc.LogServiceStub(channel)
        ack = await stub.Produce(log_pb2.ProduceRequest(topic="t", partition=0, batch=batch), timeout=5)
        fetched = await stub.Fetch(
            log_pb2.FetchRequest(topic="t", partition=0, offset=ack.base_offset), timeout=5
        )
        assert decode_records(fetched.batches[0])[0].value == b"through a follower"
        # A request that was already forwarded once is not forwarded again:
        # the follower answers NOT_LEADER with the leader's address.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Produce(
                log_pb2.ProduceRequest(topic="t", partition=0, batch=batch),
                timeout=5,
                metadata=(("raftlog-no-forward", "1"),),
            )
    detail = error_info(info.value)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert detail is not None and (detail.reason, detail.leader_address) == ("NOT_LEADER", leader_address)
    # Errors come back from the leader unchanged.
    corrupt = bytearray(batch)
    corrupt[-1] ^= 1
    async with authorized_channel(follower_address, cluster.api_key) as channel:
        code, reason = await _rejected(
            log_pb2_grpc.LogServiceStub(channel),
            log_pb2.ProduceRequest(topic="t", partition=0, batch=bytes(corrupt)),
        )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CORRUPT_BATCH")


async def test_node_admin_reports_every_replica_and_one_leader(cluster: LocalCluster) -> None:
    leaders = 0
    for address in cluster.addresses.values():
        async with authorized_channel(address, cluster.api_key) as channel:
            stats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
                node_admin_pb2.StatsRequest(), timeout=5, metadata=cluster.node_admin_metadata()
            )
        # Topic t (group 1), the 3 partitions of the groups' offsets topic, the audit topic's one.
        assert stats.replicas == 5 and sorted(r.group for r in stats.partitions) == [1, 2, 3, 4, 5]
        replica = next(r for r in stats.partitions if r.group == 1)
        assert replica.role in ("LEADER", "FOLLOWER") and sorted(replica.voters) == [1, 2, 3]
        assert replica.commit_index >= replica.applied_index >= 1
        leaders += replica.role == "LEADER"
        assert stats.cpu_seconds > 0 and stats.rss_bytes > 0
    assert leaders == 1


async def test_every_node_reports_the_same_topics_and_the_leader(cluster: LocalCluster) -> None:
    client = LogClient(cluster.addresses, cluster.api_key)
    await client.produce("t", 0, encode_batch([Record(value=b"x")]))
    leader_address = client.leader_hint[("t", 0)]
    await client.close()
    leader_id = next(n for n, a in cluster.addresses.items() if a == leader_address)
    for node, address in cluster.addresses.items():
        async with authorized_channel(address, cluster.api_key) as channel:
            stub = metadata_pb2_grpc.MetadataServiceStub(channel)
            unknown = await stub.GetMetadata(metadata_pb2.GetMetadataRequest(topics=["nope"]), timeout=5)
            # A follower learns the leader from its first append: poll briefly.
            for _ in range(100):
                everything = await stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=5)
                if everything.topics[0].partitions[0].leader:
                    break
                await asyncio.sleep(0.05)
        assert everything.node_id == node
        assert {(n.node_id, n.address) for n in everything.nodes} == set(cluster.addresses.items())
        assert [t.name for t in everything.topics] == ["t"]
        (partition,) = everything.topics[0].partitions
        assert (partition.partition, partition.leader, list(partition.replicas)) == (
            0,
            leader_id,
            [1, 2, 3],
        ), node
        assert not unknown.topics


async def test_health_checks_and_reflection_are_served(cluster: LocalCluster) -> None:
    address = next(iter(cluster.addresses.values()))
    async with authorized_channel(address, cluster.api_key) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        public = (
            "raftlog.v1.LogService",
            "raftlog.v1.MetadataService",
            "raftlog.v1.AdminService",
            "raftlog.v1.GroupService",
        )
        for service in ("", *public):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = set()
        async for reply in reflect.ServerReflectionInfo(iter([request]), timeout=5):
            names |= {s.name for s in reply.list_services_response.service}
        assert {*public, "grpc.health.v1.Health"} <= names
