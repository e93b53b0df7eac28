"""``RaftTransport``: Raft messages between the nodes of a cluster over gRPC.

Every node hosts many Raft groups; the transport carries the messages of all
of them between two nodes in one gRPC stream per direction
(``raftlog.internal.v1.RaftTransportService.Stream``, transport.proto). This
node dials each peer (cluster/transport/peer_link.py: batching, flow control, pings,
reconnects) and serves the streams the peers dial to it
(cluster/transport/inbound_stream.py: admission, acks).

Invariants:

- ``send`` never blocks and never raises for a peer that is down, slow or
  unknown: the message is queued or dropped and counted. It raises only for
  a message that cannot be encoded (``WireError``, a caller bug) or one
  addressed to this node itself (``ValueError``).
- Per peer and lane (peer_link.py: bulk is ``BULK_TYPES``, appends and
  snapshots; control is every other type), messages arrive in the order
  they were sent, except that any of them may be lost (queue limits, a
  stream failing with batches in flight). A control message may overtake
  bulk sent before it, never the other way round.
  A stream that reconnects supersedes the older one on the receiver, so
  batches of an old stream are not delivered after the new stream's.
- ``deliver(from_node, messages)`` is called on the event loop once per
  received batch that holds at least one decodable message, never for a
  ping, never after ``close()`` returned. A message that fails to decode is
  dropped, counted (``decode_errors``) and logged; the rest of its batch is
  delivered and the stream stays open: a peer running a newer version with a
  message type this node does not know must not cut the node off. A batch
  that does not parse at all is dropped the same way. If ``deliver`` raises,
  the error is logged and the stream goes on (the batch is still acked).
- Leader announcements (cluster/routing/) ride the same streams:
  ``announce_leaders`` encodes the list once and hands it to every link,
  which keeps only the latest (peer_link.py); ``on_leaders(from_node,
  pairs)`` is called on the event loop for each received batch that carries
  one, whether or not it also holds messages, under the same rules as
  ``deliver`` (an undecodable announcement is dropped and counted, an
  exception from the callback logged).
- Liveness: every peer starts down. A peer is up from the moment anything
  (a batch, a ping, an ack) arrives from it, and down once nothing arrived
  for ``peer_timeout``; each transition is reported once through
  ``on_peer_state`` (this is what wakes hibernated groups). A peer removed
  by ``set_peers`` while up is reported down.
- ``on_heard(node)`` is called on the event loop when anything arrives from
  ``node``, at most once per ``heard_interval`` seconds per peer (the
  replicas' tick: more would only cost the fan-out), never from a removed
  peer; an exception from it is logged.
- Who may open a stream is decided by the internal door before this code
  runs (a valid node proof, cluster/internal/internal_door.py); outbound
  streams carry this node's proof (``credentials``). Streams are then
  admitted by their metadata (transport.proto): another cluster id, a stream
  meant for another node id, a proof naming another node, or a sender that
  is not a peer is refused with a gRPC status that names neither cluster
  nor node, before any batch is read, and counted.
- Tasks: the monitor task and one task per link, created by ``start()``
  (and ``set_peers``), all cancelled and awaited by ``close()``; inbound
  streams run in the gRPC server's handler tasks, each with one ack-writer
  task it owns; ``close()`` aborts them (UNAVAILABLE) and waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict

import grpc

from cluster.tls.dial import PLAIN, Dialer
from cluster.transport.inbound_stream import InboundStream, Refusal, admit
from cluster.transport.peer_link import Credentials, PeerLink
from cluster.transport.raft_wire import (
    InboundMessage,
    WireError,
    decode_batch,
    encode_group_message,
    encode_leaders,
)
from cluster.transport.transport_config import (
    PeerCounters,
    PeerStats,
    TransportConfig,
    TransportStats,
    channel_options,
    server_options,
)
from raft.types import Message, MessageType
from raftlog.internal.v1 import transport_pb2

__all__ = [
    "InboundMessage",
    "PeerStats",
    "RaftTransport",
    "TransportConfig",
    "TransportStats",
    "WireError",
    "channel_options",
    "server_options",
]

log = logging.getLogger(__name__)

SERVICE_NAME = "raftlog.internal.v1.RaftTransportService"

DeliverFn = Callable[[int, Sequence[InboundMessage]], None]
PeerStateFn = Callable[[int, bool], None]
HeardFn = Callable[[int], None]
LeadersFn = Callable[[int, Sequence[tuple[int, int]]], None]
"""``(from_node, [(group, term), ...])``: ``from_node`` leads those groups."""

BULK_TYPES = frozenset({MessageType.APPEND, MessageType.SNAPSHOT})
"""What goes in a link's bulk lane; everything else is control."""

