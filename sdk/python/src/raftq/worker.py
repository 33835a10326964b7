"""``Worker``: runs a blocking handler over a queue's jobs on a thread pool,
over one worker stream."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from queue import SimpleQueue

from raftq import _tracing
from raftq._ledger import Ledger, default_worker_id
from raftq._proto.raftq.v1 import queue_pb2 as pb
from raftq._stream import StreamLoop, lease_ms
from raftq.client import Client
from raftq.jobs import Job

Handler = Callable[[Job], object]


class Worker:
    """Runs ``handler`` on each job of ``queue``, up to ``concurrency`` at once.

    A return acks the job; an exception nacks it with the exception's text
    (it retries after its backoff, or goes to the dead letters after its last
    attempt; raise ``JobFailed`` to choose). While a handler runs, its lease
    is extended every third of the lease. Acks, nacks, extensions and the
    request for more jobs travel together in one frame. A broken stream is
    reopened with backoff.

    ``prefetch`` jobs more than ``concurrency`` are kept waiting so a free
    slot never waits a round trip for its next job (their leases are
    extended too).

    ``run()`` blocks until ``stop()`` is called (from a handler, a signal
    handler or another thread): it then takes no new job, lets running
    handlers finish and report, and closes the stream, which hands the jobs
    it had been given but not started back to the queue at once.

    Handlers run on ``concurrency`` threads of the worker's own; the stream
    runs on an asyncio loop in the thread that calls ``run()``, over a
    connection of its own with the client's address, TLS and token. Jobs
    reach the threads through a queue and outcomes come back in batches:
    the loop is woken once for all the outcomes that finished meanwhile.
    """

    def __init__(
        self,
        client: Client,
        queue: str,
        handler: Handler,
        *,
        concurrency: int = 1,
        prefetch: int = 0,
        lease: float | timedelta | None = None,
        worker_id: str | None = None,
    ) -> None:
        self._client = client
        self._queue = queue
        self._handler = handler
        self._concurrency = concurrency
        open_ = pb.WorkerOpen(queue=queue, worker_id=worker_id or default_worker_id(), lease_ms=lease_ms(lease))
        self._stream = StreamLoop(queue, self._start, Ledger(concurrency, prefetch), open_)
        self._to_run: SimpleQueue[Job | None] = SimpleQueue()
        # Guards _loop, _stop_asked and _outcomes. Reentrant: a signal
        # handler calling stop() runs in the thread that may hold it.
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_asked = False
        self._outcomes: list[tuple[str, BaseException | None]] = []

    def stop(self) -> None:
        """Asks ``run()`` to finish (returns at once). Safe from any thread
        and from a signal handler."""
        with self._lock:
            self._stop_asked = True
            loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._stream.stop)

    def run(self) -> None:
        """Works until ``stop()``; raises ``RaftqError`` when the node refuses
        the stream for good (a bad queue name, a missing role)."""
        threads = [
            threading.Thread(target=self._handle_jobs, name=f"raftq-{self._queue}-{i}", daemon=True)
            for i in range(self._concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            asyncio.run(self._run())
        finally:
            for _ in threads:
                self._to_run.put(None)
            for thread in threads:
                thread.join()

    async def _run(self) -> None:
        async with self._client.async_twin() as client:
            with self._lock:
                self._loop = asyncio.get_running_loop()
                if self._stop_asked:
                    self._stream.stop()
            try:
                await self._stream.run(client)
            finally:
                with self._lock:
                    self._loop = None

    def _start(self, job: Job) -> None:
        # The ledger starts at most `concurrency` jobs: one is free for it.
        self._to_run.put(job)

    def _handle_jobs(self) -> None:
        """A handler thread: runs jobs until told to end (None)."""
        while (job := self._to_run.get()) is not None:
            error = self._call_handler(job)
            with self._lock:
                wake = not self._outcomes
                self._outcomes.append((job.id, error))
                loop = self._loop
            if wake and loop is not None:
                loop.call_soon_threadsafe(self._report_outcomes)

    def _report_outcomes(self) -> None:
        """On the loop: hands every outcome gathered so far to the stream."""
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        self._stream.finished(outcomes)

    def _call_handler(self, job: Job) -> BaseException | None:
        """The handler, in its span."""
        with _tracing.handler_span(job.queue, job.id, job.attempt, job.headers) as span:
            try:
                self._handler(job)
            except Exception as e:  # the handler's failure is the job's
                span.record_exception(e)
                span.set_status(_tracing.error_status(e))
                return e
        return None
