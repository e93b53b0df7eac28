"""Issue 17's admin API and CLI pieces (flags/admin_offline.py, flags/cli.py) on a
loopback gRPC server over a real LiveFlags and the in-memory writer of
test_admin_service.py: client keys (``--kind client``), refused kinds, a client
key refused by the admin API, ``flags snapshot`` and ``flags evaluate-all``
(byte for byte what the OFREP port answers), bad input writing nothing."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from aiohttp.test_utils import TestServer

from client.errors import AuthenticationError
from flags.admin_errors import reason_of
from flags.admin_service import FlagAdmin
from flags.cli import FlagsCallError, FlagsConnection, FlagsUsageError, add_commands
from flags.live import LiveFlags, Scope
from flags.ofrep import OfrepLimits, ofrep_app
from flags.rate_limit import Rate
from flags.sdk_keys import KeyKind
from flags.tenant_keys import TenantKeys
from raftlog.flags.v1 import flags_pb2, flags_pb2_grpc
from raftlog.v1 import admin_pb2
from tests.flags.flagd_harness import FLAG_SET
from tests.flags.test_admin_service import KEYS, FakeWriter, ReadyFollower

pytestmark = pytest.mark.timeout(30)


@dataclass
class Admin:
    live: LiveFlags
    writer: FakeWriter
    address: str
    asked: list[str]

    def connection(self, key: str = "rlk_acme") -> FlagsConnection:
        return FlagsConnection(self.address, key, None)

    async def cli(self, *argv: str, key: str = "rlk_acme") -> int:
        parser = argparse.ArgumentParser()
        add_commands(parser)
        args = parser.parse_args(list(argv))
        conn = self.connection(key)
        try:
            code: int = await args.flags_command(conn, args)
            return code
        finally:
            await conn.close()


@pytest.fixture
async def admin() -> AsyncIterator[Admin]:
    live = LiveFlags()
    writer = FakeWriter(live)
    asked: list[str] = []

    async def who_am_i(key: str, tenant: str | None) -> admin_pb2.WhoAmIResponse:
        asked.append(key)
        if key not in KEYS:
            raise AuthenticationError("unknown key")
        return KEYS[key]

    server = grpc.aio.server()
    keys = TenantKeys("127.0.0.1:1", who_am_i=who_am_i)
    flags_pb2_grpc.add_FlagAdminServiceServicer_to_server(
        FlagAdmin(live, writer, ReadyFollower(), keys),  # type: ignore[arg-type]
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        setup = Admin(live, writer, f"127.0.0.1:{port}", asked)
        assert await setup.cli("env", "create", "prod") == 0
        conn = setup.connection()
        request = flags_pb2.ImportFlagsRequest(environment="prod", flags_json=json.dumps(FLAG_SET))
        await conn.call("ImportFlags", request)
        await conn.close()
        yield setup
    finally:
        await server.stop(grace=None)


async def test_key_create_kind_client_makes_a_public_ofrep_only_key(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert await admin.cli("key", "create", "prod", "--kind", "client", "--name", "ios") == 0
    out, err = capsys.readouterr()
    clear = out.strip()
    assert clear.startswith("rlc_") and "client key" in err
    assert admin.live.authenticate(clear) is None
    assert admin.live.authenticate_ofrep(clear) == (Scope("acme", "prod"), KeyKind.CLIENT)
    assert await admin.cli("key", "create", "prod") == 0
    server = capsys.readouterr()[0].strip()
    assert server.startswith("rlf_") and admin.live.authenticate(server) == Scope("acme", "prod")
    assert await admin.cli("key", "list", "prod") == 0
    listed = [line.split("\t") for line in capsys.readouterr()[0].splitlines()]
    assert sorted(row[-1] for row in listed) == ["client", "server"]
    assert [row[2] for row in listed if row[-1] == "client"] == ["ios"]
    # Revoking by the clear client key works like revoking by id.
    assert await admin.cli("key", "revoke", clear) == 0
    assert admin.live.authenticate_ofrep(clear) is None


async def test_an_unknown_kind_is_refused_and_nothing_is_written(admin: Admin) -> None:
    before = admin.writer.written("acme")
    conn = admin.connection()
    with pytest.raises(FlagsCallError) as caught:
        await conn.call("CreateSdkKey", flags_pb2.CreateSdkKeyRequest(environment="prod", kind="admin"))
    await conn.close()
    assert caught.value.reason == "INVALID_KEY_KIND"
    assert admin.writer.written("acme") == before


async def test_a_client_key_on_the_admin_api_is_refused_and_nothing_is_written(admin: Admin) -> None:
    conn = admin.connection()
    created = await conn.call(
        "CreateSdkKey", flags_pb2.CreateSdkKeyRequest(environment="prod", kind="client")
    )
    await conn.close()
    before = admin.writer.written("acme")
    async with grpc.aio.insecure_channel(admin.address) as channel:
        stub = flags_pb2_grpc.FlagAdminServiceStub(channel)
        for method, request in (
            ("ListFlags", flags_pb2.ListFlagsRequest(environment="prod")),
            ("PutFlag", flags_pb2.PutFlagRequest(environment="prod", flag="x", definition_json="{}")),
            ("CreateSdkKey", flags_pb2.CreateSdkKeyRequest(environment="prod")),
            ("GetSnapshot", flags_pb2.GetSnapshotRequest(environment="prod")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await getattr(stub, method)(
                    request, metadata=[("authorization", f"Bearer {created.clear_key}")]
                )
            assert reason_of(caught.value).code == grpc.StatusCode.UNAUTHENTICATED, method
    assert admin.writer.written("acme") == before


async def test_snapshot_is_the_flagd_document_sync_sends(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert await admin.cli("snapshot", "prod") == 0
    out = capsys.readouterr()[0]
    serving = admin.live.serving(Scope("acme", "prod"))
    assert serving is not None and out == serving.configuration + "\n"
    assert set(json.loads(out)["flags"]) == set(FLAG_SET["flags"])
    with pytest.raises(FlagsCallError) as caught:
        await admin.cli("snapshot", "nope")
    assert caught.value.reason == "UNKNOWN_ENVIRONMENT"


async def test_evaluate_all_is_the_ofrep_bulk_body(admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    context = {"targetingKey": "user-7", "age": 21, "email": "x@example.com"}
    capsys.readouterr()
    assert await admin.cli("evaluate-all", "prod", "--context", json.dumps(context)) == 0
    out = capsys.readouterr()[0].rstrip("\n")
    conn = admin.connection()
    created = await conn.call(
        "CreateSdkKey", flags_pb2.CreateSdkKeyRequest(environment="prod", kind="client")
    )
    answer = await conn.call(
        "EvaluateAll", flags_pb2.EvaluateAllRequest(environment="prod", context_json=json.dumps(context))
    )
    await conn.close()
    unlimited = OfrepLimits(per_key=Rate.unlimited(), per_address=Rate.unlimited())
    server = TestServer(ofrep_app(admin.live, limits=unlimited), host="127.0.0.1")
    await server.start_server()
    try:
        async with httpx.AsyncClient(base_url=str(server.make_url("/"))) as http:
            ofrep = await http.post(
                "/ofrep/v1/evaluate/flags",
                json={"context": context},
                headers={"Authorization": f"Bearer {created.clear_key}"},
            )
    finally:
        await server.close()
    assert ofrep.status_code == 200
    assert out.encode() == ofrep.content == answer.body_json.encode()
    assert answer.etag == ofrep.headers["ETag"]
    for bad in ("[1]", '{"targetingKey": 3}'):
        with pytest.raises(FlagsCallError) as caught:
            await admin.connection().call(
                "EvaluateAll", flags_pb2.EvaluateAllRequest(environment="prod", context_json=bad)
            )
        assert caught.value.reason == "INVALID_CONTEXT"
    with pytest.raises(FlagsUsageError):
        await admin.cli("evaluate-all", "prod", "--context", "[1]")
