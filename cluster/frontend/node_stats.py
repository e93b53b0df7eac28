"""``AdminService.GetNodeStats``: what each node is doing, for operators.

NodeAdmin (cluster/internal/node_admin.py) is internal: only callers with a
node proof reach it. An operator reaches the same summary through the
public API instead: the front door has already admitted the operator key
(``front_door.OPERATOR_METHODS``), and the answering node asks every node's
NodeAdmin on the operator's behalf with its own proof (it holds the cluster
secret), then passes on the summary only, never the per-replica list.

Invariants:

- One silent node never fails or stalls the call: every node of the page
  is asked at once, each ask with its own timeout (``ASK_TIMEOUT_S``, less
  when the caller's deadline is nearer), and a node that fails or does not
  answer in time is listed with ``reachable = false`` and the status it
  failed with. The call takes about as long as its slowest ask, so at most
  about ``ASK_TIMEOUT_S``.
- The answering node reads its own figures in-process (``local``), never
  over the network: it is always reachable.
- Every ask carries a fresh proof (a receiver accepts each proof once).
- A page lists at most ``MAX_PAGE_NODES`` nodes whatever ``page_size``
  asks for, so the asks one call causes are bounded however large the
  cluster is; pages are the registered nodes (or those named) in id order,
  and a token only continues the listing of the same named nodes.
- A node that answers as another node id (its address now belongs to
  another process) is listed as unreachable: its figures are not this
  node's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import grpc

from cluster.controller import ControllerState, Node
from cluster.frontend.forwarding import ChannelCache
from cluster.frontend.grpc_errors import ServiceError
from cluster.primitives.pagination import DEFAULT_PAGE_SIZE, Listing, int_key, paginate
from cluster.tls.dial import PLAIN, Dialer
from raftlog.internal.node_proof import NODE_ADMIN_STATS
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc
from raftlog.v1 import admin_pb2
from raftlog.v1.reasons import Reason

__all__ = ["ASK_TIMEOUT_S", "MAX_PAGE_NODES", "NodeStatsGatherer", "public_stats"]

ASK_TIMEOUT_S: Final = 2.0
"""How long one node may take to answer: NodeAdmin answers from memory in
well under a millisecond, so a node that takes seconds is paused, swapping
or cut off, and the operator learns that sooner this way."""
MIN_ASK_TIMEOUT_S: Final = 0.05
DEADLINE_MARGIN_S: Final = 0.1
"""Left of the caller's deadline for building the answer after the asks."""
MAX_PAGE_NODES: Final = DEFAULT_PAGE_SIZE
"""Nodes asked per call at most (they are asked concurrently)."""

Prove = Callable[[str], tuple[tuple[str, str], ...]]
"""Call metadata with this node's proof for an internal method."""

_SUMMARY = node_admin_pb2.StatsRequest(summary_only=True)


def public_stats(node_id: int, address: str, stats: node_admin_pb2.NodeStats) -> admin_pb2.NodeStats:
    """A reachable node's NodeAdmin summary as the public API shows it."""
    share = stats.cpu_seconds / stats.uptime_seconds if stats.uptime_seconds > 0 else 0.0
    return admin_pb2.NodeStats(
        node_id=node_id,
        address=address,
        reachable=True,
        replicas=stats.replicas,
        leaders=stats.leaders,
        awake_replicas=stats.awake_replicas,
        cpu_seconds=stats.cpu_seconds,
        uptime_seconds=stats.uptime_seconds,
        cpu_share=share,
        rss_bytes=stats.rss_bytes,
        election_timeouts=stats.election_timeouts,
        dropped_peer_messages=stats.dropped_peer_messages,
    )


def _unreachable(node_id: int, address: str, reason: str) -> admin_pb2.NodeStats:
    return admin_pb2.NodeStats(node_id=node_id, address=address, reachable=False, unreachable_reason=reason)


def nodes_page(state: ControllerState, request: admin_pb2.GetNodeStatsRequest) -> tuple[list[Node], str]:
    """The registered nodes ``request`` names (all when none), one page of
    them in id order, and the next page's token ("" on the last page).
    ``NOT_FOUND UNKNOWN_NODE`` when it names a node that is not registered."""
    registered = state.nodes()
    wanted = set(request.node_ids)
    if wanted:
        unknown = sorted(wanted - {n.node_id for n in registered})
        if unknown:
            shown = ", ".join(str(n) for n in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND,
                Reason.UNKNOWN_NODE,
                f"no registered node has id {shown}; list nodes to see which are",
                metadata={"node_id": str(unknown[0])},
            )
    rows = [(int_key(n.node_id), n) for n in registered if not wanted or n.node_id in wanted]
    # The named nodes are the listing's scope: a token from another
    # selection is refused rather than quietly starting somewhere else.
    listing = Listing("node stats", tuple(str(n) for n in sorted(wanted)))
    size = min(request.page_size or MAX_PAGE_NODES, MAX_PAGE_NODES)
    page = paginate(listing, rows, size, request.page_token)
    return list(page.items), page.next_page_token


class NodeStatsGatherer:
    """Asks nodes' NodeAdmin for their summaries (module invariants)."""

    def __init__(
        self,
        node_id: int,
        local: Callable[[], node_admin_pb2.NodeStats],
        prove: Prove,
        dial: Mapping[int, str] | None = None,
        ask_timeout_s: float = ASK_TIMEOUT_S,
        dialer: Dialer = PLAIN,
    ) -> None:
        """``local``: this node's own summary; ``prove``: this node's proof
        for a method; ``dial``: nodes reached at another address than the
        registered one (the reconciler's ``--dial`` overrides); ``dialer``:
        how channels to them are opened (cluster/tls/dial.py)."""
        self._node_id = node_id
        self._local = local
        self._prove = prove
        self._dial = dict(dial or {})
        self._ask_timeout_s = ask_timeout_s
        self._channels = ChannelCache(dialer=dialer)

    async def gather(
        self, nodes: Sequence[tuple[int, str]], time_remaining_s: float | None = None
    ) -> list[admin_pb2.NodeStats]:
        """``(node id, registered address)`` -> each node's stats, in the
        order given. ``time_remaining_s``: the caller's deadline, if any."""
        timeout = self._ask_timeout_s
        if time_remaining_s is not None:
            timeout = max(MIN_ASK_TIMEOUT_S, min(timeout, time_remaining_s - DEADLINE_MARGIN_S))
        return list(await asyncio.gather(*(self._ask(node, address, timeout) for node, address in nodes)))

    async def _ask(self, node_id: int, address: str, timeout: float) -> admin_pb2.NodeStats:
        if node_id == self._node_id:
            return public_stats(node_id, address, self._local())
        target = self._dial.get(node_id) or address
        if not target:
            return _unreachable(node_id, address, "NO_ADDRESS")
        stub = node_admin_pb2_grpc.NodeAdminStub(self._channels.channel(target))
        try:
            stats: node_admin_pb2.NodeStats = await stub.Stats(
                _SUMMARY, timeout=timeout, metadata=self._prove(NODE_ADMIN_STATS)
            )
        except grpc.aio.AioRpcError as error:
            return _unreachable(node_id, address, error.code().name)
        if stats.node_id != node_id:
            return _unreachable(node_id, address, f"ANSWERED_AS_NODE_{stats.node_id}")
        return public_stats(node_id, address, stats)

    async def close(self) -> None:
        await self._channels.close()
