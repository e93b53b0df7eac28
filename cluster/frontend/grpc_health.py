"""Standard gRPC health checking and server reflection on every node.

Health (``grpc.health.v1.Health``) answers NOT_SERVING until the node has
opened its replicas and started its transport, then SERVING for the overall
server ("") and for each service in ``DISCOVERABLE_SERVICES``, so a
Kubernetes probe or a load balancer sees a node only once it can take
requests. Reflection lets ``grpcurl`` and similar tools discover the API
without the .proto files. Both stay unauthenticated: the front door
(front_door.py) lets them through untouched.

Invariant: both name only the public services (and themselves). The
internal ones (Raft transport, cluster join, NodeAdmin) are for nodes that
hold the cluster secret (cluster/internal/internal_door.py): neither
listed by reflection nor reported by health, so an unauthenticated caller
is not told they are there. Reflection also answers file and symbol
questions (``FileContainingSymbol``) from a descriptor pool holding only the
public services' files and what they import, not from the process's whole
pool, where the internal protos are loaded too: otherwise a caller could ask
for ``raftlog.internal.v1.NodeAdmin`` by name and get its schema.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cluster.frontend.front_door import PUBLIC_SERVICES

DISCOVERABLE_SERVICES = tuple(sorted(PUBLIC_SERVICES))


def public_descriptor_pool(services: tuple[str, ...]) -> descriptor_pool.DescriptorPool:
    """A pool holding the files that define ``services`` and, transitively,
    the files they import: what reflection may tell anyone."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: descriptor.FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    everything = descriptor_pool.Default()
    for name in services:
        add(everything.FindServiceByName(name).file)
    return pool


def enable_health_and_reflection(server: grpc.aio.Server) -> health.aio.HealthServicer:
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    services = (*DISCOVERABLE_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(services, server, pool=public_descriptor_pool(services))
    return servicer


async def mark_serving(servicer: health.aio.HealthServicer) -> None:
    for service in ("", *DISCOVERABLE_SERVICES):
        await servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
