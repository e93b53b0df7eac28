"""``NodeCollector``: the node's figures read at scrape time (PLACEHOLDER).

This stand-in yields no metrics; the telemetry work on the node's state
(replicas, group commit, RocksDB, transport, consumer-group lag) replaces
it with the real collector, same constructor. It exists so the node can
register it now (cluster/node.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from cluster.controller_replica import ControllerReplica
    from cluster.groups.service import GroupService
    from cluster.transport.raft_transport import RaftTransport
    from partitions.replica_host import ReplicaHost

__all__ = ["NodeCollector"]


class NodeCollector(Collector):
    """Reads the node through the getters (None: not built yet) when scraped."""

    def __init__(
        self,
        node_id: int,
        host: Callable[[], ReplicaHost | None],
        transport: Callable[[], RaftTransport | None],
        controller: Callable[[], ControllerReplica | None],
        groups: Callable[[], GroupService | None],
    ) -> None:
        self.node_id = node_id
        self._host = host
        self._transport = transport
        self._controller = controller
        self._groups = groups

    def collect(self) -> Iterator[Metric]:
        yield from ()
