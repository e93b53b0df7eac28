"""The node process.

Top level: the node (``node``: one process, its gRPC server, replicas and
background loops; started by ``serve``, or by ``run_local`` for ``make
run``), the cluster file (``static_config``), the ``raftlog`` CLI (``cli``),
the controller's replica and its leader's duties (``controller_replica``,
``controller_duties``), the per-node ``reconciler`` (opens and retires
replicas, walks group memberships), ``leader_balance``, ``private_file``
(owner-only files) and ``replica_dump`` (a replica's log read offline, for
drills).

Subpackages, one job each:

- ``frontend/``: the front door and the public ``raftlog.v1`` services
  (log, metadata, admin), forwarding, errors, health;
- ``groups/``: consumer groups (pure coordinator, its Raft-backed logs,
  the gRPC service);
- ``controller/``: the metadata state machine (Raft group 0) and placement;
- ``routing/``: every partition's leader, known on every node;
- ``transport/``: node-to-node Raft traffic (internal);
- ``internal/``: cluster join, NodeAdmin, node proofs and the internal door
  (internal);
- ``primitives/``: deterministic binary encoding and pagination.

May import: everything below it - ``partitions``, ``raft`` and the
generated protos (``raftlog``); the CLI (a client) also imports ``client``,
and ``run_local`` the ``harness``. Never ``chaos``, ``bench`` or ``tests``
(DESIGN.md, checked by tests/test_layout.py).
"""
