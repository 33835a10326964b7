import { RaftqError } from "./errors.js";

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** How calls that may succeed later (elections, restarts, backpressure) are
 * retried: exponential backoff until `deadlineMs` has passed.
 * `RetryPolicy.never()` tries once. */
export class RetryPolicy {
  constructor(
    readonly deadlineMs = 30_000,
    readonly initialBackoffMs = 50,
    readonly maxBackoffMs = 1_000,
  ) {}

  static never(): RetryPolicy {
    return new RetryPolicy(0);
  }

  async run<T>(call: () => Promise<T>): Promise<T> {
    const started = Date.now();
    let backoff = this.initialBackoffMs;
    for (;;) {
      try {
        return await call();
      } catch (e) {
        const error = RaftqError.from(e);
        if (!error.retryable || Date.now() - started + backoff > this.deadlineMs) throw error;
      }
      await sleep(backoff);
      backoff = Math.min(backoff * 2, this.maxBackoffMs);
    }
  }
}
