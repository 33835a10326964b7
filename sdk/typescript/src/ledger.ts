// What a worker stream owes the node, apart from any I/O: the jobs held
// (running, or pushed and waiting for a free slot), their next lease
// extension, the acks and nacks not sent yet, and the credit to ask for.
import type { LeasedJob, LeaseToken, NackItem, WorkerFrame, WorkerOpen } from "./gen/raftq/v1/queue.js";
import { fromLeased, type Job } from "./jobs.js";
import { errorText } from "./limits.js";

/** The shortest lease the worker plans extensions around. */
const MIN_LEASE_MS = 300;

/** Throw from a handler to choose what happens to the job: retry after
 * `retryAfterMs` (instead of its backoff), or go to the dead letters now
 * with `dead: true`. Any other error retries the job after its backoff. */
export class JobFailed extends Error {
  readonly retryAfterMs: number | undefined;
  readonly dead: boolean;

  constructor(message: string, options: { retryAfterMs?: number; dead?: boolean } = {}) {
    super(message);
    this.name = "JobFailed";
    this.retryAfterMs = options.retryAfterMs;
    this.dead = options.dead ?? false;
  }
}

export function nackFor(token: LeaseToken, error: unknown): NackItem {
  if (error instanceof JobFailed) {
    return { token, error: errorText(error.message), retryDelayMs: error.retryAfterMs, dead: error.dead };
  }
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return { token, error: errorText(text), retryDelayMs: undefined, dead: false };
}

interface Held {
  token: LeaseToken;
  everyMs: number;
  nextExtend: number;
  /** Its place in the extension schedule. */
  index: number;
}

/** The held jobs by their next extension (a binary heap that knows each
 * entry's place), so a worker holding thousands of jobs finds the due ones
 * without a scan and forgets a finished one in O(log n). */
class ExtensionSchedule {
  private readonly heap: Held[] = [];

  add(held: Held): void {
    held.index = this.heap.length;
    this.heap.push(held);
    this.up(held.index);
  }

  remove(held: Held): void {
    const last = this.heap.pop();
    if (last === undefined || last === held) return;
    this.heap[held.index] = last;
    last.index = held.index;
    this.up(last.index);
    this.down(last.index);
  }

  soonest(): Held | undefined {
    return this.heap[0];
  }

  /** Moves the soonest entry, whose time grew, to its place. */
  rescheduledSoonest(): void {
    this.down(0);
  }

  private swap(i: number, j: number): void {
    const a = this.heap[i] as Held;
    const b = this.heap[j] as Held;
    this.heap[i] = b;
    this.heap[j] = a;
    a.index = j;
    b.index = i;
  }

  private earlier(i: number, j: number): boolean {
    return (this.heap[i] as Held).nextExtend < (this.heap[j] as Held).nextExtend;
  }

  private up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.earlier(i, parent)) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let first = i;
      if (left < this.heap.length && this.earlier(left, first)) first = left;
      if (right < this.heap.length && this.earlier(right, first)) first = right;
      if (first === i) return;
      this.swap(i, first);
      i = first;
    }
  }
}

export class Ledger {
  readonly held = new Map<string, Held>();
  private readonly extensions = new ExtensionSchedule();
  readonly waiting: Job[] = [];
  active = 0;
  acks: LeaseToken[] = [];
  nacks: NackItem[] = [];
  /** Credit granted on the current stream and not yet used by a push. */
  outstanding = 0;
  stopping = false;

  constructor(
    readonly concurrency: number,
    readonly prefetch: number,
  ) {
    if (!(concurrency >= 1)) throw new RangeError("concurrency must be at least 1");
    if (!(prefetch >= 0)) throw new RangeError("prefetch must be 0 or more");
  }

  /** Records a job the node pushed; it waits for a free slot. */
  receive(leased: LeasedJob, now = Date.now()): void {
    this.outstanding = Math.max(0, this.outstanding - 1);
    // Stopping: never started, so never reported; closing the stream
    // cleanly hands it back to the queue at once.
    if (this.stopping) return;
    const job = fromLeased(leased);
    const lease = Math.max(job.leaseExpiresAt.getTime() - now, MIN_LEASE_MS);
    this.release(job.id); // a job pushed again carries a newer lease
    const held = { token: job.token, everyMs: lease / 3, nextExtend: performance.now() + lease / 3, index: 0 };
    this.held.set(job.id, held);
    this.extensions.add(held);
    this.waiting.push(job);
  }

  private release(jobId: string): Held | undefined {
    const held = this.held.get(jobId);
    if (held !== undefined) {
      this.held.delete(jobId);
      this.extensions.remove(held);
    }
    return held;
  }

  /** A waiting job when a slot is free; it counts as running from now. */
  nextToStart(): Job | undefined {
    if (this.active >= this.concurrency || this.waiting.length === 0) return undefined;
    this.active++;
    return this.waiting.shift();
  }

  /** Records a handler's outcome: an ack, or a nack with its error. */
  finish(jobId: string, error: unknown, failed: boolean): void {
    this.active--;
    const held = this.release(jobId);
    if (held === undefined) return;
    if (failed) this.nacks.push(nackFor(held.token, error));
    else this.acks.push(held.token);
  }

  /** No more jobs: the waiting ones are let go unreported. */
  stop(): void {
    this.stopping = true;
    for (const job of this.waiting) this.release(job.id);
    this.waiting.length = 0;
  }

  msToNextExtend(): number | undefined {
    const soonest = this.extensions.soonest();
    return soonest === undefined ? undefined : Math.max(0, soonest.nextExtend - performance.now());
  }

  outcomes(): number {
    return this.acks.length + this.nacks.length;
  }

  /** Stopping, nothing running and nothing left to report. */
  done(): boolean {
    return this.stopping && this.active === 0 && this.acks.length === 0 && this.nacks.length === 0;
  }

  private credit(): number {
    if (this.stopping) return 0;
    const want = this.concurrency + this.prefetch - this.held.size - this.outstanding;
    if (want <= 0) return 0;
    this.outstanding += want;
    return want;
  }

  /** The next frame: outcomes, due extensions and credit for free slots
   * (all of it with `open`, on a new stream). Undefined when there is
   * nothing to send. `now` is on the `performance.now()` clock. */
  takeFrame(open?: WorkerOpen, now = performance.now()): WorkerFrame | undefined {
    const extends_: LeaseToken[] = [];
    for (let h = this.extensions.soonest(); h !== undefined && h.nextExtend <= now; h = this.extensions.soonest()) {
      extends_.push(h.token);
      h.nextExtend = now + h.everyMs;
      this.extensions.rescheduledSoonest();
    }
    if (open !== undefined) this.outstanding = 0;
    const credit = this.credit();
    if (open === undefined && this.acks.length === 0 && this.nacks.length === 0 && extends_.length === 0 && credit === 0) {
      return undefined;
    }
    const frame: WorkerFrame = { open, acks: this.acks, nacks: this.nacks, extends: extends_, credit };
    this.acks = [];
    this.nacks = [];
    return frame;
  }

  /** Puts back the outcomes of a frame that never reached the node. */
  restore(frame: WorkerFrame): void {
    this.acks = [...frame.acks, ...this.acks];
    this.nacks = [...frame.nacks, ...this.nacks];
  }
}
