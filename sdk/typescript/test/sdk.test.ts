// The TypeScript SDK against real queue-node processes.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { appendFileSync, readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { credentials, status } from "@grpc/grpc-js";
import { context, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { join } from "node:path";
import { Client, JobFailed, JobState, RaftqError, RetryPolicy, shardOf, Worker, type Job, type QueueStats } from "../src/index.js";
import type { ShardMap } from "../src/gen/raftq/v1/queue.js";
import { binary, devCerts, freeAddr, Node, spawnCluster, tempDir, waitFor } from "./harness.js";

async function stats(client: Client, queue: string): Promise<QueueStats | undefined> {
  return (await client.stats(queue)).find((q) => q.queue === queue);
}

async function statsAre(client: Client, queue: string, want: (s: QueueStats) => boolean): Promise<true | undefined> {
  const s = await stats(client, queue);
  return s !== undefined && want(s) ? true : undefined;
}

describe("one node", () => {
  let node: Node;
  let client: Client;
  before(async () => {
    [node] = await spawnCluster(tempDir(), 1);
    await node.waitServing();
    client = new Client({ address: node.addr });
  });
  after(async () => {
    client.close();
    await node.kill();
  });

  test("every job option reaches the node", async () => {
    const producer = client.producer();
    const before = Date.now();
    const id = await producer.enqueue("opts", Buffer.from([0, 1, 2]), {
      headers: { tenant: "acme" },
      priority: 7,
      delayMs: 60_000,
      maxAttempts: 9,
      backoff: { initialMs: 500, maxMs: 10_000, multiplier: 3 },
      idempotencyKey: "order-1",
    });
    const job = await client.getJob(id);
    assert.equal(job.state, JobState.JOB_STATE_SCHEDULED);
    assert.deepEqual([...job.payload], [0, 1, 2]);
    assert.equal(job.headers.tenant, "acme");
    assert.equal(job.priority, 7);
    assert.equal(job.maxAttempts, 9);
    assert.equal(job.idempotencyKey, "order-1");
    assert.ok(job.dueAtMs >= before + 59_000 && job.dueAtMs <= Date.now() + 61_000);
    assert.equal(await producer.enqueue("opts", "again", { idempotencyKey: "order-1" }), id);

    const at = new Date(Date.now() + 7_200_000);
    const later = await client.getJob(await producer.enqueue("opts", "later", { runAt: at }));
    assert.equal(later.state, JobState.JOB_STATE_SCHEDULED);
    assert.ok(Math.abs(later.dueAtMs - at.getTime()) < 1000);

    const low = await producer.enqueue("opts", "low", { runAt: new Date(Date.now() - 60_000) });
    const high = await producer.enqueue("opts", "high", { priority: 5 });
    const fetched = await client.fetch("opts", { maxJobs: 2 });
    assert.deepEqual(fetched.map((j) => j.id), [high, low]);
    assert.equal(fetched[0].payload.toString(), "high");
  });

  test("bad input is refused with a reason", async () => {
    const producer = client.producer();
    await assert.rejects(producer.enqueue("bad", "x", { delayMs: 1, runAt: new Date() }), /not both/);
    await assert.rejects(
      producer.enqueueMany("bad", [{ payload: "ok" }, { payload: "too late", delayMs: 400 * 86_400_000 }]),
      (e: RaftqError) => e.code === status.INVALID_ARGUMENT && !e.retryable && e.details.includes("delay"),
    );
    await assert.rejects(producer.enqueue("no spaces!", "x"), (e: RaftqError) => e.code === status.INVALID_ARGUMENT);
    assert.equal((await stats(client, "bad"))?.enqueuedTotal ?? 0, 0);
  });

  test("a stale lease token is refused", async () => {
    const id = await client.producer().enqueue("fenced", "x");
    const [first] = await client.fetch("fenced", { leaseMs: 300 });
    const [second] = await waitFor("the redelivery", async () => {
      const jobs = await client.fetch("fenced", { leaseMs: 30_000 });
      return jobs.length > 0 ? jobs : undefined;
    });
    assert.equal(second.id, id);
    assert.equal(second.attempt, first.attempt + 1);
    await assert.rejects(client.ack(first), (e: RaftqError) => e.code === status.FAILED_PRECONDITION);
    assert.ok((await client.extend(second, 60_000)).getTime() > Date.now() + 50_000);
    await client.ack(second);
    const s = await stats(client, "fenced");
    assert.equal(s?.ackedTotal, 1);
    assert.equal(s?.leased, 0);
  });

  test("a worker acks every job once", async () => {
    const ids = await client.producer().enqueueMany("plain", Array.from({ length: 300 }, (_, i) => ({ payload: `${i}` })));
    const seen = new Map<string, number>();
    const worker = new Worker(client, "plain", (job: Job) => {
      seen.set(job.id, (seen.get(job.id) ?? 0) + 1);
    }, { concurrency: 8, prefetch: 8 });
    const running = worker.run();
    await waitFor("every job acked", () => statsAre(client, "plain", (s) => s.ackedTotal === 300));
    worker.stop();
    await running;
    assert.deepEqual([...seen.keys()].sort(), [...ids].sort());
    assert.ok([...seen.values()].every((n) => n === 1));
  });

  test("a slow handler keeps its lease", async () => {
    await client.producer().enqueue("slow", "x");
    const attempts: number[] = [];
    const worker = new Worker(client, "slow", async (job) => {
      attempts.push(job.attempt);
      await new Promise((r) => setTimeout(r, 2000)); // five leases long
    }, { leaseMs: 400 });
    const running = worker.run();
    await waitFor("the handler", () => attempts.length > 0);
    assert.deepEqual(await client.fetch("slow", { waitMs: 1000 }), []);
    await waitFor("the ack", () => statsAre(client, "slow", (s) => s.ackedTotal === 1));
    worker.stop();
    await running;
    assert.deepEqual(attempts, [1]);
    assert.equal((await stats(client, "slow"))?.expiredTotal, 0);
  });

  test("failures retry with backoff, then dead-letter", async () => {
    const producer = client.producer();
    const flaky = await producer.enqueue("failing", "x", { maxAttempts: 3, backoff: { initialMs: 50, maxMs: 100 } });
    const poison = await producer.enqueue("failing", "poison", { maxAttempts: 5 });
    const attempts = new Map<string, number>();
    const worker = new Worker(client, "failing", (job) => {
      attempts.set(job.id, (attempts.get(job.id) ?? 0) + 1);
      if (job.payload.toString() === "poison") throw new JobFailed("cannot parse", { dead: true });
      throw new TypeError(`boom on attempt ${job.attempt}`);
    }, { concurrency: 2 });
    const running = worker.run();
    await waitFor("both dead", () => statsAre(client, "failing", (s) => s.dead === 2));
    worker.stop();
    await running;
    assert.deepEqual(Object.fromEntries(attempts), { [flaky]: 3, [poison]: 1 });
    const dead = await new Promise<Map<string, string>>((resolve, reject) =>
      client.admin.listDead({ queue: "failing", limit: 10, after: "" }, client.metadata(), (e, r) =>
        e ? reject(e) : resolve(new Map(r.jobs.map((j) => [j.id, j.lastError]))),
      ),
    );
    assert.equal(dead.get(flaky), "TypeError: boom on attempt 3");
    assert.equal(dead.get(poison), "cannot parse");
  });

  test("stop releases the jobs that have not started", async () => {
    await client.producer().enqueueMany("release", Array.from({ length: 10 }, (_, i) => ({ payload: `${i}` })));
    let started = false;
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    const abort = new AbortController();
    const worker = new Worker(client, "release", async () => {
      started = true;
      await held;
    }, { concurrency: 1, prefetch: 5, leaseMs: 60_000, signal: abort.signal });
    const running = worker.run();
    await waitFor("one started", () => started);
    await waitFor("six leased", () => statsAre(client, "release", (s) => s.leased === 6));
    abort.abort();
    release();
    await running;
    const s = await stats(client, "release");
    assert.deepEqual([s?.ackedTotal, s?.leased, s?.ready], [1, 0, 9]);
  });

  test("the handler span is a child of the producer span", async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const contextManager = new AsyncLocalStorageContextManager().enable();
    context.setGlobalContextManager(contextManager);
    trace.setGlobalTracerProvider(provider);
    try {
      const tracer = trace.getTracer("test");
      const parent = tracer.startSpan("checkout");
      const id = await context.with(trace.setSpan(context.active(), parent), () => client.producer().enqueue("traced", "x"));
      parent.end();
      assert.match((await client.getJob(id)).headers.traceparent, /^00-/);
      let inside: string | undefined;
      const worker = new Worker(client, "traced", () => {
        inside = trace.getActiveSpan()?.spanContext().spanId;
      });
      const running = worker.run();
      await waitFor("the handler", () => inside !== undefined);
      worker.stop();
      await running;
      const span = exporter.getFinishedSpans().find((s) => s.name === "traced process");
      assert.ok(span);
      assert.equal(span.spanContext().traceId, parent.spanContext().traceId);
      assert.equal(span.parentSpanContext?.spanId, parent.spanContext().spanId);
      assert.equal(inside, span.spanContext().spanId);
    } finally {
      trace.disable();
      context.disable();
    }
  });
});

