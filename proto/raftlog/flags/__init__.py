"""The flag server's APIs (``package raftlog.flags.*``)."""
