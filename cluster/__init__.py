"""The node process.

Here: the node (``node``, started by ``serve`` or ``run_local`` from the
cluster file, ``static_config``); the metadata controller (``controller/``
state machine and placement, run as Raft group 0 by ``controller_replica``,
its leader's ``controller_duties``) and the per-node ``reconciler``; the
Raft transport (``transport``, ``peer_link``, ``inbound_stream``,
``transport_config``, ``raft_wire``); the ``raftlog.v1`` services
(``log_service``, ``metadata_service``, ``admin_service``, ``groups/`` with
``group_logs``, ``forwarding``, ``auth``, ``grpc_errors``, ``grpc_health``);
``node_admin``, ``leader_balance``, ``private_file``, the ``raftlog`` CLI
(``cli``) and ``replica_dump`` (a replica's log read offline, for drills).

May import: everything below it - ``partitions``, ``raft``, ``client`` and the
generated protos (``raftlog``). Never ``chaos``, ``bench`` or ``tests``
(DESIGN.md, checked by tests/test_layout.py).
"""
