// Worker: runs a handler over a queue's jobs, over one worker stream.
import type { Client } from "./client.js";
import { status } from "@grpc/grpc-js";
import { RaftqError } from "./errors.js";
import type { ServerFrame } from "./gen/raftq/v1/queue.js";
import type { Job } from "./jobs.js";
import { Ledger } from "./ledger.js";
import { inHandlerSpan } from "./tracing.js";
import { hostname } from "node:os";

export type Handler = (job: Job) => Promise<unknown> | unknown;

export interface WorkerOptions {
  /** How many handlers run at once (default 1). */
  concurrency?: number;
  /** Jobs kept waiting beyond `concurrency`, so a free slot never waits a
   * round trip for its next job (default 0). Their leases are extended. */
  prefetch?: number;
  /** Lease asked for each job (default: the queue's). */
  leaseMs?: number;
  /** The name this worker reports (default `<host>-<pid>`). */
  workerId?: string;
  /** Aborting it stops the worker, as `stop()` does. */
  signal?: AbortSignal;
  /** Where the worker reports jobs the node refused to ack or extend and
   * streams it reopens (default: console.warn). */
  onWarning?: (message: string) => void;
}

const MIN_FRAME_GAP_MS = 2;
const FULL_BATCH = 1024;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs `handler` on each job of `queue`, up to `concurrency` at once.
 *
 * A handler that resolves acks the job; one that throws (or rejects) nacks
 * it with the error's text (it retries after its backoff, or goes to the
 * dead letters after its last attempt; throw `JobFailed` to choose). While
 * a handler runs, its lease is extended every third of the lease. Acks,
 * nacks, extensions and the request for more jobs travel together in one
 * frame. A broken stream is reopened with backoff.
 *
 * `run()` resolves after `stop()` (or the signal's abort): no new job is
 * started, running handlers finish and report, and the stream is closed,
 * which hands the jobs given but not started back to the queue at once.
 * It rejects with a `RaftqError` when the node refuses the stream for good
 * (a bad queue name, a missing role).
 */
export class Worker {
  private readonly ledger: Ledger;
  private wake: () => void = () => {};
  private readonly warn: (message: string) => void;

  constructor(
    private readonly client: Client,
    private readonly queue: string,
    private readonly handler: Handler,
    private readonly options: WorkerOptions = {},
  ) {
    this.ledger = new Ledger(options.concurrency ?? 1, options.prefetch ?? 0);
    this.warn = options.onWarning ?? ((message) => console.warn(`raftq: ${message}`));
    options.signal?.addEventListener("abort", () => this.stop(), { once: true });
    if (options.signal?.aborted) this.stop();
  }

  /** Asks `run()` to finish (returns at once). */
  stop(): void {
    this.ledger.stop();
    this.wake();
  }

  async run(): Promise<void> {
    let delay = 100;
    for (;;) {
      try {
        if (await this.runStream()) return;
        delay = 100;
      } catch (e) {
        const error = RaftqError.from(e);
        if (!error.retryable) throw error;
        if (this.client.closed) throw new RaftqError(status.CANCELLED, "the client was closed while the worker ran");
        this.warn(`worker stream on ${this.queue} broke (${error.message}); reconnecting`);
      }
      if (this.ledger.done()) return;
      await sleep(delay);
      delay = Math.min(delay * 2, 5_000);
    }
  }

  /** One stream, until it ends: true when the worker is done. */
  private runStream(): Promise<boolean> {
    return new Promise((resolve, reject) => {
      const target = this.client.target(this.queue);
      const call = target.queue.workerStream(this.client.metadataFor(target));
      let ended = false;
      let flushing = false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const close = () => {
        ended = true;
        clearTimeout(timer);
        this.wake = () => {};
      };
      const flush = () => {
        flushing = false;
        if (ended) return;
        const frame = this.ledger.takeFrame();
        if (frame !== undefined) {
          call.write(frame);
          lastSend = performance.now();
        }
        if (this.ledger.done()) {
          call.end();
          return;
        }
        clearTimeout(timer);
        const next = this.ledger.msToNextExtend();
        if (next !== undefined) timer = setTimeout(this.wake, next + 1);
      };
      // Outcomes go out together, one frame at most every MIN_FRAME_GAP_MS
      // unless a batch is full: the node refuses a flood of tiny frames,
      // and bigger ones cost it less.
      let lastSend = 0;
      this.wake = () => {
        if (!flushing && !ended) {
          flushing = true;
          const gap = performance.now() - lastSend;
          if (gap >= MIN_FRAME_GAP_MS || this.ledger.outcomes() >= FULL_BATCH) setImmediate(flush);
          else setTimeout(flush, MIN_FRAME_GAP_MS - gap);
        }
      };
      call.on("data", (frame: ServerFrame) => {
        for (const result of frame.results) {
          if (result.code !== 0) this.warn(`job ${result.token?.jobId}: ${result.message}`);
        }
        for (const leased of frame.jobs) this.ledger.receive(leased);
        this.startWaiting();
        // Plan the next flush around the new leases' extensions.
        this.wake();
      });
      call.on("error", (error) => {
        close();
        // Learns where the leader went (at once from the trailers; a map
        // read in the background) before the stream is reopened. Rejected
        // here, synchronously: the "end" that follows must not resolve first.
        void this.client.observe(target, error);
        reject(RaftqError.from(error));
      });
      call.on("end", () => {
        close();
        resolve(this.ledger.done());
      });
      const open = this.ledger.takeFrame({
        queue: this.queue,
        workerId: this.options.workerId ?? `${hostname()}-${process.pid}`,
        leaseMs: this.options.leaseMs,
      });
      if (open !== undefined) call.write(open);
      this.wake();
    });
  }

  private startWaiting(): void {
    for (let job = this.ledger.nextToStart(); job !== undefined; job = this.ledger.nextToStart()) {
      void this.runOne(job);
    }
  }

  private async runOne(job: Job): Promise<void> {
    let failed = false;
    let error: unknown;
    try {
      await inHandlerSpan(job.queue, job.id, job.attempt, job.headers, async () => this.handler(job));
    } catch (e) {
      failed = true;
      error = e;
    }
    this.ledger.finish(job.id, error, failed);
    this.wake();
    this.startWaiting();
  }
}
