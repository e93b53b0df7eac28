"""``PeerLink``: the outbound half of the Raft transport for one peer node.

A link owns one task (``run``) that keeps one gRPC stream open to the peer
(``RaftTransportService.Stream``, see transport.proto) and writes this node's
Raft messages for that peer into it, batched; acks come back on the same
stream. The inbound half (streams the peer opened to us) is in
cluster/transport/inbound_stream.py; cluster/transport/raft_transport.py ties both together.

Two lanes (issue 20): a follower that hears nothing from its leader for an
election timeout (300-550 ms) starts an election, and at 40 MB/s a heartbeat
queued behind tens of megabytes of appends waits seconds. So messages go
into one of two queues:

- the *bulk* lane: ``APPEND`` (with entries or without) and ``SNAPSHOT``;
- the *control* lane: everything else (heartbeats and their responses,
  votes and pre-votes and their responses, append responses, TimeoutNow,
  read-index requests and responses, transfer requests). Small, and what
  keeps leaders leaders.

Why reordering the lanes against each other is safe. Raft's safety never
rests on delivery order (the simulator, raft/sim, reorders every message by
independent latencies, and drops and duplicates them): each message carries
its term and is judged against the receiver's state when it arrives. Within
a lane, and so within a group's appends, order is kept. What remains is
liveness, type by type, for a control message overtaking bulk sent earlier:

- HEARTBEAT: its commit is ``min(match, committed)`` (raft/leader.py
  ``_broadcast_heartbeat``): only what the follower already acknowledged,
  so a heartbeat that overtakes appends never commits past the follower's
  log. A quiesce heartbeat is sent only when every follower matches the
  leader's last index (partitions/hibernation.py), so no entry is behind
  it; a later append wakes the follower anyway.
- APPEND_RESPONSE, HEARTBEAT_RESPONSE (and the disk-low notice riding on
  one), READ_INDEX, TRANSFER_LEADER, PRE_VOTE/VOTE and their responses: a
  node sends bulk for a group only while it leads it, and these are sent by
  a node that does not (or, for a vote, no longer) lead it; bulk it sent
  under an older term arrives later and is refused as stale.
- READ_INDEX_RESPONSE: becomes a ``ReadState`` whose read may be served
  only once the follower applied up to its index (the contract of read
  states), which waits for the appends anyway.
- TIMEOUT_NOW: sent once the target's match is the leader's last index,
  i.e. after the target acknowledged every entry; nothing of the group is
  behind it that the target needs to win.

Empty appends stay in the bulk lane: they carry ``index``/``log_term`` of
entries sent just before them, and one that overtook those entries would be
rejected and push the leader back to probing (a resend of everything in
flight).

Invariants:

- ``enqueue`` never blocks and never raises: a message that does not fit is
  dropped and counted (Raft tolerates loss). Queued bulk bytes never exceed
  ``max_queued_bytes`` (``max_queued_bytes_while_down`` while not
  connected), queued control bytes ``max_control_queued_bytes``;
  written-but-unacked bulk bytes never exceed ``max_inflight_bytes`` plus
  one batch, nor unacked messages (both lanes) ``max_inflight_messages``
  plus one batch (the receiver's work is per message: a window of tiny
  heartbeats bounded by bytes alone could take it seconds to decode).
- The control lane is never held back by the bulk lane: every batch starts
  with every queued control message (up to the batch limits), a full bulk
  in-flight window stops only bulk, and a full bulk queue drops only bulk.
  Behind a control message there is at most the bulk written before it: one
  bulk window plus one batch.
- Bulk, connected (a stream whose first ack arrived): overflow drops the
  NEW message, so the peer still receives everything sent before the first
  drop (a follower can use that prefix; appends after a gap are rejected and
  re-sent by the leader). Bulk not connected, and control always: overflow
  drops the OLDEST (the freshest heartbeats and votes are the ones that
  matter, Raft re-sends the rest), and the bulk queue is trimmed to the
  while-down limits when a stream is lost.
- Within a lane, messages leave in the order they were queued.
- Messages queued during one event-loop iteration leave as one batch: the
  first enqueue wakes the writer, which runs on the next iteration and takes
  everything queued by then (up to ``max_batch_bytes`` and
  ``max_batch_messages``). While a write is in progress, new messages
  accumulate into the next batch.
- Each stream opens with a fresh node proof in its metadata (``credentials``,
  cluster/internal/node_auth.py: the receiver's internal door checks it
  once, when the stream opens) and starts with an empty hello batch; queued
  messages are written only after its ack, so a refused stream (no valid
  proof, wrong cluster, unknown node) consumes nothing from the queue. When nothing was written for
  ``ping_interval`` an empty batch (a ping) goes out, and its ack tells the
  transport the peer is alive.
- A stream ends on any error, on EOF, when its oldest unacked batch is older
  than ``peer_timeout`` (``check_stale``, driven by the transport's monitor)
  or when the peer's address changes. Unacked batches are then forgotten.
  The next stream is opened after a back-off (``TransportConfig``), at once
  after an address change.
- Leader announcements (``announce``, cluster/routing/) are not queued: the
  link holds the latest one only (each is the sender's whole list, so a
  newer one makes an older one worthless) and writes it with the next batch
  once connected, alone if nothing else is queued. Every newly established
  stream carries the latest announcement again: the peer may have restarted
  and forgotten it, and a batch lost with a broken stream may have held it.
- Tasks: the link task, per stream a session task it awaits, and inside that
  a TaskGroup of a writer and an ack reader. ``close()`` cancels the link
  task and waits for all of it, including closing the gRPC channel.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Protocol

import grpc

from cluster.tls.dial import PLAIN, Dialer
from cluster.transport.raft_wire import encode_batch
from cluster.transport.transport_config import PeerCounters, TransportConfig, channel_options
from raftlog.internal.v1 import transport_pb2

log = logging.getLogger(__name__)

STREAM_METHOD = "/raftlog.internal.v1.RaftTransportService/Stream"
METADATA_CLUSTER = "raftlog-cluster-id"
METADATA_FROM = "raftlog-from-node"
METADATA_TO = "raftlog-to-node"

# Bytes a batch may add around one message (tag, length, seq). A message
# bigger than max_message_bytes minus this could never be received.
_BATCH_OVERHEAD = 32

# Status codes that mean "misconfigured", not "unreachable": worth an error.
_REFUSALS = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


class Credentials(Protocol):
    """What proves this node to the peer (``node_auth.NodeCredentials``)."""

    def metadata(self, method: str) -> tuple[tuple[str, str], ...]: ...


class _StreamEnded(Exception):
    """The peer ended the stream without an error status."""


def backoff_delay(attempt: int, config: TransportConfig, rng: random.Random) -> float:
    """Delay before reconnect ``attempt`` (0 = the first retry): uniform in
    [d/2, d] with d = min(max, initial * 2**attempt). Half the delay is
    jitter, so nodes that lost the same peer do not redial in lockstep."""
    ceiling = min(config.reconnect_backoff_max, config.reconnect_backoff_initial * 2 ** min(attempt, 32))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _describe(exc: BaseException) -> str:
    """One line for a session's end; the gRPC status when there is one."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = list(exc.exceptions)
        rpc = [e for e in leaves if isinstance(e, grpc.aio.AioRpcError)]
        return _describe(rpc[0] if rpc else leaves[0])
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


