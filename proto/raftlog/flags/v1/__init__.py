"""The flag server's admin API, version 1 (``package raftlog.flags.v1``): flags.proto."""
