"""The blocking and asyncio workers against a real node: leases extended
while a handler runs, nack → retry → dead letter, a stop that releases what
has not started, and traces from producer to handler."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import Node, wait_for
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from raftq import AsyncClient, AsyncWorker, Backoff, Client, Job, JobFailed, NewJob, Worker
from raftq._proto.raftq.v1 import queue_pb2 as pb


def stats(client: Client, queue: str) -> pb.QueueStats:
    found = [q for q in client.stats(queue) if q.queue == queue]
    return found[0] if found else pb.QueueStats(queue=queue)


def run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def test_a_worker_acks_every_job_once(node: Node) -> None:
    with Client(node.addr) as client:
        ids = client.producer().enqueue_many("plain", [NewJob(f"{i}") for i in range(300)])
        seen: Counter[str] = Counter()
        lock = threading.Lock()

        def handle(job: Job) -> None:
            with lock:
                seen[job.id] += 1

        worker = Worker(client, "plain", handle, concurrency=8, prefetch=8)
        thread = run_in_thread(worker)
        wait_for("every job acked", lambda: stats(client, "plain").acked_total == 300)
        worker.stop()
        thread.join(10)
        assert not thread.is_alive()
        assert set(seen) == set(ids) and max(seen.values()) == 1
        final = stats(client, "plain")
        assert final.ready == 0 and final.leased == 0


def test_a_slow_handler_keeps_its_lease(node: Node) -> None:
    with Client(node.addr) as client:
        client.producer().enqueue("slow", "x")
        calls: list[int] = []

        def handle(job: Job) -> None:
            calls.append(job.attempt)
            time.sleep(2.0)  # the work itself: five leases long

        worker = Worker(client, "slow", handle, lease=0.4)
        thread = run_in_thread(worker)
        wait_for("the handler to start", lambda: calls)
        # While it runs, nobody else can lease the job.
        assert client.fetch("slow", wait=1.0) == []
        wait_for("the ack", lambda: stats(client, "slow").acked_total == 1)
        worker.stop()
        thread.join(10)
        assert calls == [1]
        assert stats(client, "slow").expired_total == 0


def test_failures_retry_with_backoff_then_dead_letter(node: Node) -> None:
    with Client(node.addr) as client:
        producer = client.producer()
        flaky = producer.enqueue("failing", "x", max_attempts=3, backoff=Backoff(initial=0.05, max=0.1))
        doomed = producer.enqueue("failing", "poison", max_attempts=5)
        attempts: Counter[str] = Counter()

        def handle(job: Job) -> None:
            attempts[job.id] += 1
            if job.text == "poison":
                raise JobFailed("cannot parse", dead=True)
            raise ValueError(f"boom on attempt {job.attempt}")

        worker = Worker(client, "failing", handle, concurrency=2)
        thread = run_in_thread(worker)
        wait_for("both dead", lambda: stats(client, "failing").dead == 2)
        worker.stop()
        thread.join(10)
        assert attempts == {flaky: 3, doomed: 1}
        dead = {j.id: j for j in client.admin.ListDead(pb.ListDeadRequest(queue="failing")).jobs}
        assert dead[flaky].last_error == "ValueError: boom on attempt 3"
        assert dead[doomed].last_error == "cannot parse"


def test_stop_releases_jobs_that_have_not_started(node: Node) -> None:
    with Client(node.addr) as client:
        client.producer().enqueue_many("release", [NewJob(f"{i}") for i in range(10)])
        started = threading.Event()
        release = threading.Event()

        def handle(job: Job) -> None:
            started.set()
            release.wait(30)

        # One running, five more pushed ahead and waiting; leases of a minute.
        worker = Worker(client, "release", handle, concurrency=1, prefetch=5, lease=60)
        thread = run_in_thread(worker)
        started.wait(30)
        wait_for("six leased", lambda: stats(client, "release").leased == 6)
        worker.stop()
        release.set()
        thread.join(10)
        assert not thread.is_alive()
        # Back at once, not after their leases run out.
        after = stats(client, "release")
        assert (after.acked_total, after.leased, after.ready) == (1, 0, 9)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter


def test_the_handler_span_is_a_child_of_the_producer_span(node: Node, spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("test")
    with Client(node.addr) as client:
        with tracer.start_as_current_span("checkout") as parent:
            job_id = client.producer().enqueue("traced", "x")
        assert client.get_job(job_id).headers["traceparent"].startswith("00-")
        inside: list[trace.SpanContext] = []

        def handle(job: Job) -> None:
            inside.append(trace.get_current_span().get_span_context())

        worker = Worker(client, "traced", handle)
        thread = run_in_thread(worker)
        wait_for("the handler", lambda: inside)
        worker.stop()
        thread.join(10)
    handler = next(s for s in spans.get_finished_spans() if s.name == "traced process")
    assert handler.context.trace_id == parent.get_span_context().trace_id
    assert handler.parent is not None and handler.parent.span_id == parent.get_span_context().span_id
    assert inside[0].span_id == handler.context.span_id
    assert handler.kind == trace.SpanKind.CONSUMER


def test_the_asyncio_forms(node: Node) -> None:
    async def main() -> None:
        async with AsyncClient(node.addr) as client:
            producer = client.producer()
            ids = await producer.enqueue_many("aio", [NewJob(f"{i}") for i in range(200)])
            await producer.enqueue("aio", "fails", max_attempts=1)
            handled: list[str] = []

            async def handle(job: Job) -> None:
                await asyncio.sleep(0.001)
                if job.text == "fails":
                    raise RuntimeError("no")
                handled.append(job.id)

            worker = AsyncWorker(client, "aio", handle, concurrency=16, prefetch=16)
            task = asyncio.ensure_future(worker.run())
            deadline = time.monotonic() + 30
            while True:
                (s,) = [q for q in await client.stats("aio") if q.queue == "aio"]
                if s.acked_total == 200 and s.dead == 1:
                    break
                assert time.monotonic() < deadline, s
                await asyncio.sleep(0.05)
            worker.stop()
            await asyncio.wait_for(task, 10)
            assert sorted(handled) == sorted(ids)
            (leased,) = await client.fetch("aio", wait=0) or [None]
            assert leased is None

    asyncio.run(main())
