"""The public front end: the ``raftlog.v1`` services clients call.

One job per module:

- ``front_door``: the seam every public call passes (authentication,
  tenant, operator-only methods, malformed request bytes, the stages quotas and traces will use,
  and the one mapping of errors to a status with a reason);
- ``auth``: who is calling (API key) and in which tenant;
- ``grpc_errors``: ``ServiceError``, the mapping of replica, offset and
  page errors to a status with a reason, and ``shown`` (how a message
  quotes a client-supplied name);
- ``internal_topics``: which topics only the node itself writes;
- ``forwarding``: re-sending a request to the node that leads its
  partition (one hop at most), over the node's own channel cache;
- ``log_service``: produce, fetch (long poll and stream), offsets;
- ``metadata_watch``: wakes waiting fetches and streams when this node's
  metadata changes, so a revoked key ends them at once;
- ``metadata_service``: nodes, topics, partition leaders;
- ``admin_service``: tenants, API keys, topics, nodes, cluster status;
- ``grpc_health``: standard gRPC health and server reflection.

Consumer-group calls are served by ``cluster.groups.service``. The
node-to-node surfaces (Raft transport, cluster join, NodeAdmin) are not
here and never pass the front door: see ``cluster.transport`` and
``cluster.internal``. Nothing here imports the SDK (``client``): header
names and reasons come from the contract modules ``raftlog.v1.headers``
and ``raftlog.v1.reasons``.
"""
