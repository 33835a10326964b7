"""What a worker stream owes the node, kept apart from any I/O so the
blocking and the asyncio worker share it: the jobs running, their next
lease extension, the acks and nacks not sent yet, and the credit they free.
Not thread-safe: the blocking worker holds a lock around it."""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta

from raftq._limits import error_text
from raftq._proto.raftq.v1 import queue_pb2 as pb
from raftq.jobs import Job, job_from_leased

#: The shortest lease the worker plans extensions around, in seconds.
_MIN_LEASE = 0.3
#: The shortest time between two frames of a stream, unless FULL_BATCH
#: outcomes wait: the node refuses a flood of tiny frames, and bigger ones
#: cost it less.
MIN_FRAME_GAP = 0.002
FULL_BATCH = 1024


class JobFailed(Exception):
    """Raise from a handler to choose what happens to the job: retry after
    ``retry_after`` seconds (instead of the job's backoff), or, with
    ``dead=True``, go to the dead letters now. Any other exception retries
    the job after its backoff; both record the message as the job's error."""

    def __init__(self, message: str, *, retry_after: float | timedelta | None = None, dead: bool = False) -> None:
        super().__init__(message)
        if isinstance(retry_after, timedelta):
            retry_after = retry_after.total_seconds()
        self.retry_after = retry_after
        self.dead = dead


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def nack_for(token: pb.LeaseToken, error: BaseException) -> pb.NackItem:
    text = str(error) or type(error).__name__
    if not isinstance(error, JobFailed):
        text = f"{type(error).__name__}: {text}"
    item = pb.NackItem(token=token, error=error_text(text))
    if isinstance(error, JobFailed):
        item.dead = error.dead
        if error.retry_after is not None:
            item.retry_delay_ms = max(0, int(error.retry_after * 1000))
    return item


@dataclass
class _Held:
    token: pb.LeaseToken
    every: float
    next_extend: float
    released: bool = False


class _ExtensionSchedule:
    """The held jobs by their next extension (a heap), so a worker holding
    thousands of jobs finds the due ones without a scan. A released job's
    entry stays until it surfaces or the heap is compacted."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Held]] = []
        self._order = itertools.count()

    def add(self, held: _Held) -> None:
        heapq.heappush(self._heap, (held.next_extend, next(self._order), held))

    def _drop_released(self) -> None:
        while self._heap and self._heap[0][2].released:
            heapq.heappop(self._heap)

    def soonest(self) -> float | None:
        self._drop_released()
        return self._heap[0][0] if self._heap else None

    def take_due(self, now: float) -> list[pb.LeaseToken]:
        """The tokens due for extension at ``now``, each rescheduled."""
        due = []
        self._drop_released()
        while self._heap and self._heap[0][0] <= now:
            held = heapq.heappop(self._heap)[2]
            due.append(held.token)
            held.next_extend = now + held.every
            self.add(held)
            self._drop_released()
        return due

    def compact(self, live: int) -> None:
        """Drops released entries once they outnumber the live ones."""
        if len(self._heap) > 2 * live + 64:
            self._heap = [entry for entry in self._heap if not entry[2].released]
            heapq.heapify(self._heap)


class Ledger:
    """The jobs a worker holds (running, or pushed and waiting for a free
    slot when ``prefetch`` > 0), and what it owes the node about them."""

    def __init__(self, concurrency: int, prefetch: int = 0) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if prefetch < 0:
            raise ValueError("prefetch must be 0 or more")
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.held: dict[str, _Held] = {}
        self._extensions = _ExtensionSchedule()
        self.waiting: deque[Job] = deque()
        self.active = 0
        self.acks: list[pb.LeaseToken] = []
        self.nacks: list[pb.NackItem] = []
        # Credit granted on the current stream and not yet used by a push.
        self.outstanding = 0
        self.stopping = False

    def receive(self, leased: pb.LeasedJob, now: float | None = None) -> None:
        """Records a job the node pushed; it waits for a free slot."""
        now = time.time() if now is None else now
        self.outstanding = max(0, self.outstanding - 1)
        job = job_from_leased(leased)
        if self.stopping:
            # Never started, so never reported: closing the stream cleanly
            # hands it back to the queue at once.
            return
        lease = max(job.lease_expires_at - now, _MIN_LEASE)
        self._release(job.id)  # a job pushed again carries a newer lease
        held = _Held(job.token, lease / 3, time.monotonic() + lease / 3)
        self.held[job.id] = held
        self._extensions.add(held)
        self.waiting.append(job)

    def _release(self, job_id: str) -> _Held | None:
        held = self.held.pop(job_id, None)
        if held is not None:
            held.released = True
            self._extensions.compact(len(self.held))
        return held

    def next_to_start(self) -> Job | None:
        """A waiting job, when a slot is free: it counts as running from now."""
        if self.active >= self.concurrency or not self.waiting:
            return None
        self.active += 1
        return self.waiting.popleft()

    def finish(self, job_id: str, error: BaseException | None) -> None:
        """Records a handler's outcome: an ack, or a nack with its error."""
        self.active -= 1
        held = self._release(job_id)
        if held is None:
            return
        if error is None:
            self.acks.append(held.token)
        else:
            self.nacks.append(nack_for(held.token, error))

    def stop(self) -> None:
        """No more jobs: the waiting ones are let go unreported."""
        self.stopping = True
        for job in self.waiting:
            self._release(job.id)
        self.waiting.clear()

    def seconds_to_next_extend(self) -> float | None:
        soonest = self._extensions.soonest()
        return None if soonest is None else max(0.0, soonest - time.monotonic())

    def outcomes(self) -> int:
        return len(self.acks) + len(self.nacks)

    def done(self) -> bool:
        """Stopping, nothing running and nothing left to report."""
        return self.stopping and self.active == 0 and not (self.acks or self.nacks)

    def _credit(self) -> int:
        if self.stopping:
            return 0
        want = self.concurrency + self.prefetch - len(self.held) - self.outstanding
        if want <= 0:
            return 0
        self.outstanding += want
        return want

    def take_frame(self, open_: pb.WorkerOpen | None = None, now: float | None = None) -> pb.WorkerFrame | None:
        """The next frame: outcomes, due extensions (at ``now`` on the
        monotonic clock) and the credit for the free slots (all of it on
        ``open_``, a new stream). None when there is nothing to send."""
        extends = self._extensions.take_due(time.monotonic() if now is None else now)
        if open_ is not None:
            self.outstanding = 0
        credit = self._credit()
        if open_ is None and not (self.acks or self.nacks or extends or credit):
            return None
        frame = pb.WorkerFrame(acks=self.acks, nacks=self.nacks, extends=extends, credit=credit)
        if open_ is not None:
            frame.open.CopyFrom(open_)
        self.acks, self.nacks = [], []
        return frame

    def restore(self, frame: pb.WorkerFrame) -> None:
        """Puts back the outcomes of a frame that never reached the node
        (the stream broke), to send on the next stream."""
        self.acks = list(frame.acks) + self.acks
        self.nacks = list(frame.nacks) + self.nacks
