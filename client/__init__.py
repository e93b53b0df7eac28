"""The Python SDK that users import: ``Producer``, ``Consumer``, ``Admin``.

Async first, with a thin synchronous facade. Talks to any node over the
public ``raftlog.v1`` gRPC API.

May import: the generated protos (``raftlog``), stdlib and third-party
libraries only. Never ``cluster``, ``partitions``, ``raft`` or any other
project package: users install the client without the server (DESIGN.md,
checked by tests/test_layout.py).
"""
