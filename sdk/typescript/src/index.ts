/**
 * raftq: a durable, Raft-replicated job queue. The TypeScript SDK.
 *
 * - `Client`: a connection to any node (TLS, token); leases by hand.
 * - `Producer` (`client.producer()`): enqueue jobs with every option,
 *   retried through elections and restarts.
 * - `Worker`: one stream per worker; handlers run with bounded
 *   concurrency, leases are extended while they run, a resolve acks, a
 *   throw nacks, `stop()` or an `AbortSignal` releases what has not started.
 *
 * Producers write the active OpenTelemetry span's `traceparent` into each
 * job's headers; workers run each handler in a child span.
 * @module
 */
export { Client, type ConnectOptions, type TlsOptions } from "./client.js";
export { shardOf } from "./routing.js";
export { RaftqError } from "./errors.js";
export type { Backoff, Job, JobOptions, NewJob } from "./jobs.js";
export { JobFailed } from "./ledger.js";
export { Producer } from "./producer.js";
export { RetryPolicy } from "./retry.js";
export { Worker, type Handler, type WorkerOptions } from "./worker.js";
export type { QueueStats, Job as JobRecord } from "./gen/raftq/v1/queue.js";
export { JobState } from "./gen/raftq/v1/queue.js";
