"""The node process.

What will live here: configuration (one TOML file loaded into a frozen
dataclass), the node-to-node Raft transport (one gRPC stream per peer,
batched, coalesced heartbeats), the metadata controller (Raft group 0:
metadata state machine, placement, reconciler), the public ``raftlog.v1``
gRPC services (auth, tenant, quota, routing), telemetry and the ``raftlog``
CLI.

May import: everything below it - ``partitions``, ``raft``, ``client`` and the
generated protos (``raftlog``). Never ``chaos``, ``bench`` or ``tests``
(DESIGN.md, checked by tests/test_layout.py).
"""
