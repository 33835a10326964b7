"""One worker stream and its reconnects, on asyncio: what ``AsyncWorker``
and the thread-pool ``Worker`` share. It owns the stream and the ledger; how
a job's handler runs (an asyncio task, a pool thread) is the caller's
``start``, which reports each outcome back through ``finished``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

import grpc
import grpc.aio

from raftq import _tracing
from raftq._ledger import FULL_BATCH, MIN_FRAME_GAP, Ledger
from raftq._proto.raftq.v1 import queue_pb2 as pb
from raftq.client import AsyncClient
from raftq.errors import RaftqError
from raftq.jobs import Job

log = logging.getLogger("raftq")

Start = Callable[[Job], None]


def lease_ms(lease: float | timedelta | None) -> int | None:
    if lease is None:
        return None
    seconds = lease.total_seconds() if isinstance(lease, timedelta) else float(lease)
    return int(seconds * 1000)


class StreamLoop:
    """Jobs of ``queue`` over one worker stream at a time, until ``stop()``.
    Every method runs on the event loop's thread."""

    def __init__(self, queue: str, start: Start, ledger: Ledger, open_: pb.WorkerOpen) -> None:
        self._queue = queue
        self._start = start
        self._ledger = ledger
        self._open = open_
        self._changed = asyncio.Event()

    def stop(self) -> None:
        """No new jobs; running handlers finish and report, unstarted jobs
        go back to the queue."""
        self._ledger.stop()
        self._changed.set()

    async def run(self, client: AsyncClient) -> None:
        """Works until stopped; raises ``RaftqError`` when the node refuses
        the stream for good (a bad queue name, a missing role)."""
        delay = 0.1
        while True:
            try:
                if await self._run_stream(client):
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

    async def _run_stream(self, client: AsyncClient) -> bool:
        """One stream, until it ends. True when the worker is done."""
        stub, metadata, leader = client.target(self._queue)
        call = stub.WorkerStream(metadata=metadata)
        first = self._ledger.take_frame(self._open)
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
        except grpc.RpcError as e:
            # Learn where the leader went before the stream is reopened.
            await client.observe(leader, e)
            raise
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
                # Frames at most every MIN_FRAME_GAP unless a batch is full:
                # the node refuses a flood of tiny frames, and bigger ones
                # cost it less.
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
        if frame.jobs:
            _tracing.look_for_sdk()
        for leased in frame.jobs:
            self._ledger.receive(leased)
        # The frame writer plans its next wake-up around these leases.
        self._changed.set()
        self._start_waiting()

    def _start_waiting(self) -> None:
        while (job := self._ledger.next_to_start()) is not None:
            self._start(job)

    def finished(self, outcomes: list[tuple[str, BaseException | None]]) -> None:
        """Handlers' outcomes (job id, failure or None): acks and nacks for
        the next frame, and free slots for the jobs waiting."""
        for job_id, error in outcomes:
            self._ledger.finish(job_id, error)
        self._changed.set()
        self._start_waiting()