# How long close() waits for inbound handlers to finish after aborting them.
_INBOUND_CLOSE_WAIT = 2.0


class _Peer:
    """Everything the transport knows about one peer node."""

    __slots__ = ("alive", "counters", "heard_reported", "inbound", "last_heard", "link", "node")

    def __init__(self, node: int, link: PeerLink, counters: PeerCounters) -> None:
        self.node = node
        self.link = link
        self.counters = counters
        self.alive = False
        self.last_heard = 0.0
        self.heard_reported = float("-inf")  # when on_heard last ran for this peer
        self.inbound: InboundStream | None = None


class RaftTransport:
    """This node's end of the Raft transport. Construct, ``add_to_server``
    the node's gRPC server, ``await start()``; ``await close()`` at the end."""

    def __init__(
        self,
        node_id: int,
        peers: Mapping[int, str],
        deliver: DeliverFn,
        *,
        on_peer_state: PeerStateFn | None = None,
        on_leaders: LeadersFn | None = None,
        on_heard: HeardFn | None = None,
        heard_interval: float = 0.05,
        config: TransportConfig = TransportConfig(),  # noqa: B008 - frozen, shared safely
        credentials: Credentials | None = None,
        dialer: Dialer = PLAIN,
    ) -> None:
        """``credentials``: the node proof outbound streams open with (a node
        always has them; None only for a transport tested without a door).
        ``dialer``: how streams to peers are opened (cluster/tls/dial.py).
        ``on_heard``/``heard_interval``: see the module docstring."""
        if node_id <= 0:
            raise ValueError(f"node id must be positive, not {node_id}")
        config.validate()
        self.node_id = node_id
        self.config = config
        self._deliver = deliver
        self._on_peer_state = on_peer_state
        self._on_leaders = on_leaders
        self._on_heard = on_heard
        self._heard_interval = heard_interval
        self._credentials = credentials
        self._dialer = dialer
        self._leaders = b""  # the latest announcement, for peers added later
        self._rng = random.Random()
        self._peers: dict[int, _Peer] = {}
        self._retired = PeerCounters()  # counters of removed peers, for the totals
        self._unknown_drops = 0
        self._rejected_streams = 0
        self._inbound: set[InboundStream] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self._monitor: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self.set_peers(peers)

    # --- sending -------------------------------------------------------------------------------

    def send(self, to_node: int, group: int, message: Message, *, quiesce: bool = False) -> None:
        """Queue ``message`` for ``group`` on ``to_node``; see the module
        docstring for what may happen to it."""
        peer = self._peers.get(to_node)
        if peer is None or self._closed:
            if to_node == self.node_id:
                raise ValueError(f"node {to_node} cannot send a Raft message to itself")
            self._unknown_drops += 1
            log.debug("dropping %s for group %d: node %d is not a peer", message.type.name, group, to_node)
            return
        peer.link.enqueue(
            encode_group_message(group, message, quiesce=quiesce), control=message.type not in BULK_TYPES
        )

    def announce_leaders(self, groups_and_terms: Sequence[tuple[int, int]]) -> None:
        """Tell every peer that this node leads each ``(group, term)``: the
        whole current list (an announcement replaces the previous one still
        waiting in a link). ``WireError`` for a non-positive group or term."""
        if self._closed:
            return
        body = self._leaders = encode_leaders(groups_and_terms)
        for peer in self._peers.values():
            peer.link.announce(body)

    # --- membership and liveness -----------------------------------------------------------------

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """Make ``peers`` (node id -> "host:port") the peer set. New peers are
        dialed, removed ones forgotten (their queues discarded, their inbound
        streams ended), changed addresses redialed. An entry for this node
        itself is ignored."""
        wanted = {node: address for node, address in peers.items() if node != self.node_id}
        for node, address in wanted.items():
            if node <= 0 or not address:
                raise ValueError(f"bad peer entry {node!r}: {address!r}")
        for node in [n for n in self._peers if n not in wanted]:
            peer = self._peers.pop(node)
            self._retired.add(peer.counters)
            if peer.inbound is not None:
                peer.inbound.revoke("the sender is no longer a peer")
            if self._started and not self._closed:
                task = asyncio.create_task(peer.link.close(), name=f"raft-link-close-{self.node_id}->{node}")
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            if peer.alive:
                self._set_alive(peer, False)
        for node, address in wanted.items():
            existing = self._peers.get(node)
            if existing is not None:
                existing.link.set_address(address)
                continue
            counters = PeerCounters()
            link = PeerLink(
                self.node_id,
                node,
                address,
                self.config,
                counters,
                self._ack_heard(node),
                self._rng,
                lost=self._stream_lost(node),
                credentials=self._credentials,
                dialer=self._dialer,
            )
            self._peers[node] = _Peer(node, link, counters)
            if self._leaders:
                link.announce(self._leaders)
            if self._started and not self._closed:
                link.start()

    def _ack_heard(self, node: int) -> Callable[[], None]:
        """What a link calls when an ack arrives from ``node``."""

        def heard() -> None:
            peer = self._peers.get(node)
            if peer is not None:
                self._heard(peer, asyncio.get_running_loop().time())

        return heard

    def _stream_lost(self, node: int) -> Callable[[], None]:
        """What a link calls when its established stream to ``node`` breaks:
        the peer is reported down now (it is up again as soon as anything
        arrives from it)."""

        def lost() -> None:
            peer = self._peers.get(node)
            if peer is not None and peer.alive:
                peer.last_heard = 0.0
                self._set_alive(peer, False)

        return lost

    def _heard(self, peer: _Peer, now: float) -> None:
        peer.last_heard = now
        if not peer.alive:
            self._set_alive(peer, True)
        if self._on_heard is not None and now - peer.heard_reported >= self._heard_interval:
            peer.heard_reported = now
            try:
                self._on_heard(peer.node)
            except Exception:
                log.exception("on_heard(%d) failed", peer.node)

    def _set_alive(self, peer: _Peer, alive: bool) -> None:
        peer.alive = alive
        log.info("node %d: peer node %d is %s", self.node_id, peer.node, "up" if alive else "down")
        if self._on_peer_state is not None:
            try:
                self._on_peer_state(peer.node, alive)
            except Exception:
                log.exception("on_peer_state(%d, %s) failed", peer.node, alive)

    def peer_alive(self, node: int) -> bool:
        """Whether anything arrived from ``node`` within ``peer_timeout``."""
        peer = self._peers.get(node)
        return peer is not None and peer.alive

    async def _watch(self) -> None:
        """The monitor: marks silent peers down, ends stale outbound streams."""
        loop = asyncio.get_running_loop()
        period = min(self.config.ping_interval, self.config.peer_timeout / 4)
        timeout = self.config.peer_timeout
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for peer in list(self._peers.values()):
                peer.link.check_stale(now)
                if peer.alive and now - peer.last_heard > timeout:
                    self._set_alive(peer, False)

    # --- receiving -------------------------------------------------------------------------------

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Serve the transport's RPC on ``server`` (the node's gRPC server;
        see ``server_options`` for the options it should be created with)."""
        handler = grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Stream": grpc.stream_stream_rpc_method_handler(
                    self._serve_stream,
                    request_deserializer=None,  # raw bytes: decode_batch parses and counts them
                    response_serializer=transport_pb2.TransportAck.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))

    async def _serve_stream(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        if self._closed:
            admitted: int | Refusal = Refusal(grpc.StatusCode.UNAVAILABLE, "Raft transport closed", "closed")
        else:
            metadata = dict(context.invocation_metadata() or ())
            admitted = admit(
                metadata,
                node_id=self.node_id,
                cluster_id=self.config.cluster_id,
                is_peer=self._peers.__contains__,
            )
        if isinstance(admitted, Refusal):
            self._rejected_streams += 1
            log.warning("refused a Raft stream from %s: %s", context.peer(), admitted.why or admitted.details)
            await context.abort(admitted.code, admitted.details)
            return
        node = admitted
        peer = self._peers[node]
        stream = InboundStream(node, context, route=f"{self.node_id}<-{node}")
        if peer.inbound is not None:
            peer.inbound.revoke("superseded by a newer stream from the same node")
        peer.inbound = stream
        self._inbound.add(stream)

        def ended() -> None:
            self._inbound.discard(stream)
            if peer.inbound is stream:
                peer.inbound = None

        await stream.serve(requests, lambda data: self._receive(peer, stream.loop.time(), data), ended)

    def _receive(self, peer: _Peer, now: float, data: bytes) -> int | None:
        """Decode and deliver one batch; returns its seq to acknowledge."""
        self._heard(peer, now)
        counters = peer.counters
        counters.bytes_received += len(data)
        try:
            batch = decode_batch(data)
        except WireError as exc:
            # Not acked: the next batch's (cumulative) ack covers its seq.
            counters.decode_errors += 1
            log.warning("node %d: dropped a batch that does not parse: %s", peer.node, exc)
            return None
        if batch.errors:
            counters.decode_errors += len(batch.errors)
            log.warning(
                "node %d: dropped %d undecodable message(s) of batch %d; first: %s",
                peer.node,
                len(batch.errors),
                batch.seq,
                batch.errors[0],
            )
        if batch.messages:
            counters.batches_received += 1
            counters.messages_received += len(batch.messages)
            try:
                self._deliver(peer.node, batch.messages)
            except Exception:
                log.exception("deliver() failed for a batch from node %d", peer.node)
        if batch.leaders is not None and self._on_leaders is not None:
            try:
                self._on_leaders(peer.node, batch.leaders)
            except Exception:
                log.exception("on_leaders() failed for a batch from node %d", peer.node)
        return batch.seq

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start dialing every peer and watching liveness."""
        if self._closed:
            raise RuntimeError("RaftTransport.start() after close()")
        if self._started:
            return
        self._started = True
        for peer in self._peers.values():
            peer.link.start()
        self._monitor = asyncio.create_task(self._watch(), name=f"raft-monitor-{self.node_id}")

    async def close(self) -> None:
        """Stop everything: outbound streams are cancelled and their channels
        closed, inbound streams aborted with UNAVAILABLE, queued messages
        discarded. Idempotent; ``send`` drops afterwards."""
        if self._closed:
            return
        self._closed = True
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.wait((self._monitor,))
        await asyncio.gather(*(peer.link.close() for peer in self._peers.values()))
        if self._retiring:
            await asyncio.wait(set(self._retiring))
        streams = list(self._inbound)
        for stream in streams:
            await stream.abort("Raft transport closing")
        try:
            async with asyncio.timeout(_INBOUND_CLOSE_WAIT):
                for stream in streams:
                    await stream.finished.wait()
        except TimeoutError:
            unfinished = sum(not stream.finished.is_set() for stream in streams)
            log.warning("%d inbound Raft stream(s) did not end within %ss", unfinished, _INBOUND_CLOSE_WAIT)

    # --- statistics ------------------------------------------------------------------------------

    def stats(self) -> TransportStats:
        """Counters now: totals (removed peers included) and per peer."""
        totals = PeerCounters()
        totals.add(self._retired)
        per_peer: dict[int, PeerStats] = {}
        for node, peer in self._peers.items():
            totals.add(peer.counters)
            link = peer.link
            per_peer[node] = PeerStats(
                node=node,
                address=link.address,
                alive=peer.alive,
                connected=link.connected,
                inbound_open=peer.inbound is not None,
                queued_messages=link.queued_messages,
                queued_bytes=link.queued_bytes,
                inflight_bytes=link.inflight_bytes,
                **asdict(peer.counters),
            )
        counts = asdict(totals)
        counts["dropped_messages"] += self._unknown_drops
        return TransportStats(
            **counts,
            rejected_streams=self._rejected_streams,
            queued_messages=sum(p.queued_messages for p in per_peer.values()),
            queued_bytes=sum(p.queued_bytes for p in per_peer.values()),
            inflight_bytes=sum(p.inflight_bytes for p in per_peer.values()),
            peers=per_peer,
        )
