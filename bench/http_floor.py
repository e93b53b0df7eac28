"""The HTTP framework's own floor for the OFREP figures: a bare aiohttp app.

``python -m bench.http_floor LOOP`` serves ``POST /ofrep/v1/evaluate/flags``
on a free port of 127.0.0.1 (printed on stdout) with nothing of the flag
server: ``304`` (with an ``ETag``) when the request has ``If-None-Match``,
else ``200`` with a fixed body of 100 flag entries. ``measure_floor`` runs
bench.ofrep_load's ``revalidate`` job against it, with the same clients as
the flag server's run: what aiohttp and the event loop alone cost per
request on this machine, the bound under ``ofrep_304_rps``
(``reference.aiohttp_304_rps`` and ``aiohttp_304_cpu_us``).

Invariants: the server process is this module only (aiohttp, uvloop); it
reads the whole body before answering, as the flag server does; it stops
when its stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from aiohttp import web

from bench.child_processes import ChildProcess, stdin_reader
from bench.ofrep_load import BULK_PATH, LoadSpec, run_load

BODY = json.dumps(
    {
        "flags": [
            {"key": f"flag-{i:04d}", "value": True, "variant": "on", "reason": "STATIC"} for i in range(100)
        ]
    },
    separators=(",", ":"),
).encode()


async def _answer(request: web.Request) -> web.Response:
    await request.read()
    if request.headers.get("If-None-Match"):
        return web.Response(status=304, headers={"ETag": '"floor"'})
    return web.Response(body=BODY, content_type="application/json", headers={"ETag": '"floor"'})


async def _serve() -> None:
    app = web.Application()
    app.router.add_post(BULK_PATH, _answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(runner.addresses[0][1], flush=True)
    reader = await stdin_reader()
    await reader.read()  # until the driver closes our stdin
    await runner.cleanup()


async def measure_floor(spec: LoadSpec, event_loop: str) -> dict[str, Any]:
    """``spec`` (a ``revalidate`` job) against the bare app; its rate and CPU."""
    from bench.flag_server import _cpu_s  # (not in the floor server's own process)

    server = await ChildProcess.start("bench.http_floor", event_loop, name="the floor server")
    try:
        port = int(await server.line())
        result = await run_load("127.0.0.1", port, spec, server_cpu_s=lambda: _cpu_s(server.process.pid))
    finally:
        await server.stop()
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "uvloop":
        import uvloop

        uvloop.run(_serve())
    else:
        asyncio.run(_serve())


if __name__ == "__main__":
    main()
