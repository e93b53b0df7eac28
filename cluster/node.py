"""``Node``: one raftlog process — gRPC server, Raft transport, partition replicas.

Started from a static cluster file (cluster/static_config.py) and a node id.
The node hosts a replica of every partition whose replica list names it,
serves ``raftlog.v1.LogService`` and the internal Raft transport on one gRPC
port, and runs until ``stop()`` (SIGTERM/SIGINT in ``cluster.serve``).

Invariants:

- The partition-to-group mapping a node was first started with is recorded
  in its data directory; a later start with a cluster file that maps any
  group differently refuses to start (it would hand one partition's log to
  another).
- Shutdown order: stop accepting requests (grace period for calls in
  flight), stop the transport, then the replicas, the writer and the store.
  A replica or writer failure stops the node with an error (crash-only: a
  restart recovers from the WAL).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import grpc

from cluster.forwarding import Forwarder
from cluster.grpc_health import enable_health_and_reflection, mark_serving
from cluster.leader_balance import hand_back_leadership
from cluster.log_service import LogService
from cluster.metadata_service import StaticMetadataService
from cluster.node_admin import NodeAdminService
from cluster.static_config import ConfigError, PartitionRef, StaticCluster
from cluster.transport import RaftTransport
from cluster.transport_config import TransportConfig, server_options
from partitions.replica import Replica
from partitions.replica_host import HostConfig, ReplicaHost
from raft.types import Message
from raftlog.internal.v1 import node_admin_pb2_grpc
from raftlog.v1 import log_pb2_grpc, metadata_pb2_grpc

GRPC_OPTIONS = [
    ("grpc.http2.lookahead_bytes", 8 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.so_reuseport", 0),
]
"""64 MiB messages: a fetch may return up to MAX_FETCH_BYTES. No SO_REUSEPORT,
so a second node started on a taken port fails instead of sharing it."""


class Node:
    def __init__(
        self,
        cluster: StaticCluster,
        node_id: int,
        *,
        data_dir: Path | None = None,
        dial: dict[int, str] | None = None,
        unsafe_ack_before_commit: bool = False,
    ) -> None:
        """``dial``: peers reached at another address than the configured
        one (failover drills put a fault-injecting proxy there).
        ``unsafe_ack_before_commit``: TEST ONLY, see ReplicaConfig."""
        cluster.validate()
        unknown = set(dial or {}) - {n.id for n in cluster.nodes}
        if unknown:
            raise ConfigError(f"--dial names nodes {sorted(unknown)} that are not in the cluster file")
        self._dial = dict(dial or {})
        self._unsafe_ack_before_commit = unsafe_ack_before_commit
        self.cluster = cluster
        self.spec = cluster.node(node_id)
        self.node_id = node_id
        self.data_dir = data_dir or self.spec.data_dir
        self._refs = {(ref.topic, ref.partition): ref for ref in cluster.partitions()}
        self._addresses = {n.id: n.address for n in cluster.nodes}
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self.host: ReplicaHost | None = None
        self.transport: RaftTransport | None = None
        self.bound_port = 0

    # --- wiring ---

    def _find_replica(self, topic: str, partition: int) -> Replica | None:
        ref = self._refs.get((topic, partition))
        if ref is None or self.host is None:
            return None
        return self.host.replica(ref.group)

    def _partition_exists(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._refs

    def _address_of(self, node: int) -> str:
        return self._addresses.get(node, "")

    def _send(self, to_node: int, group: int, message: Message, quiesce: bool) -> None:
        assert self.transport is not None
        self.transport.send(to_node, group, message, quiesce=quiesce)

    def _check_group_mapping(self, refs: list[PartitionRef]) -> None:
        path = self.data_dir / "static-groups.json"
        mapping = {f"{ref.topic}/{ref.partition}": ref.group for ref in refs}
        if path.exists():
            stored: dict[str, int] = json.loads(path.read_text())
            changed = {k: (v, mapping.get(k)) for k, v in stored.items() if mapping.get(k, v) != v}
            if changed:
                raise ConfigError(
                    f"{path}: the cluster file maps partitions to different Raft groups than when this "
                    f"node was first started ({changed}); restore the original topic order"
                )
            mapping = {**stored, **mapping}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(mapping, sort_keys=True))
        tmp.replace(path)

    # --- running ---

    async def run(self) -> None:
        cluster = self.cluster
        refs = [ref for ref in cluster.partitions() if self.node_id in ref.replicas]
        self._check_group_mapping(cluster.partitions())
        host_config = HostConfig(
            tick_interval_s=cluster.raft.tick_ms / 1000,
            retention_check_interval_s=cluster.retention_check_ms / 1000,
        )
        transport_config = TransportConfig(cluster_id=cluster.cluster_id)
        options = dict(server_options(transport_config))
        options.update(GRPC_OPTIONS)
        server = grpc.aio.server(options=list(options.items()))
        peers = {n.id: self._dial.get(n.id, n.address) for n in cluster.nodes if n.id != self.node_id}
        async with ReplicaHost(self.node_id, self.data_dir, self._send, host_config) as host:
            self.host = host
            transport = RaftTransport(
                self.node_id,
                peers,
                lambda _from, batch: host.deliver((m.group, m.message, m.quiesce) for m in batch),
                on_peer_state=host.peer_changed,
                config=transport_config,
            )
            self.transport = transport
            transport.add_to_server(server)
            forwarder = Forwarder()
            log_pb2_grpc.add_LogServiceServicer_to_server(
                LogService(self._find_replica, self._partition_exists, self._address_of, forwarder), server
            )
            metadata_pb2_grpc.add_MetadataServiceServicer_to_server(
                StaticMetadataService(self.node_id, cluster, host.replica), server
            )
            node_admin_pb2_grpc.add_NodeAdminServicer_to_server(
                NodeAdminService(self.node_id, lambda: self.host, lambda: self.transport), server
            )
            health = enable_health_and_reflection(server)
            self.bound_port = server.add_insecure_port(self.spec.address)
            if self.bound_port == 0:
                raise ConfigError(f"node {self.node_id}: cannot listen on {self.spec.address}")
            for ref in refs:
                topic = cluster.topic(ref.topic)
                assert topic is not None
                config = cluster.replica_config(topic)
                if self._unsafe_ack_before_commit:
                    config = replace(config, unsafe_ack_before_commit=True)
                replica = await host.add_replica(ref.group, ref.replicas, config)
                if ref.preferred_leader == self.node_id:
                    # Spread leaders (and their CPU) over the nodes from the
                    # start instead of letting the fastest node win every
                    # election. Safe at any time: with pre-vote, a campaign
                    # against a live leader is refused and changes nothing.
                    replica.campaign()
            await server.start()
            await transport.start()
            await mark_serving(health)
            self._started.set()
            balancer = asyncio.create_task(self._balance_leaders(refs), name="raftlog-leader-balance")
            try:
                await self._stop.wait()
            finally:
                balancer.cancel()
                await asyncio.wait((balancer,))
                await server.stop(grace=1.0)
                await forwarder.close()
                await transport.close()

    async def _balance_leaders(self, refs: list[PartitionRef]) -> None:
        interval = self.cluster.leader_balance_ms / 1000
        if interval <= 0:
            return
        assert self.host is not None and self.transport is not None
        host, transport = self.host, self.transport
        while True:
            await asyncio.sleep(interval)
            hand_back_leadership(self.node_id, refs, host.replica, transport.peer_alive)

    def stop(self) -> None:
        self._stop.set()

    async def started(self) -> None:
        await self._started.wait()
