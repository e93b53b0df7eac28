"""Standard gRPC health checking and server reflection on every node.

Health (``grpc.health.v1.Health``) answers NOT_SERVING until the node has
opened its replicas and started its transport, then SERVING for the overall
server ("") and for each public service, so a Kubernetes probe or a load
balancer sees a node only once it can take requests. Reflection lets
``grpcurl`` and similar tools discover the API without the .proto files.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from raftlog.internal.v1 import node_admin_pb2
from raftlog.v1 import admin_pb2, groups_pb2, log_pb2, metadata_pb2

PUBLIC_SERVICES = (
    log_pb2.DESCRIPTOR.services_by_name["LogService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    groups_pb2.DESCRIPTOR.services_by_name["GroupService"].full_name,
    metadata_pb2.DESCRIPTOR.services_by_name["MetadataService"].full_name,
    node_admin_pb2.DESCRIPTOR.services_by_name["NodeAdmin"].full_name,
)


def enable_health_and_reflection(server: grpc.aio.Server) -> health.aio.HealthServicer:
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        (*PUBLIC_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return servicer


async def mark_serving(servicer: health.aio.HealthServicer) -> None:
    for service in ("", *PUBLIC_SERVICES):
        await servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
