"""Every job option, bad input and fencing, through a real node."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from conftest import Node, wait_for

from raftq import Backoff, Client, NewJob, RaftqError, RetryPolicy
from raftq._proto.raftq.v1 import queue_pb2 as pb


def test_every_job_option_reaches_the_node(node: Node) -> None:
    with Client(node.addr) as client:
        producer = client.producer()
        before = time.time()
        delayed = producer.enqueue(
            "opts",
            b"\x00\x01binary",
            headers={"tenant": "acme"},
            priority=7,
            delay=timedelta(seconds=60),
            max_attempts=9,
            backoff=Backoff(initial=0.5, max=10, multiplier=3.0),
            idempotency_key="order-1",
        )
        job = client.get_job(delayed)
        assert job.state == pb.JOB_STATE_SCHEDULED
        assert job.payload == b"\x00\x01binary"
        assert job.headers["tenant"] == "acme"
        assert job.priority == 7
        assert job.max_attempts == 9
        assert job.idempotency_key == "order-1"
        assert before + 59 <= job.due_at_ms / 1000 <= time.time() + 61

        # The same idempotency key returns the first job's id.
        assert producer.enqueue("opts", "again", idempotency_key="order-1") == delayed

        at = datetime.now(timezone.utc) + timedelta(hours=2)
        scheduled = client.get_job(producer.enqueue("opts", "later", run_at=at))
        assert scheduled.state == pb.JOB_STATE_SCHEDULED
        assert abs(scheduled.due_at_ms / 1000 - at.timestamp()) < 1

        # A time in the past means now; higher priority runs first.
        low = producer.enqueue("opts", "low", run_at=time.time() - 60)
        high = producer.enqueue("opts", "high", priority=5)
        assert client.get_job(low).state == pb.JOB_STATE_READY
        fetched = client.fetch("opts", max_jobs=2)
        assert [j.id for j in fetched] == [high, low]
        assert fetched[0].text == "high"


def test_enqueue_many_is_in_order(node: Node) -> None:
    with Client(node.addr) as client:
        ids = client.producer().enqueue_many("many", [NewJob(f"job {i}") for i in range(500)])
        assert len(ids) == 500 and len(set(ids)) == 500
        got = []
        while len(got) < 500:
            got += client.fetch("many", max_jobs=200, wait=1)
        assert [j.id for j in got] == ids


def test_bad_input_is_refused_with_a_reason_and_stores_nothing(node: Node) -> None:
    with Client(node.addr) as client:
        producer = client.producer()
        with pytest.raises(ValueError, match="not both"):
            producer.enqueue("bad", "x", delay=1, run_at=time.time())
        with pytest.raises(RaftqError) as refused:
            producer.enqueue_many("bad", [NewJob("ok"), NewJob("too much", delay=timedelta(days=400))])
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert not refused.value.retryable
        assert "delay" in refused.value.details
        with pytest.raises(RaftqError) as bad_name:
            producer.enqueue("no spaces allowed!", "x")
        assert bad_name.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert all(q.queue != "bad" or q.enqueued_total == 0 for q in client.stats())


def test_a_stale_lease_token_is_refused(node: Node) -> None:
    with Client(node.addr) as client:
        job_id = client.producer().enqueue("fenced", "x")
        (first,) = client.fetch("fenced", lease=0.3)
        # The lease runs out; the job is delivered again with a new token.
        (second,) = wait_for("the redelivery", lambda: client.fetch("fenced", lease=30) or None)
        assert second.id == job_id and second.attempt == first.attempt + 1
        with pytest.raises(RaftqError) as stale:
            client.ack(first)
        assert stale.value.code == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(RaftqError):
            client.extend(first)
        assert client.extend(second, 60) > time.time() + 50
        client.ack(second)
        (stats,) = client.stats("fenced")
        assert stats.acked_total == 1 and stats.leased == 0


def test_an_unreachable_node_is_a_retryable_error() -> None:
    with Client("127.0.0.1:1") as client:
        with pytest.raises(RaftqError) as down:
            client.producer(RetryPolicy.never()).enqueue("q", "x")
        assert down.value.retryable
