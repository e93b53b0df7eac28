"""The receiving end of one Raft transport stream, and who may open one.

Who may open one at all is the internal door's decision
(cluster/internal/internal_door.py: a valid node proof, checked before this
code runs). ``admit`` then decides from the stream's metadata
(transport.proto) whether it is for this node and from a peer, before a
single batch is read. ``InboundStream`` serves
an accepted stream inside the gRPC server's handler: it reads batches, hands
each to the transport, and acknowledges them from an ack-writer task it
owns.

Invariants:

- Acks are cumulative and coalesce: ``TransportAck.seq = n`` acknowledges
  every batch up to ``n``; while one ack is being written, later batches are
  covered by the next one. An ack is written only after the transport took
  the batch (delivered it, or dropped what did not decode).
- Acks are throttled: the first batch (the dialer's hello) is acknowledged
  at once; later ones once ``ACK_EVERY_BYTES`` or ``ACK_EVERY_BATCHES`` are
  unacknowledged, or ``ACK_DELAY`` after the oldest unacknowledged one. An
  ack is a stream write as costly as a batch: one per batch took 7% of a
  node's CPU under load (py-spy, 16 partitions). The sender's in-flight
  bulk window (2 MiB: two ``ACK_EVERY_BYTES``) and stale-stream timeout
  (1.5 s) leave room for both.
- A refusal says nothing about this node or its cluster: no cluster id, no
  node id, no address (the receiving node logs the details).
- A stream whose proof names a node (``raftlog-node-proof``) must come from
  that node: a node speaks only as itself.
- A revoked stream (superseded by a newer stream from the same node, its
  node removed from the peers, the transport closing) hands over no further
  batch and ends with UNAVAILABLE and the reason.
- ``finished`` is set once the ack writer is done; nothing of the stream's
  own remains then. When the dialer cancels the call, gRPC cancels the
  handler a second time while it unwinds, so the transport's bookkeeping
  (``on_end``) runs first and without awaiting anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import grpc

from cluster.transport.peer_link import METADATA_CLUSTER, METADATA_FROM, METADATA_TO
from raftlog.internal.node_proof import PROOF_METADATA_KEY, parse_proof
from raftlog.internal.v1 import transport_pb2

log = logging.getLogger(__name__)

ACK_EVERY_BYTES = 1 << 20
ACK_EVERY_BATCHES = 64
ACK_DELAY = 0.02


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a stream is not accepted: the status it is ended with."""

    code: grpc.StatusCode
    details: str
    """What the caller is told: nothing about this node or its cluster."""
    why: str = ""
    """What this node logs."""


def _node_id(text: str | bytes | None) -> int | None:
    if isinstance(text, str) and text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    return None


def admit(
    metadata: Mapping[str, str | bytes], *, node_id: int, cluster_id: str, is_peer: Callable[[int], bool]
) -> int | Refusal:
    """The sending node's id if a stream with ``metadata`` may deliver to
    node ``node_id`` of cluster ``cluster_id``, else the ``Refusal``."""
    cluster = metadata.get(METADATA_CLUSTER)
    from_text, to_text = metadata.get(METADATA_FROM), metadata.get(METADATA_TO)
    if cluster is None or from_text is None or to_text is None:
        return Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"a Raft stream needs metadata {METADATA_CLUSTER}, {METADATA_FROM} and {METADATA_TO}",
            "metadata missing",
        )
    sender, receiver = _node_id(from_text), _node_id(to_text)
    if sender is None or receiver is None:
        return Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            "node ids must be positive integers",
            f"bad node ids {METADATA_FROM}={from_text!r} {METADATA_TO}={to_text!r}",
        )
    if cluster != cluster_id:
        return Refusal(
            grpc.StatusCode.FAILED_PRECONDITION,
            "not a stream for this cluster",
            f"the stream is for cluster {cluster!r}, this node belongs to {cluster_id!r}",
        )
    if receiver != node_id:
        return Refusal(
            grpc.StatusCode.FAILED_PRECONDITION,
            "not a stream for this node",
            f"the stream is for node {receiver}, this is node {node_id}",
        )
    proof = parse_proof(metadata.get(PROOF_METADATA_KEY))
    if proof is not None and proof.node_id != sender:
        return Refusal(
            grpc.StatusCode.PERMISSION_DENIED,
            "the stream's proof names another node",
            f"node {proof.node_id}'s proof on a stream from node {sender}",
        )
    if not is_peer(sender):
        return Refusal(
            grpc.StatusCode.PERMISSION_DENIED, "not a peer of this node", f"node {sender} is not a peer"
        )
    return sender


