"""Settings, statistics and gRPC options of the node-to-node Raft transport.

``TransportConfig`` is what an operator may tune (every default serves a
laptop and a LAN cluster); ``channel_options`` and ``server_options`` turn it
into gRPC channel arguments for the dialing and the receiving side.
``TransportStats`` / ``PeerStats`` are read-only snapshots of the counters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

KiB = 1024
MiB = 1024 * KiB

# Bytes a batch adds around its messages: per message a tag and a length
# varint, per batch the seq field. The gRPC message limits leave room for it.
_FRAMING_SLACK = 1 * KiB


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """How the transport batches, buffers, pings and reconnects.

    Memory bound per peer: ``max_queued_bytes`` (bulk) plus
    ``max_control_queued_bytes`` queued, plus ``max_inflight_bytes`` (and at
    most one more batch) written but not yet acknowledged. Python objects
    per peer: ``max_queued_messages`` plus ``max_control_queued_messages``
    queued. The two lanes (bulk: appends and snapshots; control: the rest)
    are described in cluster/transport/peer_link.py.
    """

    # Travels with every stream; a node refuses streams of another cluster,
    # so two clusters sharing a host (or a stale address) never cross-talk.
    cluster_id: str = "raftlog"
    # An empty batch goes out when nothing else was sent for this long: one
    # tiny batch and ack per peer pair per interval, nothing to notice, and
    # six of them fit in peer_timeout.
    ping_interval: float = 0.25
    # A peer is down when nothing (batch or ack) was heard from it for this
    # long. Groups that tick notice a dead leader by their own election
    # timeout (10 ticks of 50 ms in the static cluster default); this limit
    # is what a HIBERNATED group waits (plus one monitor period, at most
    # ping_interval) before it is woken to elect. Shorter makes hibernated
    # failover faster but lets a stalled event loop or a GC pause make peers
    # flap; 1.5 s is six missed pings. The same limit ends an outbound stream
    # whose oldest unacknowledged batch is older (a half-open connection).
    peer_timeout: float = 1.5
    # A batch stops growing at this size (a single larger message still goes,
    # alone). 1 MiB (one append of Raft's max_size_per_msg, or dozens of
    # smaller ones) amortizes the per-batch cost (a gRPC write, an ack) while
    # keeping what a control message written after it waits for short (see
    # max_inflight_bytes): a batch is part of the bulk ahead of it.
    max_batch_bytes: int = 1 * MiB
    # ... or at this many messages: decoding costs the receiver several
    # microseconds per message (a Message dataclass each), so 1024 tiny
    # heartbeats keep its event loop busy for well under 10 ms.
    max_batch_messages: int = 1024
    # The largest single encoded message (an append with its entries, a
    # snapshot) and the gRPC message limit of both ends (plus framing). A
    # larger message is dropped at send() and counted: it could never cross.
    max_message_bytes: int = 64 * MiB
    # Bulk (appends, snapshots) written but not yet acknowledged, per peer.
    # The receiver acks once a batch is handed to its node, so this also
    # bounds the receiver's backlog, and it is what a heartbeat written now
    # may wait behind (bytes in one stream leave in order): at the ~40 MB/s
    # a node takes in on a 2-core machine, 16 MiB was 400 ms, an election
    # timeout. 2 MiB (plus one 1 MiB batch) is about 50-75 ms at that rate
    # and still two batches in flight: loopback's and a LAN's
    # bandwidth-delay product is far smaller. Measured with
    # tests/cluster/measure_transport.py mixed (a receiver spending 25 ms per
    # MiB): heartbeat p50 ~870 ms with 16 MiB (and the shared queue), ~195 ms
    # with 4 MiB batches and window, ~55 ms with 1 MiB / 2 MiB.
    max_inflight_bytes: int = 2 * MiB
    # The same window counted in messages, for small ones: 8192 heartbeats
    # are a few tens of milliseconds of the receiver's work, so a busy
    # receiver still acks well within peer_timeout.
    max_inflight_messages: int = 8192
    # Queued for a connected peer beyond the in-flight window. Beyond either
    # limit a new message is dropped: what is already queued goes out next,
    # in order, so the peer gets everything up to the first drop (a follower
    # can use that; appends after a gap are rejected and re-sent anyway).
    max_queued_bytes: int = 64 * MiB
    max_queued_messages: int = 65_536
    # The control lane's own queue (heartbeats, votes, acknowledgements: a
    # few dozen bytes each): never shared with bulk, so a full bulk queue
    # never drops one. Beyond either limit the OLDEST is dropped (a newer
    # heartbeat supersedes it). As many messages as the bulk queue: a
    # thousand-group node sends a peer tens of thousands of heartbeats and
    # responses a second, and 16,384 overflowed in
    # tests/cluster/measure_transport.py heartbeats (1,000 groups a burst).
    max_control_queued_bytes: int = 8 * MiB
    max_control_queued_messages: int = 65_536
    # Queued while the peer is not connected (dialing, backing off). Beyond
    # either limit the OLDEST message is dropped: after a reconnect the
    # freshest heartbeats and votes matter, and a leader re-sends what a
    # follower misses anyway. Smaller than the connected limits: a dead peer
    # should not hold 64 MiB of stale appends per peer.
    max_queued_bytes_while_down: int = 8 * MiB
    max_queued_messages_while_down: int = 8_192
    # Reconnect delay after a stream fails: attempt n waits a uniformly
    # random time in [d/2, d] with d = min(max, initial * 2**n), so the first
    # retry comes after 25-50 ms and a dead peer is retried about once a
    # second. Reset once a stream is established (its first ack).
    reconnect_backoff_initial: float = 0.05
    reconnect_backoff_max: float = 1.0
    # HTTP/2 keepalive pings: a backstop below the transport's own pings,
    # which already detect a dead peer within peer_timeout. They let a
    # receiving node notice a dialer that vanished without closing its TCP
    # connection (its stream would otherwise stay open until TCP gives up).
    keepalive_time: float = 30.0
    keepalive_timeout: float = 10.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent setting."""
        if not self.cluster_id or not self.cluster_id.isascii() or not self.cluster_id.isprintable():
            raise ValueError(f"cluster_id must be non-empty printable ASCII, not {self.cluster_id!r}")
        if self.ping_interval <= 0:
            raise ValueError("ping_interval must be positive")
        if self.peer_timeout < 2 * self.ping_interval:
            raise ValueError(
                f"peer_timeout ({self.peer_timeout}) must be at least two ping intervals ({self.ping_interval})"
            )
        for name in (
            "max_batch_bytes",
            "max_batch_messages",
            "max_message_bytes",
            "max_inflight_bytes",
            "max_inflight_messages",
            "max_queued_bytes",
            "max_queued_messages",
            "max_control_queued_bytes",
            "max_control_queued_messages",
            "max_queued_bytes_while_down",
            "max_queued_messages_while_down",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_batch_bytes > self.max_message_bytes:
            raise ValueError("max_batch_bytes must not exceed max_message_bytes")
        if self.max_queued_bytes_while_down > self.max_queued_bytes:
            raise ValueError("max_queued_bytes_while_down must not exceed max_queued_bytes")
        if self.max_queued_messages_while_down > self.max_queued_messages:
            raise ValueError("max_queued_messages_while_down must not exceed max_queued_messages")
        if not 0 < self.reconnect_backoff_initial <= self.reconnect_backoff_max:
            raise ValueError("need 0 < reconnect_backoff_initial <= reconnect_backoff_max")
        if self.keepalive_time <= 0 or self.keepalive_timeout <= 0:
            raise ValueError("keepalive_time and keepalive_timeout must be positive")


def _grpc_message_limit(config: TransportConfig) -> int:
    return config.max_message_bytes + _FRAMING_SLACK


def channel_options(config: TransportConfig) -> list[tuple[str, int]]:
    """gRPC channel arguments for a dialing link (one channel per stream).

    - message limits: a batch may be as large as the largest message.
    - no gRPC retries: the transport reconnects on its own and Raft tolerates
      loss; with retries on, gRPC also keeps a copy of each sent message
      until the call is committed.
    - a local subchannel pool: a new stream gets a new connection instead of
      a shared one still in gRPC's own reconnect back-off, so the
      transport's back-off is the only one.
    - keepalive pings (see ``TransportConfig.keepalive_time``), allowed on a
      stream that is momentarily not sending data.
    """
    limit = _grpc_message_limit(config)
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.enable_retries", 0),
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.keepalive_time_ms", int(config.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout * 1000)),
        # gRPC (1.85) waits for a ping's reply up to http2.ping_timeout_ms
        # (60 s by default) whatever keepalive_timeout_ms says: without it
        # the backstop would take a minute (tests/client/test_keepalive.py).
        ("grpc.http2.ping_timeout_ms", int(config.keepalive_timeout * 1000)),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.lookahead_bytes", 8 << 20),
    ]


