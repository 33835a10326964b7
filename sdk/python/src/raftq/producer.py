"""Enqueueing jobs: ``Producer`` (blocking) and ``AsyncProducer``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import grpc

from raftq._limits import MAX_ENQUEUE_BATCH
from raftq._proto.raftq.v1 import queue_pb2 as pb
from raftq.jobs import Backoff, NewJob

if TYPE_CHECKING:
    from raftq.client import AsyncClient, Client, RetryPolicy


def _request(queue: str, jobs: Iterable[NewJob]) -> pb.EnqueueRequest:
    protos = [job.to_proto() for job in jobs]
    if not protos:
        raise ValueError("nothing to enqueue: pass at least one job")
    if len(protos) > MAX_ENQUEUE_BATCH:
        raise ValueError(f"{len(protos)} jobs in one request; the limit is {MAX_ENQUEUE_BATCH}")
    return pb.EnqueueRequest(queue=queue, jobs=protos)


def _single(ids: list[str]) -> str:
    if len(ids) != 1:
        raise RuntimeError(f"the node answered {len(ids)} ids for one job")
    return ids[0]


class Producer:
    """Enqueues jobs, retrying through elections and restarts."""

    def __init__(self, client: Client, retry: RetryPolicy) -> None:
        self._client = client
        self._retry = retry

    def enqueue(
        self,
        queue: str,
        payload: bytes | str,
        *,
        headers: dict[str, str] | None = None,
        priority: int = 0,
        delay: float | timedelta | None = None,
        run_at: datetime | float | None = None,
        max_attempts: int = 0,
        backoff: Backoff | None = None,
        idempotency_key: str = "",
    ) -> str:
        """Enqueues one job and returns its id (see ``NewJob`` for the options)."""
        job = NewJob(payload, dict(headers or {}), priority, delay, run_at, max_attempts, backoff, idempotency_key)
        return _single(self.enqueue_many(queue, [job]))

    def enqueue_many(self, queue: str, jobs: Iterable[NewJob]) -> list[str]:
        """Enqueues up to 10,000 jobs in one request, all or nothing, and
        returns their ids in order."""
        request = _request(queue, jobs)
        client = self._client

        def attempt() -> pb.EnqueueResponse:
            # Each try asks for the route again: a failed one may have
            # taught the client where the leader went.
            stub, metadata, leader = client.target(queue)
            try:
                response: pb.EnqueueResponse = stub.Enqueue(request, metadata=metadata)
                return response
            except grpc.RpcError as e:
                client.observe(leader, e)
                raise

        return list(self._retry.run(attempt).job_ids)


class AsyncProducer:
    """Enqueues jobs from asyncio code, retrying through elections and restarts."""

    def __init__(self, client: AsyncClient, retry: RetryPolicy) -> None:
        self._client = client
        self._retry = retry

    async def enqueue(
        self,
        queue: str,
        payload: bytes | str,
        *,
        headers: dict[str, str] | None = None,
        priority: int = 0,
        delay: float | timedelta | None = None,
        run_at: datetime | float | None = None,
        max_attempts: int = 0,
        backoff: Backoff | None = None,
        idempotency_key: str = "",
    ) -> str:
        job = NewJob(payload, dict(headers or {}), priority, delay, run_at, max_attempts, backoff, idempotency_key)
        return _single(await self.enqueue_many(queue, [job]))

    async def enqueue_many(self, queue: str, jobs: Iterable[NewJob]) -> list[str]:
        request = _request(queue, jobs)
        client = self._client

        async def attempt() -> pb.EnqueueResponse:
            stub, metadata, leader = client.target(queue)
            try:
                response: pb.EnqueueResponse = await stub.Enqueue(request, metadata=metadata)
                return response
            except grpc.RpcError as e:
                await client.observe(leader, e)
                raise

        return list((await self._retry.run_async(attempt)).job_ids)
