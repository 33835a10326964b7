import type { LeasedJob, LeaseToken, NewJob as NewJobProto } from "./gen/raftq/v1/queue.js";
import { inject } from "./tracing.js";

/** Retry delay: `initialMs * multiplier ** (retry - 1)`, at most `maxMs`. */
export interface Backoff {
  initialMs: number;
  maxMs: number;
  /** Growth per retry, >= 1 (default 2). */
  multiplier?: number;
}

/** Every option of a job (all optional). */
export interface JobOptions {
  headers?: Record<string, string>;
  /** Higher runs first (default 0). */
  priority?: number;
  /** Ready after this many milliseconds ... */
  delayMs?: number;
  /** ... or at this time (not both); a past time means now. */
  runAt?: Date;
  /** 0 or absent: the queue's default. */
  maxAttempts?: number;
  backoff?: Backoff;
  /** A repeat within the queue's dedup window returns the first job's id. */
  idempotencyKey?: string;
}

/** A job to enqueue. */
export interface NewJob extends JobOptions {
  payload: Uint8Array | string;
}

export function toProto(job: NewJob): NewJobProto {
  if (job.delayMs !== undefined && job.runAt !== undefined) {
    throw new TypeError("a job takes delayMs or runAt, not both");
  }
  const headers = { ...(job.headers ?? {}) };
  inject(headers);
  return {
    payload: typeof job.payload === "string" ? Buffer.from(job.payload, "utf8") : Buffer.from(job.payload),
    headers,
    priority: job.priority ?? 0,
    delayMs: job.delayMs,
    runAtMs: job.runAt?.getTime(),
    maxAttempts: job.maxAttempts ?? 0,
    backoff:
      job.backoff === undefined
        ? undefined
        : { initialMs: job.backoff.initialMs, maxMs: job.backoff.maxMs, multiplier: job.backoff.multiplier ?? 2 },
    idempotencyKey: job.idempotencyKey ?? "",
  };
}

/** A leased job, as a handler (or `Client.fetch`) gets it. */
export interface Job {
  id: string;
  queue: string;
  payload: Buffer;
  headers: Record<string, string>;
  priority: number;
  /** 1 on the first delivery, 2 on the first retry, ... */
  attempt: number;
  maxAttempts: number;
  /** The error the previous attempt reported, if any. */
  lastError: string;
  /** When the lease runs out unless extended (a Worker extends it while
   * the handler runs). */
  leaseExpiresAt: Date;
  /** Proof of this delivery's lease; refused once the job is delivered
   * again. */
  token: LeaseToken;
}

export function fromLeased(leased: LeasedJob): Job {
  const job = leased.job;
  const token = leased.token;
  if (job === undefined || token === undefined) throw new TypeError("the node sent a job without its lease token");
  return {
    id: job.id,
    queue: job.queue,
    payload: job.payload,
    headers: job.headers,
    priority: job.priority,
    attempt: job.attempt,
    maxAttempts: job.maxAttempts,
    lastError: job.lastError,
    leaseExpiresAt: new Date(leased.leaseExpiresAtMs),
    token,
  };
}
