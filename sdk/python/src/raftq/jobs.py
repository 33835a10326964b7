"""Jobs as the SDK's users see them: what to enqueue, and what a handler gets."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from raftq import _tracing
from raftq._proto.raftq.v1 import queue_pb2 as pb


@dataclass(frozen=True)
class Backoff:
    """Retry delay: ``initial * multiplier ** (retry - 1)``, at most ``max``.

    Durations are seconds (floats) or ``timedelta``.
    """

    initial: float | timedelta
    max: float | timedelta
    multiplier: float = 2.0


def _ms(value: float | timedelta) -> int:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return round(seconds * 1000)


@dataclass
class NewJob:
    """A job to enqueue, with every option the node accepts.

    - ``delay`` (seconds or ``timedelta``) or ``run_at`` (a ``datetime``, or
      unix seconds): when it becomes ready; not both.
    - ``max_attempts``: 0 means the queue's default.
    - ``idempotency_key``: a repeat within the queue's dedup window returns
      the first job's id instead of adding a job.
    """

    payload: bytes | str
    headers: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    delay: float | timedelta | None = None
    run_at: datetime | float | None = None
    max_attempts: int = 0
    backoff: Backoff | None = None
    idempotency_key: str = ""

    def to_proto(self) -> pb.NewJob:
        if self.delay is not None and self.run_at is not None:
            raise ValueError("a job takes delay or run_at, not both")
        payload = self.payload.encode("utf-8") if isinstance(self.payload, str) else bytes(self.payload)
        headers = dict(self.headers)
        _tracing.inject(headers)
        job = pb.NewJob(
            payload=payload,
            headers=headers,
            priority=self.priority,
            max_attempts=self.max_attempts,
            idempotency_key=self.idempotency_key,
        )
        if self.delay is not None:
            job.delay_ms = _ms(self.delay)
        if self.run_at is not None:
            at = self.run_at.timestamp() if isinstance(self.run_at, datetime) else float(self.run_at)
            job.run_at_ms = int(at * 1000)
        if self.backoff is not None:
            job.backoff.CopyFrom(
                pb.Backoff(
                    initial_ms=_ms(self.backoff.initial),
                    max_ms=_ms(self.backoff.max),
                    multiplier=self.backoff.multiplier,
                )
            )
        return job


@dataclass
class Job:
    """A leased job handed to a handler."""

    id: str
    queue: str
    payload: bytes
    headers: dict[str, str]
    priority: int
    #: 1 on the first delivery, 2 on the first retry, ...
    attempt: int
    max_attempts: int
    #: The error the previous attempt reported, if any.
    last_error: str
    #: Unix time in seconds when the lease runs out unless extended (the
    #: worker extends it while the handler runs).
    lease_expires_at: float
    #: Proof of this delivery's lease: acks, nacks and extensions carry it,
    #: and the node refuses it once the job was delivered again.
    token: pb.LeaseToken

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode("utf-8")


def job_from_leased(leased: pb.LeasedJob) -> Job:
    j = leased.job
    return Job(
        id=j.id,
        queue=j.queue,
        payload=j.payload,
        headers=dict(j.headers),
        priority=j.priority,
        attempt=j.attempt,
        max_attempts=j.max_attempts,
        last_error=j.last_error,
        lease_expires_at=leased.lease_expires_at_ms / 1000.0,
        token=leased.token,
    )


def now_ms() -> int:
    return int(time.time() * 1000)
