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
is not told they are there.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cluster.frontend.front_door import PUBLIC_SERVICES

DISCOVERABLE_SERVICES = tuple(sorted(PUBLIC_SERVICES))


def enable_health_and_reflection(server: grpc.aio.Server) -> health.aio.HealthServicer:
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        (*DISCOVERABLE_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return servicer


async def mark_serving(servicer: health.aio.HealthServicer) -> None:
    for service in ("", *DISCOVERABLE_SERVICES):
        await servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
