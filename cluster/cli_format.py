"""How the ``raftlog`` CLI (cluster/cli.py) prints what the cluster answers:
the ``status`` and ``node list`` tables, a topic's settings and partitions,
a group's state.

Invariants:

- Every function here is pure: an answer (the public API's messages) in,
  text out; nothing is asked of the cluster and nothing is printed.
- A table's header and its rows are written side by side here, with the
  same widths, so their columns line up.
- Nothing is invented: a node that did not answer says why instead of
  showing figures, and a setting the topic does not have is left out.
"""

from __future__ import annotations

from collections.abc import Mapping

from raftlog.v1 import admin_pb2, groups_pb2

__all__ = [
    "NODE_LIST_HEADER",
    "STATUS_HEADER",
    "group_state",
    "node_list_row",
    "node_row",
    "partition_line",
    "status_summary",
    "topic_settings",
]

STATUS_HEADER = (
    f"{'node':>4}  {'address':<21} {'replicas':>8} {'live':>4} "
    f"{'leaders':>7} {'awake':>5} {'cpu_s':>8} {'cpu%':>5} {'rss_mb':>7} {'elections':>9}"
)
"""The header of ``raftlog status``'s node table (rows: ``node_row``)."""

NODE_LIST_HEADER = f"{'node':>4}  {'address':<21} {'zone':<8} {'alive':<5} {'state':<16} {'replicas':>8}"
"""The header of ``raftlog node list`` (rows: ``node_list_row``)."""


def status_summary(status: admin_pb2.GetClusterStatusResponse) -> str:
    """The first line of ``raftlog status``: the controller and the counts."""
    return (
        f"controller leader: node {status.controller_leader or '(none)'}, metadata index "
        f"{status.metadata_index}; {status.live_nodes}/{status.nodes} nodes live, {status.tenants} tenants, "
        f"{status.topics} topics, {status.partitions} partitions"
    )


def node_row(node: admin_pb2.NodeDescription, stats: admin_pb2.NodeStats | None) -> str:
    """One node's line of ``raftlog status``: what the metadata says about
    it, then what it says about itself (or why it said nothing)."""
    row = f"{node.node_id:>4}  {node.address:<21} {node.replicas:>8} {'yes' if node.alive else 'no':>4}"
    if stats is None or not stats.reachable:
        why = stats.unreachable_reason if stats is not None else "not asked"
        return f"{row} unreachable ({why})"
    row += (
        f" {stats.leaders:>7} {stats.awake_replicas:>5} {stats.cpu_seconds:>8.1f} "
        f"{stats.cpu_share * 100:>5.1f} {stats.rss_bytes / 1e6:>7.1f} {stats.election_timeouts:>9}"
    )
    if stats.dropped_peer_messages:
        # Messages no correct peer sends: a buggy, misconfigured or forged peer.
        row += f"  dropped {stats.dropped_peer_messages} peer messages"
    return row


def node_list_row(node: admin_pb2.NodeDescription) -> str:
    """One node's line of ``raftlog node list``."""
    state = "decommissioning" if node.decommissioning else ("controller" if node.controller_eligible else "-")
    return (
        f"{node.node_id:>4}  {node.address:<21} {node.zone or '-':<8} {'yes' if node.alive else 'no':<5} "
        f"{state:<16} {node.replicas:>8}"
    )


def topic_settings(topic: admin_pb2.TopicDescription) -> str:
    """A topic's settings, Kafka-style names, as one line."""
    shown = [f"cleanup.policy {topic.cleanup_policy or 'delete'}"]
    for what, field in (
        ("retention.ms", "retention_ms"),
        ("retention.bytes", "retention_bytes"),
        ("max.compaction.lag.ms", "max_compaction_lag_ms"),
    ):
        if topic.HasField(field):
            shown.append(f"{what} {getattr(topic, field)}")
    if topic.cleanup_policy != "delete":
        shown.append(f"min.compaction.lag.ms {topic.min_compaction_lag_ms}")
        shown.append(f"delete.retention.ms {topic.delete_retention_ms}")
    return ", ".join(shown)


def partition_line(p: admin_pb2.PartitionAssignment, nodes: Mapping[int, str]) -> str:
    """One partition's line of ``raftlog topic describe``; ``nodes``: node
    id -> address, where known (a tenant key cannot list nodes)."""
    leader = f"{p.leader}" + (f" ({nodes[p.leader]})" if p.leader in nodes else "") if p.leader else "unknown"
    learners = f", learners {list(p.learners)}" if p.learners else ""
    compaction = ""
    if p.HasField("cleaned_offset"):
        compaction = f", cleaned up to offset {p.cleaned_offset}, compacted {p.compacted_bytes} bytes"
    return f"  partition {p.partition}: leader {leader}, replicas {list(p.replicas)}{learners}{compaction}"


def group_state(state: int) -> str:
    """``GROUP_STATE_EMPTY`` -> ``empty``."""
    return groups_pb2.GroupState.Name(state).removeprefix("GROUP_STATE_").lower()
