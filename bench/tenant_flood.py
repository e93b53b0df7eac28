"""``python -m bench.tenant_flood``: one tenant's produce flood, as a child process.

The noisy neighbour of ``bench.tenancy``. It runs in its own process so the
flood's client work (batching, callbacks, gRPC) does not share an event
loop or a core's time slices with the quiet tenant's latency loop in the
driver: what the quiet tenant sees is what the cluster does to it.

Two kinds of flood (``mode`` in the set-up):

- ``raw``: the adversary. Ready-made 64 KiB batches sent with the generated
  stubs straight to each partition's leader, round-robin over partitions,
  paced at ``offered_bytes_s`` whatever the answers say: a refusal's
  retry-after is ignored and the batch is simply dropped (up to
  ``RAW_IN_FLIGHT`` calls at once; a NOT_LEADER answer re-reads the
  leaders). The cluster sees the whole offered load.
- ``sdk``: a polite client. The SDK ``Producer`` with its defaults, fed at
  ``offered_bytes_s``; over its quota it waits out each retry-after and its
  buffer fills, so what reaches the cluster shrinks to about the quota.

Protocol (bench.child_processes): the driver's set-up line is JSON
``{"mode": ..., "bootstrap": [...], "api_key": ..., "topic": ...,
"offered_bytes_s": ..., "record_bytes": ..., "tls_ca": ... | null}``; the
child answers ``ready`` once it can send, then floods. Each ``mark`` line
is answered with one JSON line ``{"acked_bytes": N, "refused": R, "t": T}``
(acknowledged value bytes and refused calls so far, this process's
monotonic clock), so the driver measures over exactly its own window.
When stdin ends the child stops and exits.

Invariants:

- The pacing is by whole records (``sdk``) or batches (``raw``), checked
  every 5 ms; the achieved rate is the quota's doing, never the pacer's
  (the offered rate is ten times the quota).
- Only acknowledged records count: bytes are added when a call or a
  delivery future succeeds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from bench.child_processes import read_setup
from client import Producer
from client.auth import authorized_channel
from raftlog.v1 import log_pb2, log_pb2_grpc, metadata_pb2, metadata_pb2_grpc
from raftlog.v1.record_batch import Record, encode_batch

PACE_S = 0.005
RAW_BATCH_RECORDS = 64
RAW_IN_FLIGHT = 16


class Tally:
    """What the flood achieved so far."""

    def __init__(self) -> None:
        self.acked_bytes = 0
        self.refused = 0


async def _paced(offered_bytes_s: float, unit_bytes: int, send: Callable[[], Awaitable[None]]) -> None:
    """Call ``send`` (which sends ``unit_bytes``) so that the bytes sent
    keep up with ``offered_bytes_s``, until cancelled."""
    started = time.monotonic()
    sent = 0
    while True:
        due = offered_bytes_s * (time.monotonic() - started)
        while sent < due:
            await send()
            sent += unit_bytes
        await asyncio.sleep(PACE_S)


async def _sdk_flood(setup: dict[str, Any], tally: Tally, ready: Callable[[], None]) -> None:
    value = b"f" * int(setup["record_bytes"])
    topic = setup["topic"]

    def count(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            tally.acked_bytes += len(value)

    producer = Producer(setup["bootstrap"], api_key=setup["api_key"], tls_ca=setup.get("tls_ca") or "")
    try:
        await (await producer.send(topic, value))  # metadata and channels before the clock starts
        ready()

        async def send() -> None:
            (await producer.send(topic, value)).add_done_callback(count)

        await _paced(float(setup["offered_bytes_s"]), len(value), send)
    finally:
        await producer.close(timeout_s=0)


class _Leaders:
    """Each partition's leader channel, from ``GetMetadata``."""

    def __init__(self, setup: dict[str, Any]) -> None:
        self._setup = setup
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.stubs: dict[int, log_pb2_grpc.LogServiceStub] = {}

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            setup = self._setup
            self._channels[address] = authorized_channel(
                address, setup["api_key"], tls_ca=setup.get("tls_ca") or ""
            )
        return self._channels[address]

    async def refresh(self) -> bool:
        """Read the leaders again; whether every partition has one."""
        channel = self._channel(self._setup["bootstrap"][0])
        answer = await metadata_pb2_grpc.MetadataServiceStub(channel).GetMetadata(
            metadata_pb2.GetMetadataRequest(topics=[self._setup["topic"]]), timeout=10
        )
        addresses = {node.node_id: node.address for node in answer.nodes}
        complete = bool(answer.topics)
        for topic in answer.topics:
            for partition in topic.partitions:
                if partition.leader in addresses:
                    channel = self._channel(addresses[partition.leader])
                    self.stubs[partition.partition] = log_pb2_grpc.LogServiceStub(channel)
                else:
                    complete = False
        return complete

    async def wait_for_all(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self.refresh():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every partition of {self._setup['topic']} has a leader")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


async def _raw_flood(setup: dict[str, Any], tally: Tally, ready: Callable[[], None]) -> None:
    value = b"f" * int(setup["record_bytes"])
    batch = encode_batch([Record(value)] * RAW_BATCH_RECORDS)
    batch_value_bytes = len(value) * RAW_BATCH_RECORDS
    leaders = _Leaders(setup)
    in_flight = asyncio.Semaphore(RAW_IN_FLIGHT)
    calls: set[asyncio.Task[None]] = set()
    turn = 0
    try:
        await leaders.wait_for_all()
        ready()

        async def one(partition: int) -> None:
            try:
                request = log_pb2.ProduceRequest(topic=setup["topic"], partition=partition, batch=batch)
                await leaders.stubs[partition].Produce(request, timeout=10)
                tally.acked_bytes += batch_value_bytes
            except grpc.aio.AioRpcError as error:
                tally.refused += 1
                if error.code() == grpc.StatusCode.FAILED_PRECONDITION:  # NOT_LEADER
                    await leaders.refresh()
            finally:
                in_flight.release()

        async def send() -> None:
            nonlocal turn
            await in_flight.acquire()
            partition = sorted(leaders.stubs)[turn % len(leaders.stubs)]
            turn += 1
            task = asyncio.create_task(one(partition))
            calls.add(task)
            task.add_done_callback(calls.discard)

        await _paced(float(setup["offered_bytes_s"]), len(batch), send)
    finally:
        for task in list(calls):
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        await leaders.close()


async def main() -> None:
    reader, setup = await read_setup()
    tally = Tally()
    started = asyncio.Event()
    flood = _raw_flood if setup.get("mode", "raw") == "raw" else _sdk_flood
    task = asyncio.create_task(flood(setup, tally, started.set))
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():  # it failed before it could send: say why, not "exited"
        waiting.cancel()
        task.result()
    print("ready", flush=True)
    try:
        while line := (await reader.readline()).decode().strip():
            if line == "mark":
                mark = {"acked_bytes": tally.acked_bytes, "refused": tally.refused, "t": time.monotonic()}
                print(json.dumps(mark), flush=True)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