def _refusal(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_refusal(e) for e in exc.exceptions)
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _REFUSALS


class PeerLink:
    """Sends this node's Raft traffic to one peer. Create, ``start()`` on the
    event loop, feed with ``enqueue``, stop with ``await close()``."""

    def __init__(
        self,
        node_id: int,
        peer: int,
        address: str,
        config: TransportConfig,
        counters: PeerCounters,
        heard: Callable[[], None],
        rng: random.Random | None = None,
        lost: Callable[[], None] | None = None,
        credentials: Credentials | None = None,
        dialer: Dialer = PLAIN,
    ) -> None:
        """``credentials``: the proof each stream opens with (None: none,
        for a transport tested without the internal door). ``dialer``: opens
        each stream's channel (cluster/tls/dial.py; a new channel per stream,
        so a reloaded certificate is used from the next stream on)."""
        self.peer = peer
        self.address = address
        self._route = f"{node_id}->{peer}"  # in task names
        self._config = config
        self._counters = counters
        self._heard = heard
        self._lost = lost
        self._rng = rng or random.Random()
        self._metadata = (
            (METADATA_CLUSTER, config.cluster_id),
            (METADATA_FROM, str(node_id)),
            (METADATA_TO, str(peer)),
        )
        self._credentials = credentials
        self._channel_options = channel_options(config)
        self._dialer = dialer
        self._queue: deque[bytes] = deque()  # the bulk lane: serialized GroupMessages
        self._queued_bytes = 0
        self._control: deque[bytes] = deque()  # the control lane (module docstring)
        self._control_bytes = 0
        # (seq, bulk bytes, messages, written at), one per unacked batch
        self._inflight: deque[tuple[int, int, int, float]] = deque()
        self._inflight_bytes = 0  # bulk message bytes only: control never waits for them
        self._inflight_messages = 0
        self._seq = 0
        self._last_write = 0.0
        self._connected = False
        self._ever_connected = False
        self._wakeup = asyncio.Event()
        self._address_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: asyncio.Task[None] | None = None
        self._abort_reason = ""
        self._last_failure = ""
        self._overflowing = False  # dropping new messages since the last batch left
        self._announcement = b""  # the latest leader announcement, until written
        self._last_announcement = b""  # ... and after: re-sent on every new stream

    # --- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """A stream is open and the peer acknowledged its hello."""
        return self._connected

    @property
    def queued_messages(self) -> int:
        return len(self._queue) + len(self._control)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes + self._control_bytes

    @property
    def queued_control_messages(self) -> int:
        return len(self._control)

    @property
    def inflight_bytes(self) -> int:
        """Bulk bytes written and not yet acknowledged."""
        return self._inflight_bytes

    # --- called by the transport (synchronous, never blocks) -----------------------------------

    def enqueue(self, body: bytes, *, control: bool = False) -> None:
        """Queue one serialized ``GroupMessage`` in the bulk lane (the
        control lane with ``control``), or drop it (see module)."""
        config = self._config
        size = len(body)
        queue = self._queue
        if size + _BATCH_OVERHEAD > config.max_message_bytes:
            log.error(
                "node %d: dropping a %d-byte message: above max_message_bytes (%d)",
                self.peer,
                size,
                config.max_message_bytes,
            )
            self._drop(1, size)
            return
        if control:
            self._enqueue_control(body, size)
            return
        if self._connected:
            if (
                self._queued_bytes + size > config.max_queued_bytes
                or len(queue) >= config.max_queued_messages
            ):
                if not self._overflowing:
                    self._overflowing = True
                    log.warning(
                        "node %d is not keeping up: %d messages (%d bytes) queued, %d bytes unacked; "
                        "dropping new messages",
                        self.peer,
                        len(queue),
                        self._queued_bytes,
                        self._inflight_bytes,
                    )
                self._drop(1, size)
                return
            queue.append(body)
            self._queued_bytes += size
            self._wakeup.set()
            return
        if size > config.max_queued_bytes_while_down:
            self._drop(1, size)
            return
        queue.append(body)
        self._queued_bytes += size
        self._trim_while_down()

    def _enqueue_control(self, body: bytes, size: int) -> None:
        config = self._config
        control = self._control
        if size > config.max_control_queued_bytes:
            self._drop(1, size)
            return
        control.append(body)
        self._control_bytes += size
        # The oldest go first: a newer heartbeat or vote supersedes them.
        while (
            self._control_bytes > config.max_control_queued_bytes
            or len(control) > config.max_control_queued_messages
        ):
            oldest = control.popleft()
            self._control_bytes -= len(oldest)
            self._drop(1, len(oldest))
        if self._connected:
            self._wakeup.set()

    def announce(self, leaders: bytes) -> None:
        """Send ``leaders`` (a serialized ``LeaderAnnouncement``) with the
        next batch, replacing any announcement not yet written."""
        self._announcement = self._last_announcement = leaders
        if self._connected:
            self._wakeup.set()

    def set_address(self, address: str) -> None:
        """Dial ``address`` from now on; an open stream to the old one ends."""
        if address == self.address:
            return
        self.address = address
        self._address_changed.set()
        self._abort_session(f"address changed to {address}")

    def check_stale(self, now: float) -> None:
        """End the stream if its oldest unacked batch is older than
        ``peer_timeout`` (the peer, or the connection, stopped answering)."""
        if self._inflight and now - self._inflight[0][3] > self._config.peer_timeout:
            self._abort_session(f"no ack for {self._config.peer_timeout:g}s")

    def _drop(self, messages: int, size: int) -> None:
        self._counters.dropped_messages += messages
        self._counters.dropped_bytes += size

    def _trim_while_down(self) -> None:
        config = self._config
        queue = self._queue
        while queue and (
            self._queued_bytes > config.max_queued_bytes_while_down
            or len(queue) > config.max_queued_messages_while_down
        ):
            oldest = queue.popleft()
            self._queued_bytes -= len(oldest)
            self._drop(1, len(oldest))

    def _abort_session(self, reason: str) -> None:
        session = self._session
        if session is not None and not session.done():
            self._abort_reason = reason
            session.cancel()

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"raft-link-{self._route}")

    async def close(self) -> None:
        """Stop dialing; the open stream (if any) is cancelled and its channel
        closed before this returns. Queued messages are discarded."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait((task,))
        if not task.cancelled() and task.exception() is not None:
            log.error("link to node %d failed", self.peer, exc_info=task.exception())

    # --- the link task -------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            self._address_changed.clear()
            self._abort_reason = ""
            session = asyncio.create_task(self._stream(self.address), name=f"raft-stream-{self._route}")
            self._session = session
            try:
                await asyncio.wait((session,))
            except asyncio.CancelledError:
                session.cancel()
                await asyncio.wait((session,))  # let it close its channel
                if not session.cancelled():
                    session.exception()  # retrieved: the link is closing, the error no longer matters
                raise
            finally:
                self._session = None
            if self._session_ended(session):
                attempt = 0
            if self._address_changed.is_set():
                attempt = 0
                continue
            delay = backoff_delay(attempt, self._config, self._rng)
            attempt += 1
            try:
                async with asyncio.timeout(delay):
                    await self._address_changed.wait()
                attempt = 0
            except TimeoutError:
                pass

    def _session_ended(self, session: asyncio.Task[None]) -> bool:
        """Reset the per-stream state; log why the stream ended. Returns
        whether it had been established."""
        established = self._connected
        self._connected = False
        self._inflight.clear()
        self._inflight_bytes = 0
        self._inflight_messages = 0
        self._trim_while_down()
        self._counters.stream_failures += 1
        exc = None if session.cancelled() else session.exception()
        if exc is None:
            reason = self._abort_reason or "cancelled"
        else:
            reason = _describe(exc)
        where = f"stream to node {self.peer} at {self.address}"
        if established:
            log.warning("%s lost: %s", where, reason)
            if self._lost is not None:
                # A working stream that breaks is the quickest sign of a
                # dead peer (kill -9 resets the connection at once); waiting
                # for peer_timeout would keep hibernated groups asleep that
                # much longer. A false alarm only wakes groups.
                self._lost()
        elif exc is not None and _refusal(exc):
            # Misconfiguration (another cluster, not a member): loud, once.
            if reason != self._last_failure:
                log.error("%s refused: %s", where, reason)
        elif reason != self._last_failure:
            log.info("%s failed: %s", where, reason)
        else:
            log.debug("%s failed again: %s", where, reason)
        self._last_failure = reason
        return established

    async def _stream(self, address: str) -> None:
        """One stream: open it, write and read acks until it fails."""
        channel = self._dialer.dial(address, self._channel_options)
        try:
            open_stream = channel.stream_stream(
                STREAM_METHOD,
                request_serializer=None,  # batches are framed by raft_wire.encode_batch
                response_deserializer=transport_pb2.TransportAck.FromString,
            )
            metadata: tuple[tuple[str, str], ...] = self._metadata
            if self._credentials is not None:
                # Fresh for every stream: a receiver accepts a proof once.
                metadata += self._credentials.metadata(STREAM_METHOD)
            call = open_stream(metadata=metadata)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._write_loop(call), name=f"raft-writer-{self._route}")
                    group.create_task(self._read_acks(call), name=f"raft-acks-{self._route}")
            finally:
                call.cancel()
        finally:
            await channel.close(grace=None)

    async def _write_loop(self, call: grpc.aio.StreamStreamCall) -> None:
        loop = asyncio.get_running_loop()
        self._seq = 0
        await self._write(call, [], loop)  # hello
        while not self._connected:
            self._wakeup.clear()
            await self._wakeup.wait()
        config = self._config
        ping_interval = config.ping_interval
        while True:
            self._wakeup.clear()
            bulk = bool(self._queue) and self._inflight_bytes < config.max_inflight_bytes
            if (
                bulk or self._control or self._announcement
            ) and self._inflight_messages < config.max_inflight_messages:
                bodies, bulk_bytes = self._take_batch(bulk)
                leaders, self._announcement = self._announcement, b""
                await self._write(call, bodies, loop, leaders, bulk_bytes)
                continue
            idle_for = loop.time() - self._last_write
            if idle_for >= ping_interval:
                await self._write(call, [], loop)
                continue
            try:
                async with asyncio.timeout(ping_interval - idle_for):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _take_batch(self, bulk: bool) -> tuple[list[bytes], int]:
        """The next batch: queued control messages first, then (when
        ``bulk``) bulk ones, up to the batch limits (a single larger message
        still goes, alone). Returns the bodies and their bulk bytes."""
        limit = self._config.max_batch_bytes
        most = self._config.max_batch_messages
        bodies: list[bytes] = []
        size = 0
        control = self._control
        while control and (not bodies or size + len(control[0]) <= limit) and len(bodies) < most:
            body = control.popleft()
            bodies.append(body)
            size += len(body)
        self._control_bytes -= size
        if not bulk:
            return bodies, 0
        queue = self._queue
        control_size = size
        while queue and (not bodies or size + len(queue[0]) <= limit) and len(bodies) < most:
            body = queue.popleft()
            bodies.append(body)
            size += len(body)
        bulk_bytes = size - control_size
        self._queued_bytes -= bulk_bytes
        if bulk_bytes:
            self._overflowing = False
        return bodies, bulk_bytes

    async def _write(
        self,
        call: grpc.aio.StreamStreamCall,
        bodies: list[bytes],
        loop: asyncio.AbstractEventLoop,
        leaders: bytes = b"",
        bulk_bytes: int = 0,
    ) -> None:
        self._seq += 1
        data = encode_batch(self._seq, bodies, leaders)
        now = loop.time()
        # Recorded before the write: an ack may be processed before the
        # write's completion is.
        self._inflight.append((self._seq, bulk_bytes, len(bodies), now))
        self._inflight_bytes += bulk_bytes
        self._inflight_messages += len(bodies)
        self._last_write = now
        counters = self._counters
        counters.bytes_sent += len(data)
        if bodies:
            counters.batches_sent += 1
            counters.messages_sent += len(bodies)
        elif not leaders:
            counters.pings_sent += 1
        await call.write(data)

    async def _read_acks(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            ack = await call.read()
            if ack is grpc.aio.EOF:
                raise _StreamEnded("the peer ended the stream")
            self._heard()
            self._acked(ack.seq)

    def _acked(self, seq: int) -> None:
        inflight = self._inflight
        freed_bytes = freed_messages = 0
        while inflight and inflight[0][0] <= seq:
            _, size, messages, _ = inflight.popleft()
            freed_bytes += size
            freed_messages += messages
        self._inflight_bytes -= freed_bytes
        self._inflight_messages -= freed_messages
        if not self._connected:
            self._connected = True
            if self._ever_connected:
                self._counters.reconnects += 1
            self._ever_connected = True
            self._last_failure = ""
            self._announcement = self._last_announcement
            log.info("stream to node %d at %s established", self.peer, self.address)
        self._wakeup.set()
