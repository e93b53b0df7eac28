"""``raftlog.internal.v1.NodeAdmin``: what a node is doing, for drills,
tests and benchmarks (CPU, memory, group-commit and transport counters, the
state of each replica). Read-only; computing it never awaits, so the answer
is one consistent moment of the event loop.

Internal: it tells every tenant's partitions, leaders and terms, so only a
caller with a node proof reaches it (the internal door,
cluster/internal/internal_door.py; tools make proofs from the cluster secret
file, ``harness.local_cluster.LocalCluster.node_admin_metadata``), and
reflection does not advertise it (cluster/frontend/grpc_health.py).
Operators get the summary through the public ``AdminService.GetNodeStats``
(cluster/frontend/node_stats.py), which asks each node here with its own
proof; the answering node reads its own figures from ``snapshot`` directly.

``uptime_seconds`` counts from the process's start (as ``cpu_seconds``
does), so ``cpu_seconds / uptime_seconds`` is its average CPU share since
start.

The metadata controller (group 0) is reported only when ``groups`` names it,
and only with what its replica exposes: role, leader, term, the applied
index, voters and learners (its other indexes read 0).

``Compact`` is the one call that changes something: it asks the replicas it
names that lead their partition to run a compaction pass now
(``Replica.compact_now``: proposed through the group's log, so every
replica applies the same pass). ``AdminService.CompactTopic`` reaches each
partition's leader here with its node's proof, after checking the caller
owns the topic and that it is compacted; a node never starts a pass on a
replica that does not lead (``NOT_LEADER``, with its leader hint), and with
``wait`` it polls only its own replicas' status (no network), at most
``wait_seconds`` (capped by ``MAX_COMPACT_WAIT_S`` and the deadline). A
leader with nothing old enough to compact (``compact_now`` answers -1: an
empty log, or every record younger than ``min_compaction_lag_ms``) answers
``nothing_to_compact``, a success with nothing to wait for.

``AppendAudit`` appends audit events through this node's replica of
``__system/__audit`` when it leads it (``audit``: cluster/audit/writer.py's
``AuditAppender.append_here``; without it the call answers ``NO_TOPIC``).

``TenantUsage`` answers every tenant's usage on this node (``tenant_usage``:
cluster/quotas/usage_poller.py); the other nodes ask it about once a second,
since storage and group quotas count over the whole cluster.

``HandOffLeadership`` moves the leadership of every group this node leads,
the metadata controller's included, to other live voters and answers once
none is led here or after ``wait_seconds`` (capped by ``MAX_HAND_OFF_WAIT_S``
and the deadline): cluster/leader_balance.py ``hand_off_leadership``.
It first puts the node in its draining state (``Drain``, same module) for
the rest of its life: no leadership by transfer, no preferred-leader
balancing, and what it still leads handed off again every second, so other
nodes' balancing cannot hand leaderships back before it stops. Asking again
is harmless (another hand-off; draining stays on); the answer says
``draining`` and how many transfers to this node were refused so far.
``raftlog node hand-off`` (cluster/cli_node_ops.py) calls it on its own
node with a node proof, as a Kubernetes pod's preStop."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import resource
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc

from cluster.controller_replica import CONTROLLER_GROUP, ControllerReplica
from cluster.leader_balance import Drain, GroupMember, hand_off_leadership
from cluster.transport.raft_transport import RaftTransport
from partitions.replica_errors import NotLeaderError, ReplicaError
from partitions.replica_host import ReplicaHost
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc

NODE_ADMIN_COMPACT = "/raftlog.internal.v1.NodeAdmin/Compact"
"""The method a node's proof names to ask another node for a pass."""
NODE_ADMIN_HAND_OFF = "/raftlog.internal.v1.NodeAdmin/HandOffLeadership"
"""The method ``raftlog node hand-off``'s proof names."""
MAX_COMPACT_WAIT_S = 60.0
MAX_HAND_OFF_WAIT_S = 60.0
COMPACT_POLL_S = 0.05


def _process_started_monotonic() -> float:
    """When this process started, on ``time.monotonic``'s clock: from its
    start time in ``/proc/self/stat`` (clock ticks since boot), else now
    (a node loads this module as it starts)."""
    try:
        with open("/proc/self/stat") as stat:
            # Fields after the command name, which is in parentheses and may
            # hold spaces; the start time is field 22 of the whole line.
            fields = stat.read().rsplit(")", 1)[1].split()
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic()
    return time.monotonic() - max(0.0, age)


