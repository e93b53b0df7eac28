"""``make run``'s program: starts three nodes from a fresh data directory,
serves produce and fetch, stops cleanly on Ctrl-C, and reuses its data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness.local_cluster import LocalCluster, free_ports
from raftlog.v1.record_batch import Record, decode_records, encode_batch
from tests.integration.log_client import LogClient

pytestmark = pytest.mark.timeout(120)

ADDRESSES = {1: "127.0.0.1:7001", 2: "127.0.0.1:7002", 3: "127.0.0.1:7003"}


def _start(data: Path) -> tuple[subprocess.Popen[str], str]:
    """run_local started and up; its output until the banner."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.run_local", "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        umask=0o022,  # the usual default: run_local must not rely on a stricter one
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C stops" in line:
            return proc, "".join(lines)
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


def _metrics_page(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        page: str = response.read().decode()
        return page


def _assert_make_run_serves_metrics(banner: str) -> None:
    """The nodes' /metrics on 9101-9103 (the produce just made shows as
    answered calls on one of them) and the flag server's on 9104."""
    pages = {port: _metrics_page(port) for port in (9101, 9102, 9103)}
    for port, page in pages.items():
        assert "\nprocess_cpu_seconds_total " in page, f"{port}: no process_* figures"
    assert any(
        line.startswith("raftlog_rpc_server_handled_total{") and 'method="Produce"' in line
        for page in pages.values()
        for line in page.splitlines()
    ), "no node counted the produce calls"
    if "the flag server did not start" in banner:  # port 8013/9104 taken on this machine: said, not fatal
        return
    flags_page = _metrics_page(9104)
    assert "\nprocess_cpu_seconds_total " in flags_page
    assert "# TYPE raftlog_rpc_server_handled_total counter" in flags_page


def test_run_local_serves_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, banner = _start(data)
    try:
        env = _env(data)
        assert env["RAFTLOG_BOOTSTRAP"] == ",".join(ADDRESSES.values())
        assert (data / "cluster.env").stat().st_mode & 0o077 == 0, "the operator key is readable by others"
        assert asyncio.run(_produce_and_read(data, [b"one", b"two"])) == [b"one", b"two"]
        _assert_make_run_serves_metrics(banner)
    finally:
        out = _interrupt(proc)
    assert "stopped: node 1 -> 0, node 2 -> 0, node 3 -> 0" in out
    assert (data / "cluster.toml").exists()
    # Everything under the data root is this user's only (issue 14), also
    # when make run is started under the usual umask 022 (as here).
    loose = [
        f"{path.relative_to(data)} {path.stat().st_mode & 0o777:o}"
        for path in [data, *data.rglob("*")]
        if not path.is_symlink() and path.stat().st_mode & 0o077
    ]
    assert not loose, f"readable by group or others: {loose[:10]}"
    proc, _ = _start(data)
    try:
        assert _env(data) == env, "a second run must keep the same key"
        assert asyncio.run(_produce_and_read(data, [b"three"])) == [b"one", b"two", b"three"]
    finally:
        _interrupt(proc)


# --- Ctrl-C in a terminal (issue 13) ---
#
# A terminal's Ctrl-C sends SIGINT to its whole foreground process group:
# make, run_local and whatever shares their group. These tests start
# run_local as the leader of a group of its own and signal that group, as the
# terminal does; their cluster file uses free ports, so they need not wait
# for 7001-7003.

CTRL_C_BOUND_S = 15.0
"""How long Ctrl-C may take to stop run_local and every node."""


def _cluster_file(data: Path) -> list[int]:
    """A 3-node cluster file on free ports (run_local keeps an existing
    one); returns the node ids."""
    data.mkdir(parents=True, exist_ok=True)
    lines = ['cluster_id = "ctrl-c"', ""]
    for node, port in enumerate(free_ports(3), start=1):
        lines += [
            "[[nodes]]",
            f"id = {node}",
            f'address = "127.0.0.1:{port}"',
            f'data_dir = "node{node}"',
            "",
        ]
    lines += ["[[topics]]", 'name = "demo"', "partitions = 3", "replicas = [1, 2, 3]"]
    (data / "cluster.toml").write_text("\n".join(lines) + "\n")
    return [1, 2, 3]


def _node_processes(data: Path) -> list[int]:
    """Live node processes serving ``data``'s cluster file, found by their
    command line (a node may have left run_local's process group)."""
    marker = f"--config\0{data.resolve() / 'cluster.toml'}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if b"cluster.serve" in cmdline and marker in cmdline:
            found.append(int(entry.name))
    return found


def _start_in_own_group(data: Path) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.run_local", "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # leads its own process group, like a terminal's foreground job
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "nodes up" in line:
            return proc, lines
    raise AssertionError("run_local never came up:\n" + "".join(lines) + f"\nexit {proc.wait()}")


def _ctrl_c(proc: subprocess.Popen[str], data: Path, *, presses: int = 1) -> tuple[int | None, str, float]:
    """SIGINT to run_local's whole process group (``presses`` times, 0.1 s
    apart, while it runs); returns its exit status (None: still running after the bound,
    then killed), its output and the seconds it took."""
    started = time.monotonic()
    for press in range(presses):
        if press:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=CTRL_C_BOUND_S)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = None
    elapsed = time.monotonic() - started
    for pid in _node_processes(data):  # leave nothing behind, whatever the assertions say
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return code, out, elapsed


