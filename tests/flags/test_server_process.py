"""The flag server as a process (``python -m flags.server``, started by
harness/flag_server.py) on a real 3-node cluster: the ready line, the
management endpoints, gRPC health, readiness while the cluster cannot be
read, a graceful SIGTERM that ends open streams, and start failures."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flags.server import flag_service_names, management_app
from harness.flag_server import FlagServerProcess
from harness.local_cluster import LocalCluster, free_ports
from tests.flags.stack_fixtures import cluster_and_flag_server

pytestmark = pytest.mark.timeout(180)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


cluster, flag_server = cluster_and_flag_server("flag-server")


def _http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


async def _health(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(answer.status)


# --- the management app, in process ------------------------------------------------------


async def test_readyz_follows_readiness_and_healthz_always_answers() -> None:
    ready = False
    app = management_app(lambda: ready, lambda: "catching up with tenant acme")
    async with TestClient(TestServer(app)) as client:
        answer = await client.get("/readyz")
        assert answer.status == 503
        assert "not ready: catching up with tenant acme" in await answer.text()
        assert (await client.get("/healthz")).status == 200
        ready = True
        answer = await client.get("/readyz")
        assert answer.status == 200, await answer.text()
        assert (await client.get("/healthz")).status == 200


# --- the process on a real cluster -------------------------------------------------------


def test_ready_server_answers_healthz_and_readyz(flag_server: FlagServerProcess) -> None:
    assert _http(flag_server.management_url + "/healthz") == (200, "ok\n")
    assert _http(flag_server.management_url + "/readyz") == (200, "ready\n")
    assert _http(flag_server.management_url + "/nothing")[0] == 404
    status, body = _http(flag_server.management_url + "/stats")
    assert status == 200
    counters = json.loads(body)["exposures"]
    assert {"recorded", "dropped", "deduplicated", "written", "failed"} <= counters.keys()
    assert all(isinstance(value, int) for value in counters.values())


async def test_grpc_health_says_serving_on_both_ports_once_ready(flag_server: FlagServerProcess) -> None:
    services = flag_service_names()
    assert {
        "flagd.evaluation.v1.Service",
        "flagd.evaluation.v2.Service",
        "flagd.sync.v1.FlagSyncService",
        "raftlog.flags.v1.FlagAdminService",
    } <= set(services)
    for address in (flag_server.eval_address, flag_server.sync_address):
        for service in ("", *services):
            assert await _health(address, service) == SERVING, (address, service)


async def test_not_ready_while_the_cluster_cannot_be_read(tmp_path: Path) -> None:
    """Nothing listens at its bootstrap address: the ports are up, /healthz
    says the process lives, /readyz and gRPC health say not to send traffic;
    SIGTERM still stops it cleanly."""
    (nowhere,) = free_ports(1)
    server = FlagServerProcess(tmp_path, f"127.0.0.1:{nowhere}", "rlk_0123456789abcdef_" + "x" * 43)
    try:
        server.launch()
        server.wait_listening(30)
        assert _http(server.management_url + "/healthz") == (200, "ok\n")
        await asyncio.sleep(1.0)  # a discovery sweep or two, all failing
        status, body = _http(server.management_url + "/readyz")
        assert status == 503 and body.startswith("not ready: "), (status, body)
        assert await _health(server.eval_address) == NOT_SERVING
        assert await _health(server.sync_address, "flagd.sync.v1.FlagSyncService") == NOT_SERVING
        assert server.running()
        assert server.stop(timeout=10) == 0, server.log_tail()
    finally:
        server.close()


async def test_sigterm_ends_open_streams_and_exits_0(cluster: LocalCluster, tmp_path: Path) -> None:
    """A stream that never ends by itself (health Watch, like flagd's
    EventStream and SyncFlags) is ended by the server's stop, which then
    exits 0 within a few seconds."""
    server = FlagServerProcess(tmp_path, list(cluster.addresses.values()), cluster.api_key)
    try:
        server.start()
        async with grpc.aio.insecure_channel(server.eval_address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            first = await asyncio.wait_for(watch.read(), 5)
            assert first.status == SERVING
            began = time.monotonic()
            server.terminate()
            seen, end = await asyncio.wait_for(_read_to_the_end(watch), 10)
        # Health says NOT_SERVING as the stop begins, then the stream ends.
        assert NOT_SERVING in seen and SERVING not in seen, (seen, end)
        assert server.wait_stopped(10) == 0, server.log_tail()
        assert time.monotonic() - began < 10
        assert "stopped on SIGTERM" in server.log_tail()
    finally:
        server.close()


async def _read_to_the_end(stream: grpc.aio.UnaryStreamCall) -> tuple[list[int], str]:
    """The statuses a health Watch stream sends until it ends, and how it
    ended (``EOF`` or the status code's name)."""
    seen: list[int] = []
    try:
        while (update := await stream.read()) is not grpc.aio.EOF:
            seen.append(update.status)
    except grpc.aio.AioRpcError as error:
        return seen, error.code().name
    return seen, "EOF"


def test_a_taken_port_fails_the_start_with_status_1(
    cluster: LocalCluster, flag_server: FlagServerProcess, tmp_path: Path
) -> None:
    second = FlagServerProcess(
        tmp_path, list(cluster.addresses.values()), cluster.api_key, eval_port=flag_server.eval_port
    )
    try:
        with pytest.raises(RuntimeError, match="before 'flag server ready'"):
            second.start(30)
        assert second.exit_code() == 1
        assert f"cannot listen on 127.0.0.1:{flag_server.eval_port} (evaluation)" in second.log_tail()
    finally:
        second.close()
    # The first server still serves.
    assert _http(flag_server.management_url + "/readyz")[0] == 200


def _serve(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flags.server", *argv], capture_output=True, text=True, env=env, timeout=60
    )


def test_usage_errors_exit_2_with_the_reason(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTLOG_")}
    done = _serve(["--bootstrap", "127.0.0.1:1"], env)
    assert done.returncode == 2 and "no operator key" in done.stderr, done.stderr
    key_file = tmp_path / "key"
    key_file.write_text("rlk_0123456789abcdef_" + "x" * 43 + "\n")
    key_file.chmod(0o644)
    done = _serve(["--api-key-file", str(key_file)], env)
    assert done.returncode == 2 and f"chmod 600 {key_file}" in done.stderr, done.stderr
    key_file.chmod(0o600)
    done = _serve(["--api-key-file", str(key_file), "--eval-port", "70000"], env)
    assert done.returncode == 2 and "--eval-port 70000" in done.stderr, done.stderr
    done = _serve(["--api-key-file", str(key_file), "--bootstrap", "nowhere"], env)
    assert done.returncode == 2 and "host:port" in done.stderr, done.stderr