_STARTED_MONOTONIC = _process_started_monotonic()


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class NodeAdminService(node_admin_pb2_grpc.NodeAdminServicer):
    def __init__(
        self,
        node_id: int,
        host: Callable[[], ReplicaHost | None],
        transport: Callable[[], RaftTransport | None],
        controller: Callable[[], ControllerReplica | None] = lambda: None,
        tenant_usage: Callable[
            [node_admin_pb2.TenantUsageRequest], Awaitable[node_admin_pb2.TenantUsageReport]
        ]
        | None = None,
        audit: Callable[[Sequence[bytes]], Awaitable[node_admin_pb2.AppendAuditResponse]] | None = None,
        drain: Drain | None = None,
    ) -> None:
        """``drain``: the node's draining state, which ``HandOffLeadership``
        starts (default: one of its own, for tests)."""
        self._audit = audit
        self._drain = drain if drain is not None else Drain()
        self._node_id = node_id
        self._host = host
        self._transport = transport
        self._controller = controller
        self._tenant_usage = tenant_usage

    async def Stats(
        self, request: node_admin_pb2.StatsRequest, context: grpc.aio.ServicerContext
    ) -> node_admin_pb2.NodeStats:
        return self.snapshot(request)

    def snapshot(self, request: node_admin_pb2.StatsRequest) -> node_admin_pb2.NodeStats:
        """What ``Stats`` answers, read synchronously (one moment of the
        event loop)."""
        stats = node_admin_pb2.NodeStats(
            node_id=self._node_id,
            cpu_seconds=time.process_time(),
            rss_bytes=_rss_bytes(),
            uptime_seconds=time.monotonic() - _STARTED_MONOTONIC,
        )
        host = self._host()
        if host is not None:
            replicas = host.replicas
            writer = host.writer.stats()
            stats.replicas = len(replicas)
            stats.awake_replicas = len(host.awake)
            stats.leaders = sum(1 for r in replicas.values() if r.is_leader)
            stats.syncs = writer.syncs
            stats.synced_writes = writer.synced_writes
            stats.synced_entries = host.counters.synced_entries
            stats.bytes_written = writer.bytes_written
            stats.election_timeouts = host.election_timeouts()
            stats.dropped_peer_messages = host.dropped_peer_messages()
            if not request.summary_only:
                wanted = set(request.groups)
                for group, replica in replicas.items():
                    if wanted and group not in wanted:
                        continue
                    fields = dataclasses.asdict(replica.status())
                    fields["role"] = fields["role"].name
                    stats.partitions.add(**fields)
        controller = self._controller()
        if controller is not None and CONTROLLER_GROUP in request.groups:
            learners = controller.learners
            role = (
                "LEADER" if controller.is_leader else "LEARNER" if self._node_id in learners else "FOLLOWER"
            )
            stats.partitions.add(
                group=CONTROLLER_GROUP,
                role=role,
                leader=controller.leader,
                term=controller.term,
                applied_index=controller.state.applied_index,
                hibernating=controller.hibernating,
                voters=sorted(controller.voters),
                learners=sorted(learners),
            )
        transport = self._transport()
        if transport is not None:
            t = transport.stats()
            stats.transport_batches_sent = t.batches_sent
            stats.transport_messages_sent = t.messages_sent
            stats.transport_bytes_sent = t.bytes_sent
            stats.transport_dropped = t.dropped_messages
        return stats

    async def AppendAudit(
        self, request: node_admin_pb2.AppendAuditRequest, context: grpc.aio.ServicerContext
    ) -> node_admin_pb2.AppendAuditResponse:
        if self._audit is None:
            return node_admin_pb2.AppendAuditResponse(error="NO_TOPIC", message="this node keeps no audit")
        return await self._audit(list(request.events))

    async def TenantUsage(
        self, request: node_admin_pb2.TenantUsageRequest, context: grpc.aio.ServicerContext
    ) -> node_admin_pb2.TenantUsageReport:
        """Every tenant's usage on this node (cluster/quotas/usage_poller.py)."""
        if self._tenant_usage is None:
            return node_admin_pb2.TenantUsageReport(node_id=self._node_id)
        return await self._tenant_usage(request)

    async def HandOffLeadership(
        self, request: node_admin_pb2.HandOffRequest, context: grpc.aio.ServicerContext
    ) -> node_admin_pb2.HandOffResponse:
        wait_s = min(max(0.0, request.wait_seconds), MAX_HAND_OFF_WAIT_S)
        remaining = context.time_remaining()
        if remaining is not None:
            wait_s = min(wait_s, remaining - 0.1)  # answer before the caller gives up
        # Draining first: from here on no transfer can bring a leadership
        # back while this hand-off waits or after it answered.
        self._drain.start()
        transport = self._transport()
        if transport is None:  # not running yet: nothing is led here
            return node_admin_pb2.HandOffResponse(draining=True)
        with self._drain.hand_off():
            result = await hand_off_leadership(self._node_id, self.members, transport.peer_alive, wait_s)
        host = self._host()
        return node_admin_pb2.HandOffResponse(
            moved=result.moved,
            left=list(result.left),
            left_reasons=list(result.left.values()),
            draining=True,
            refused_transfers=host.refused_transfers if host is not None else 0,
        )

    def members(self) -> dict[int, GroupMember]:
        """Every group member open here: the partitions' and the controller's."""
        host = self._host()
        members: dict[int, GroupMember] = dict(host.replicas) if host is not None else {}
        controller = self._controller()
        if controller is not None:
            members[CONTROLLER_GROUP] = controller
        return members

    async def Compact(
        self, request: node_admin_pb2.CompactRequest, context: grpc.aio.ServicerContext
    ) -> node_admin_pb2.CompactResponse:
        remaining = context.time_remaining()
        wait_s = min(request.wait_seconds, MAX_COMPACT_WAIT_S) if request.wait else 0.0
        if remaining is not None:
            wait_s = min(wait_s, remaining - 0.1)
        return await self.compact(list(dict.fromkeys(request.groups)), wait_s)

    async def compact(self, groups: list[int], wait_s: float = 0.0) -> node_admin_pb2.CompactResponse:
        """Start a pass on each of ``groups`` this node leads (concurrently),
        then, for ``wait_s`` at most, wait until each started pass is applied
        here. What ``Compact`` answers; the answering node of
        ``CompactTopic`` calls it in-process for its own leaders."""
        answers = await asyncio.gather(*(self._compact_one(group) for group in groups))
        response = node_admin_pb2.CompactResponse(groups=answers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_s)
        started = [a for a in response.groups if not a.error and not a.nothing_to_compact]
        while True:
            self._refresh(started)
            pending = [a for a in started if a.cleaned_offset < a.target_offset]
            if not pending or loop.time() >= deadline:
                return response
            # Polled: the replica's owner task signals no event for its
            # cleaned offset, and reading its status costs microseconds.
            await asyncio.sleep(COMPACT_POLL_S)

    async def _compact_one(self, group: int) -> node_admin_pb2.GroupCompaction:
        host = self._host()
        replica = host.replica(group) if host is not None else None
        if replica is None:
            return node_admin_pb2.GroupCompaction(group=group, error="NO_REPLICA")
        try:
            target = await replica.compact_now()
        except NotLeaderError as error:
            return node_admin_pb2.GroupCompaction(group=group, error=error.reason, leader=error.leader)
        except ReplicaError as error:
            return node_admin_pb2.GroupCompaction(group=group, error=error.reason, leader=replica.leader)
        if target < 0:
            # Nothing old enough to compact (an empty log, or every record
            # younger than min_compaction_lag_ms): a success with nothing
            # to wait for, not a negative offset in an unsigned field.
            return node_admin_pb2.GroupCompaction(group=group, leader=self._node_id, nothing_to_compact=True)
        return node_admin_pb2.GroupCompaction(group=group, leader=self._node_id, target_offset=target)

    def _refresh(self, answers: list[node_admin_pb2.GroupCompaction]) -> None:
        host = self._host()
        for answer in answers:
            replica = host.replica(answer.group) if host is not None else None
            if replica is not None:
                status = replica.status()
                answer.cleaned_offset = status.cleaned_offset
                answer.compacted_bytes = status.compacted_bytes
