"""An in-process cluster of ``ReplicaHost``s for driver tests (no gRPC).

Messages between hosts go through ``loop.call_soon`` (delivered on a later
loop iteration, like a network) and can be cut per direction. Each host has
its own RocksDB directory, so hosts can be stopped and reopened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from partitions.replica import Replica, ReplicaConfig, SendFn
from partitions.replica_host import HostConfig, ReplicaHost
from raft.types import Message
from raftlog.v1.record_batch import Record, encode_batch


def batch(values: Sequence[bytes], *, producer_id: int = -1, epoch: int = -1, sequence: int = -1) -> bytes:
    return encode_batch(
        [Record(value=v, timestamp_ms=1_700_000_000_000) for v in values],
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
    )


class InProcessCluster:
    def __init__(
        self, root: Path, node_ids: Sequence[int] = (1, 2, 3), config: HostConfig | None = None
    ) -> None:
        self.root = root
        self.node_ids = list(node_ids)
        self.config = config or HostConfig(tick_interval_s=0.01, replica=ReplicaConfig(election_tick=10))
        self.hosts: dict[int, ReplicaHost] = {}
        self.cut: set[tuple[int, int]] = set()  # (from, to) links that drop everything
        self.sent = 0

    def _sender(self, from_node: int) -> SendFn:
        loop = asyncio.get_running_loop()

        def send(to_node: int, group: int, message: Message, quiesce: bool) -> None:
            self.sent += 1
            if (from_node, to_node) in self.cut:
                return
            loop.call_soon(self._deliver, to_node, group, message, quiesce)

        return send

    def _deliver(self, to_node: int, group: int, message: Message, quiesce: bool) -> None:
        host = self.hosts.get(to_node)
        if host is not None:
            host.deliver([(group, message, quiesce)])

    async def start_host(self, node: int, groups: Sequence[int] = (1,)) -> ReplicaHost:
        host = ReplicaHost(node, self.root / f"node{node}", self._sender(node), self.config)
        await host.__aenter__()
        for group in groups:
            await host.add_replica(group, self.node_ids)
        self.hosts[node] = host
        for other in self.hosts:
            if other != node:
                self.hosts[other].peer_changed(node, True)
        return host

    async def stop_host(self, node: int) -> None:
        host = self.hosts.pop(node)
        await host.__aexit__(None, None, None)
        for other in self.hosts.values():
            other.peer_changed(node, False)

    async def start(self, groups: Sequence[int] = (1,)) -> None:
        for node in self.node_ids:
            await self.start_host(node, groups)

    async def close(self) -> None:
        for node in list(self.hosts):
            await self.stop_host(node)

    def replicas(self, group: int = 1) -> list[Replica]:
        return [r for h in self.hosts.values() if (r := h.replica(group)) is not None]

    async def leader(self, group: int = 1, timeout: float = 10.0) -> Replica:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            leaders = [r for r in self.replicas(group) if r.is_leader]
            if len(leaders) == 1:
                return leaders[0]
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"no single leader for group {group}: {[r.status() for r in self.replicas(group)]}"
                )
            await asyncio.sleep(0.01)

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(0.01)
