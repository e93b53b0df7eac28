"""Leader announcements: their wire form (cluster/transport/raft_wire.py),
their trip over the Raft transport between real gRPC servers on loopback
(peer_link.py, raft_transport.py), and the node's glue that sends, merges
and answers with them (cluster/routing/leader_routing.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from cluster.routing.leader_map import LeaderClaim
from cluster.routing.leader_routing import LeaderRouting, RoutingConfig
from cluster.transport.raft_wire import (
    WireError,
    decode_batch,
    encode_batch,
    encode_group_message,
    encode_leaders,
)
from raftlog.internal.v1 import raft_pb2
from tests.cluster.transport_nodes import TestNode, heartbeat, wait_for

# --- wire -----------------------------------------------------------------------------------------


def test_a_batch_with_an_announcement_is_what_protobuf_serializes() -> None:
    body = encode_group_message(4, heartbeat(2, 1, 1))
    framed = encode_batch(9, [body], encode_leaders([(4, 2), (300, 70000)]))
    expected = raft_pb2.RaftBatch(
        messages=[raft_pb2.GroupMessage.FromString(body)],
        seq=9,
        leaders=raft_pb2.LeaderAnnouncement(groups=[4, 300], terms=[2, 70000]),
    )
    assert framed == expected.SerializeToString()
    decoded = decode_batch(framed)
    assert decoded.leaders == [(4, 2), (300, 70000)]
    assert [m.group for m in decoded.messages] == [4]
    assert decoded.errors == []


def test_a_batch_without_an_announcement_decodes_none_and_an_empty_one_an_empty_list() -> None:
    assert decode_batch(encode_batch(1, [])).leaders is None
    empty = raft_pb2.RaftBatch(seq=1, leaders=raft_pb2.LeaderAnnouncement()).SerializeToString()
    assert decode_batch(empty).leaders == []


def test_a_malformed_announcement_is_dropped_and_the_messages_kept() -> None:
    body = encode_group_message(4, heartbeat(2, 1, 1))
    uneven = raft_pb2.LeaderAnnouncement(groups=[1, 2], terms=[3]).SerializeToString()
    decoded = decode_batch(encode_batch(2, [body], uneven))
    assert decoded.leaders is None
    assert len(decoded.messages) == 1
    assert decoded.errors and "2 groups but 1 terms" in decoded.errors[0]
    zero = raft_pb2.LeaderAnnouncement(groups=[0], terms=[3]).SerializeToString()
    assert decode_batch(encode_batch(3, [], zero)).leaders is None


def test_an_announcement_peers_would_refuse_is_not_encoded() -> None:
    with pytest.raises(WireError):
        encode_leaders([(5, 0)])


# --- transport ------------------------------------------------------------------------------------


@pytest.fixture
async def pair() -> AsyncIterator[dict[int, TestNode]]:
    nodes = {1: TestNode(1), 2: TestNode(2)}
    nodes[1].attach({2: nodes[2].address})
    nodes[2].attach({1: nodes[1].address})
    for node in nodes.values():
        await node.start()
    yield nodes
    for node in nodes.values():
        await node.stop()


async def test_an_announcement_reaches_the_peer_alone_and_with_messages(
    pair: dict[int, TestNode],
) -> None:
    a, b = pair[1], pair[2]
    await wait_for(lambda: a.t.peer_alive(2) and b.t.peer_alive(1), what="both up")
    a.t.announce_leaders([(5, 2), (6, 3)])
    await wait_for(lambda: b.latest_from(1) == [(5, 2), (6, 3)], what="the announcement alone")
    a.t.send(2, 5, heartbeat(2, 1, 1))
    a.t.announce_leaders([(5, 2)])
    await wait_for(lambda: b.latest_from(1) == [(5, 2)] and len(b.received()) == 1, what="both in one go")
    assert a.t.stats().peers[2].dropped_messages == 0


async def test_only_the_latest_announcement_waiting_in_a_link_is_sent(
    pair: dict[int, TestNode],
) -> None:
    a, b = pair[1], pair[2]
    await wait_for(lambda: a.t.peer_alive(2), what="node 2 up")
    for term in range(1, 50):  # all in one event-loop turn: one batch
        a.t.announce_leaders([(8, term)])
    await wait_for(lambda: b.latest_from(1) == [(8, 49)], what="the last announcement")
    await asyncio.sleep(0.1)
    assert [pairs for s, pairs in b.announced if s == 1] == [[(8, 49)]]


async def test_a_restarted_peer_gets_the_latest_announcement_without_a_new_one(
    pair: dict[int, TestNode],
) -> None:
    a, b = pair[1], pair[2]
    a.t.announce_leaders([(3, 7)])
    await wait_for(lambda: b.latest_from(1) == [(3, 7)], what="the first announcement")
    port = b.port
    await b.stop()
    await wait_for(lambda: not a.t.peer_alive(2), what="node 2 down")
    restarted = TestNode(2, port=port)
    restarted.attach({1: a.address})
    pair[2] = restarted  # the fixture stops it
    await restarted.start()
    await wait_for(lambda: restarted.latest_from(1) == [(3, 7)], what="the announcement again")


async def test_a_peer_added_later_gets_the_latest_announcement(pair: dict[int, TestNode]) -> None:
    a = pair[1]
    a.t.announce_leaders([(11, 4)])
    late = TestNode(3)
    late.attach({1: a.address})
    pair[3] = late
    await late.start()
    a.t.set_peers({2: pair[2].address, 3: late.address})
    await wait_for(lambda: late.latest_from(1) == [(11, 4)], what="the late peer's announcement")


# --- the node's glue ------------------------------------------------------------------------------


@dataclass
class FakeReplica:
    leader: int
    term: int
    node_id: int

    @property
    def is_leader(self) -> bool:
        return self.leader == self.node_id


@dataclass
class FakeHost:
    node_id: int
    replicas: dict[int, FakeReplica] = field(default_factory=dict)

    def replica(self, group: int) -> FakeReplica | None:
        return self.replicas.get(group)

    def host(self, group: int, leader: int, term: int) -> None:
        self.replicas[group] = FakeReplica(leader, term, self.node_id)


@dataclass
class FakeState:
    assigned: set[int]
    next_group_id: int

    def assignment(self, group: int) -> object | None:
        return object() if group in self.assigned else None


@dataclass
class FakeMetadata:
    state: FakeState
    version: int = 1


QUICK = RoutingConfig(check_interval_s=0.01, full_interval_s=0.2)


def test_leader_of_combines_the_replica_and_the_announcements() -> None:
    host = FakeHost(1)
    routing = LeaderRouting(1, host)
    host.host(4, leader=1, term=3)  # leads it
    host.host(5, leader=0, term=6)  # election under way here
    host.host(6, leader=2, term=2)  # a lagging follower
    routing.receive(2, [(5, 5), (7, 1)])
    routing.receive(3, [(6, 4), (7, 2)])
    assert routing.leader_of(4) == 1
    assert routing.leader_of(5) == 0  # the replica's term 6 is newer than the claim
    assert routing.leader_of(6) == 3
    assert routing.leader_of(7) == 3  # not hosted: the highest term announced
    assert routing.leader_of(8) == 0


def test_a_repeated_announcement_does_not_bring_back_a_forgotten_group() -> None:
    routing = LeaderRouting(1, FakeHost(1))
    routing.receive(2, [(3, 1), (4, 1)])
    assert routing.forget_deleted(FakeState({4}, next_group_id=5)) == 1
    routing.receive(2, [(3, 1), (4, 1)])  # the periodic repeat
    assert routing.leader_of(3) == 0
    routing.receive(2, [(4, 2)])  # a changed list is merged
    assert routing.map.claim(4) == LeaderClaim(term=2, leader=2)
    assert routing.announcements_received == 3


async def test_run_announces_changes_at_once_and_everything_periodically() -> None:
    host = FakeHost(1)
    host.host(2, leader=1, term=1)
    host.host(3, leader=2, term=1)
    sent: list[list[tuple[int, int]]] = []

    def announce(pairs: Sequence[tuple[int, int]]) -> None:
        sent.append(list(pairs))

    routing = LeaderRouting(1, host, QUICK)
    task = asyncio.create_task(routing.run(announce, FakeMetadata(FakeState({2, 3}, 4))))
    try:
        await wait_for(lambda: sent == [[(2, 1)]], what="the first list")
        host.host(3, leader=1, term=2)  # won an election
        await wait_for(
            lambda: sent[-1] == [(2, 1), (3, 2)], timeout=0.15, what="the change, before the period"
        )
        count = len(sent)
        await wait_for(lambda: len(sent) > count, timeout=0.5, what="a periodic full list")
        assert sent[-1] == [(2, 1), (3, 2)]
        assert routing.announcements_sent == len(sent)
    finally:
        task.cancel()
        await asyncio.wait((task,))


async def test_run_forgets_groups_whose_assignment_disappears() -> None:
    host = FakeHost(1)
    metadata = FakeMetadata(FakeState({2, 3}, next_group_id=4))
    routing = LeaderRouting(1, host, QUICK)
    routing.receive(2, [(2, 1), (3, 1), (9, 1)])
    task = asyncio.create_task(routing.run(lambda _pairs: None, metadata))
    try:
        await asyncio.sleep(0.05)
        assert routing.leader_of(3) == 2
        metadata.state = FakeState({2}, next_group_id=4)  # topic of group 3 deleted
        metadata.version += 1
        await wait_for(lambda: routing.leader_of(3) == 0, what="group 3 forgotten")
        assert routing.leader_of(2) == 2
        assert routing.leader_of(9) == 2  # not allocated yet in this metadata: kept
    finally:
        task.cancel()
        await asyncio.wait((task,))


async def test_run_also_forgets_deleted_groups_with_every_periodic_list() -> None:
    routing = LeaderRouting(1, FakeHost(1), QUICK)
    task = asyncio.create_task(routing.run(lambda _pairs: None, FakeMetadata(FakeState({2}, 4))))
    try:
        await asyncio.sleep(0.05)  # the metadata was looked at once
        routing.receive(3, [(2, 1), (3, 1)])  # group 3's leader has not retired it yet
        assert routing.leader_of(3) == 3
        await wait_for(lambda: routing.leader_of(3) == 0, timeout=1.0, what="group 3 forgotten")
        assert routing.leader_of(2) == 3
    finally:
        task.cancel()
        await asyncio.wait((task,))


def test_a_check_interval_longer_than_the_full_period_is_refused() -> None:
    with pytest.raises(ValueError):
        LeaderRouting(1, FakeHost(1), RoutingConfig(check_interval_s=2.0, full_interval_s=1.0))


def test_a_claim_its_sender_no_longer_makes_is_withdrawn_and_the_others_count_again() -> None:
    # A proven node claims group 5 with a huge term (a forgery, or a bug):
    # it wins over the true leader's claim while it is made, and not a
    # moment longer than its sender keeps making it.
    routing = LeaderRouting(1, FakeHost(1))
    routing.receive(2, [(5, 7)])
    routing.receive(3, [(5, 1 << 62)])
    assert routing.leader_of(5) == 3
    routing.receive(2, [(5, 7)])  # the true leader's periodic repeat
    routing.receive(3, [])  # node 3 no longer claims it
    assert routing.leader_of(5) == 2
    routing.receive(2, [])  # nor does node 2: nobody is known to lead it
    assert routing.leader_of(5) == 0


def test_a_withdrawal_leaves_a_claim_another_node_holds() -> None:
    routing = LeaderRouting(1, FakeHost(1))
    routing.receive(2, [(5, 1)])
    routing.receive(3, [(5, 2)])  # node 3 won the next election
    routing.receive(2, [])  # the old leader stepped down
    assert routing.leader_of(5) == 3


def test_the_claims_of_a_sender_gone_silent_are_withdrawn() -> None:
    now = [100.0]
    config = RoutingConfig(check_interval_s=0.1, full_interval_s=1.0, silent_after_s=5.0)
    routing = LeaderRouting(1, FakeHost(1), config, clock=lambda: now[0])
    routing.receive(2, [(5, 7)])
    routing.receive(3, [(5, 1 << 62), (6, 1 << 62)])  # then node 3 says no more
    now[0] += 4.0
    routing.receive(2, [(5, 7)])
    assert routing.forget_silent() == 0
    assert routing.leader_of(5) == 3
    now[0] += 1.5  # node 3 silent for 5.5 s, node 2 for 1.5 s
    assert routing.forget_silent() == 1
    assert routing.leader_of(5) == 2
    assert routing.leader_of(6) == 0
    routing.receive(3, [(6, 2)])  # back: its claims count again
    assert routing.leader_of(6) == 3


def test_silence_must_outlast_the_periodic_list() -> None:
    with pytest.raises(ValueError):
        RoutingConfig(full_interval_s=1.0, silent_after_s=1.0).validate()


async def test_run_withdraws_the_claims_of_silent_peers() -> None:
    config = RoutingConfig(check_interval_s=0.01, full_interval_s=0.05, silent_after_s=0.15)
    routing = LeaderRouting(1, FakeHost(1), config)
    routing.receive(3, [(5, 1 << 62)])
    task = asyncio.create_task(routing.run(lambda _pairs: None, FakeMetadata(FakeState({5}, 6))))
    try:
        await wait_for(lambda: routing.leader_of(5) == 0, timeout=1.0, what="node 3's claim withdrawn")
    finally:
        task.cancel()
        await asyncio.wait((task,))
