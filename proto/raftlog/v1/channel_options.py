"""gRPC channel options of everything that calls a node's public port: the
SDK's channels (client/metadata.py) and a node's forwarding channels
(cluster/frontend/forwarding.py). Hand-written and stdlib-only, like the
other contract modules: the keepalive policy here and the ping rate the
node's server accepts (``MIN_PING_INTERVAL_MS``, cluster/node.py) must
agree, or the node answers pings with GOAWAY.

Invariants:

- 64 MiB messages both ways, like the node's server: a fetch may return up
  to 64 MiB.
- A restarted node (often the new leader: nodes campaign at start-up) is
  reachable again within about a second, not after gRPC's default reconnect
  backoff (up to two minutes).
- A silent node (SIGSTOP, a cut cable) is noticed in about two seconds: a
  ping every second, the connection closed if a ping is not acknowledged
  within a second; also on idle channels, with no limit on pings between
  data frames. gRPC core (seen on 1.85) waits for a ping's acknowledgement
  for ``http2.ping_timeout_ms`` (60 s by default) whatever
  ``keepalive_timeout_ms`` says, so both are set (tests/client/test_keepalive.py,
  tests/cluster/test_forwarding_keepalive.py).
"""

from __future__ import annotations

from typing import Final

PING_INTERVAL_MS: Final = 1000
"""How often a caller pings a node's port."""

MIN_PING_INTERVAL_MS: Final = PING_INTERVAL_MS // 2
"""The fastest ping rate a node accepts from its callers (with or without
calls in flight): half the callers' interval, for their timers' jitter."""

CHANNEL_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.http2.lookahead_bytes", 8 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", PING_INTERVAL_MS),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.http2.ping_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)
