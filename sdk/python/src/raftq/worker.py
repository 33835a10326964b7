"""``Worker``: runs a blocking handler over a queue's jobs on a thread pool,
over one worker stream."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc

from raftq import _tracing
from raftq._ledger import FULL_BATCH, MIN_FRAME_GAP, Ledger, default_worker_id
from raftq._proto.raftq.v1 import queue_pb2 as pb
from raftq.client import Client
from raftq.errors import RaftqError
from raftq.jobs import Job

log = logging.getLogger("raftq")

Handler = Callable[[Job], object]


def _lease_ms(lease: float | timedelta | None) -> int | None:
    if lease is None:
        return None
    seconds = lease.total_seconds() if isinstance(lease, timedelta) else float(lease)
    return int(seconds * 1000)


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
        self._lease_ms = _lease_ms(lease)
        self._worker_id = worker_id or default_worker_id()
        self._ledger = Ledger(concurrency, prefetch)
        self._changed = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"raftq-{queue}")

    def stop(self) -> None:
        """Asks ``run()`` to finish (returns at once)."""
        with self._changed:
            self._ledger.stop()
            self._changed.notify_all()

    def run(self) -> None:
        """Works until ``stop()``; raises ``RaftqError`` when the node refuses
        the stream for good (a bad queue name, a missing role)."""
        delay = 0.1
        try:
            while True:
                try:
                    if self._run_stream():
                        return
                    delay = 0.1
                except grpc.RpcError as e:
                    error = RaftqError.from_rpc(e)
                    if not error.retryable:
                        raise error from None
                    log.warning("worker stream on %s broke (%s); reconnecting", self._queue, error)
                with self._changed:
                    if self._ledger.done():
                        return
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        finally:
            self._pool.shutdown(wait=True)

    def _run_stream(self) -> bool:
        """One stream, until it ends. True when the worker is done."""
        sent: list[pb.WorkerFrame] = []
        open_ = pb.WorkerOpen(queue=self._queue, worker_id=self._worker_id)
        if self._lease_ms is not None:
            open_.lease_ms = self._lease_ms
        closed = threading.Event()

        def frames() -> Iterator[pb.WorkerFrame]:
            with self._changed:
                first = self._ledger.take_frame(open_)
            assert first is not None
            sent.append(first)
            yield first
            last = time.monotonic()
            while True:
                with self._changed:
                    while True:
                        if closed.is_set() or self._ledger.done():
                            return
                        gap = time.monotonic() - last
                        if gap < MIN_FRAME_GAP and self._ledger.outcomes() < FULL_BATCH:
                            self._changed.wait(MIN_FRAME_GAP - gap)
                            continue
                        frame = self._ledger.take_frame()
                        if frame is not None:
                            break
                        self._changed.wait(self._ledger.seconds_to_next_extend())
                last = time.monotonic()
                sent[:] = [frame]
                yield frame

        call = self._client.queue.WorkerStream(frames(), metadata=self._client.metadata)
        try:
            for server_frame in call:
                sent.clear()
                self._receive(server_frame)
        except grpc.RpcError:
            with self._changed:
                for frame in sent:
                    self._ledger.restore(frame)
            raise
        finally:
            closed.set()
            with self._changed:
                self._changed.notify_all()
        with self._changed:
            return self._ledger.done()

    def _receive(self, frame: pb.ServerFrame) -> None:
        for result in frame.results:
            if result.code != 0:
                log.warning("job %s: %s", result.token.job_id, result.message)
        with self._changed:
            for leased in frame.jobs:
                self._ledger.receive(leased)
            # The frame writer plans its next wake-up around these leases.
            self._changed.notify_all()
        self._start_waiting()

    def _start_waiting(self) -> None:
        while True:
            with self._changed:
                job = self._ledger.next_to_start()
            if job is None:
                return
            self._pool.submit(self._run_one, job)

    def _run_one(self, job: Job) -> None:
        error: BaseException | None = None
        with _tracing.handler_span(job.queue, job.id, job.attempt, job.headers) as span:
            try:
                self._handler(job)
            except Exception as e:  # the handler's failure is the job's
                error = e
                span.record_exception(e)
                span.set_status(_tracing.error_status(e))
        with self._changed:
            self._ledger.finish(job.id, error)
            self._changed.notify_all()
        self._start_waiting()
