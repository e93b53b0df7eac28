"""``raftlog status`` rows (cluster/cli_format.py ``node_row``): a node's
figures from GetNodeStats, the dropped peer messages only when there are
some, and why a node that did not answer said nothing."""

from __future__ import annotations

from cluster.cli_format import node_row
from raftlog.v1 import admin_pb2

NODE = admin_pb2.NodeDescription(node_id=2, address="127.0.0.1:7002", alive=True, replicas=7)


def _stats(**fields: object) -> admin_pb2.NodeStats:
    figures: dict[str, object] = {
        "node_id": 2,
        "address": "127.0.0.1:7002",
        "reachable": True,
        "replicas": 7,
        "leaders": 3,
        "awake_replicas": 2,
        "cpu_seconds": 12.34,
        "uptime_seconds": 100.0,
        "cpu_share": 0.1234,
        "rss_bytes": 98_700_000,
        "election_timeouts": 4,
    }
    return admin_pb2.NodeStats(**(figures | fields))  # type: ignore[arg-type]


def test_a_reachable_nodes_row() -> None:
    assert node_row(NODE, _stats()).split() == [
        "2",
        "127.0.0.1:7002",
        "7",
        "yes",
        "3",
        "2",
        "12.3",
        "12.3",
        "98.7",
        "4",
    ]


def test_dropped_peer_messages_show_only_when_there_are_some() -> None:
    assert "dropped" not in node_row(NODE, _stats(dropped_peer_messages=0))
    assert node_row(NODE, _stats(dropped_peer_messages=5)).endswith("  dropped 5 peer messages")


def test_a_node_that_did_not_answer_says_why() -> None:
    silent = admin_pb2.NodeStats(node_id=2, reachable=False, unreachable_reason="DEADLINE_EXCEEDED")
    assert node_row(NODE, silent).endswith(" yes unreachable (DEADLINE_EXCEEDED)")
    assert node_row(NODE, None).endswith("unreachable (not asked)")
