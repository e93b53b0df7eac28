"""``NodeCollector``: the node's internals, read when Prometheus scrapes.

A prometheus_client custom collector: nothing here runs on the produce
path. ``collect`` reads what the node keeps anyway (replica roles and
progress, the group-commit writer's counters and bucket arrays, RocksDB
properties, the transport's counters, the coordinator's committed offsets)
in one pass over the replicas, on the event loop's thread (the metrics
endpoint is served there, cluster/telemetry/node_metrics.py), so it sees
one moment of the node; it never awaits and never does I/O but a few
RocksDB property reads and the disk's (cached) free-space probe.

What each figure means (the names are the contract the chart's alerts and
the README's "Observability" use):

- ``raftlog_raft_replicas`` / ``_leaders`` / ``_hibernating_replicas``:
  group members open here, the metadata controller (group 0) included.
  ``raftlog_raft_leaderless_groups``: those of them that know no leader
  (each node counts its own copies: take ``max`` across nodes per group
  count, or alert on any node's value staying above 0).
- ``raftlog_raft_elections_started_total{reason}``: ``election_timeout``
  (the leader went silent), ``leader_transfer`` (handed leadership),
  ``campaign`` (asked to stand, e.g. start-up of a single-voter group),
  ``no_leader`` (the timer ran out with no leader known: a group's first
  election, or a retry after one that found none).
- ``raftlog_raft_commit_latency_seconds``: a leader's propose -> the Ready
  that said the entry committed, every proposal.
- ``raftlog_raft_follower_lag_entries{peer}`` / ``_bytes{peer}``: summed
  over the groups this node leads, what ``peer`` has not acknowledged:
  entries after its match index, and their ``Entry.size()`` bytes as this
  node recorded them when storing (partitions/log_bytes.py): exact for the
  last ~1,000 entries of each group, older ones counted at the average
  entry size of those.
- ``raftlog_consumer_group_lag_records{tenant,group,topic,partition}``: on
  the node coordinating the group, the partition's high watermark minus
  the committed offset (both "next offset" positions), floored at 0. The
  high watermark is this node's copy's: exact where it leads the partition,
  at most the replication delay behind where it follows; a partition with
  no copy here is left out (knowing its high watermark takes a call to its
  leader, which a scrape must not make).

- ``raftlog_metrics_collect_errors_total{section}``: scrapes in which
  reading one section (``raft``, ``group_commit``, ``rocksdb``, ``disk``,
  ``consumer_groups``, ``transport``) raised; that section's families were
  served without samples. Every section is exposed, 0 until it fails.

Invariants:

- ``describe()`` is empty, so registering the collector never collects.
- Every getter may answer None (the node is starting or stopping): the
  families are still yielded, without the samples that source gives.
- One failing source never fails the scrape: each section is read whole
  into a list under its own guard (so nothing of a half-read section is
  yielded), and when it raises, its families are yielded empty instead, the
  error counted, and logged with its traceback at most once a minute per
  section (a scrape every few seconds must not flood the log).
- Counters only grow: they read counters that do (removed replicas'
  elections are kept by the host, partitions/replica_host.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from partitions.latency_buckets import Buckets
from raft.types import NO_NODE

if TYPE_CHECKING:
    from cluster.controller_replica import ControllerReplica
    from cluster.groups.service import GroupService
    from cluster.transport.raft_transport import RaftTransport
    from partitions.replica_host import ReplicaHost

__all__ = ["ELECTION_REASONS", "ERROR_LOG_INTERVAL_S", "SECTIONS", "NodeCollector", "histogram_family"]

log = logging.getLogger(__name__)

ELECTION_REASONS = ("election_timeout", "leader_transfer", "campaign", "no_leader")
"""Every reason is exposed (0 until it happens), so a rate() sees its start."""

SECTIONS = ("raft", "group_commit", "rocksdb", "disk", "consumer_groups", "transport")
"""The parts of a scrape read (and failing) independently, in page order."""

ERROR_LOG_INTERVAL_S = 60.0
"""A section's failure is logged at most once per this many seconds."""


def histogram_family(name: str, documentation: str, buckets: Buckets) -> HistogramMetricFamily:
    """A Prometheus histogram (cumulative buckets, _sum, _count) of ``buckets``."""
    snapshot = buckets.snapshot()
    return HistogramMetricFamily(name, documentation, buckets=snapshot.cumulative(), sum_value=snapshot.total)


