"""The cluster file: the nodes of a cluster, its timing, and the topics it
starts with, in one TOML file every node is started from (``--node-id``)::

    cluster_id = "local"
    cluster_secret_file = "cluster.secret"  # the secret every node is given
                                    # (relative to this file; see below)
    controller_nodes = [1, 2, 3]    # optional: metadata controller voters
                                    # (default: the first three nodes)
    min_free_bytes = 268435456      # optional: free disk each node keeps in
                                    # reserve; below it writes are refused
                                    # with DISK_FULL (partitions/disk_space.py)
    metrics_port = 9090             # optional: the Prometheus /metrics port of
                                    # every node without one of its own
                                    # (0 or absent: no /metrics)

    [[nodes]]
    id = 1
    address = "127.0.0.1:7001"      # gRPC: clients and peers
    data_dir = "data/node1"
    zone = "a"                      # optional rack/zone label
    metrics_port = 9101             # optional: this node's /metrics port

    [[topics]]                      # optional: created at bootstrap in the
    name = "events"                 # "default" tenant
    partitions = 16
    replicas = [1, 2, 3]            # every partition on these nodes

    [raft]                          # optional; defaults suit a laptop
    tick_ms = 50
    election_ticks = 6
    heartbeat_ticks = 2

    [retention]                     # optional; per topic: [topics.retention]
    ms = 604800000
    bytes = -1

    [tls]                           # optional: TLS for clients, mTLS between
    ca_file = "certs/ca.pem"        # nodes (format: cluster/tls/settings.py)
    cert_file = "certs/node{id}.pem"
    key_file = "certs/node{id}.key"

    [quotas]                        # optional: every tenant's default limits
    produce_mb_s = 10.0             # produce bytes/s (1 MB = 1,000,000 bytes)
    fetch_mb_s = 50.0               # fetch bytes/s
    requests_s = 1000               # calls/s
    storage_gb = 100.0              # stored bytes (1 GB = 10^9 bytes)
    partitions = 1000               # counts: partitions, topics, consumer
    topics = 100                    # groups, open streams
    groups = 100
    streams = 50

``[quotas]`` is where the cluster's default quotas are set (any key left
out: no limit, except ``partitions``: 1,000): the controller leader writes
them to the metadata log whenever the applied defaults differ from its
file's (cluster/controller/quotas.py, cluster/controller_duties.py), so a
changed file takes effect when a node with it leads the controller; give
every node the same file. An operator overrides them per tenant
(``raftlog tenant quota set``). Rates and sizes may be fractions; counts
are whole numbers; every value >= 0 (0 allows nothing).

The file is where a cluster starts, not what it is: the metadata controller
(Raft group 0) registers the nodes and creates the topics listed here when
it first meets them, and from then on its log is the truth (topics made
with the admin API live only there). Raft group ids come from the
controller, never from the file.

``metrics_port`` (cluster/telemetry/node_metrics.py): a node with a
non-zero one serves ``GET http://HOST:PORT/metrics`` (Prometheus text
format) over HTTP, on the host its gRPC address binds; 0 (the default)
serves nothing and costs the calls nothing. A whole number 0..65535; two
nodes on the same host, or a node's own gRPC port, cannot share it.

The cluster secret admits a node to the internal surfaces (Raft transport,
cluster join, NodeAdmin; cluster/internal/node_auth.py): 64 hex characters
(``openssl rand -hex 32``) in an owner-only file that every node is given.
``RAFTLOG_CLUSTER_SECRET_FILE`` (a path) overrides ``cluster_secret_file``;
a node with neither refuses to start (cluster/internal/cluster_secret.py).

Invariants (``validate``): node ids are positive and unique, addresses
unique, every replica and controller node names a known node, topic names
are unique and valid, partitions >= 1, every ``metrics_port`` is 0..65535
and no non-zero one is taken twice on a host, nor is a gRPC port or (with
``[tls]``) an internal mTLS port there.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.controller.quotas import QuotaLimits
from partitions.disk_space import DEFAULT_MIN_FREE_BYTES

if TYPE_CHECKING:
    from cluster.tls.settings import TlsConfig

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


class ConfigError(ValueError):
    """The configuration cannot work; the message names the setting."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    id: int
    address: str
    data_dir: Path
    zone: str = ""
    """Rack or zone label; placement spreads replicas across zones."""
    metrics_port: int = 0
    """The node's Prometheus ``/metrics`` HTTP port; 0: none."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replicas: tuple[int, ...]
    retention_ms: int | None = None
    retention_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class RaftTiming:
    """Raft's clock. A follower that hears nothing from its leader for a
    random 6-11 ticks (300-550 ms) starts an election; the leader sends a
    heartbeat every 2 ticks (100 ms), so an election needs three heartbeats
    in a row to go missing. That keeps a leader kill's failover under a
    second (bench/failover.py: p99 0.66 s against 1.2 s with 10 ticks, same
    run conditions). It does not cause spurious elections under load:
    elections start with a pre-vote, which a follower that heard from the
    leader within its own election timeout refuses, and a leader steps down
    only when a quorum has been silent for an election timeout
    (check-quorum); so a single stalled follower cannot depose a working
    leader, and bench reports the elections seen during its load runs."""

    tick_ms: int = 50
    election_ticks: int = 6
    heartbeat_ticks: int = 2


@dataclass(frozen=True, slots=True)
class StaticCluster:
    cluster_id: str
    nodes: tuple[NodeSpec, ...]
    topics: tuple[TopicSpec, ...]
    raft: RaftTiming = field(default_factory=RaftTiming)
    max_batch_bytes: int = 1 << 20
    retention_check_ms: int = 30_000
    # How often a leader hands leadership back to its partition's preferred
    # replica once that replica is caught up (0: never).
    leader_balance_ms: int = 10_000
    quota_defaults: QuotaLimits = field(default_factory=QuotaLimits)
    """``[quotas]``: the cluster's default quotas (None: no limit from the
    file; the controller lays ``quotas.BUILT_IN_DEFAULTS`` under them)."""
    offsets_partitions: int = 3
    """Partitions of the consumer groups' internal topic (the group
    coordinators); fixed once the cluster exists."""
    node_dead_after_ms: int = 10_000
    """How long the controller leader hears nothing from a node before it
    marks it dead and moves its replicas elsewhere."""
    cluster_secret_file: Path | None = None
    """The file holding the cluster secret (resolved against the cluster
    file's folder); None: only ``RAFTLOG_CLUSTER_SECRET_FILE`` can name it."""
    controller_nodes: tuple[int, ...] = ()
    """The voters of the metadata controller (group 0); empty: the first
    three nodes of the file. Every other node follows it as a learner."""
    tls: TlsConfig | None = None
    """``[tls]`` (cluster/tls/settings.py); None: plaintext, one port."""
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    """Each node's data disk reserve: below it the node refuses new client
    data with ``DISK_FULL`` (partitions/disk_space.py)."""
    metrics_port: int = 0
    """The top-level ``metrics_port``: what nodes without their own got
    (already copied into each ``NodeSpec`` by ``parse_cluster``)."""

    def controller_voters(self) -> tuple[int, ...]:
        return self.controller_nodes or tuple(n.id for n in self.nodes[:3])

    def validate(self) -> None:
        if not self.cluster_id:
            raise ConfigError("cluster_id must not be empty")
        ids = [n.id for n in self.nodes]
        if not ids:
            raise ConfigError("at least one [[nodes]] entry is needed")
        if any(i <= 0 for i in ids) or len(set(ids)) != len(ids):
            raise ConfigError(f"node ids must be positive and unique, got {ids}")
        addresses = [n.address for n in self.nodes]
        if len(set(addresses)) != len(addresses):
            raise ConfigError(f"node addresses must be unique, got {addresses}")
        names = [t.name for t in self.topics]
        if len(set(names)) != len(names):
            raise ConfigError(f"topic names must be unique, got {names}")
        for topic in self.topics:
            if not _TOPIC_NAME.fullmatch(topic.name):
                raise ConfigError(f"topic name {topic.name!r}: use 1-249 letters, digits, '.', '_' or '-'")
            if topic.partitions < 1:
                raise ConfigError(f"topic {topic.name}: partitions must be at least 1")
            unknown = set(topic.replicas) - set(ids)
            if unknown or not topic.replicas or len(set(topic.replicas)) != len(topic.replicas):
                raise ConfigError(
                    f"topic {topic.name}: replicas {list(topic.replicas)} must be distinct known node ids"
                )
        if set(self.controller_nodes) - set(ids):
            raise ConfigError(f"controller_nodes {list(self.controller_nodes)} must name nodes of the file")
        timing = self.raft
        if (
            timing.tick_ms < 1
            or timing.heartbeat_ticks < 1
            or timing.election_ticks <= timing.heartbeat_ticks
        ):
            raise ConfigError("raft: tick_ms >= 1, heartbeat_ticks >= 1, election_ticks > heartbeat_ticks")
        if self.offsets_partitions < 1:
            raise ConfigError("offsets_partitions must be at least 1")
        if self.node_dead_after_ms < 1000:
            raise ConfigError(
                "node_dead_after_ms must be at least 1000 (a node restart must not move its data)"
            )
        if self.max_batch_bytes < 1024:
            raise ConfigError("max_batch_bytes must be at least 1024")
        if self.min_free_bytes < 0:
            raise ConfigError("min_free_bytes must be >= 0 (bytes of free disk a node keeps in reserve)")
        self._validate_metrics_ports()

    def _validate_metrics_ports(self) -> None:
        """Each in 0..65535; a non-zero one is neither another node's on the
        same host nor the port of a gRPC address there, nor (with ``[tls]``)
        a node's internal mTLS port there, its port + ``internal_port_offset``
        (either listener could not bind)."""
        _check_port(self.metrics_port, "metrics_port")
        taken: dict[tuple[str, int], str] = {}
        for node in self.nodes:
            host, _, port = node.address.rpartition(":")
            if port.isdigit():
                taken[(host, int(port))] = f"node {node.id}'s gRPC address"
        if self.tls is not None:
            offset = self.tls.internal_port_offset
            for node in self.nodes:
                host, _, port = node.address.rpartition(":")
                if port.isdigit():
                    taken.setdefault(
                        (host, int(port) + offset),
                        f"node {node.id}'s internal mTLS port (its port + [tls] internal_port_offset {offset})",
                    )
        for node in self.nodes:
            what = f"nodes[id={node.id}].metrics_port"
            _check_port(node.metrics_port, what)
            if node.metrics_port == 0:
                continue
            host = node.address.rpartition(":")[0]
            other = taken.get((host, node.metrics_port))
            if other is not None:
                raise ConfigError(
                    f"{what} = {node.metrics_port} is already {other} on {host}: give each node its own port"
                )
            taken[(host, node.metrics_port)] = f"node {node.id}'s metrics_port"

    def node(self, node_id: int) -> NodeSpec:
        for spec in self.nodes:
            if spec.id == node_id:
                return spec
        raise ConfigError(f"node {node_id} is not in the cluster file (known: {[n.id for n in self.nodes]})")

    def initial_assignment(self, topic: TopicSpec) -> tuple[tuple[int, ...], ...]:
        """The replicas of each partition of a file topic, preferred leader
        first: the list rotated by the partition number, so leaders start
        evenly spread over the nodes."""
        replicas = topic.replicas
        n = len(replicas)
        return tuple(replicas[p % n :] + replicas[: p % n] for p in range(topic.partitions))


def _check_port(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{what} must be a whole number 0..65535 (0: no /metrics), got {value!r}")


def _port(value: Any, what: str) -> int:
    """A port setting as written (no string or float turned into one)."""
    _check_port(value, what)
    return int(value)


def _int_or_none(value: Any, what: str) -> int | None:
    if value is None or value == -1:
        return None
    if not isinstance(value, int) or value < 0:
        raise ConfigError(f"{what} must be a non-negative integer or -1 (no limit), got {value!r}")
    return value


_QUOTA_SCALES = {"produce_mb_s": 1_000_000, "fetch_mb_s": 1_000_000, "storage_gb": 1_000_000_000}
"""Settings given in MB or GB (decimal, as disks and network links count)."""
_QUOTA_KEYS = {
    "produce_mb_s": "produce_bytes_s",
    "fetch_mb_s": "fetch_bytes_s",
    "requests_s": "requests_s",
    "storage_gb": "storage_bytes",
    "partitions": "partitions",
    "topics": "topics",
    "groups": "groups",
    "streams": "streams",
}
"""``[quotas]`` key -> ``QuotaLimits`` field."""
_MAX_QUOTA = 2**63 - 1


def _parse_quotas(section: Any) -> QuotaLimits:
    """The ``[quotas]`` table as limits; ``ConfigError`` naming the setting
    for an unknown key or a value that is not a number >= 0."""
    if section is None:
        return QuotaLimits()
    if not isinstance(section, dict):
        raise ConfigError(f"[quotas] must be a table of limits, got {section!r}")
    limits: dict[str, int] = {}
    for key, value in section.items():
        if key not in _QUOTA_KEYS:
            raise ConfigError(f"quotas.{key}: unknown setting (known: {', '.join(_QUOTA_KEYS)})")
        scale = _QUOTA_SCALES.get(key)
        if scale is None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"quotas.{key} must be a whole number >= 0, got {value!r}")
            amount = value
        else:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"quotas.{key} must be a number >= 0, got {value!r}")
            if value < 0:
                raise ConfigError(f"quotas.{key} must be >= 0, got {value!r}")
            amount = round(value * scale)
        if amount > _MAX_QUOTA:
            raise ConfigError(f"quotas.{key} = {value!r} is too large")
        limits[_QUOTA_KEYS[key]] = amount
    return QuotaLimits(**limits)


