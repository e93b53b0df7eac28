"""Node-to-node Raft wire messages (``package raftlog.internal.v1``). See proto/README.md."""
