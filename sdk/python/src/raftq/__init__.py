"""raftq: a durable, Raft-replicated job queue. The Python SDK.

- ``Client`` / ``AsyncClient``: a connection to any node (TLS, token).
- ``Producer`` / ``AsyncProducer`` (``client.producer()``): enqueue jobs
  with every option, retried through elections and restarts.
- ``Worker`` / ``AsyncWorker``: one stream per worker; handlers run with
  bounded concurrency, leases are extended while they run, a return acks,
  an exception nacks, ``stop()`` releases what has not started.

Producers write the current OpenTelemetry span's ``traceparent`` into each
job's headers; workers run each handler in a child span.
"""

from raftq._ledger import JobFailed
from raftq._routing import shard_of
from raftq.aio_worker import AsyncWorker
from raftq.client import TLS, AsyncClient, Client, RetryPolicy
from raftq.errors import RaftqError
from raftq.jobs import Backoff, Job, NewJob
from raftq.producer import AsyncProducer, Producer
from raftq.worker import Worker

__all__ = [
    "TLS",
    "AsyncClient",
    "AsyncProducer",
    "AsyncWorker",
    "Backoff",
    "Client",
    "Job",
    "JobFailed",
    "NewJob",
    "Producer",
    "RaftqError",
    "RetryPolicy",
    "Worker",
    "shard_of",
]