test("TLS, tokens and roles", async () => {
  const root = tempDir();
  const certs = devCerts(root);
  const producerToken = "producer-only-token";
  const digest = createHash("sha256").update(producerToken).digest("hex");
  appendFileSync(`${certs.dir}/auth.yaml`, `  - name: producer\n    tokens_sha256: ['${digest}']\n    grants:\n      - { role: produce, queues: ['*'] }\n`);
  const [node] = await spawnCluster(root, 1, certs.nodeArgs);
  const ca = readFileSync(certs.ca);
  try {
    await node.waitServing(certs.token, credentials.createSsl(ca));
    const admin = new Client({ address: node.addr, tls: { caCert: ca }, token: certs.token });
    await admin.producer().enqueue("secure", "x");
    let handled = false;
    const worker = new Worker(admin, "secure", () => {
      handled = true;
    });
    const running = worker.run();
    await waitFor("the handler", () => handled);
    worker.stop();
    await running;
    admin.close();

    const anonymous = new Client({ address: `https://${node.addr}`, tls: { caCert: ca } });
    await assert.rejects(anonymous.producer().enqueue("secure", "x"), (e: RaftqError) => e.code === status.UNAUTHENTICATED);
    anonymous.close();

    const producer = new Client({ address: node.addr, tls: { caCert: ca }, token: producerToken });
    await producer.producer().enqueue("secure", "y");
    await assert.rejects(
      new Worker(producer, "secure", () => {}).run(),
      (e: RaftqError) => e.code === status.PERMISSION_DENIED && e.details.includes("consume") && e.details.includes("producer"),
    );
    producer.close();

    const plaintext = new Client({ address: node.addr });
    await assert.rejects(plaintext.producer(RetryPolicy.never()).enqueue("secure", "x"), (e: RaftqError) => e.code === status.UNAVAILABLE);
    plaintext.close();
    assert.throws(() => new Client({ address: `http://${node.addr}`, tls: { caCert: ca } }), /https/);
  } finally {
    await node.kill();
  }
});

