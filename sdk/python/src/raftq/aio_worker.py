"""``AsyncWorker``: runs an ``async`` handler over a queue's jobs as asyncio
tasks, over one worker stream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from raftq import _tracing
from raftq._ledger import Ledger, default_worker_id
from raftq._proto.raftq.v1 import queue_pb2 as pb
from raftq._stream import StreamLoop, lease_ms
from raftq.client import AsyncClient
from raftq.jobs import Job

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
        self._handler = handler
        open_ = pb.WorkerOpen(queue=queue, worker_id=worker_id or default_worker_id(), lease_ms=lease_ms(lease))
        self._stream = StreamLoop(queue, self._start, Ledger(concurrency, prefetch), open_)
        self._tasks: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Asks ``run()`` to finish: no new jobs, running handlers finish and
        report, unstarted jobs go back to the queue."""
        self._stream.stop()

    async def run(self) -> None:
        """Works until ``stop()``; raises ``RaftqError`` when the node refuses
        the stream for good (a bad queue name, a missing role)."""
        await self._stream.run(self._client)

    def _start(self, job: Job) -> None:
        task = asyncio.ensure_future(self._run_one(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_one(self, job: Job) -> None:
        error: BaseException | None = None
        with _tracing.handler_span(job.queue, job.id, job.attempt, job.headers) as span:
            try:
                await self._handler(job)
            except Exception as e:  # the handler's failure is the job's
                span.record_exception(e)
                span.set_status(_tracing.error_status(e))
                error = e
        self._stream.finished([(job.id, error)])
