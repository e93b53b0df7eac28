"""``Node``: one raftlog process — gRPC server, Raft transport, the metadata
controller's replica, and the partition replicas the controller assigns here.

Started from the cluster file (cluster/static_config.py) and a node id. The
node joins the metadata controller (group 0: a voter on the controller
nodes, a learner elsewhere; a node the cluster has not registered yet asks
to be, cluster/internal/join.py), and two loops keep it in step with the applied
metadata: the controller duties (cluster/controller_duties.py: bootstrap,
liveness, repair and rebalancing, on the controller leader only) and the
reconciler (cluster/reconciler.py: open and retire this node's partition
replicas, move the membership of the groups it leads). One gRPC port
serves the Raft transport, ``raftlog.v1`` (log, metadata, admin, groups),
cluster join, NodeAdmin, health and reflection. It runs until ``stop()``
(SIGTERM/SIGINT in ``cluster.serve``).

With ``[tls]`` in the cluster file (cluster/tls/__init__.py) the public
API is served over TLS on the node's address, and everything node-to-node
(transport, join, NodeAdmin, forwarded calls) goes to a second, mutual-TLS
listener of the same server at port + ``internal_port_offset``; every
outgoing node channel is opened by one ``Dialer`` (cluster/tls/dial.py).

Two doors guard that port: the internal door (cluster/internal/internal_door.py)
admits calls to the internal services (transport, join, NodeAdmin) only
with a node proof made from the cluster secret, and the front door
(cluster/frontend/front_door.py) admits public calls by API key.

Invariants:

- ``started()`` resolves once this node has applied a metadata state with
  everything the bootstrap makes (cluster/controller_duties.py: the file's
  nodes and topics, the default and system tenants, an operator key, the
  consumer offsets topic) and opened the replicas assigned to it in that
  state; gRPC health says SERVING from then on. Before that, calls may be
  refused (unknown key or topic) but are never answered wrongly.
- A node never runs without the cluster secret (``ConfigError`` at
  construction), and its outgoing internal calls (transport streams, join)
  carry its proof. With TLS, a node whose certificate files are missing or
  do not match does not start (``ConfigError``), and internal services
  answer only calls with a verified cluster certificate (the internal
  listener) as well as a proof.
- Once draining (NodeAdmin's ``HandOffLeadership``, a pod's preStop;
  cluster/leader_balance.py ``Drain``) the node stays draining until it
  stops: its replicas refuse leadership by transfer, its preferred-leader
  balancing stops, and one owned loop (``keep_handing_off``) hands off
  whatever it still leads every second.
- Shutdown order: stop the background loops, stop accepting requests
  (grace period for calls in flight), close the transport, then the
  replicas, the writer and the store. A replica or writer failure stops
  the node with an error (crash-only: a restart recovers from the WAL).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import grpc
from grpc_health.v1 import health

from cluster.audit.stage import AuditStage
from cluster.audit.writer import AuditAppender, AuditWriter
from cluster.controller import Assignment, Topic
from cluster.controller_duties import ControllerDuties, bootstrap_key_from_env
from cluster.controller_replica import CONTROLLER_GROUP, ControllerReplica
from cluster.frontend.admin_service import AdminService
from cluster.frontend.auth import Authenticator
from cluster.frontend.compaction import LeaderAsker
from cluster.frontend.forwarding import ChannelCache, Forwarder
from cluster.frontend.front_door import FrontDoor
from cluster.frontend.grpc_health import enable_health_and_reflection, mark_serving
from cluster.frontend.metadata_service import MetadataService
from cluster.frontend.node_stats import NodeStatsGatherer
from cluster.groups.group_logs import SYSTEM_TENANT, RaftCoordinatorLogs
from cluster.groups.service import GroupService
from cluster.internal.cluster_secret import load_cluster_secret
from cluster.internal.internal_door import InternalDoor, proof_rule
from cluster.internal.join import JoinService, join_until_registered
from cluster.internal.node_admin import NodeAdminService
from cluster.internal.node_auth import NodeCredentials
from cluster.leader_balance import Drain, hand_back_leadership, keep_handing_off
from cluster.quotas import NodeQuotas
from cluster.quotas.tenant_metrics import TenantMetrics
from cluster.reconciler import Reconciler, wait_for
from cluster.routing.leader_routing import LeaderRouting
from cluster.static_config import ConfigError, StaticCluster
from cluster.telemetry.node_collector import NodeCollector
from cluster.telemetry.node_metrics import NodeMetrics, metrics_host
from cluster.telemetry.tracing import configure_tracing, server_interceptors
from cluster.tls.dial import PLAIN, Dialer, TlsDialer
from cluster.tls.material import CertSource, server_credentials
from cluster.tls.settings import check_ports, internal_address
from cluster.transport.raft_transport import RaftTransport
from cluster.transport.transport_config import TransportConfig, server_options
from partitions.replica import ReplicaConfig
from partitions.replica_host import HostConfig, ReplicaHost
from partitions.state_machine import PartitionConfig
from raft.types import Message
from raftlog.internal.v1 import join_pb2, join_pb2_grpc, node_admin_pb2, node_admin_pb2_grpc
from raftlog.v1 import admin_pb2_grpc, channel_options, groups_pb2_grpc, log_pb2_grpc, metadata_pb2_grpc

GRPC_OPTIONS = [
    ("grpc.http2.lookahead_bytes", 8 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", channel_options.MIN_PING_INTERVAL_MS),
]
"""64 MiB messages: a fetch may return up to MAX_FETCH_BYTES. No SO_REUSEPORT,
so a second node started on a taken port fails instead of sharing it.
Clients' HTTP/2 keepalive pings are accepted down to one every
``raftlog.v1.channel_options.MIN_PING_INTERVAL_MS``, with or without calls
in flight: the SDK and other nodes' forwarding channels ping every second
to notice a paused or unreachable node within about two seconds; gRPC's default (one ping per 5 minutes without
data, two strikes) would answer such a client with GOAWAY."""


class Node:
    def __init__(
        self,
        cluster: StaticCluster,
        node_id: int,
        *,
        data_dir: Path | None = None,
        dial: dict[int, str] | None = None,
        unsafe_ack_before_commit: bool = False,
        bootstrap_key: str | None = None,
        cluster_secret: bytes | None = None,
        listen: str | None = None,
    ) -> None:
        """``dial``: peers reached at another address than the configured
        one (failover drills put a fault-injecting proxy there).
        ``unsafe_ack_before_commit``: TEST ONLY, see ReplicaConfig.
        ``bootstrap_key``: the first operator key if this node bootstraps
        the cluster (``raftlog serve --bootstrap-key-file``; default: the
        discouraged ``$RAFTLOG_BOOTSTRAP_API_KEY``).
        ``cluster_secret``: default: the file the cluster file or
        ``$RAFTLOG_CLUSTER_SECRET_FILE`` names (cluster/internal/cluster_secret.py);
        ``ConfigError`` when there is none.
        ``listen``: bind here instead of the node's address, which stays
        the one it advertises (``raftlog serve --listen``, a pod's 0.0.0.0)."""
        self._listen_address = listen
        cluster.validate()
        unknown = set(dial or {}) - {n.id for n in cluster.nodes}
        if unknown:
            raise ConfigError(f"--dial names nodes {sorted(unknown)} that are not in the cluster file")
        self._dial = dict(dial or {})
        self._unsafe_ack_before_commit = unsafe_ack_before_commit
        self._bootstrap_key = bootstrap_key or bootstrap_key_from_env()
        self._credentials = NodeCredentials(
            cluster_secret if cluster_secret is not None else load_cluster_secret(cluster, node_id), node_id
        )
        self.cluster = cluster
        self.spec = cluster.node(node_id)
        self.node_id = node_id
        self.data_dir = data_dir or self.spec.data_dir
        self._tls: CertSource | None = None
        self._dialer: Dialer = PLAIN
        if cluster.tls is not None:
            check_ports([n.address for n in cluster.nodes], cluster.tls.internal_port_offset)
            self._tls = CertSource(cluster.tls.for_node(node_id))
            self._dialer = TlsDialer(self._tls, cluster.tls.internal_port_offset)
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self.host: ReplicaHost | None = None
        self.transport: RaftTransport | None = None
        self.controller: ControllerReplica | None = None
        self._drain: Drain | None = None
        self._auth: Authenticator | None = None
        self._groups: GroupService | None = None
        self.bound_port = 0
        # Prometheus (cluster/telemetry/): only with a metrics_port; without
        # one nothing is built and no call pays for metrics.
        self.metrics: NodeMetrics | None = None
        self._tenant_metrics: TenantMetrics | None = None
        if self.spec.metrics_port:
            self.metrics = NodeMetrics(
                node_id, metrics_host(self._listen_address or self.spec.address), self.spec.metrics_port
            )
            self._tenant_metrics = TenantMetrics(self.metrics.registry)
            self.metrics.register(
                NodeCollector(
                    node_id,
                    lambda: self.host,
                    lambda: self.transport,
                    lambda: self.controller,
                    lambda: self._groups,
                )
            )

    # --- wiring ---

    def _raft_config(self) -> ReplicaConfig:
        timing = self.cluster.raft
        return ReplicaConfig(
            election_tick=timing.election_ticks,
            heartbeat_tick=timing.heartbeat_ticks,
            max_batch_bytes=self.cluster.max_batch_bytes,
            unsafe_ack_before_commit=self._unsafe_ack_before_commit,
        )

    def _replica_config(self, topic: Topic) -> ReplicaConfig:
        """A replica of ``topic``: the node's Raft settings and the topic's
        own (retention and compaction; the reconciler pushes them again
        after an alter)."""
        return replace(
            self._raft_config(),
            broadcast_commit=False,  # partitions/replica_config.py: why
            partition=PartitionConfig(
                retention_ms=topic.retention_ms,
                retention_bytes=topic.retention_bytes,
                cleanup_policy=topic.cleanup_policy,
                min_compaction_lag_ms=topic.min_compaction_lag_ms,
                delete_retention_ms=topic.delete_retention_ms,
                max_compaction_lag_ms=topic.max_compaction_lag_ms,
            ),
        )

    def _address_of(self, node: int) -> str:
        if self.controller is not None:
            known = self.controller.state.node(node)
            if known is not None:
                return known.address
        for spec in self.cluster.nodes:
            if spec.id == node:
                return spec.address
        return ""

    def _locate(self, tenant: str, topic: str, partition: int) -> Assignment | None:
        assert self.controller is not None
        return self.controller.state.partition(tenant, topic, partition)

    def _partition_count(self, tenant: str, topic: str) -> int:
        assert self.controller is not None
        found = self.controller.state.topic(tenant, topic)
        return found.partitions if found is not None else 0

    def _join_request(self) -> join_pb2.JoinRequest:
        return join_pb2.JoinRequest(
            cluster_id=self.cluster.cluster_id,
            node_id=self.node_id,
            address=self.spec.address,
            zone=self.spec.zone,
        )

    def _send(self, to_node: int, group: int, message: Message, quiesce: bool) -> None:
        assert self.transport is not None
        self.transport.send(to_node, group, message, quiesce=quiesce)

    # --- running ---

    async def run(self) -> None:
        cluster = self.cluster
        configure_tracing("raftlog-node", self.node_id)
        host_config = HostConfig(
            tick_interval_s=cluster.raft.tick_ms / 1000,
            retention_check_interval_s=cluster.retention_check_ms / 1000,
            min_free_bytes=cluster.min_free_bytes,
            replica=self._raft_config(),
        )
        transport_config = TransportConfig(cluster_id=cluster.cluster_id)
        options = dict(server_options(transport_config))
        options.update(GRPC_OPTIONS)
        static_peers = {n.id: self._dial.get(n.id, n.address) for n in cluster.nodes if n.id != self.node_id}
        voters = cluster.controller_voters()
        learners = [n.id for n in cluster.nodes if n.id not in voters]
        async with ReplicaHost(self.node_id, self.data_dir, self._send, host_config) as host:
            self.host = host
            drain = self._drain = Drain(on_start=host.start_draining)
            routing = LeaderRouting(self.node_id, host)
            transport = RaftTransport(
                self.node_id,
                static_peers,
                lambda _from, batch: host.deliver((m.group, m.message, m.quiesce) for m in batch),
                on_peer_state=host.peer_changed,
                on_leaders=routing.receive,
                on_heard=host.node_heard,
                heard_interval=host_config.tick_interval_s,
                config=transport_config,
                credentials=self._credentials,
                dialer=self._dialer,
            )
            self.transport = transport
            # Only the voters bootstrap group 0 (with the file's other nodes
            # as learners); every other node starts it empty and learns it
            # from the leader, so a node that joins later can never start
            # from a membership of its own making (cluster/internal/join.py).
            controller = await host.add_group(
                ControllerReplica,
                CONTROLLER_GROUP,
                voters,
                learners=learners,
                bootstrap=self.node_id in voters,
            )
            self.controller = controller
            auth = self._auth = Authenticator(controller)
            # Every public raftlog.v1 call passes the front door; the
            # internal services below (transport, join, NodeAdmin) pass the
            # internal door instead (a node proof), which must come first.
            # Every admin change, and every refused attempt, leaves an event
            # on __system/__audit, durable before the call answers (cluster/audit/).
            audit_appender = AuditAppender(
                self.node_id,
                lambda tenant, topic, p: controller.state.partition(tenant, topic, p),
                host.replica,
                routing.leader_of,
                self._address_of,
                self._credentials.metadata,
                self._dial,
                ChannelCache(dialer=self._dialer),
            )
            audit_writer = AuditWriter(audit_appender.append)
            audit = AuditStage(self.node_id, audit_writer, self._credentials.checker())
            # Quotas and fairness (cluster/quotas/): charged at the door (the
            # fetch bytes by the metered LogService), usage learned from
            # every node's NodeAdmin about once a second.
            quotas = NodeQuotas(
                self.node_id,
                controller,
                host,
                lambda: groups,
                self._credentials.metadata,
                self._dial,
                ChannelCache(dialer=self._dialer),
                metrics=self._tenant_metrics,
            )
            # The audit after the quota: a call the rate quota refuses is not
            # recorded (a flood must not become audit appends, cluster/audit/stage.py).
            metrics = self.metrics
            door = FrontDoor(
                auth.caller,
                self._address_of,
                stages=[quotas.stage, audit],
                refused=audit.refused_at_door,
                calls=metrics.call_recorder if metrics is not None else None,
            )
            internal_door = InternalDoor(
                proof_rule(self._credentials.checker()), require_peer_certificate=self._tls is not None
            )
            # Tracing first (when OTEL_* configures it): its span covers the
            # doors' refusals too, and the door stays the last interceptor.
            server = grpc.aio.server(
                options=list(options.items()), interceptors=[*server_interceptors(), internal_door, door]
            )
            forwarder = Forwarder(self._dialer, prove=self._credentials.metadata)

            # Every partition's leader, hosted here or not (cluster/routing/).
            leader_of = routing.leader_of
            transport.add_to_server(server)
            log_pb2_grpc.add_LogServiceServicer_to_server(
                # metadata=: a revocation wakes waiting fetches and streams at once;
                # metrics=: the produce stages are observed (None: metrics off).
                quotas.log_service(
                    self._locate,
                    host.replica,
                    leader_of,
                    self._address_of,
                    forwarder,
                    metadata=controller,
                    metrics=metrics,
                ),
                server,
            )
            metadata_pb2_grpc.add_MetadataServiceServicer_to_server(
                MetadataService(self.node_id, controller, leader_of), server
            )
            node_admin = NodeAdminService(
                self.node_id,
                lambda: self.host,
                lambda: self.transport,
                lambda: self.controller,
                audit=audit_appender.append_here,
                tenant_usage=quotas.tenant_usage_report,
                drain=drain,
            )
            # GetNodeStats asks the nodes' NodeAdmin with this node's proof
            # (an operator key reaches it; the cluster secret stays here).
            node_stats = NodeStatsGatherer(
                self.node_id,
                lambda: node_admin.snapshot(node_admin_pb2.StatsRequest(summary_only=True)),
                self._credentials.metadata,
                self._dial,
                dialer=self._dialer,
            )
            # CompactTopic and DescribeTopic's figures reach each
            # partition's leader the same way (cluster/frontend/compaction.py).
            leader_asker = LeaderAsker(
                self.node_id,
                node_admin,
                self._credentials.metadata,
                self._address_of,
                self._dial,
                dialer=self._dialer,
            )
            admin_pb2_grpc.add_AdminServiceServicer_to_server(
                AdminService(
                    self.node_id, controller, leader_of, forwarder, node_stats, leader_asker, usage=quotas
                ),
                server,
            )
            groups = GroupService(
                RaftCoordinatorLogs(controller, host.replica, self._address_of), self._partition_count
            )
            self._groups = groups
            groups_pb2_grpc.add_GroupServiceServicer_to_server(groups, server)
            node_admin_pb2_grpc.add_NodeAdminServicer_to_server(node_admin, server)
            join_pb2_grpc.add_ClusterJoinServicer_to_server(
                JoinService(self.node_id, cluster.cluster_id, controller), server
            )
            health = enable_health_and_reflection(server)
            self._listen(server)
            duties = ControllerDuties(
                self.node_id,
                controller,
                cluster,
                self.data_dir,
                self._bootstrap_key,
                peer_alive=transport.peer_alive,
                dead_after_s=cluster.node_dead_after_ms / 1000,
            )
            reconciler = Reconciler(
                self.node_id,
                controller,
                host,
                transport,
                self._replica_config,
                static_peers,
                self._dial,
                prove=self._credentials.metadata,
                dialer=self._dialer,
            )
            if metrics is not None:
                await metrics.serve()  # a taken port stops the start here (ConfigError)
            await server.start()
            await transport.start()
            audit_owner = asyncio.create_task(audit_writer.run(), name="raftlog-audit-writer")
            loops = [
                asyncio.create_task(duties.run(), name="raftlog-controller-duties"),
                audit_owner,
                asyncio.create_task(quotas.run(), name="raftlog-quota-usage"),
                asyncio.create_task(reconciler.run(), name="raftlog-reconciler"),
                asyncio.create_task(self._balance_leaders(), name="raftlog-leader-balance"),
                asyncio.create_task(
                    keep_handing_off(self.node_id, node_admin.members, transport.peer_alive, drain),
                    name="raftlog-drain",
                ),
                asyncio.create_task(
                    routing.run(transport.announce_leaders, controller), name="raftlog-leader-routing"
                ),
                asyncio.create_task(self._become_ready(duties, reconciler, health), name="raftlog-ready"),
            ]
            # Voters too: they keep their registration's zone in step (join.py).
            joining = join_until_registered(
                controller,
                self._join_request(),
                static_peers.values(),
                self._credentials,
                self._dialer,
                registered_first=self.node_id in voters,
            )
            loops.append(asyncio.create_task(joining, name="raftlog-join"))
            stop = asyncio.create_task(self._stop.wait())
            try:
                await _until_stopped(stop, loops)
            finally:
                # The audit writer outlives the server: an admin call that
                # ends in the grace period queues its event, then the writer
                # appends what is left (for at most DRAIN_S) and logs whole
                # every event it could not (cluster/audit/writer.py).
                others = [task for task in (stop, *loops) if task is not audit_owner]
                for task in others:
                    task.cancel()
                await asyncio.wait(others)
                await server.stop(grace=1.0)
                audit_owner.cancel()
                await asyncio.wait((audit_owner,))
                await audit_writer.drain()
                await groups.close()
                await forwarder.close()
                await audit_appender.close()
                await quotas.close()
                await node_stats.close()
                await leader_asker.close()
                await transport.close()
                if metrics is not None:
                    await metrics.close()

    def _listen(self, server: grpc.aio.Server) -> None:
        """Without TLS: one plaintext port. With TLS: the public API over
        TLS on the node's address, and the internal listener (client
        certificate required) at port + offset (cluster/tls/__init__.py)."""
        address = self._listen_address or self.spec.address
        if self._tls is None or self.cluster.tls is None:
            self.bound_port = server.add_insecure_port(address)
        else:
            self.bound_port = server.add_secure_port(
                address, server_credentials(self._tls, require_client_certificate=False)
            )
            internal = internal_address(address, self.cluster.tls.internal_port_offset)
            if not server.add_secure_port(
                internal, server_credentials(self._tls, require_client_certificate=True)
            ):
                raise ConfigError(
                    f"node {self.node_id}: cannot listen on {internal} (the internal TLS listener)"
                )
        if self.bound_port == 0:
            raise ConfigError(f"node {self.node_id}: cannot listen on {address}")

    async def _become_ready(
        self, duties: ControllerDuties, reconciler: Reconciler, health_servicer: health.aio.HealthServicer
    ) -> None:
        await wait_for(duties.bootstrapped)
        assert self.controller is not None
        version = self.controller.version
        await wait_for(lambda: reconciler.applied_version >= version)
        await mark_serving(health_servicer)
        self._started.set()

    async def _balance_leaders(self) -> None:
        interval = self.cluster.leader_balance_ms / 1000
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            assert self.host is not None and self.transport is not None and self.controller is not None
            assert self._drain is not None
            if self._drain.started:
                return  # a draining node hands leaderships off, never takes them
            # Not the consumer-offsets partitions: their leader is a group
            # coordinator, and a new coordinator holds its groups for a
            # session (cluster/groups/) — a costlier move than the CPU an
            # uneven spread of three leaders costs.
            mine = [
                a
                for a in self.controller.state.assignments_for_node(self.node_id)
                if a.tenant != SYSTEM_TENANT
            ]
            hand_back_leadership(self.node_id, mine, self.host.replica, self.transport.peer_alive)

    def stop(self) -> None:
        self._stop.set()

    async def started(self) -> None:
        await self._started.wait()


async def _until_stopped(stop: asyncio.Task[bool], loops: list[asyncio.Task[None]]) -> None:
    """Wait for ``stop``; a background loop that fails first stops the node
    with its exception (loops that simply finish are fine)."""
    pending: set[asyncio.Task[object]] = {stop, *loops}
    while not stop.done():
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
