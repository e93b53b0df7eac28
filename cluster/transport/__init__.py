"""Node-to-node Raft traffic (internal: only other nodes of the cluster
call it, never clients).

One job per module:

- ``raft_transport``: ``RaftTransport``, one outbound link per peer node
  and the gRPC servicer that receives their streams;
- ``peer_link``: one peer's outbound stream (batching, coalesced
  heartbeats, windows, reconnects);
- ``inbound_stream``: one peer's inbound stream;
- ``raft_wire``: Raft messages (and the leader announcements that ride
  the same batches, cluster/routing/) to and from their protobuf form;
- ``transport_config``: windows, batch sizes, keepalives, gRPC options.
"""
