"""``Admin``'s list methods walk every page, against an in-process
AdminService that answers three items per page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from client.admin import PAGE_SIZE, Admin
from raftlog.v1 import admin_pb2, admin_pb2_grpc

pytestmark = pytest.mark.timeout(30)

PER_PAGE = 3


class PagedAdmin(admin_pb2_grpc.AdminServiceServicer):
    """Seven tenants, topics and nodes, ``PER_PAGE`` to a page; the token is
    the index of the page's first item."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, int, str]] = []  # (method, page_size, page_token)

    def _page(self, method: str, request: Any) -> tuple[range, str]:
        self.requests.append((method, request.page_size, request.page_token))
        start = int(request.page_token or 0)
        end = min(start + PER_PAGE, 7)
        return range(start, end), str(end) if end < 7 else ""

    async def ListTenants(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        items, token = self._page("ListTenants", request)
        return admin_pb2.ListTenantsResponse(
            tenants=[admin_pb2.Tenant(name=f"t{i}") for i in items], next_page_token=token
        )

    async def ListTopics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        items, token = self._page("ListTopics", request)
        return admin_pb2.ListTopicsResponse(
            topics=[admin_pb2.TopicDescription(name=f"x{i}") for i in items], next_page_token=token
        )

    async def ListNodes(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        items, token = self._page("ListNodes", request)
        return admin_pb2.ListNodesResponse(
            nodes=[admin_pb2.NodeDescription(node_id=i + 1) for i in items], next_page_token=token
        )


@pytest.fixture
async def served() -> AsyncIterator[tuple[PagedAdmin, str]]:
    servicer = PagedAdmin()
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


async def test_list_methods_walk_every_page(served: tuple[PagedAdmin, str]) -> None:
    servicer, address = served
    async with Admin(address, timeout_s=5) as admin:
        assert [t.name for t in await admin.list_tenants()] == [f"t{i}" for i in range(7)]
        assert [t.name for t in await admin.list_topics()] == [f"x{i}" for i in range(7)]
        assert [n.node_id for n in await admin.list_nodes()] == list(range(1, 8))
    tokens = ["", "3", "6"]
    assert servicer.requests == [
        (method, PAGE_SIZE, token)
        for method in ("ListTenants", "ListTopics", "ListNodes")
        for token in tokens
    ]
