"""Loaded by a flag server started with this directory on ``PYTHONPATH``
(bench/ofrep_figures.py, ``RAFTLOG_BENCH_PROFILE_SERVER``): profiles the
whole process with cProfile from interpreter start and, at a clean exit
(SIGTERM: the server stops and returns), writes ``<out>.prof`` (pstats)
and ``<out>.txt`` (the top functions by own time and by cumulative time),
``<out>`` being ``$RAFTLOG_BENCH_CPROFILE_OUT``. Does nothing without it.
Only the main thread is profiled: the server's Python code runs there (one
asyncio loop)."""

from __future__ import annotations

import atexit
import cProfile
import io
import os
import pstats


def _start(out: str) -> None:
    profiler = cProfile.Profile()

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(out + ".prof")
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)
        with open(out + ".txt", "w", encoding="utf-8") as f:
            f.write(text.getvalue())

    atexit.register(dump)
    profiler.enable()


_out = os.environ.get("RAFTLOG_BENCH_CPROFILE_OUT")
if _out:
    _start(_out)
