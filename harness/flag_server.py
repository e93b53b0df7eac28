"""A flag server (``python -m flags.server``) as a real process on loopback,
for tests, benchmarks and ``make run``.

``FlagServerProcess`` starts the server against a running cluster (its
bootstrap addresses and operator key), waits for its ready line
(``flag server ready eval=... sync=... management=... ofrep=...``,
flags/server.py),
and can SIGKILL, SIGSTOP/SIGCONT, stop (SIGTERM) and restart it. It only
runs a process: it imports nothing of the server.

Invariants:

- Ports are chosen once, at construction (free ones unless given), and a
  restart reuses them: clients reconnect to the same address, as they would
  to a restarted pod behind its service. The metrics port is the exception:
  ``metrics_port`` None (the default) serves no ``/metrics``; 0 picks a free
  one; any other is used as given.
- The operator key reaches the server in a file (``<root>/<name>.key``,
  0600, ``--api-key-file``), never in its environment or command line
  (``RAFTLOG_API_KEY`` is removed from the environment it inherits).
- Output: stderr (and anything after the ready line) goes to
  ``<root>/<name>.log``; stdout is read only up to the ready line (the
  server prints nothing else there, so the pipe never fills).
- ``own_session``: the server runs in a session of its own, so a
  terminal's Ctrl-C reaches only the program that owns it (``make run``),
  which stops it exactly once.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.local_cluster import StartInterrupted, _write_private, free_ports

READY_LINE = b"flag server ready"
LISTENING_LINE = b"flag server listening"


class FlagServerProcess:
    def __init__(
        self,
        root: Path,
        bootstrap: str | Sequence[str],
        api_key: str,
        *,
        host: str = "127.0.0.1",
        eval_port: int | None = None,
        sync_port: int | None = None,
        management_port: int | None = None,
        ofrep_port: int | None = None,
        metrics_port: int | None = None,
        extra_args: Sequence[str] = (),
        name: str = "flags",
        own_session: bool = False,
    ) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.bootstrap = bootstrap if isinstance(bootstrap, str) else ",".join(bootstrap)
        self.api_key = api_key
        self.host = host
        free = iter(free_ports(5))
        self.eval_port = eval_port if eval_port is not None else next(free)
        self.sync_port = sync_port if sync_port is not None else next(free)
        self.management_port = management_port if management_port is not None else next(free)
        self.ofrep_port = ofrep_port if ofrep_port is not None else next(free)
        self.metrics_port: int | None = next(free) if metrics_port == 0 else metrics_port
        self.extra_args = list(extra_args)
        self.name = name
        self.own_session = own_session
        self.process: subprocess.Popen[bytes] | None = None
        self._stdout_pending = b""
        """Read from stdout but not yet looked at (a partial line, or lines
        after the one a wait stopped at)."""
        self.log_path = self.root / f"{name}.log"
        self.key_path = self.root / f"{name}.key"

    # --- addresses ------------------------------------------------------------------

    @property
    def eval_address(self) -> str:
        """Evaluation + admin gRPC (``RAFTLOG_FLAGS`` for the CLI)."""
        return f"{self.host}:{self.eval_port}"

    @property
    def sync_address(self) -> str:
        return f"{self.host}:{self.sync_port}"

    @property
    def management_url(self) -> str:
        return f"http://{self.host}:{self.management_port}"

    @property
    def ofrep_url(self) -> str:
        """The OFREP port's base URL (what an OFREP provider is given)."""
        return f"http://{self.host}:{self.ofrep_port}"

    @property
    def metrics_url(self) -> str:
        """``GET {metrics_url}/metrics`` (only with a ``metrics_port``)."""
        assert self.metrics_port is not None, "the flag server was made without a metrics port"
        return f"http://{self.host}:{self.metrics_port}"

    # --- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 60.0, interrupted: Callable[[], bool] | None = None) -> None:
        """Start the server and wait for its ready line (the follower has
        read every tenant's flags). ``interrupted``: asked every 0.1 s;
        ``StartInterrupted`` once it says yes (the server keeps running)."""
        self.launch()
        self.wait_ready(timeout, interrupted)

    def launch(self) -> None:
        """Start the server without waiting for it."""
        assert self.process is None or self.process.poll() is not None, "the flag server is already running"
        _write_private(self.key_path, self.api_key + "\n")
        env = {k: v for k, v in os.environ.items() if k != "RAFTLOG_API_KEY"}
        env["PYTHONUNBUFFERED"] = "1"
        self._stdout_pending = b""
        log = open(self.log_path, "ab")  # noqa: SIM115 (owned by the process)
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flags.server",
                    "--bootstrap",
                    self.bootstrap,
                    "--api-key-file",
                    str(self.key_path),
                    "--host",
                    self.host,
                    "--eval-port",
                    str(self.eval_port),
                    "--sync-port",
                    str(self.sync_port),
                    "--management-port",
                    str(self.management_port),
                    "--ofrep-port",
                    str(self.ofrep_port),
                    *(["--metrics-port", str(self.metrics_port)] if self.metrics_port else []),
                    *self.extra_args,
                ],
                cwd=self.root,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=self.own_session,
            )
        finally:
            log.close()

    def wait_ready(self, timeout: float = 60.0, interrupted: Callable[[], bool] | None = None) -> None:
        """Wait for the ready line (ports bound, the log read)."""
        self._wait_for_line(READY_LINE, timeout, interrupted)

    def wait_listening(self, timeout: float = 60.0) -> None:
        """Wait for the listening line (ports bound; maybe not ready yet)."""
        self._wait_for_line(LISTENING_LINE, timeout, None)

    def _wait_for_line(self, prefix: bytes, timeout: float, interrupted: Callable[[], bool] | None) -> None:
        """Read stdout until a line starting with ``prefix``, within
        ``timeout`` (a selector with a deadline: a server that hangs
        silently cannot block us). Lines after it stay for the next wait."""
        proc = self.process
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                lines = self._stdout_pending.split(b"\n")
                for index, line in enumerate(lines[:-1]):
                    if line.startswith(prefix):
                        self._stdout_pending = b"\n".join(lines[index + 1 :])
                        return
                self._stdout_pending = lines[-1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"flag server: no {prefix.decode()!r} after {timeout}s:\n{self.log_tail()}"
                    )
                if interrupted is not None and interrupted():
                    raise StartInterrupted("interrupted while the flag server was starting")
                if not selector.select(remaining if interrupted is None else min(remaining, 0.1)):
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    if self._stdout_pending.startswith(prefix):  # a last line without a newline
                        return
                    raise RuntimeError(
                        f"flag server exited ({proc.wait()}) before {prefix.decode()!r}:\n{self.log_tail()}"
                    )
                self._stdout_pending += chunk

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        """The exit status once the process ended (on its own or stopped)."""
        return None if self.process is None else self.process.poll()

    def kill(self) -> int:
        """SIGKILL; returns the exit status."""
        proc = self._take()
        proc.kill()
        return self._reap(proc)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 10.0, on_kill: Callable[[], None] | None = None) -> int:
        """SIGTERM and wait up to ``timeout``; then SIGKILL (after
        ``on_kill()``, if given). Returns the exit status (0: a clean stop)."""
        self.terminate()
        return self.wait_stopped(timeout, on_kill)

    def terminate(self) -> None:
        """Ask the server to stop (SIGTERM) without waiting: to stop it
        together with the cluster, then ``wait_stopped``."""
        proc = self._take()
        # Popen.send_signal skips a reaped process; SIGCONT: a paused one cannot stop.
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 10.0, on_kill: Callable[[], None] | None = None) -> int:
        """Wait up to ``timeout`` for the process to end, then SIGKILL it
        (after ``on_kill()``); returns its exit status."""
        proc = self._take()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if on_kill is not None:
                on_kill()
            proc.kill()
        return self._reap(proc)

    def restart(self, timeout: float = 60.0, *, kill: bool = False) -> int:
        """Stop (or SIGKILL) the server, start it again on the same ports and
        wait until ready; returns the old process's exit status."""
        code = self.kill() if kill else self.stop()
        self.start(timeout)
        return code

    def close(self) -> None:
        """SIGKILL the server if it still runs (cleanup on any way out)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self._reap(self.process)

    def _take(self) -> subprocess.Popen[bytes]:
        assert self.process is not None, "the flag server was never started"
        return self.process

    def _reap(self, proc: subprocess.Popen[bytes]) -> int:
        code = proc.wait()
        if proc.stdout and not proc.stdout.closed:
            proc.stdout.close()
        return code

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
