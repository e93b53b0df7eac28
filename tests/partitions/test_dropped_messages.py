"""The Raft core's drop counters reach the node: a replica reports what its
core refused (``RaftReplica.dropped_messages``) and the host sums them
(``ReplicaHost.dropped_peer_messages``, what NodeAdmin's ``NodeStats``
carries), on three in-process hosts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from raft.screening import BEYOND_LOG
from raft.types import Message, MessageType
from tests.partitions.replica_cluster import InProcessCluster

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    c = InProcessCluster(tmp_path)
    await c.start()
    yield c
    await c.close()


async def test_an_ack_past_the_leaders_log_is_counted_by_the_replica_and_its_host(
    cluster: InProcessCluster,
) -> None:
    leader = await cluster.leader()
    status = leader.status()
    host = cluster.hosts[leader.node_id]
    follower = next(n for n in cluster.node_ids if n != leader.node_id)
    assert host.dropped_peer_messages() == 0
    assert leader.dropped_messages == {}

    # A leader never truncates its log in its own term: no follower can
    # acknowledge an index past its last one.
    impossible = Message(
        MessageType.APPEND_RESPONSE,
        to=leader.node_id,
        sender=follower,
        term=status.term,
        index=status.last_index + 5,
    )
    host.deliver([(leader.group, impossible, False)])
    await cluster.wait_until(lambda: host.dropped_peer_messages() == 1, what="the drop to be counted")
    assert leader.dropped_messages == {BEYOND_LOG: 1}
    assert leader.is_leader and leader.status().last_index == status.last_index

    # The property is a copy: a reader cannot change the core's counters.
    leader.dropped_messages[BEYOND_LOG] = 99
    assert host.dropped_peer_messages() == 1

    # Other hosts saw nothing; a message for a group not open here is
    # dropped by the host (expected while replicas move) and not counted.
    others = [h for n, h in cluster.hosts.items() if n != leader.node_id]
    assert [h.dropped_peer_messages() for h in others] == [0, 0]
    host.deliver([(leader.group + 1000, impossible, False)])
    assert host.dropped_peer_messages() == 1
