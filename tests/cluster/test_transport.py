"""cluster/transport/raft_transport.py and cluster/transport/peer_link.py against real gRPC servers:
ordering, coalescing and payloads; liveness and reconnects; membership
changes and shutdown. Backpressure is in test_transport_backpressure.py,
stream admission and handling in test_transport_streams.py, the control
lane in test_transport_lanes.py; shared helpers in transport_nodes.py.

Every test runs grpc.aio servers on 127.0.0.1 (port 0, then the bound port)
inside the test's event loop, with short ping and timeout settings so that
down/up transitions take a fraction of a second.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator

import pytest

from cluster.transport.peer_link import backoff_delay
from cluster.transport.raft_transport import RaftTransport, TransportConfig
from raft.types import Entry, Message, MessageType
from tests.cluster.transport_nodes import FAST, TestNode, cluster, connected, heartbeat, tasks_of, wait_for


@pytest.fixture
async def pair() -> AsyncIterator[dict[int, TestNode]]:
    nodes = await cluster(1, 2)
    yield nodes
    for node in nodes.values():
        await node.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- ordering, coalescing, payloads ---------------------------------------------------------------


async def test_messages_of_many_groups_arrive_in_order_in_one_batch(pair: dict[int, TestNode]) -> None:
    a, b = pair[1], pair[2]
    await connected(a, b)
    sent = [(group, i) for i in range(10) for group in range(20)]  # 200 messages, groups interleaved
    for group, i in sent:
        a.t.send(2, group, heartbeat(2, 1, i), quiesce=(i == 9))
    await wait_for(lambda: len(b.received()) == len(sent), what="200 messages")
    assert [(m.group, m.message.commit) for m in b.received()] == sent
    assert [m.quiesce for m in b.received()] == [i == 9 for _, i in sent]
    assert all(from_node == 1 for from_node, _ in b.deliveries)
    # Queued in one event-loop iteration: one batch, one deliver() call.
    assert len(b.deliveries) == 1
    stats = a.t.stats()
    assert (stats.batches_sent, stats.messages_sent) == (1, 200)
    assert b.t.stats().peers[1].batches_received == 1


async def test_a_batch_holds_at_most_max_batch_messages(pair: dict[int, TestNode]) -> None:
    a, b = pair[1], pair[2]
    await connected(a, b)
    for i in range(2500):
        a.t.send(2, i % 7, heartbeat(2, 1, i))
    await wait_for(lambda: len(b.received()) == 2500, what="2500 messages")
    assert [len(batch) for _, batch in b.deliveries] == [1024, 1024, 452]
    assert [m.message.commit for m in b.received()] == list(range(2500))


async def test_messages_queued_while_a_write_is_in_progress_share_the_next_batch(
    pair: dict[int, TestNode],
) -> None:
    a, b = pair[1], pair[2]
    await connected(a, b)
    for round_ in range(5):
        for group in range(50):
            a.t.send(2, group, heartbeat(2, 1, round_))
        await asyncio.sleep(0)  # the writer may take this round before the next
    await wait_for(lambda: len(b.received()) == 250, what="250 messages")
    assert [m.message.commit for m in b.received()] == [r for r in range(5) for _ in range(50)]
    assert a.t.stats().batches_sent <= 5


async def test_a_large_append_arrives_intact(pair: dict[int, TestNode]) -> None:
    a, b = pair[1], pair[2]
    await connected(a, b)
    rng = random.Random(7)
    appends = [
        Message(
            MessageType.APPEND,
            to=2,
            sender=1,
            term=2,
            index=10 + 8 * k,
            log_term=2,
            commit=9,
            entries=tuple(Entry(2, 11 + 8 * k + i, data=rng.randbytes(64 * 1024)) for i in range(8)),
        )
        for k in range(3)
    ]  # 3 messages of 512 KiB
    for message in appends:
        a.t.send(2, 42, message)
    await wait_for(lambda: len(b.received()) == 3, what="3 appends")
    assert [m.message for m in b.received()] == appends
    assert b.t.stats().bytes_received >= 3 * 8 * 64 * 1024


async def test_an_oversized_message_is_dropped_not_sent() -> None:
    config = TransportConfig(
        cluster_id="test",
        ping_interval=0.05,
        peer_timeout=0.3,
        max_message_bytes=100_000,
        max_batch_bytes=50_000,
    )
    nodes = await cluster(1, 2, config=config)
    try:
        a, b = nodes[1], nodes[2]
        await connected(a, b)
        too_big = Message(MessageType.APPEND, to=2, sender=1, entries=(Entry(1, 1, data=bytes(100_000)),))
        a.t.send(2, 1, too_big)
        a.t.send(2, 1, heartbeat(2, 1, 5))
        await wait_for(lambda: len(b.received()) == 1, what="the heartbeat")
        assert b.received()[0].message.commit == 5
        assert a.t.stats().dropped_messages == 1
    finally:
        for node in nodes.values():
            await node.stop()


def test_send_to_self_raises_and_to_a_stranger_is_counted() -> None:
    transport = RaftTransport(1, {2: "127.0.0.1:1"}, lambda _n, _b: None, config=FAST)
    with pytest.raises(ValueError, match="itself"):
        transport.send(1, 0, heartbeat(1, 1, 0))
    transport.send(9, 0, heartbeat(9, 1, 0))
    assert transport.stats().dropped_messages == 1


# --- liveness and reconnects ---------------------------------------------------------------------


async def test_idle_peers_stay_up_on_pings(pair: dict[int, TestNode]) -> None:
    a, b = pair[1], pair[2]
    await wait_for(lambda: a.t.peer_alive(2) and b.t.peer_alive(1), what="both up")
    await asyncio.sleep(4 * FAST.peer_timeout)
    assert a.states == [(2, True)]
    assert b.states == [(1, True)]
    assert a.t.stats().pings_sent >= 10
    assert a.t.stats().batches_sent == 0


async def test_peer_down_and_up_is_reported_and_traffic_resumes(pair: dict[int, TestNode]) -> None:
    a, b = pair[1], pair[2]
    await connected(a, b)
    assert a.t.peer_alive(2)
    port = b.port
    await wait_for(lambda: a.t.stats().peers[2].inbound_open, what="node 2's stream to node 1")
    await b.stop()
    await wait_for(lambda: not a.t.stats().peers[2].inbound_open, what="node 2's stream gone")
    await wait_for(lambda: not a.t.peer_alive(2), what="node 2 reported down")
    assert a.states == [(2, True), (2, False)]
    a.t.send(2, 3, heartbeat(2, 1, 77))  # queued while node 2 is down
    assert a.t.stats().peers[2].queued_messages == 1

    restarted = TestNode(2, port=port)
    restarted.attach({1: a.address})
    pair[2] = restarted  # the fixture stops it
    await restarted.start()
    await wait_for(lambda: a.t.peer_alive(2), what="node 2 reported up again")
    assert a.states == [(2, True), (2, False), (2, True)]
    await wait_for(lambda: a.t.stats().peers[2].inbound_open, what="the new stream from node 2")
    await wait_for(lambda: len(restarted.received()) == 1, what="the message queued while down")
    a.t.send(2, 3, heartbeat(2, 1, 78))
    await wait_for(lambda: len(restarted.received()) == 2, what="a message after the reconnect")
    assert [m.message.commit for m in restarted.received()] == [77, 78]
    stats = a.t.stats().peers[2]
    assert stats.reconnects == 1
    assert stats.stream_failures >= 1


async def test_a_broken_stream_reports_the_peer_down_before_the_timeout() -> None:
    # A peer timeout far longer than the test: only the broken stream can
    # report node 2 down in time (kill -9 resets its connections at once).
    slow_timeout = TransportConfig(
        cluster_id="test", ping_interval=0.05, peer_timeout=30.0, reconnect_backoff_initial=0.02
    )
    nodes = await cluster(1, 2, config=slow_timeout)
    a, b = nodes[1], nodes[2]
    try:
        await connected(a, b)
        await wait_for(lambda: a.t.peer_alive(2), what="node 2 up")
        await b.server.stop(None)  # connections reset; node 2's transport never says goodbye
        await wait_for(lambda: not a.t.peer_alive(2), timeout=3.0, what="node 2 reported down")
        assert a.states[-1] == (2, False)
    finally:
        for node in nodes.values():
            await node.stop()


async def test_a_down_peer_queue_is_bounded_and_keeps_the_newest() -> None:
    config = TransportConfig(
        cluster_id="test",
        ping_interval=0.05,
        peer_timeout=0.3,
        reconnect_backoff_initial=0.02,
        reconnect_backoff_max=0.1,
        max_queued_messages_while_down=10,
    )
    port = free_port()
    a = TestNode(1, config)
    a.attach({2: f"127.0.0.1:{port}"})
    await a.start()
    b: TestNode | None = None
    try:
        for i in range(25):  # appends: the bulk lane's while-down limits
            a.t.send(2, 1, Message(MessageType.APPEND, to=2, sender=1, term=1, commit=i))
        stats = a.t.stats()
        assert (stats.queued_messages, stats.dropped_messages) == (10, 15)
        b = TestNode(2, config, port=port)
        b.attach({1: a.address})
        await b.start()
        await wait_for(lambda: len(b.received()) == 10, what="the 10 newest messages")
        assert [m.message.commit for m in b.received()] == list(range(15, 25))
    finally:
        await a.stop()
        if b is not None:
            await b.stop()


def test_backoff_starts_fast_grows_and_is_capped_with_jitter() -> None:
    rng = random.Random(1)
    config = TransportConfig()
    first = [backoff_delay(0, config, rng) for _ in range(200)]
    assert min(first) >= 0.025 and max(first) <= 0.05
    assert max(first) - min(first) > 0.01  # jittered
    assert all(0.05 <= backoff_delay(1, config, rng) <= 0.1 for _ in range(50))
    late = [backoff_delay(n, config, rng) for n in range(5, 100)]
    assert max(late) <= 1.0 and min(late) >= 0.4


# --- membership and shutdown -------------------------------------------------------------------------


async def test_removing_a_peer_reports_it_down_and_drops_its_traffic(pair: dict[int, TestNode]) -> None:
    a, b = pair[1], pair[2]
    await wait_for(lambda: a.t.peer_alive(2) and b.t.peer_alive(1), what="both up")
    a.t.set_peers({})
    assert a.states == [(2, True), (2, False)]
    assert not a.t.peer_alive(2)
    a.t.send(2, 1, heartbeat(2, 1, 1))
    assert a.t.stats().dropped_messages == 1
    # Node 2's stream into node 1 is ended and its new ones are refused.
    await wait_for(lambda: a.t.stats().rejected_streams >= 1, what="node 2 refused")
    a.t.set_peers({2: b.address})
    await wait_for(lambda: a.t.peer_alive(2), what="node 2 back")
    a.t.send(2, 1, heartbeat(2, 1, 2))
    await wait_for(lambda: len(b.received()) == 1, what="traffic after re-adding")


async def test_close_leaves_no_tasks_behind() -> None:
    nodes = await cluster(1, 2, 3)
    unreachable = free_port()
    nodes[1].t.set_peers({2: nodes[2].address, 3: nodes[3].address, 4: f"127.0.0.1:{unreachable}"})
    await wait_for(
        lambda: all(n.t.peer_alive(p) for n in nodes.values() for p in n.t.stats().peers if p != 4)
    )
    for group in range(10):
        for to in (2, 3, 4):
            nodes[1].t.send(to, group, heartbeat(to, 1, group))
    await wait_for(lambda: len(nodes[2].received()) == 10)
    names = tasks_of(1)
    for kind in ("link", "stream", "writer", "acks"):
        assert f"raft-{kind}-1->2" in names and f"raft-{kind}-1->3" in names
    assert {"raft-link-1->4", "raft-monitor-1", "raft-ack-writer-1<-2", "raft-ack-writer-1<-3"} <= set(names)
    started = time.monotonic()
    await nodes[1].t.close()
    assert time.monotonic() - started < 1.0
    assert tasks_of(1) == []
    for node in (nodes[2], nodes[3]):
        await node.t.close()
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("raft-")] == []
    delivered = len(nodes[2].received())
    nodes[1].t.send(2, 0, heartbeat(2, 1, 99))  # after close: dropped, never delivered
    for node in nodes.values():
        await node.stop()
    await asyncio.sleep(0.05)
    assert len(nodes[2].received()) == delivered
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_config_validation_names_the_setting() -> None:
    with pytest.raises(ValueError, match="peer_timeout"):
        TransportConfig(ping_interval=1.0, peer_timeout=1.5).validate()
    with pytest.raises(ValueError, match="cluster_id"):
        TransportConfig(cluster_id="").validate()
    with pytest.raises(ValueError, match="max_batch_bytes"):
        TransportConfig(max_batch_bytes=2, max_message_bytes=1).validate()
    TransportConfig().validate()
