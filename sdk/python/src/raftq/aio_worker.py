"""``AsyncWorker``: runs an ``async`` handler over a queue's jobs as asyncio
tasks, over one worker stream."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import grpc
import grpc.aio

from raftq import _tracing
from raftq._ledger import FULL_BATCH, MIN_FRAME_GAP, Ledger, default_worker_id
from raftq._proto.raftq.v1 import queue_pb2 as pb
from raftq.client import AsyncClient
from raftq.errors import RaftqError
from raftq.jobs import Job
from raftq.worker import _lease_ms

log = logging.getLogger("raftq")

AsyncHandler = Callable[[Job], Awaitable[object]]


class AsyncWorker:
    """The asyncio form of ``Worker``: the same behaviour, with ``await
    run()`` and an ``async def`` handler. ``stop()`` may be called from any
    task of the loop."""

    def __init__(
        self,
        client: AsyncClient,
        queue: str,
        handler: AsyncHandler,
        *,
        concurrency: int = 1,
        prefetch: int = 0,
        lease: float | timedelta | None = None,
        worker_id: str | None = None,
    ) -> None:
        self._client = client
        self._queue = queue
        self._handler = handler
        self._lease_ms = _lease_ms(lease)
        self._worker_id = worker_id or default_worker_id()
        self._ledger = Ledger(concurrency, prefetch)
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Asks ``run()`` to finish: no new jobs, running handlers finish and
        report, unstarted jobs go back to the queue."""
        self._ledger.stop()
        self._changed.set()

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                if await self._run_stream():
                    return
                delay = 0.1
            except grpc.RpcError as e:
                error = RaftqError.from_rpc(e)
                if not error.retryable:
                    raise error from None
                log.warning("worker stream on %s broke (%s); reconnecting", self._queue, error)
            if self._ledger.done():
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _run_stream(self) -> bool:
        open_ = pb.WorkerOpen(queue=self._queue, worker_id=self._worker_id)
        if self._lease_ms is not None:
            open_.lease_ms = self._lease_ms
        call = self._client.queue.WorkerStream(metadata=self._client.metadata)
        first = self._ledger.take_frame(open_)
        assert first is not None
        writer = asyncio.ensure_future(self._write(call, first))
        try:
            while True:
                frame = await call.read()
                if not isinstance(frame, pb.ServerFrame):  # grpc.aio.EOF
                    break
                self._receive(frame)
            if writer.done():
                writer.result()
        finally:
            if not writer.done():
                writer.cancel()
        return self._ledger.done()

    async def _write(
        self, call: grpc.aio.StreamStreamCall[pb.WorkerFrame, pb.ServerFrame], first: pb.WorkerFrame
    ) -> None:
        frame: pb.WorkerFrame | None = first
        last = 0.0
        try:
            while True:
                if frame is not None:
                    await call.write(frame)
                    last = time.monotonic()
                    frame = None
                gap = time.monotonic() - last
                if gap < MIN_FRAME_GAP and self._ledger.outcomes() < FULL_BATCH:
                    await asyncio.sleep(MIN_FRAME_GAP - gap)
                if self._ledger.done():
                    await call.done_writing()
                    return
                frame = self._ledger.take_frame()
                if frame is None:
                    self._changed.clear()
                    try:
                        await asyncio.wait_for(self._changed.wait(), self._ledger.seconds_to_next_extend())
                    except TimeoutError:
                        pass
        except (grpc.RpcError, asyncio.InvalidStateError):
            # The stream broke: its reader reconnects; keep what was not sent.
            if frame is not None:
                self._ledger.restore(frame)

    def _receive(self, frame: pb.ServerFrame) -> None:
        for result in frame.results:
            if result.code != 0:
                log.warning("job %s: %s", result.token.job_id, result.message)
        for leased in frame.jobs:
            self._ledger.receive(leased)
        # The frame writer plans its next wake-up around these leases.
        self._changed.set()
        self._start_waiting()

    def _start_waiting(self) -> None:
        while (job := self._ledger.next_to_start()) is not None:
            task = asyncio.ensure_future(self._run_one(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_one(self, job: Job) -> None:
        error: BaseException | None = None
        with _tracing.handler_span(job.queue, job.id, job.attempt, job.headers) as span:
            try:
                await self._handler(job)
            except Exception as e:  # the handler's failure is the job's
                error = e
                span.record_exception(e)
                span.set_status(_tracing.error_status(e))
        self._ledger.finish(job.id, error)
        self._changed.set()
        self._start_waiting()
