"""Helpers shared by the transport tests (test_transport*.py,
test_leader_announcements.py): ``TestNode``, one node's gRPC server on
loopback with a ``RaftTransport`` recording what it delivers, the leader
announcements it receives and every peer up/down report, and small waits
on that state.

- ``TestNode`` binds 127.0.0.1 (port 0 unless told, then the bound port) and
  ``stop()`` is idempotent, so a test may stop a node its fixture stops too.
- ``FAST`` pings and times out in fractions of a second: down/up
  transitions happen well inside a test.
- ``wait_for`` polls (a transport offers no event to await) and fails with
  what it waited for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc

from cluster.transport.raft_transport import InboundMessage, RaftTransport, TransportConfig, server_options
from raft.types import Message, MessageType

FAST = TransportConfig(
    cluster_id="test",
    ping_interval=0.05,
    peer_timeout=0.3,
    reconnect_backoff_initial=0.02,
    reconnect_backoff_max=0.2,
)


def heartbeat(to: int, sender: int, commit: int) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, sender=sender, term=1, commit=commit)


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


class TestNode:
    """One node: a gRPC server on loopback and a transport served by it."""

    __test__ = False  # not a test class

    def __init__(self, node_id: int, config: TransportConfig = FAST, port: int = 0) -> None:
        self.node_id = node_id
        self.config = config
        self.server = grpc.aio.server(options=server_options(config))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        assert self.port, f"cannot bind 127.0.0.1:{port}"
        self.address = f"127.0.0.1:{self.port}"
        self.deliveries: list[tuple[int, list[InboundMessage]]] = []
        self.states: list[tuple[int, bool]] = []
        self.announced: list[tuple[int, list[tuple[int, int]]]] = []
        self.transport: RaftTransport | None = None
        self._stopped = False

    def attach(self, peers: dict[int, str]) -> RaftTransport:
        self.transport = RaftTransport(
            self.node_id,
            peers,
            lambda from_node, batch: self.deliveries.append((from_node, list(batch))),
            on_peer_state=lambda node, alive: self.states.append((node, alive)),
            on_leaders=lambda sender, pairs: self.announced.append((sender, list(pairs))),
            config=self.config,
        )
        self.transport.add_to_server(self.server)
        return self.transport

    @property
    def t(self) -> RaftTransport:
        assert self.transport is not None
        return self.transport

    def received(self) -> list[InboundMessage]:
        return [m for _, batch in self.deliveries for m in batch]

    def latest_from(self, sender: int) -> list[tuple[int, int]] | None:
        """The last leader announcement received from ``sender``, if any."""
        found = [pairs for s, pairs in self.announced if s == sender]
        return found[-1] if found else None

    async def start(self) -> None:
        await self.server.start()
        await self.t.start()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.transport is not None:
            await self.transport.close()
        await self.server.stop(None)


async def cluster(*ids: int, config: TransportConfig = FAST) -> dict[int, TestNode]:
    nodes = {i: TestNode(i, config) for i in ids}
    for node in nodes.values():
        node.attach({i: n.address for i, n in nodes.items() if i != node.node_id})
    for node in nodes.values():
        await node.start()
    return nodes


async def connected(a: TestNode, b: TestNode) -> None:
    await wait_for(lambda: a.t.stats().peers[b.node_id].connected, what=f"{a.node_id}->{b.node_id} connected")


def tasks_of(node_id: int) -> list[str]:
    """Names of the live tasks node ``node_id``'s transport created."""
    marks = (f"-{node_id}->", f"-{node_id}<-", f"raft-monitor-{node_id}")
    return sorted(t.get_name() for t in asyncio.all_tasks() if any(m in t.get_name() for m in marks))