def _assert_stopped_cleanly(
    code: int | None, out: str, elapsed: float, left: list[int], nodes: list[int]
) -> None:
    stopped = [line for line in out.splitlines() if line.startswith("stopped:")]
    expected = "stopped: " + ", ".join(f"node {n} -> 0" for n in nodes)
    assert code == 0 and elapsed < CTRL_C_BOUND_S and stopped == [expected] and not left, (
        f"exit {code} after {elapsed:.1f}s (bound {CTRL_C_BOUND_S}s), node processes left: {left}\n{out}"
    )


def test_ctrl_c_stops_every_node_cleanly_and_exits_0_twice_in_a_row(tmp_path: Path) -> None:
    """The issue's reproduction: a new user's two runs, each ended by Ctrl-C."""
    data = tmp_path / "data"
    nodes = _cluster_file(data)
    for _ in range(2):
        proc, _ = _start_in_own_group(data)
        running = _node_processes(data)
        assert len(running) == len(nodes)
        # The terminal's Ctrl-C must not reach the nodes: run_local stops
        # each once, so no second signal can race the first.
        assert all(os.getsid(pid) != proc.pid for pid in running)
        time.sleep(1.0)  # a running cluster, not one still electing
        code, out, elapsed = _ctrl_c(proc, data)
        _assert_stopped_cleanly(code, out, elapsed, _node_processes(data), nodes)


def test_ctrl_c_pressed_again_and_again_during_shutdown_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    nodes = _cluster_file(data)
    proc, _ = _start_in_own_group(data)
    code, out, elapsed = _ctrl_c(proc, data, presses=20)
    _assert_stopped_cleanly(code, out, elapsed, _node_processes(data), nodes)
    assert "Traceback" not in out, out
    for node in nodes:
        log = (data / f"node{node}.log").read_text(errors="replace")
        assert "Traceback" not in log and "KeyboardInterrupt" not in log, f"node {node}:\n{log}"


def test_a_node_signalled_again_and_again_while_it_stops_exits_0(tmp_path: Path) -> None:
    """A node reached by a terminal's SIGINT and by whatever stops it too
    (run_local, a test, a second Ctrl-C): every signal after the first, up to
    its very exit, is ignored — none kills it or raises KeyboardInterrupt."""
    cluster = LocalCluster(tmp_path, nodes=1)
    try:
        cluster.start_all()
        proc = cluster.processes.pop(1)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        while proc.poll() is None and time.monotonic() - started < CTRL_C_BOUND_S:
            time.sleep(0.005)
            for sig in (signal.SIGTERM, signal.SIGINT):
                proc.send_signal(sig)  # a no-op once it has exited (Popen polls first)
        code = proc.wait(timeout=1) if proc.poll() is None else proc.returncode
        log = cluster.log_tail(1)
        assert code == 0 and "Traceback" not in log, f"exit {code}:\n{log}"
        assert "stopped on SIGINT" in log
    finally:
        cluster.close()
