// How many jobs one worker process acks per second with a no-op handler.
//
//   npm run build && node dist/examples/bench.js [address] [jobs] [concurrency]
//
// Enqueues the jobs first (in batches), then times the worker until every
// one is acked (read from the queue's ackedTotal).
import { randomUUID } from "node:crypto";
import { Client, Worker, type NewJob } from "../src/index.js";

const address = process.argv[2] ?? "127.0.0.1:7400";
const jobs = Number(process.argv[3] ?? 200_000);
const concurrency = Number(process.argv[4] ?? 256);
const queue = `bench-ts-${randomUUID().slice(0, 8)}`;
const client = new Client({ address });
const batch: NewJob[] = Array.from({ length: 5000 }, () => ({ payload: "x".repeat(16) }));
for (let start = 0; start < jobs; start += batch.length) {
  await client.producer().enqueueMany(queue, batch.slice(0, Math.min(batch.length, jobs - start)));
}
const acked = async () => (await client.stats(queue)).find((q) => q.queue === queue)?.ackedTotal ?? 0;
const started = performance.now();
const worker = new Worker(client, queue, () => {}, { concurrency, prefetch: concurrency });
const running = worker.run();
while ((await acked()) < jobs) await new Promise((r) => setTimeout(r, 50));
worker.stop();
await running;
const seconds = (performance.now() - started) / 1000;
console.log(`typescript: ${jobs} jobs in ${seconds.toFixed(2)}s = ${Math.round(jobs / seconds).toLocaleString("en")} jobs/s`);
client.close();
