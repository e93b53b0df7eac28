"""The node process.

Here so far: the node (``node``, started by ``serve`` or ``run_local``
from a static cluster file, ``static_config``), the Raft transport
(``transport``, ``peer_link``, ``inbound_stream``, ``transport_config``,
``raft_wire``), the ``raftlog.v1`` services (``log_service``,
``metadata_service``, ``forwarding``, ``grpc_errors``, ``grpc_health``),
``node_admin``, ``leader_balance``, the ``raftlog`` CLI (``cli``) and the
metadata controller's state machine and placement (``controller/``, not yet
run by the nodes).

May import: everything below it - ``partitions``, ``raft``, ``client`` and the
generated protos (``raftlog``). Never ``chaos``, ``bench`` or ``tests``
(DESIGN.md, checked by tests/test_layout.py).
"""
