import type { Client } from "./client.js";
import { unary } from "./client.js";
import type { EnqueueResponse } from "./gen/raftq/v1/queue.js";
import { toProto, type JobOptions, type NewJob } from "./jobs.js";
import { MAX_ENQUEUE_BATCH } from "./limits.js";
import type { RetryPolicy } from "./retry.js";

/** Enqueues jobs, retrying through elections and restarts. */
export class Producer {
  constructor(
    private readonly client: Client,
    private readonly retry: RetryPolicy,
  ) {}

  /** Enqueues one job and returns its id. */
  async enqueue(queue: string, payload: Uint8Array | string, options: JobOptions = {}): Promise<string> {
    const ids = await this.enqueueMany(queue, [{ ...options, payload }]);
    if (ids.length !== 1) throw new Error(`the node answered ${ids.length} ids for one job`);
    return ids[0];
  }

  /** Enqueues up to 10,000 jobs in one request, all or nothing; returns
   * their ids in order. */
  async enqueueMany(queue: string, jobs: NewJob[]): Promise<string[]> {
    if (jobs.length === 0) throw new TypeError("nothing to enqueue: pass at least one job");
    if (jobs.length > MAX_ENQUEUE_BATCH) {
      throw new TypeError(`${jobs.length} jobs in one request; the limit is ${MAX_ENQUEUE_BATCH}`);
    }
    const request = { queue, jobs: jobs.map(toProto) };
    const response = await this.retry.run(async () => {
      // Each try asks for the route again: a failed one may have taught the
      // client where the leader went.
      const target = this.client.target(queue);
      try {
        return await unary<EnqueueResponse>((cb) => target.queue.enqueue(request, this.client.metadataFor(target), cb));
      } catch (e) {
        await this.client.observe(target, e);
        throw e;
      }
    });
    return response.jobIds;
  }
}