class NodeCollector(Collector):
    """Reads the node through the getters (None: not built yet) when scraped."""

    def __init__(
        self,
        node_id: int,
        host: Callable[[], ReplicaHost | None],
        transport: Callable[[], RaftTransport | None],
        controller: Callable[[], ControllerReplica | None],
        groups: Callable[[], GroupService | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self._host = host
        self._transport = transport
        self._controller = controller
        self._groups = groups
        self._clock = clock
        self.errors = dict.fromkeys(SECTIONS, 0)
        """Scrapes in which each section raised (the errors counter)."""
        self._logged_at: dict[str, float] = {}
        self._unlogged = dict.fromkeys(SECTIONS, 0)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        host = self._host
        readers: dict[str, tuple[Callable[[], Iterable[Metric]], Callable[[], Iterable[Metric]]]] = {
            # section: (read it, its families without samples)
            "raft": (lambda: self._raft(host()), lambda: self._raft(None)),
            "group_commit": (lambda: self._group_commit(host()), lambda: self._group_commit(None)),
            "rocksdb": (lambda: self._rocksdb(host()), lambda: self._rocksdb(None)),
            "disk": (lambda: self._disk(host()), lambda: self._disk(None)),
            "consumer_groups": (lambda: self._consumer_lag(host()), lambda: self._consumer_lag(None)),
            "transport": (
                lambda: self._transport_figures(self._transport()),
                lambda: self._transport_figures(None),
            ),
        }
        for section in SECTIONS:
            read, empty = readers[section]
            try:
                families = list(read())  # whole, or nothing of it
            except Exception:  # any source: the rest of the page still goes out
                self._failed(section)
                families = list(empty())
            yield from families
        errors = CounterMetricFamily(
            "raftlog_metrics_collect_errors",
            "Scrapes in which reading a section of the node's figures failed (served without its samples).",
            labels=["section"],
        )
        for section in SECTIONS:
            errors.add_metric([section], self.errors[section])
        yield errors

    def _failed(self, section: str) -> None:
        """Count the failure; log it with its traceback unless this section
        was logged less than ``ERROR_LOG_INTERVAL_S`` ago (called in an
        ``except`` block)."""
        self.errors[section] += 1
        now = self._clock()
        last = self._logged_at.get(section)
        if last is not None and now - last < ERROR_LOG_INTERVAL_S:
            self._unlogged[section] += 1
            return
        suppressed, self._unlogged[section] = self._unlogged[section], 0
        self._logged_at[section] = now
        log.exception(
            "node %d: reading the %s metrics failed; served without them (%d more failures not logged since)",
            self.node_id,
            section,
            suppressed,
        )

    # --- Raft ---------------------------------------------------------------------------

    def _raft(self, host: ReplicaHost | None) -> Iterator[Metric]:
        replicas = GaugeMetricFamily("raftlog_raft_replicas", "Raft group members open on this node.")
        leaders = GaugeMetricFamily("raftlog_raft_leaders", "Raft groups this node leads.")
        hibernating = GaugeMetricFamily(
            "raftlog_raft_hibernating_replicas", "Raft group members here that hibernate (idle, not ticking)."
        )
        leaderless = GaugeMetricFamily(
            "raftlog_raft_leaderless_groups", "Raft groups with a member here that knows no leader."
        )
        elections = CounterMetricFamily(
            "raftlog_raft_elections_started",
            "Elections started by the group members here, by reason.",
            labels=["reason"],
        )
        snapshots = CounterMetricFamily(
            "raftlog_raft_snapshots_sent", "Snapshots sent to followers by the leaders here."
        )
        lag_entries = GaugeMetricFamily(
            "raftlog_raft_follower_lag_entries",
            "Log entries a peer has not acknowledged, summed over the groups this node leads.",
            labels=["peer"],
        )
        lag_bytes = GaugeMetricFamily(
            "raftlog_raft_follower_lag_bytes",
            "Bytes of the log entries a peer has not acknowledged, summed over the groups this node leads.",
            labels=["peer"],
        )
        if host is not None:
            members = host.members()
            led = asleep = without_leader = 0
            by_peer: dict[int, list[int]] = {}
            for member in members:  # one pass, however many replicas
                if member.hibernating:
                    asleep += 1
                if member.is_leader:
                    led += 1
                    for peer, entries, size in member.follower_lag():
                        sums = by_peer.setdefault(peer, [0, 0])
                        sums[0] += entries
                        sums[1] += size
                elif member.leader == NO_NODE:
                    without_leader += 1
            replicas.add_metric([], len(members))
            leaders.add_metric([], led)
            hibernating.add_metric([], asleep)
            leaderless.add_metric([], without_leader)
            started = host.elections_started()
            for reason in (*ELECTION_REASONS, *sorted(set(started) - set(ELECTION_REASONS))):
                elections.add_metric([reason], started.get(reason, 0))
            snapshots.add_metric([], host.counters.snapshots_sent)
            for peer, (entries, size) in sorted(by_peer.items()):
                lag_entries.add_metric([str(peer)], entries)
                lag_bytes.add_metric([str(peer)], size)
            latency = histogram_family(
                "raftlog_raft_commit_latency_seconds",
                "Seconds from a leader's proposal to its commit.",
                host.counters.commit_latency,
            )
        else:
            latency = HistogramMetricFamily(
                "raftlog_raft_commit_latency_seconds", "Seconds from a leader's proposal to its commit."
            )
        yield from (replicas, leaders, hibernating, leaderless, elections, latency, lag_entries, lag_bytes)
        yield snapshots

    # --- group commit -------------------------------------------------------------------

    def _group_commit(self, host: ReplicaHost | None) -> Iterator[Metric]:
        syncs = CounterMetricFamily(
            "raftlog_group_commit_syncs", "Synced batches the group-commit writer wrote."
        )
        names = (
            ("raftlog_group_commit_sync_seconds", "Seconds to write and sync one group-commit batch."),
            ("raftlog_group_commit_batch_writes", "Write sets (replicas' writes) per synced batch."),
            ("raftlog_group_commit_batch_bytes", "Bytes per synced batch."),
        )
        writer = host.writer if host is not None and host.started else None
        if writer is None:
            yield syncs
            for name, documentation in names:
                yield HistogramMetricFamily(name, documentation)
            return
        syncs.add_metric([], writer.stats().syncs)
        yield syncs
        arrays = (writer.sync_seconds, writer.batch_writes, writer.batch_bytes)
        for (name, documentation), buckets in zip(names, arrays, strict=True):
            yield histogram_family(name, documentation, buckets)

    # --- storage ------------------------------------------------------------------------

    def _rocksdb(self, host: ReplicaHost | None) -> Iterator[Metric]:
        live = GaugeMetricFamily("raftlog_rocksdb_live_data_bytes", "Bytes of live data in RocksDB's files.")
        pending = GaugeMetricFamily(
            "raftlog_rocksdb_pending_compaction_bytes", "Bytes RocksDB estimates compaction has to rewrite."
        )
        stalled = GaugeMetricFamily(
            "raftlog_rocksdb_write_stalled", "1 while RocksDB stops or slows writes, else 0."
        )
        stall_seconds = CounterMetricFamily(
            "raftlog_rocksdb_stall_seconds", "Seconds RocksDB held writes back since the node started."
        )
        stats = host.store_stats() if host is not None else None
        if stats is not None:
            live.add_metric([], stats.live_data_bytes)
            pending.add_metric([], stats.pending_compaction_bytes)
            stalled.add_metric([], 1 if stats.write_stalled else 0)
            if stats.stall_seconds is not None:
                stall_seconds.add_metric([], stats.stall_seconds)
        yield from (live, pending, stalled, stall_seconds)

    def _disk(self, host: ReplicaHost | None) -> Iterator[Metric]:
        free = GaugeMetricFamily("raftlog_disk_free_bytes", "Free bytes on the data directory's filesystem.")
        if host is not None:
            free.add_metric([], host.disk.free_bytes())
        yield free

    # --- consumer groups ----------------------------------------------------------------

    def _consumer_lag(self, host: ReplicaHost | None) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "raftlog_consumer_group_lag_records",
            "Records between a partition's high watermark and the group's committed offset "
            "(on the group's coordinator; partitions with a copy on it).",
            labels=["tenant", "group", "topic", "partition"],
        )
        groups = self._groups() if host is not None else None
        controller = self._controller() if host is not None else None
        if host is not None and groups is not None and controller is not None:
            state = controller.state
            for tenant, group, tp, committed in groups.committed_offsets():
                assignment = state.partition(tenant, tp.topic, tp.partition)
                replica = host.replica(assignment.group) if assignment is not None else None
                if replica is None:
                    continue  # no copy here: its high watermark is the leader's to tell
                lag.add_metric(
                    [tenant, group, tp.topic, str(tp.partition)], max(0, replica.high_watermark - committed)
                )
        yield lag

    # --- transport ----------------------------------------------------------------------

    def _transport_figures(self, transport: RaftTransport | None) -> Iterator[Metric]:
        sent = CounterMetricFamily(
            "raftlog_transport_sent_bytes", "Bytes of Raft messages this node sent to its peers."
        )
        dropped = CounterMetricFamily(
            "raftlog_transport_dropped_messages",
            "Raft messages this node dropped instead of sending (queue full, unknown or unreachable peer).",
        )
        if transport is not None:
            stats = transport.stats()
            sent.add_metric([], stats.bytes_sent)
            dropped.add_metric([], stats.dropped_messages)
        yield from (sent, dropped)