test("a worker carries on when the leader dies", async () => {
  const nodes = await spawnCluster(tempDir(), 3, ["--shards", "1"]);
  try {
    for (const n of nodes) await n.waitServing();
    const leader = await waitFor("a leader", async () => {
      for (const n of nodes) {
        const s = await n.status();
        if (s?.shards[0]?.hasLeader) return nodes.find((x) => x.id === s.shards[0].leaderId);
      }
      return undefined;
    });
    const follower = nodes.find((n) => n !== leader);
    assert.ok(follower);
    const client = new Client({ address: follower.addr });
    const ids = await client.producer().enqueueMany("ha", Array.from({ length: 400 }, (_, i) => ({ payload: `${i}` })));
    const handled = new Set<string>();
    let release = () => {};
    const firstBatch = new Promise<void>((r) => (release = r));
    const worker = new Worker(client, "ha", async (job) => {
      handled.add(job.id);
      if (handled.size >= 50) release();
      await new Promise((r) => setTimeout(r, 5)); // the work itself: the kill lands mid-run
    }, { concurrency: 4, leaseMs: 2000, onWarning: () => {} });
    const running = worker.run();
    await firstBatch;
    await leader.kill();
    ids.push(...(await client.producer().enqueueMany("ha", Array.from({ length: 100 }, (_, i) => ({ payload: `late ${i}` })))));
    await waitFor(
      "every job handled and acked after the leader died",
      async () => ids.every((id) => handled.has(id)) && (await statsAre(client, "ha", (s) => s.ready === 0 && s.leased === 0)),
      90_000,
    );
    worker.stop();
    await running;
    client.close();
  } finally {
    for (const n of nodes) await n.kill();
  }
});

