// The worker's bookkeeping on its own, without a node.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { LeasedJob } from "../src/gen/raftq/v1/queue.js";
import { Ledger } from "../src/ledger.js";

function leased(id: string, leaseMs: number): LeasedJob {
  return {
    job: {
      id, queue: "q", payload: Buffer.alloc(0), headers: {}, priority: 0, attempt: 1, maxAttempts: 3, lastError: "",
    } as unknown as LeasedJob["job"],
    token: { jobId: id, attempt: 1 },
    leaseExpiresAtMs: Date.now() + leaseMs,
  };
}

function extended(ledger: Ledger, at: number): string[] {
  return (ledger.takeFrame(undefined, at)?.extends ?? []).map((t) => t.jobId).sort();
}

void test("each held job is extended every third of its lease until it finishes", () => {
  const ledger = new Ledger(10, 0);
  const start = performance.now();
  ledger.receive(leased("short", 3_000));
  ledger.receive(leased("long", 30_000));
  ledger.receive(leased("done", 3_000));
  while (ledger.nextToStart() !== undefined) { /* start them all */ }
  ledger.finish("done", undefined, false);
  const wait = ledger.msToNextExtend();
  assert.ok(wait !== undefined && wait > 800 && wait <= 1_000, `next extension in ${String(wait)} ms`);
  assert.deepEqual(extended(ledger, start + 500), []);
  assert.deepEqual(extended(ledger, start + 1_100), ["short"]);
  assert.deepEqual(extended(ledger, start + 10_100), ["long", "short"]);
  ledger.finish("short", undefined, false);
  ledger.finish("long", undefined, false);
  assert.equal(ledger.msToNextExtend(), undefined);
});

void test("jobs finished out of order leave the schedule in lease order", () => {
  const ledger = new Ledger(100, 0);
  const start = performance.now();
  for (let i = 0; i < 100; i++) ledger.receive(leased(`job-${String(i)}`, 3_000 + i * 300));
  while (ledger.nextToStart() !== undefined) { /* start them all */ }
  for (let i = 0; i < 100; i += 2) ledger.finish(`job-${String(i)}`, undefined, false);
  // Job i is due one third of its lease after receipt: 1,000 + 100 i ms.
  assert.deepEqual(extended(ledger, start + 1_350), ["job-1", "job-3"]);
  assert.deepEqual(extended(ledger, start + 1_550), ["job-5"]);
});
