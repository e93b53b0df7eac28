"""TLS for raftlog: the public API over TLS, mutual TLS between nodes,
certificates reloaded without a restart.

Why two listeners. gRPC Python's server credentials either never ask for a
client certificate or require one; one port cannot serve both SDK clients
(which have no certificate) and peers that must prove themselves with one.
So, with ``[tls]`` in the cluster file (``settings.py``), a node listens on:

- its ``address``: the public API over TLS (server certificate only; no
  client certificate asked). Clients trust the cluster CA
  (``--tls-ca`` / ``RAFTLOG_TLS_CA``).
- ``host:port + internal_port_offset`` (default 10000), the internal
  listener: the same gRPC server, but the handshake requires a client
  certificate signed by the cluster CA. Every node-to-node call goes there:
  Raft transport, cluster join, NodeAdmin, and client calls one node
  forwards to a partition's leader. Each outgoing node channel is opened by
  one helper, ``dial.Dialer.dial(address)``, given a node's public address.

The internal door (cluster/internal/internal_door.py) refuses the internal
services on the public listener: with TLS on it admits them only on a call
whose auth context carries a verified peer certificate (``peer.py``),
which only the internal listener can produce. The HMAC node proofs from the
cluster secret are still required too (two independent locks). Without
``[tls]`` nothing changes: one plaintext port, as before.

Reload (``material.py``): the three files (CA, certificate, key) are
re-read when their size, mtime or inode changes, checked at most once a
second. The server credentials are ``grpc.dynamic_ssl_server_credentials``,
whose fetcher gRPC calls at each new handshake: new connections get the new
certificate, established ones keep the one they shook hands with. Outgoing
node channels are built from the current client certificate: Raft transport
streams open a new channel per stream, and cached channels (forwarding,
NodeAdmin asks) are replaced when the files change (``dial.Dialer.generation``).
A certificate and key that do not match (one of the pair replaced, the other
not yet) are not used: the previous pair stays until the pair is whole.

Modules: ``settings`` (the ``[tls]`` section, env overrides), ``material``
(files, reload, server and channel credentials), ``dial`` (outgoing node
channels), ``peer`` (the verified-peer check), ``certs`` and ``cli``
(``raftlog certs init``). This package's ``__init__`` imports nothing, so
``cluster/static_config.py`` can import ``settings`` cheaply.
"""