/** The sum of raftq_forwarded_requests_total over the nodes. */
async function forwardedTotal(http: string[]): Promise<number> {
  let total = 0;
  for (const addr of http) {
    const text = await (await fetch(`http://${addr}/metrics`)).text();
    for (const line of text.split("\n")) {
      if (line.startsWith("raftq_forwarded_requests_total{")) total += Number(line.split(" ").at(-1));
    }
  }
  return total;
}

/** A queue name that lands on `shard` of `shards`. */
function queueOnShard(shard: number, shards: number, tag: string): string {
  for (let i = 0; ; i++) if (shardOf(`${tag}-${i}`, shards) === shard) return `${tag}-${i}`;
}

test("calls go straight to the shard leaders", async () => {
  const shards = 4;
  const root = tempDir();
  const peers = await Promise.all(Array.from({ length: 3 }, freeAddr));
  const addrs = await Promise.all(Array.from({ length: 3 }, freeAddr));
  const http = await Promise.all(Array.from({ length: 3 }, freeAddr));
  const members = peers.map((p, i) => `${i + 1}=${p}`).join(",");
  const nodes = peers.map(
    (p, i) => new Node(i + 1, addrs[i], p, join(root, `n${i + 1}`), members, ["--shards", `${shards}`, "--http-listen", http[i]]),
  );
  for (const n of nodes) n.start();
  const forwarded = () => forwardedTotal(http);
  const queueOn = (shard: number, tag: string) => queueOnShard(shard, shards, tag);
  try {
    for (const n of nodes) await n.waitServing();
    // Every node knows every leader's client address; the SDK's hash is the nodes'.
    for (const n of nodes) {
      const plain = new Client({ address: n.addr, routeToLeaders: false });
      await waitFor("a complete shard map", async () => {
        const map = await new Promise<ShardMap | undefined>((resolve) =>
          plain.queue.getShardMap({ queues: ["emails", "q-17"] }, plain.metadata(), (error, value) => resolve(error === null ? value : undefined)),
        );
        if (map === undefined || map.shards.length !== shards || map.shards.some((s) => s.leaderAddr === "")) return undefined;
        for (const [queue, shard] of Object.entries(map.queues)) assert.equal(shardOf(queue, shards), shard, queue);
        return true;
      });
      plain.close();
    }
    const client = new Client({ address: nodes[0].addr });
    await client.refreshShardMap();
    const before = await forwarded();
    for (let shard = 0; shard < shards; shard++) {
      const queue = queueOn(shard, "routed");
      await client.producer().enqueueMany(queue, Array.from({ length: 5 }, () => ({ payload: "x" })));
      const worker = new Worker(client, queue, () => {}, { concurrency: 4, onWarning: () => {} });
      const running = worker.run();
      await waitFor("the queue's jobs acked", () => statsAre(client, queue, (s) => s.ackedTotal === 5));
      worker.stop();
      await running;
    }
    assert.equal(await forwarded(), before, "a routing client has no request forwarded");
    // Without routing, node 1 forwards what it does not lead.
    const plain = new Client({ address: nodes[0].addr, routeToLeaders: false });
    for (let shard = 0; shard < shards; shard++) await plain.producer().enqueue(queueOn(shard, "plain"), "x");
    const led = ((await nodes[0].status())?.shards ?? []).filter((s) => s.role === "leader").length;
    assert.equal((await forwarded()) - before, shards - led);
    plain.close();
    client.close();
  } finally {
    for (const n of nodes) await n.kill();
  }
});

