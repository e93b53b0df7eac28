"""Bench child processes (``python -m bench.<module>``) and the line protocol they speak.

The load clients (bench.ofrep_load), the stream listeners
(bench.listener_processes, for bench.flag_streams and bench.sse_streams)
and the bare HTTP floor server (bench.http_floor) are child processes of the
bench driver that talk to it one line at a time on their stdin/stdout:
the driver's first line is a JSON set-up (``read_setup`` on the child's
side), then words or JSON lines as each protocol says.

Invariants:

- Secrets (SDK keys) travel in the set-up line, on a pipe: never on a
  command line, where ``ps`` shows them.
- A child whose stdout ends is an error naming it (``RuntimeError``), never
  an empty answer.
- ``stop`` closes the child's stdin (every child here stops when it ends),
  waits up to 10 s, then kills it: after ``stop`` the process is gone.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, Self

DUMP_LINE_LIMIT = 64 << 20
"""The longest line read from a child: a dump of every receipt is one line."""


class ChildProcess:
    """One child process and its line protocol (the driver's side)."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        """What it is, for errors: "a load client", "a stream listener"."""

    @classmethod
    async def start(cls, module: str, *args: str, name: str, limit: int = DUMP_LINE_LIMIT) -> Self:
        """``python -m <module> <args>`` with pipes on its stdin and stdout."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=limit,
        )
        return cls(process, name)

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def line(self) -> str:
        assert self.process.stdout is not None
        raw = await self.process.stdout.readline()
        if not raw:
            raise RuntimeError(f"{self.name} exited ({await self.process.wait()})")
        return raw.decode().strip()

    async def expect(self, wanted: str) -> None:
        got = await self.line()
        if got != wanted:
            raise RuntimeError(f"{self.name} said {got[:300]!r}, not {wanted!r}")

    async def stop(self) -> None:
        if self.process.returncode is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` shares that differ by one at most, the larger first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def stdin_reader() -> asyncio.StreamReader:
    """The child's side: its stdin, read without blocking the event loop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def read_setup() -> tuple[asyncio.StreamReader, dict[str, Any]]:
    """The child's side: its stdin, and the set-up line read from it."""
    reader = await stdin_reader()
    setup: dict[str, Any] = json.loads(await reader.readline())
    return reader, setup
