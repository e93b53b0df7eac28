"""Node-to-node services besides the Raft transport (internal: only other
nodes of the cluster call them, never clients).

- ``join``: ``ClusterJoin``, how a new node asks to be registered;
- ``node_admin``: ``NodeAdmin``, one node's replicas and transport as seen
  by drills, tests and benchmarks;
- ``node_auth``: node proofs (the cluster secret, never sent) and their
  checker; ``internal_door``: the interceptor that admits internal calls
  only with a valid proof; ``cluster_secret``: where a node finds the secret.
"""