class InboundStream:
    """One accepted stream from peer ``node``; ``serve`` runs it."""

    __slots__ = (
        "_ack_due",
        "_ack_wakeup",
        "_acked_seq",
        "_context",
        "_route",
        "_unacked_batches",
        "_unacked_bytes",
        "finished",
        "loop",
        "node",
        "revoked",
    )

    def __init__(self, node: int, context: grpc.aio.ServicerContext, route: str) -> None:
        self.node = node
        self.loop = asyncio.get_running_loop()
        self.revoked = ""  # why this stream must end, once it must
        self.finished = asyncio.Event()
        self._context = context
        self._route = route  # for task names
        self._acked_seq = 0
        self._ack_wakeup = asyncio.Event()  # an ack is due now
        self._ack_due = asyncio.Event()  # something is unacknowledged
        self._unacked_bytes = 0
        self._unacked_batches = 0

    def revoke(self, why: str) -> None:
        """Hand over no further batch; end the stream (at its next batch)
        with UNAVAILABLE and ``why``."""
        if not self.revoked:
            self.revoked = why

    async def serve(
        self,
        requests: AsyncIterator[bytes],
        take_batch: Callable[[bytes], int | None],
        on_end: Callable[[], None],
    ) -> None:
        """Read batches until the stream ends. ``take_batch(data)`` returns
        the batch's seq once the batch is handled (None: not acknowledged);
        ``on_end()`` runs first thing when reading stops, for any reason."""
        acks = asyncio.create_task(self._write_acks(), name=f"raft-ack-writer-{self._route}")
        acks.add_done_callback(self._ack_writer_done)
        try:
            async for data in requests:
                if self.revoked:
                    break
                seq = take_batch(data)
                if seq is not None and seq > self._acked_seq:
                    first = self._acked_seq == 0
                    self._acked_seq = seq
                    self._unacked_bytes += len(data)
                    self._unacked_batches += 1
                    self._ack_due.set()
                    if (
                        first
                        or self._unacked_bytes >= ACK_EVERY_BYTES
                        or self._unacked_batches >= ACK_EVERY_BATCHES
                    ):
                        self._ack_wakeup.set()
        finally:
            on_end()
            acks.cancel()
            await asyncio.wait((acks,))
        if self.revoked:
            await self._context.abort(grpc.StatusCode.UNAVAILABLE, self.revoked)

    async def abort(self, why: str) -> None:
        """End the stream now, from outside its handler (``close``): the call
        ends with UNAVAILABLE and ``why`` and the handler's pending read
        raises, so ``serve`` unwinds."""
        self.revoke(why)
        try:
            await self._context.abort(grpc.StatusCode.UNAVAILABLE, why)
        except grpc.aio.AbortError:
            pass  # raised in the caller by design
        except Exception as exc:  # the call ended meanwhile
            log.debug("aborting the stream from node %d: %r", self.node, exc)

    async def _write_acks(self) -> None:
        sent = 0
        while True:
            await self._ack_due.wait()
            try:
                async with asyncio.timeout(ACK_DELAY):
                    await self._ack_wakeup.wait()
            except TimeoutError:
                pass
            self._ack_wakeup.clear()
            self._ack_due.clear()
            if self._acked_seq > sent:
                sent = self._acked_seq
                self._unacked_bytes = 0
                self._unacked_batches = 0
                await self._context.write(transport_pb2.TransportAck(seq=sent))

    def _ack_writer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.debug("ack writer for node %d ended: %r", self.node, task.exception())
        self.finished.set()
