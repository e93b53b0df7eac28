"""A minimal produce/fetch client for the server's integration tests:
leader discovery through NOT_LEADER hints (it asks nodes not to forward),
and an idempotent producer that retries one batch, unchanged, until it is
acknowledged or definitely rejected.

Kept apart from the SDK (client/) on purpose: the kill drill checks the
server's guarantees, so its client is small enough to trust by reading, and
an SDK bug cannot hide a server bug (the SDK has its own kill test)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import grpc

from client.auth import authorized_channel
from cluster.frontend.grpc_errors import error_info
from raftlog.v1 import log_pb2, log_pb2_grpc
from raftlog.v1.record_batch import parse_header

# Route ourselves: a node answers NOT_LEADER with the leader's address instead
# of forwarding, so leader_hint names the leader (the kill drill kills it).
NO_FORWARD = (("raftlog-no-forward", "1"),)

RETRIABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.FAILED_PRECONDITION,  # NOT_LEADER only; others re-raised below
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}


@dataclass
class Attempts:
    sent: int = 0
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class LogClient:
    def __init__(self, addresses: dict[int, str], api_key: str) -> None:
        self.addresses = addresses
        self._channels = {a: authorized_channel(a, api_key) for a in addresses.values()}
        self._stubs = {a: log_pb2_grpc.LogServiceStub(c) for a, c in self._channels.items()}
        self.leader_hint: dict[tuple[str, int], str] = {}
        self.attempts = Attempts()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    def _pick(self, topic: str, partition: int) -> str:
        return self.leader_hint.get((topic, partition)) or random.choice(list(self._stubs))

    def _note_error(self, topic: str, partition: int, address: str, error: grpc.aio.AioRpcError) -> str:
        info = error_info(error)
        reason = info.reason if info is not None else error.code().name
        self.attempts.errors[reason] = self.attempts.errors.get(reason, 0) + 1
        if info is not None and info.leader_address:
            self.leader_hint[(topic, partition)] = info.leader_address
        else:
            others = [a for a in self._stubs if a != address]
            self.leader_hint[(topic, partition)] = random.choice(others)
        return reason

    async def init_producer(self) -> tuple[int, int]:
        while True:
            address = random.choice(list(self._stubs))
            try:
                response = await self._stubs[address].InitProducer(log_pb2.InitProducerRequest(), timeout=2)
                return response.producer_id, response.producer_epoch
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)

    async def produce(
        self, topic: str, partition: int, batch: bytes, *, deadline_s: float = 60.0
    ) -> log_pb2.ProduceResponse:
        """Send ``batch`` until it is acknowledged; raises the AioRpcError of
        a definite rejection (bad batch, producer state)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline_s
        request = log_pb2.ProduceRequest(topic=topic, partition=partition, batch=batch)
        while True:
            address = self._pick(topic, partition)
            self.attempts.sent += 1
            try:
                response: log_pb2.ProduceResponse = await self._stubs[address].Produce(
                    request, timeout=2, metadata=NO_FORWARD
                )
                self.leader_hint[(topic, partition)] = address
                return response
            except grpc.aio.AioRpcError as error:
                reason = self._note_error(topic, partition, address, error)
                definite = error.code() not in RETRIABLE or (
                    error.code() == grpc.StatusCode.FAILED_PRECONDITION and reason != "NOT_LEADER"
                )
                if definite or loop.time() > give_up:
                    raise
                self.attempts.retries += 1
                await asyncio.sleep(0.02)

    async def fetch_all(self, topic: str, partition: int, *, deadline_s: float = 30.0) -> list[bytes]:
        """Every batch from offset 0 up to the high watermark, from the leader."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline_s
        batches: list[bytes] = []
        offset = 0
        while True:
            address = self._pick(topic, partition)
            try:
                response = await self._stubs[address].Fetch(
                    log_pb2.FetchRequest(topic=topic, partition=partition, offset=offset, max_bytes=1 << 20),
                    timeout=2,
                    metadata=NO_FORWARD,
                )
            except grpc.aio.AioRpcError as error:
                self._note_error(topic, partition, address, error)
                if loop.time() > give_up:
                    raise
                await asyncio.sleep(0.05)
                continue
            self.leader_hint[(topic, partition)] = address
            for b in response.batches:
                batches.append(b)
                offset = parse_header(b).last_offset + 1
            if offset >= response.high_watermark:
                return batches
