"""One consumer-group member as its own process, for tests that SIGKILL it.

``python -m tests.integration.group_member_proc BOOTSTRAP API_KEY GROUP TOPIC``
prints ``assigned P,P,...`` / ``revoked P,P,...`` / ``lost P,P,...`` for the
partitions it gains, gives up, or loses with its membership (``on_assigned``,
``on_revoked`` and ``on_lost`` get the change, not the whole assignment) and
``record P OFFSET`` for every record it processed, flushing each line
*before* it commits, so the test knows everything a commit could cover was
seen. Commits manually after every poll (auto commit off); a refused commit
(the membership moved on: a rebalance, a coordinator failover) is reported
on stderr and the member carries on, as an application would: the next
owner reads those records again.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Set

from client import Consumer, RaftlogError, RebalanceCallback
from client.metadata import TopicPartition


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _reporter(kind: str) -> RebalanceCallback:
    def report(partitions: Set[TopicPartition]) -> None:
        _print(f"{kind} " + ",".join(str(p.partition) for p in sorted(partitions)))

    return report


async def main(bootstrap: str, api_key: str, group: str, topic: str) -> None:
    async with Consumer(
        bootstrap,
        api_key=api_key,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=6000,
        on_assigned=_reporter("assigned"),
        on_revoked=_reporter("revoked"),
        on_lost=_reporter("lost"),
        fetch_max_wait_ms=200,
    ) as consumer:
        consumer.subscribe([topic])
        _print("ready")
        while True:
            records = await consumer.poll(0.5)
            for record in records:
                _print(f"record {record.partition} {record.offset}")
            try:
                # Every time, not only after records: a refused commit is
                # retried with whatever the member still owns (committing
                # unchanged positions sends nothing).
                await consumer.commit()
            except RaftlogError as error:
                print(f"commit refused: {error}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
