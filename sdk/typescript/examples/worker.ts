// A producer and a worker against a local node (./scripts/node.sh).
//
//   npm run build && node dist/examples/worker.js [address]
import { Client, JobFailed, Worker } from "../src/index.js";

const client = new Client({ address: process.argv[2] ?? "127.0.0.1:7400" });
for (let i = 0; i < 5; i++) await client.producer().enqueue("emails", `hello ${i}`, { headers: { example: "true" } });

const stop = new AbortController();
process.once("SIGINT", () => stop.abort());
process.once("SIGTERM", () => stop.abort());
console.log("working; Ctrl-C stops after the running jobs finish");
await new Worker(
  client,
  "emails",
  async (job) => {
    const text = job.payload.toString();
    if (text === "poison") throw new JobFailed("cannot handle this one", { dead: true });
    console.log(`${job.id} attempt ${job.attempt}: ${text}`);
  },
  { concurrency: 4, signal: stop.signal },
).run();
client.close();