test("queues are routed to their shards after the shard count grows", async () => {
  // Queues that held jobs when the count grew stay on their shard (the
  // map pins them); the SDK sends them there, and new queues by the new
  // hash, with nothing forwarded.
  const root = tempDir();
  const peers = await Promise.all(Array.from({ length: 3 }, freeAddr));
  const addrs = await Promise.all(Array.from({ length: 3 }, freeAddr));
  const http = await Promise.all(Array.from({ length: 3 }, freeAddr));
  const members = peers.map((p, i) => `${i + 1}=${p}`).join(",");
  const nodes = peers.map(
    (p, i) =>
      new Node(i + 1, addrs[i], p, join(root, `n${i + 1}`), members, ["--shards", "2", "--replication-factor", "3", "--http-listen", http[i]]),
  );
  for (const n of nodes) n.start();
  try {
    for (const n of nodes) await n.waitServing();
    const moving = Array.from({ length: 200 }, (_, i) => `parked-${i}`)
      .filter((q) => shardOf(q, 2) !== shardOf(q, 4))
      .slice(0, 8);
    const client = new Client({ address: nodes[0].addr });
    for (const queue of moving) await client.producer().enqueue(queue, "before");
    const grown = spawnSync(binary("raftq"), ["--peer-addr", peers[1], "cluster", "grow-shards", "4"], { encoding: "utf8", timeout: 120_000 });
    assert.equal(grown.status, 0, grown.stderr);
    // The client's map is from before: a new queue on a new shard still
    // lands there (the node's answer makes it read the map).
    const fresh = await client.producer().enqueue(queueOnShard(3, 4, "fresh"), "x");
    assert.ok(fresh.startsWith("3-"), fresh);
    await waitFor("every node to know the 4 shards' leaders", async () => {
      const map = await new Promise<ShardMap | undefined>((resolve) =>
        client.queue.getShardMap({ queues: moving }, client.metadata(), (error, value) => resolve(error === null ? value : undefined)),
      );
      return map !== undefined && map.shardCount === 4 && map.shards.every((s) => s.leaderAddr !== "");
    });
    await client.refreshShardMap();
    const before = await forwardedTotal(http);
    for (const queue of moving) {
      const id = await client.producer().enqueue(queue, "after");
      assert.ok(id.startsWith(`${shardOf(queue, 2)}-`), `${queue} → ${id}`);
    }
    for (let shard = 0; shard < 4; shard++) {
      const id = await client.producer().enqueue(queueOnShard(shard, 4, "new"), "x");
      assert.ok(id.startsWith(`${shard}-`), id);
    }
    assert.equal(await forwardedTotal(http), before, "a routing client has no request forwarded");
    client.close();
  } finally {
    for (const n of nodes) await n.kill();
  }
});
