"""How many jobs one worker process acks per second with a no-op handler.

    python examples/bench.py [--address A] [--jobs N] [--concurrency C] [--asyncio]

Enqueues N jobs first (in batches), then times the worker until every one
is acked (read from the queue's acked_total).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
import uuid

from raftq import AsyncClient, AsyncWorker, Client, Job, NewJob, Worker


def enqueue(client: Client, queue: str, jobs: int) -> None:
    producer = client.producer()
    batch = [NewJob(b"x" * 16) for _ in range(5000)]
    for start in range(0, jobs, len(batch)):
        producer.enqueue_many(queue, batch[: min(len(batch), jobs - start)])


def acked(client: Client, queue: str) -> int:
    return sum(q.acked_total for q in client.stats(queue) if q.queue == queue)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default="127.0.0.1:7400")
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--asyncio", action="store_true")
    args = parser.parse_args()
    queue = f"bench-py-{uuid.uuid4().hex[:8]}"
    client = Client(args.address)
    enqueue(client, queue, args.jobs)
    started, cpu_before = time.monotonic(), time.process_time()
    if args.asyncio:

        async def run() -> None:
            async with AsyncClient(args.address) as aclient:

                async def noop(job: Job) -> None:
                    return None

                worker = AsyncWorker(aclient, queue, noop, concurrency=args.concurrency, prefetch=args.concurrency)
                task = asyncio.ensure_future(worker.run())
                while sum(q.acked_total for q in await aclient.stats(queue) if q.queue == queue) < args.jobs:
                    await asyncio.sleep(0.05)
                worker.stop()
                await task

        asyncio.run(run())
    else:
        worker = Worker(client, queue, lambda job: None, concurrency=args.concurrency, prefetch=args.concurrency)
        thread = threading.Thread(target=worker.run)
        thread.start()
        while acked(client, queue) < args.jobs:
            time.sleep(0.05)
        worker.stop()
        thread.join()
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu_before
    form = "asyncio" if args.asyncio else "threads"
    print(
        f"python ({form}): {args.jobs} jobs in {elapsed:.2f}s = {args.jobs / elapsed:,.0f} jobs/s;"
        f" worker CPU {cpu / args.jobs * 1e6:.1f} µs/job"
    )


if __name__ == "__main__":
    main()
