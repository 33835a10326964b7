"""The worker's bookkeeping on its own, without a node."""

from __future__ import annotations

import time

from raftq._ledger import Ledger
from raftq._proto.raftq.v1 import queue_pb2 as pb


def leased(job_id: str, lease: float) -> pb.LeasedJob:
    return pb.LeasedJob(
        job=pb.Job(id=job_id, queue="q"),
        token=pb.LeaseToken(job_id=job_id, attempt=1),
        lease_expires_at_ms=int((time.time() + lease) * 1000),
    )


def extended(ledger: Ledger, at: float) -> list[str]:
    frame = ledger.take_frame(now=at)
    return sorted(token.job_id for token in frame.extends) if frame else []


def test_each_held_job_is_extended_every_third_of_its_lease_until_it_finishes() -> None:
    ledger = Ledger(concurrency=10)
    start = time.monotonic()
    ledger.receive(leased("short", 3))
    ledger.receive(leased("long", 30))
    ledger.receive(leased("done", 3))
    while ledger.next_to_start() is not None:
        pass
    ledger.finish("done", None)
    wait = ledger.seconds_to_next_extend()
    assert wait is not None and 0.8 < wait <= 1.0
    assert extended(ledger, start + 0.5) == []
    assert extended(ledger, start + 1.1) == ["short"]
    assert extended(ledger, start + 10.1) == ["long", "short"]
    ledger.finish("short", None)
    ledger.finish("long", None)
    assert ledger.seconds_to_next_extend() is None


def test_released_jobs_do_not_pile_up_in_the_schedule() -> None:
    ledger = Ledger(concurrency=1)
    for i in range(10_000):
        ledger.receive(leased(f"job-{i}", 30))
        assert ledger.next_to_start() is not None
        ledger.finish(f"job-{i}", None)
    assert len(ledger._extensions._heap) <= 64
