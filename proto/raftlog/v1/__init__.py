"""The public client API, version 1 (``package raftlog.v1``). See proto/README.md."""
