"""The public front end: the ``raftlog.v1`` services clients call.

One job per module:

- ``auth``: who is calling (API key) and in which tenant;
- ``grpc_errors``: ``ServiceError`` and the one mapping of replica errors
  to a status with a reason;
- ``forwarding``: re-sending a request to the node that leads its
  partition (one hop at most);
- ``log_service``: produce, fetch (long poll and stream), offsets;
- ``metadata_service``: nodes, topics, partition leaders;
- ``admin_service``: tenants, API keys, topics, nodes, cluster status;
- ``grpc_health``: standard gRPC health and server reflection.

Consumer-group calls are served by ``cluster.groups.service``. The
node-to-node surfaces (Raft transport, cluster join, NodeAdmin) are not
here: see ``cluster.transport`` and ``cluster.internal``.
"""
