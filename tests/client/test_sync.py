"""The sync facades' hand-over of outcomes between the loop and callers."""

from __future__ import annotations

import asyncio
import concurrent.futures

from client.sync import _copy_outcome


async def test_an_outcome_is_copied_unless_the_caller_cancelled_the_future() -> None:
    loop = asyncio.get_running_loop()
    source: asyncio.Future[int] = loop.create_future()
    source.set_result(7)
    target: concurrent.futures.Future[int] = concurrent.futures.Future()
    _copy_outcome(source, target)
    assert target.result(timeout=0) == 7

    failing: asyncio.Future[int] = loop.create_future()
    failing.set_exception(ValueError("no"))
    target = concurrent.futures.Future()
    _copy_outcome(failing, target)
    assert isinstance(target.exception(timeout=0), ValueError)

    cancelled_by_caller: concurrent.futures.Future[int] = concurrent.futures.Future()
    assert cancelled_by_caller.cancel()
    _copy_outcome(source, cancelled_by_caller)  # used to raise InvalidStateError
    assert cancelled_by_caller.cancelled()
