"""``MetadataWatch`` (cluster/frontend/metadata_watch.py): a wait is cut
short by a metadata change and by nothing else, and the watcher task ends
once nobody waits. Events, not wall-clock windows: a wait that must end
has 5 s to, one that must not is shown still pending."""

from __future__ import annotations

import asyncio

import pytest

from cluster.frontend import metadata_watch
from cluster.frontend.metadata_watch import MetadataWatch
from tests.cluster.test_key_expiry_revocation import Keys

pytestmark = pytest.mark.timeout(30)

BOUND_S = 5.0


async def test_a_change_cuts_a_wait_short_and_a_wait_that_ends_by_itself_returns() -> None:
    keys = Keys()
    watch = MetadataWatch(keys)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(watch.wait_cut_short(never))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    keys.add("another", keys.keys["rlk_live"])  # any applied change
    await asyncio.wait_for(waiting, BOUND_S)
    assert never.cancelled(), "the wait cut short was not cancelled"
    # Without a change, the wait ends as its awaitable does.
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    await asyncio.wait_for(watch.wait_cut_short(done), BOUND_S)


async def test_several_waiters_are_all_woken_and_the_watcher_ends_when_nobody_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metadata_watch, "IDLE_S", 0.05)
    keys = Keys()
    watch = MetadataWatch(keys)
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(3)]
    waits = [asyncio.ensure_future(watch.wait_cut_short(f)) for f in futures]
    await asyncio.sleep(0.05)
    keys.revoke("rlk_live")
    await asyncio.wait_for(asyncio.gather(*waits), BOUND_S)
    watcher = watch._watcher
    assert watcher is not None
    await asyncio.wait_for(watcher, BOUND_S)  # ends by itself, nothing left behind
