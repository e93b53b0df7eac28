"""``python -m bench.tenant_flood``: one tenant's produce flood, as a child process.

The noisy neighbour of ``bench.tenancy``. It runs in its own process so the
flood's client work (batching, callbacks, gRPC) does not share an event
loop or a core's time slices with the quiet tenant's latency loop in the
driver: what the quiet tenant sees is what the cluster does to it.

Protocol (bench.child_processes): the driver's set-up line is JSON
``{"bootstrap": [...], "api_key": ..., "topic": ..., "offered_bytes_s": ...,
"record_bytes": ..., "tls_ca": ... | null}``; the child answers ``ready``
once its producer has its metadata, then floods. Each ``mark`` line from
the driver is answered with one JSON line ``{"acked_bytes": N, "t": T}``
(acknowledged bytes so far, this process's monotonic clock), so the driver
measures the achieved rate over exactly its own window. When stdin ends the
child stops sending, drops what it has not sent, and exits.

Invariants:

- The offered load is paced at ``offered_bytes_s`` (whole records, a
  check every 5 ms), not "as fast as possible": over a quota the SDK waits
  out the server's retry-after on its own, so the achieved rate is the
  quota's doing, never the pacer's.
- Only acknowledged records count: a record's bytes are added when its
  delivery future resolves without an error.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench.child_processes import read_setup
from client import Producer

PACE_S = 0.005


async def main() -> None:
    reader, setup = await read_setup()
    value = b"f" * int(setup["record_bytes"])
    offered = float(setup["offered_bytes_s"])
    acked = 0
    stop = False

    def count(future: asyncio.Future[Any]) -> None:
        nonlocal acked
        if not future.cancelled() and future.exception() is None:
            acked += len(value)

    options: dict[str, Any] = {"api_key": setup["api_key"]}
    if setup.get("tls_ca"):
        options["tls_ca"] = setup["tls_ca"]
    producer = Producer(setup["bootstrap"], **options)
    topic = setup["topic"]
    await (await producer.send(topic, value))  # metadata and channels before the clock starts
    print("ready", flush=True)

    async def pump() -> None:
        started = time.monotonic()
        sent_bytes = 0
        while not stop:
            due = offered * (time.monotonic() - started)
            while sent_bytes < due and not stop:
                (await producer.send(topic, value)).add_done_callback(count)
                sent_bytes += len(value)
            await asyncio.sleep(PACE_S)

    task = asyncio.create_task(pump())
    try:
        while line := (await reader.readline()).decode().strip():
            if line == "mark":
                print(json.dumps({"acked_bytes": acked, "t": time.monotonic()}), flush=True)
    finally:
        stop = True
        await task
        await producer.close(timeout_s=0)


if __name__ == "__main__":
    asyncio.run(main())