def server_options(config: TransportConfig) -> list[tuple[str, int]]:
    """gRPC server arguments the transport needs from the node's server
    (merge them into the options the node creates its server with).

    - message limits as on the channel.
    - keepalive pings to dialers, and acceptance of the dialers' keepalive
      pings (a ping faster than the server allows counts as a strike, and
      two strikes close the connection).
    - no SO_REUSEPORT: a second node started on a taken port fails to bind
      instead of silently sharing (and splitting) its connections.
    """
    limit = _grpc_message_limit(config)
    keepalive_ms = int(config.keepalive_time * 1000)
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", keepalive_ms // 2),
        ("grpc.so_reuseport", 0),
    ]


@dataclass(slots=True)
class PeerCounters:
    """The mutable counters behind ``PeerStats`` (owned by the transport)."""

    batches_sent: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    pings_sent: int = 0
    batches_received: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    dropped_messages: int = 0
    dropped_bytes: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    stream_failures: int = 0

    def add(self, other: PeerCounters) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True, slots=True)
class PeerStats:
    """One peer as seen by this node's transport.

    ``batches_sent`` counts batches with messages (pings are ``pings_sent``);
    ``bytes_sent`` counts every byte written, pings included.
    ``reconnects`` counts streams established after the first one;
    ``stream_failures`` counts outbound streams that ended or could not be
    opened. Messages in flight when a stream fails are neither acknowledged
    nor counted as dropped: they may or may not have arrived.
    ``queued_messages`` and ``queued_bytes`` count both lanes;
    ``inflight_bytes`` counts bulk only (what the window limits).
    """

    node: int
    address: str
    alive: bool
    connected: bool  # our stream to the peer is established
    inbound_open: bool  # the peer's stream to us is open
    queued_messages: int
    queued_bytes: int
    inflight_bytes: int
    batches_sent: int
    messages_sent: int
    bytes_sent: int
    pings_sent: int
    batches_received: int
    messages_received: int
    bytes_received: int
    dropped_messages: int
    dropped_bytes: int
    decode_errors: int
    reconnects: int
    stream_failures: int


@dataclass(frozen=True, slots=True)
class TransportStats:
    """Totals over every peer, past peers included, plus the per-peer view.

    ``dropped_messages`` includes messages for a node that is not a peer (or
    sent after ``close()``); ``decode_errors`` counts messages (and whole
    batches) that arrived but could not be decoded; ``rejected_streams``
    counts inbound streams refused (wrong cluster, unknown sender, ...).
    """

    batches_sent: int
    messages_sent: int
    bytes_sent: int
    pings_sent: int
    batches_received: int
    messages_received: int
    bytes_received: int
    dropped_messages: int
    dropped_bytes: int
    decode_errors: int
    reconnects: int
    stream_failures: int
    rejected_streams: int
    queued_messages: int
    queued_bytes: int
    inflight_bytes: int
    peers: Mapping[int, PeerStats] = field(default_factory=dict)
