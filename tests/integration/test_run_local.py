"""``make run``'s program: starts three nodes from a fresh data directory,
serves produce and fetch, stops cleanly on Ctrl-C, and reuses its data."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from raftlog.v1.record_batch import Record, decode_records, encode_batch
from tests.integration.log_client import LogClient

pytestmark = pytest.mark.timeout(120)

ADDRESSES = {1: "127.0.0.1:7001", 2: "127.0.0.1:7002", 3: "127.0.0.1:7003"}


def _start(data: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.run_local", "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C stops" in line:
            return proc
    raise AssertionError("run_local never came up:\n" + "".join(lines) + f"\nexit {proc.wait()}")


def _interrupt(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


def _env(data: Path) -> dict[str, str]:
    """What ``. data/cluster.env`` exports."""
    pairs = (
        line.removeprefix("export ").partition("=")
        for line in (data / "cluster.env").read_text().splitlines()
    )
    return {name: value for name, sep, value in pairs if sep and not name.startswith("#")}


async def _produce_and_read(data: Path, values: list[bytes]) -> list[bytes]:
    client = LogClient(ADDRESSES, _env(data)["RAFTLOG_API_KEY"])
    try:
        for value in values:
            await client.produce("demo", 0, encode_batch([Record(value=value)]))
        return [r.value or b"" for b in await client.fetch_all("demo", 0) for r in decode_records(b)]
    finally:
        await client.close()


def test_run_local_serves_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = _start(data)
    try:
        env = _env(data)
        assert env["RAFTLOG_BOOTSTRAP"] == ",".join(ADDRESSES.values())
        assert (data / "cluster.env").stat().st_mode & 0o077 == 0, "the operator key is readable by others"
        assert asyncio.run(_produce_and_read(data, [b"one", b"two"])) == [b"one", b"two"]
    finally:
        out = _interrupt(proc)
    assert "stopped: node 1 -> 0, node 2 -> 0, node 3 -> 0" in out
    assert (data / "cluster.toml").exists()
    proc = _start(data)
    try:
        assert _env(data) == env, "a second run must keep the same key"
        assert asyncio.run(_produce_and_read(data, [b"three"])) == [b"one", b"two", b"three"]
    finally:
        _interrupt(proc)
