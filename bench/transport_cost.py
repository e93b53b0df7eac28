"""What carrying Raft batches costs: a grpc.aio byte stream against
length-prefixed frames on plain asyncio streams (issue 20: "measure both").

The node-to-node transport (cluster/transport/) sends each peer's batches
as raw ``bytes`` messages of one gRPC bidirectional stream and reads
cumulative acks back. This module measures that shape alone, with nothing
of Raft, and the same traffic as 4-byte length-prefixed frames on an
``asyncio`` TCP stream: the cheapest transport Python offers, and the
candidate the issue names. Both ends run the default asyncio loop in two
processes on loopback, plaintext, as the nodes do.

Per size, ``messages`` messages go from this process to a receiver in a
child process, which reads every one and answers one 8-byte ack per 8
messages (the transport throttles acks in the same spirit). Figures per
message: the sender's CPU (``send_cpu_ms``), the receiver's
(``receive_cpu_ms``, read from the child's own ``getrusage``, so its gRPC
threads count too), and wall time (``wall_ms``). Run:

    python -m bench.transport_cost [--sizes 1000,262144,1048576] [--messages 2000]

What it showed on the 2-core machine (bench/README.md, "Where it stops on
this machine"): a small message costs gRPC about 0.1 ms of CPU on the two
ends together against 0.014 ms as a frame; 256 KiB about 0.5 against 0.14 ms; 1 MiB
about 1.5 against 0.6 ms (the receiver reads each frame straight into a
buffer of its size, ``asyncio.BufferedProtocol``). It is not wired into
``make bench``: it decides a design question, not a figure users read.

Invariants: each measurement gets a fresh receiver process and a fresh
connection; the sender counts only its own process's CPU between the
first write and the last ack; a receiver that reads fewer bytes than were
sent, or a run longer than ``timeout_s``, fails the run (``RuntimeError``,
``TimeoutError``), never reports a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import struct
import time
from typing import Any

import grpc

from bench.child_processes import ChildProcess, stdin_reader

METHOD = "/bench.Transport/Stream"
ACK_EVERY = 8
_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
_FRAME = struct.Struct(">I")
_ACK = struct.Struct(">Q")
KINDS = ("grpc", "frames")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the receiving child --------------------------------------------------------


class _Received:
    """What the receiver read: messages and payload bytes."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0


