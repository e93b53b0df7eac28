"""Blocking facades for scripts: ``SyncProducer`` and ``SyncConsumer``.

Each facade owns a private event loop running in a daemon thread and the
async object living on it; every method hands a coroutine to that loop and
blocks until it finishes. Nothing of the async object is touched from the
caller's thread.

Invariants:

- ``SyncProducer.send`` returns once the record is queued (like the async
  ``send``), so records sent one after another from one thread keep their
  order; the returned ``concurrent.futures.Future`` resolves when the
  record is acknowledged or fails.
- ``close()`` closes the async object on its loop, then stops the loop and
  joins the thread. A facade is single-use.
- A subscribed ``SyncConsumer``'s group membership (heartbeats, auto
  commits, rebalances) runs on the loop thread, so it goes on while the
  caller's thread processes records between polls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from client.consumer import Consumer, ConsumerRecord
from client.metadata import TopicPartition
from client.producer import Producer, RecordMetadata

__all__ = ["SyncConsumer", "SyncProducer"]

T = TypeVar("T")
C = TypeVar("C", Producer, Consumer)


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync facade method was called from its own event loop thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call(self, fn: Callable[[], T]) -> T:
        """Run a plain function on the loop thread and return its result."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class _Facade(Generic[C]):
    """A loop thread and the async client (made by ``make``) living on it;
    a context manager that closes them."""

    def __init__(self, make: Callable[[], C], thread_name: str) -> None:
        self._thread = _LoopThread(thread_name)
        try:
            self._client: C = self._thread.call(make)
        except BaseException:
            self._thread.stop()
            raise
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._close(self._client.close)

    def _close(self, closing: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``closing()`` on the loop once, then stop the loop thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._thread.run(closing())
        finally:
            self._thread.stop()


class SyncProducer(_Facade[Producer]):
    """``Producer`` for blocking code. Takes the same arguments."""

    def __init__(self, bootstrap: str | Sequence[str], **options: Any) -> None:
        super().__init__(lambda: Producer(bootstrap, **options), "raftlog-sync-producer")

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Iterable[tuple[str, bytes]] = (),
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> concurrent.futures.Future[RecordMetadata]:
        """Queue one record (blocking only until it is queued); the future
        resolves with its ``RecordMetadata`` or error."""
        result: concurrent.futures.Future[RecordMetadata] = concurrent.futures.Future()
        header_list = list(headers)

        async def send() -> None:
            future = await self._client.send(topic, value, key, header_list, partition, timestamp_ms)
            future.add_done_callback(lambda f: _copy_outcome(f, result))

        self._thread.run(send())
        return result

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every queued record is acknowledged or failed."""
        self._thread.run(self._client.flush(), timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        """Deliver what is queued (see ``Producer.close``) and stop the
        loop thread."""
        self._close(lambda: self._client.close(timeout_s))


class SyncConsumer(_Facade[Consumer]):
    """``Consumer`` for blocking code. Takes the same arguments."""

    def __init__(self, bootstrap: str | Sequence[str], **options: Any) -> None:
        super().__init__(lambda: Consumer(bootstrap, **options), "raftlog-sync-consumer")

    def __iter__(self) -> Iterator[ConsumerRecord]:
        """Records as they arrive, until closed. One record per step, so
        the position never runs ahead of what the loop has seen (use
        ``poll`` for throughput)."""
        while not self._closed:
            yield from self.poll(1.0, max_records=1)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # As the async consumer's ``async with``: on an exception only the
        # records of earlier polls count as processed.
        self._close(lambda: self._client._close(commit_returned=exc is None))

    def close(self) -> None:
        """Close the consumer (see ``Consumer.close``: a subscribed consumer
        commits and leaves its group) and stop the loop thread."""
        self._close(self._client.close)

    def subscribe(self, topics: Iterable[str] | str) -> None:
        """See ``Consumer.subscribe``."""
        wanted: str | list[str] = topics if isinstance(topics, str) else list(topics)
        self._thread.call(lambda: self._client.subscribe(wanted))

    def unsubscribe(self) -> None:
        """See ``Consumer.unsubscribe``."""
        self._thread.run(self._client.unsubscribe())

    def subscription(self) -> frozenset[str] | None:
        return self._thread.call(self._client.subscription)

    def commit(self, offsets: Mapping[tuple[str, int], int] | None = None) -> dict[TopicPartition, int]:
        """See ``Consumer.commit``."""
        given = dict(offsets) if offsets is not None else None
        return self._thread.run(self._client.commit(given))

    def committed(
        self, partitions: Iterable[tuple[str, int]] | None = None
    ) -> dict[TopicPartition, int | None]:
        """See ``Consumer.committed``."""
        wanted = list(partitions) if partitions is not None else None
        return self._thread.run(self._client.committed(wanted))

    @property
    def member_id(self) -> str:
        return self._thread.call(lambda: self._client.member_id)

    @property
    def member_epoch(self) -> int | None:
        return self._thread.call(lambda: self._client.member_epoch)

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        wanted = list(partitions)
        self._thread.call(lambda: self._client.assign(wanted))

    def assignment(self) -> set[TopicPartition]:
        return self._thread.call(self._client.assignment)

    def position(self, tp: tuple[str, int]) -> int | None:
        return self._thread.call(lambda: self._client.position(tp))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._thread.call(lambda: self._client.seek(topic, partition, offset))

    def seek_to_beginning(self, *partitions: tuple[str, int]) -> None:
        self._thread.run(self._client.seek_to_beginning(*partitions))

    def seek_to_end(self, *partitions: tuple[str, int]) -> None:
        self._thread.run(self._client.seek_to_end(*partitions))

    def seek_to_timestamp(
        self, timestamp_ms: int, *partitions: tuple[str, int]
    ) -> dict[TopicPartition, int | None]:
        return self._thread.run(self._client.seek_to_timestamp(timestamp_ms, *partitions))

    def poll(self, timeout_s: float = 1.0, *, max_records: int | None = None) -> list[ConsumerRecord]:
        return self._thread.run(self._client.poll(timeout_s, max_records=max_records))


def _copy_outcome(source: asyncio.Future[T], target: concurrent.futures.Future[T]) -> None:
    """Copy a finished asyncio future's outcome to a concurrent future,
    unless the caller has cancelled that one. Marking it running first (as
    asyncio's own ``_set_concurrent_future_state`` does) is atomic: once it
    succeeds, the caller can no longer cancel it before the result is set."""
    if source.cancelled():
        target.cancel()
        return
    if not target.set_running_or_notify_cancel():
        return  # cancelled by the caller: nobody wants the outcome
    if (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())