def _path_or_none(value: Any, base_dir: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"cluster_secret_file must be a non-empty path, got {value!r}")
    return base_dir / value


def _parse_tls(section: Any, base_dir: Path) -> TlsConfig | None:
    from cluster.tls.settings import parse_tls  # here: it imports ConfigError from this module

    return parse_tls(section, base_dir)


def parse_cluster(doc: dict[str, Any], base_dir: Path) -> StaticCluster:
    """Build and validate a ``StaticCluster`` from a parsed TOML document;
    relative data_dirs are resolved against ``base_dir``."""
    try:
        metrics_port = _port(doc.get("metrics_port", 0), "metrics_port")
        nodes = tuple(
            NodeSpec(
                int(n["id"]),
                str(n["address"]),
                base_dir / str(n.get("data_dir", f"data/node{n['id']}")),
                str(n.get("zone", "")),
                _port(n.get("metrics_port", metrics_port), f"nodes[id={n['id']}].metrics_port"),
            )
            for n in doc.get("nodes", [])
        )
        default_retention = doc.get("retention", {})
        topics = []
        for t in doc.get("topics", []):
            retention = {**default_retention, **t.get("retention", {})}
            topics.append(
                TopicSpec(
                    name=str(t["name"]),
                    partitions=int(t.get("partitions", 1)),
                    replicas=tuple(int(r) for r in t.get("replicas", [n.id for n in nodes])),
                    retention_ms=_int_or_none(retention.get("ms"), f"topic {t['name']}: retention.ms"),
                    retention_bytes=_int_or_none(
                        retention.get("bytes"), f"topic {t['name']}: retention.bytes"
                    ),
                )
            )
        raft = doc.get("raft", {})
        cluster = StaticCluster(
            cluster_id=str(doc.get("cluster_id", "local")),
            nodes=nodes,
            topics=tuple(topics),
            raft=RaftTiming(
                tick_ms=int(raft.get("tick_ms", 50)),
                election_ticks=int(raft.get("election_ticks", 6)),
                heartbeat_ticks=int(raft.get("heartbeat_ticks", 2)),
            ),
            max_batch_bytes=int(doc.get("max_batch_bytes", 1 << 20)),
            retention_check_ms=int(doc.get("retention_check_ms", 30_000)),
            leader_balance_ms=int(doc.get("leader_balance_ms", 10_000)),
            quota_defaults=_parse_quotas(doc.get("quotas")),
            controller_nodes=tuple(int(n) for n in doc.get("controller_nodes", ())),
            node_dead_after_ms=int(doc.get("node_dead_after_ms", 10_000)),
            offsets_partitions=int(doc.get("offsets_partitions", 3)),
            min_free_bytes=int(doc.get("min_free_bytes", DEFAULT_MIN_FREE_BYTES)),
            metrics_port=metrics_port,
            cluster_secret_file=_path_or_none(doc.get("cluster_secret_file"), base_dir),
            tls=_parse_tls(doc.get("tls"), base_dir),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cluster file: {exc!r} (see cluster/static_config.py for the format)") from None
    cluster.validate()
    return cluster


def load_cluster(path: Path) -> StaticCluster:
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_cluster(doc, path.parent)
