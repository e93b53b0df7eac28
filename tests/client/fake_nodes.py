"""In-process gRPC servers standing in for nodes in the SDK's unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from raftlog.v1 import log_pb2_grpc, metadata_pb2_grpc


async def start_fake_nodes(
    make_node: Callable[[int], Any], count: int
) -> tuple[list[grpc.aio.Server], list[str]]:
    """Serve ``make_node(i)`` (a LogService and MetadataService servicer) on
    ``count`` loopback ports; returns the servers and their addresses."""
    servers: list[grpc.aio.Server] = []
    addresses: list[str] = []
    for index in range(count):
        server = grpc.aio.server()
        node = make_node(index)
        log_pb2_grpc.add_LogServiceServicer_to_server(node, server)
        metadata_pb2_grpc.add_MetadataServiceServicer_to_server(node, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
    return servers, addresses