async def _serve_grpc(received: _Received) -> tuple[Any, int]:
    async def stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        async for data in requests:
            received.messages += 1
            received.bytes += len(data)
            if received.messages % ACK_EVERY == 0:
                yield _ACK.pack(received.messages)
        yield _ACK.pack(received.messages)

    server = grpc.aio.server(options=_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        "bench.Transport", {"Stream": grpc.stream_stream_rpc_method_handler(stream)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


class _FrameReceiver(asyncio.BufferedProtocol):
    """Reads frames straight into a buffer of the frame's size (``recv_into``:
    the kernel's copy is the only one), acking every ``ACK_EVERY``."""

    def __init__(self, received: _Received) -> None:
        self._received = received
        self._header = bytearray(_FRAME.size)
        self._body: bytearray | None = None
        self._filled = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        target = self._header if self._body is None else self._body
        return memoryview(target)[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        if self._body is None:
            if self._filled == _FRAME.size:
                (size,) = _FRAME.unpack(self._header)
                self._body, self._filled = bytearray(size), 0
            return
        if self._filled < len(self._body):
            return
        received = self._received
        received.messages += 1
        received.bytes += len(self._body)
        self._body, self._filled = None, 0
        if received.messages % ACK_EVERY == 0 and self._transport is not None:
            self._transport.write(_ACK.pack(received.messages))

    def eof_received(self) -> bool:  # the sender finished: the last ack, then close
        if self._transport is not None:
            self._transport.write(_ACK.pack(self._received.messages))
        return False


async def _serve_frames(received: _Received) -> tuple[Any, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _FrameReceiver(received), "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def serve(kind: str) -> None:
    """The receiver: prints ``ready PORT``; then answers each ``stats``
    line on stdin with its CPU seconds and what it read; stops at EOF."""
    received = _Received()
    server, port = await (_serve_grpc(received) if kind == "grpc" else _serve_frames(received))
    print(f"ready {port}", flush=True)
    commands = await stdin_reader()
    while line := await commands.readline():
        if line.strip() == b"stats":
            print(
                json.dumps({"cpu_s": _cpu_s(), "messages": received.messages, "bytes": received.bytes}),
                flush=True,
            )
    if kind == "grpc":
        await server.stop(None)
    else:
        server.close()


# --- the sender -------------------------------------------------------------------


async def _send_grpc(port: int, payload: bytes, messages: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_OPTIONS) as channel:
        call = channel.stream_stream(METHOD)()

        async def read_acks() -> None:
            async for _ in call:
                pass

        reader = asyncio.create_task(read_acks())
        for _ in range(messages):
            await call.write(payload)
        await call.done_writing()
        await reader


async def _send_frames(port: int, payload: bytes, messages: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    header = _FRAME.pack(len(payload))

    async def read_acks() -> None:
        while await reader.read(1 << 16):
            pass

    acks = asyncio.create_task(read_acks())
    for _ in range(messages):
        writer.writelines((header, payload))
        await writer.drain()
    writer.write_eof()
    await acks
    writer.close()


async def _stats(child: ChildProcess) -> dict[str, Any]:
    await child.send("stats")
    parsed: dict[str, Any] = json.loads(await child.line())
    return parsed


async def _measure_one(kind: str, size: int, messages: int) -> dict[str, Any]:
    child = await ChildProcess.start("bench.transport_cost", "--serve", kind, name=f"the {kind} receiver")
    try:
        ready = await child.line()
        if not ready.startswith("ready "):
            raise RuntimeError(f"{child.name} did not start: {ready!r}")
        port = int(ready.split()[1])
        send = _send_grpc if kind == "grpc" else _send_frames
        payload = b"r" * size
        await send(port, payload, min(messages, 50))  # connect, warm up
        before = await _stats(child)
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        await send(port, payload, messages)
        cpu1, wall1 = _cpu_s(), time.perf_counter()
        after = await _stats(child)
    finally:
        await child.stop()
    got = after["bytes"] - before["bytes"]
    if got != size * messages:
        raise RuntimeError(f"{kind}: the receiver read {got} bytes of {size * messages} sent")
    return {
        "kind": kind,
        "message_bytes": size,
        "messages": messages,
        "send_cpu_ms": round((cpu1 - cpu0) * 1000 / messages, 4),
        "receive_cpu_ms": round((after["cpu_s"] - before["cpu_s"]) * 1000 / messages, 4),
        "wall_ms": round((wall1 - wall0) * 1000 / messages, 4),
    }


def measure_one(kind: str, size: int, messages: int, timeout_s: float = 120.0) -> dict[str, Any]:
    """Send ``messages`` messages of ``size`` bytes over ``kind`` to a fresh
    receiver process; the per-message CPU of both ends and wall time."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return asyncio.run(asyncio.wait_for(_measure_one(kind, size, messages), timeout_s))


def measure(sizes: tuple[int, ...] = (1000, 256 * 1024, 1 << 20), messages: int = 2000) -> dict[str, Any]:
    """Both transports at every size; ``frames_vs_grpc_cpu`` is the frames'
    CPU (both ends) over gRPC's, per size."""
    rows = [measure_one(kind, size, messages) for size in sizes for kind in KINDS]
    ratios = {}
    for size in sizes:
        grpc_row, frames_row = (
            next(r for r in rows if r["kind"] == k and r["message_bytes"] == size) for k in KINDS
        )
        both = grpc_row["send_cpu_ms"] + grpc_row["receive_cpu_ms"]
        ratios[str(size)] = (
            round((frames_row["send_cpu_ms"] + frames_row["receive_cpu_ms"]) / both, 3) if both else None
        )
    return {"runs": rows, "frames_vs_grpc_cpu": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU per message: grpc.aio stream vs asyncio frames")
    parser.add_argument(
        "--sizes", default="1000,262144,1048576", help="message sizes in bytes, comma-separated"
    )
    parser.add_argument("--messages", type=int, default=2000, help="messages per size and transport")
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)  # the receiving child
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    sizes = tuple(int(s) for s in args.sizes.split(",") if s)
    if not sizes or min(sizes) < 1 or args.messages < 1:
        parser.error("--sizes must be positive integers and --messages at least 1")
    print(json.dumps(measure(sizes, args.messages), indent=2))


if __name__ == "__main__":
    main()
