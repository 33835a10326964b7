// The web console in a real browser: Debian's Chromium driven by
// playwright-core, against a real 3-node, 4-shard cluster of queue-node
// processes with auth on, under a steady load. Every page must show the
// cluster's real data, each action must change the queue (checked through
// the REST API, not the page), and a `read` token must see but not act.
// A screenshot of each page is saved under screenshots/ for a person to
// look at.
//
// Binaries: RAFTQ_BIN_DIR, else $CARGO_TARGET_DIR/debug (scripts/test.sh
// builds them). Browser: RAFTQ_CHROMIUM, else /usr/bin/chromium.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..", "..");
const shots = join(here, "screenshots");
const ADMIN = "console-admin-token";
const VIEWER = "console-viewer-token";

function binary(name) {
  const dir = process.env.RAFTQ_BIN_DIR ?? join(process.env.CARGO_TARGET_DIR ?? join(repo, "target"), "debug");
  const path = join(dir, name);
  if (!existsSync(path)) throw new Error(`${path} not found: build it with \`cargo build --workspace\` (or set RAFTQ_BIN_DIR)`);
  return path;
}

// Ports below the kernel's ephemeral range, as the SDK harnesses pick them.
let nextPort = 0;
function tryListen(port) {
  return new Promise((done) => {
    const server = createServer();
    server.once("error", () => done(false));
    server.listen(port, "127.0.0.1", () => server.close(() => done(true)));
  });
}
async function freeAddr() {
  let start = 32_768;
  try { start = Number.parseInt(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").split(/\s+/)[0], 10) || start; } catch { /* default */ }
  const span = Math.max(1_000, start - 10_000);
  const offset = (process.pid * 7_919 + 3_000) % span;
  for (let i = 0; i < span; i++) {
    const port = 10_000 + ((offset + nextPort++) % span);
    if (await tryListen(port)) return `127.0.0.1:${port}`;
  }
  throw new Error("no free loopback port below the ephemeral range");
}

async function waitFor(what, check, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let value;
    try { value = await check(); } catch { value = undefined; }
    if (value !== undefined && value !== false && value !== null) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const sha256 = (text) => createHash("sha256").update(text).digest("hex");

const root = mkdtempSync(join(tmpdir(), "raftq-console-"));
const procs = [];
let base = ""; // http://client address of node 1
let readOnlyBase = "";
let browser;
let load;

function startNode(id, addr, peer, members, extra) {
  const dir = join(root, `n${id}`);
  const log = openSync(`${dir}.log`, "a");
  const proc = spawn(binary("queue-node"), ["--node-id", `${id}`, "--listen", addr, "--peer-listen", peer, "--data-dir", dir, "--initial-members", members, ...extra], {
    stdio: ["ignore", "ignore", log],
    env: { ...process.env, RAFTQ_LOG: "info,openraft=warn" },
  });
  closeSync(log);
  procs.push(proc);
}

/** One REST call, retried while a shard has no leader or one is moving
 * (503), as a client would. */
async function rest(method, path, token, body, at = base) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const res = await fetch(at + "/api/v1" + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const json = await res.json().catch(() => null);
    if (res.status !== 503 || Date.now() > deadline) return { status: res.status, json };
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function ok(method, path, body, at) {
  const { status, json } = await rest(method, path, ADMIN, body, at);
  if (status >= 300) throw new Error(`${method} ${path}: ${status} ${JSON.stringify(json)}`);
  return json;
}

let keys = 0;
/** Enqueues `jobs`, each with an idempotency key unless it has one, so a
 * retried request cannot store a job twice. */
async function enqueue(queue, jobs) {
  const keyed = jobs.map((j) => ({ idempotency_key: `k${keys++}`, ...j }));
  return (await ok("POST", `/queues/${queue}/jobs`, { jobs: keyed })).job_ids;
}

/** Jobs flowing through three queues: enqueues, acks, a few dead letters. */
function startLoad() {
  let running = true;
  const loop = async () => {
    let round = 0;
    while (running) {
      round++;
      try {
        for (const queue of ["emails", "reports", "webhooks"]) {
          const n = queue === "emails" ? 20 : queue === "reports" ? 8 : 12;
          await enqueue(queue, Array.from({ length: n }, (_, i) => ({ payload: JSON.stringify({ round, i, to: `user${i}@example.com` }), headers: { tenant: i % 2 ? "acme" : "globex" } })));
          const leased = (await ok("POST", `/queues/${queue}/fetch`, { worker_id: "load", max_jobs: Math.floor(n * 0.8) })).jobs;
          const tokens = leased.map((j) => j.token);
          const failing = queue === "emails" && round % 3 === 0 ? tokens.splice(0, 1) : [];
          if (tokens.length) await ok("POST", "/ack", { tokens });
          if (failing.length) await ok("POST", "/nack", { items: failing.map((token) => ({ token, error: "SMTP 451 4.7.1 try again later", dead: true })) });
        }
      } catch { /* a leader moving: the next round goes on */ }
      await new Promise((r) => setTimeout(r, 250));
    }
  };
  const done = loop();
  return async () => { running = false; await done; };
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  const auth = join(root, "auth.yaml");
  writeFileSync(auth, `principals:
  - name: ops
    tokens_sha256: ['${sha256(ADMIN)}']
    grants:
      - { role: read, queues: ['*'] }
      - { role: queue-admin, queues: ['*'] }
      - { role: produce, queues: ['*'] }
      - { role: consume, queues: ['*'] }
  - name: viewer
    tokens_sha256: ['${sha256(VIEWER)}']
    grants: [{ role: read, queues: ['*'] }]
`);
  const config = join(root, "node.yaml");
  // Debug builds beside a browser on a small machine: timings that do not
  // take a slow heartbeat for a dead leader.
  writeFileSync(config, "shards: 4\nconsole:\n  sample_every_ms: 1000\nraft:\n  heartbeat_ms: 200\n  election_timeout_min_ms: 2000\n  election_timeout_max_ms: 4000\n");
  const addrs = [await freeAddr(), await freeAddr(), await freeAddr()];
  const peers = [await freeAddr(), await freeAddr(), await freeAddr()];
  const members = peers.map((p, i) => `${i + 1}=${p}`).join(",");
  for (let i = 0; i < 3; i++) startNode(i + 1, addrs[i], peers[i], members, ["--config", config, "--auth-file", auth]);
  base = `http://${addrs[0]}`;
  // A one-node cluster with the console switched to read-only.
  const single = [await freeAddr(), await freeAddr()];
  startNode(9, single[0], single[1], `9=${single[1]}`, ["--auth-file", auth, "--console-read-only"]);
  readOnlyBase = `http://${single[0]}`;

  await waitFor("every shard of the cluster to lead", async () => (await rest("GET", "/queues", ADMIN)).status === 200);
  await waitFor("every node to answer", async () => {
    const c = (await rest("GET", "/cluster", ADMIN)).json;
    return c.nodes.length === 3 && c.nodes.every((n) => n.reachable && n.shards.length === 4 && n.shards.every((s) => s.has_leader));
  });
  // The nodes spread the shards' leaderships at start: let them, so the
  // pages are not read in the middle of a hand-over.
  await waitFor("leaderships spread over the nodes", async () => {
    const c = (await rest("GET", "/cluster", ADMIN)).json;
    return c.nodes.every((n) => n.shards.some((s) => s.role === "leader"));
  });
  await waitFor("the read-only node to lead", async () => (await rest("GET", "/queues", ADMIN, undefined, readOnlyBase)).status === 200);
  load = startLoad();
  browser = await chromium.launch({
    executablePath: process.env.RAFTQ_CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  if (load) await load();
  if (browser) await browser.close();
  await Promise.all(procs.map((p) => new Promise((done) => {
    if (p.exitCode !== null || p.signalCode !== null) return done();
    p.once("exit", done);
    p.kill("SIGKILL");
  })));
  // Three nodes' RocksDB directories are a few hundred MB: left behind,
  // every run would eat into the disk.
  rmSync(root, { recursive: true, force: true });
});

/** Navigates to `hash` and waits until the page shows it (not the page
 * before it, still on screen while the new one loads). */
async function open(page, hash, at = base) {
  await page.goto(at + "/" + hash);
  await page.waitForFunction((h) => document.body.dataset.route === h, hash);
}

async function signedIn(token, at = base) {
  const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  page.on("pageerror", (e) => { throw e; });
  await page.goto(at + "/");
  await page.fill("#token", token);
  await page.click("#signin button[type=submit]");
  await page.waitForSelector("#principal");
  return page;
}

test("sign-in refuses a wrong token and shows who signed in", async () => {
  const page = await browser.newPage();
  await page.goto(base + "/");
  await page.waitForSelector("#signin");
  await page.fill("#token", "not-a-token");
  await page.click("#signin button[type=submit]");
  await page.waitForSelector("#signin .error");
  assert.match(await page.textContent("#signin .error"), /not known/);
  await page.fill("#token", ADMIN);
  await page.click("#signin button[type=submit]");
  await page.waitForSelector("#principal");
  assert.match(await page.textContent("#principal"), /^ops/);
  await page.close();
});

test("the overview shows every queue, its rates and the cluster's health", async () => {
  const page = await signedIn(ADMIN);
  await page.waitForSelector("#queues tr[data-queue=emails]");
  // Charts fill in as samples arrive, once a second.
  await page.waitForFunction(() => document.querySelectorAll("#queues tr[data-queue=emails] svg polyline").length === 4, null, { timeout: 30_000 });
  const names = await page.$$eval("#queues tbody tr", (rows) => rows.map((r) => r.dataset.queue));
  for (const q of ["emails", "reports", "webhooks"]) assert.ok(names.includes(q), `${q} listed: ${names}`);
  const health = await page.textContent("#health");
  assert.match(health, /3 \/ 3/);
  assert.match(health, /4 \/ 4/);
  // The numbers are the node's numbers.
  const stats = (await ok("GET", "/queues")).queues.find((q) => q.queue === "emails");
  const shown = await page.$eval("#queues tr[data-queue=emails] td:nth-child(5)", (td) => td.textContent.replace(/,/g, ""));
  assert.ok(Math.abs(Number(shown) - stats.dead) <= 5, `dead shown ${shown}, node says ${stats.dead}`);
  await page.waitForTimeout(1500); // another sample, so the charts show a stretch
  await page.screenshot({ path: join(shots, "overview.png"), fullPage: true });
  await page.close();
});

test("the queue page filters jobs and its actions change the queue", async () => {
  await enqueue("scratch", [
    { payload: "a", headers: { region: "eu" } },
    { payload: "b", headers: { region: "us" } },
    { payload: "c", delay_ms: 3_600_000 },
  ]);
  const page = await signedIn(ADMIN);
  await open(page, "#/queue/emails");
  await page.waitForSelector("#jobs tbody tr[data-job]");
  await page.click("#state-tabs button[data-state=dead]");
  await page.waitForSelector("#state-tabs button[data-state=dead].on");
  await page.waitForSelector("#jobs tbody tr[data-job]");
  const states = await page.$$eval("#jobs tbody tr[data-job] .badge", (b) => b.map((x) => x.textContent));
  assert.ok(states.length > 0 && states.every((s) => s === "dead"), `${states}`);
  await page.screenshot({ path: join(shots, "queue.png"), fullPage: true });

  await open(page, "#/queue/scratch");
  await page.waitForSelector("#jobs tbody tr[data-job]");
  assert.equal(await page.$$eval("#jobs tbody tr[data-job]", (r) => r.length), 3);
  await page.fill("#filters input[name=header]", "region=eu");
  await page.click("#filters button[type=submit]");
  await page.waitForFunction(() => document.querySelectorAll("#jobs tbody tr[data-job]").length === 1);
  assert.match(await page.textContent("#jobs tbody"), /region=eu/);

  await page.click("#pause");
  await page.waitForSelector("#paused");
  assert.equal((await ok("GET", "/queues/scratch")).info.paused, true);
  await page.click("#resume");
  await page.waitForSelector("#pause");
  assert.equal((await ok("GET", "/queues/scratch")).info.paused, false);

  await page.fill("#settings input[name=default_lease_ms]", "45000");
  await page.fill("#settings input[name=default_max_attempts]", "4");
  await page.click("#save-settings");
  await waitFor("the new defaults", async () => {
    const c = (await ok("GET", "/queues/scratch")).info.config;
    return c.default_lease_ms === 45_000 && c.default_max_attempts === 4;
  }, 10_000);

  page.once("dialog", (d) => d.accept());
  await page.click("#purge");
  await waitFor("the purge", async () => (await ok("GET", "/queues/scratch")).stats.ready === 0, 10_000);
  assert.equal((await ok("GET", "/queues/scratch")).stats.scheduled, 0);
  await page.close();
});

test("the job page previews the payload and cancels or requeues the job", async () => {
  const [jsonJob, binJob] = await enqueue("jobs-page", [
    { payload: JSON.stringify({ invoice: 42, lines: [{ sku: "A-1", qty: 2 }] }), headers: { tenant: "acme", trace: "t-1" }, priority: 3 },
    { payload_base64: Buffer.from([0, 1, 2, 255, 104, 105]).toString("base64") },
  ]);
  const page = await signedIn(ADMIN);
  await open(page, `#/job/${jsonJob}`);
  await page.waitForSelector("#payload");
  assert.match(await page.textContent("#payload"), /"invoice": 42,\n/);
  assert.match(await page.textContent("#headers"), /tenant.*acme/s);
  await page.click("button[data-view=hex]");
  assert.match(await page.textContent("#payload"), /^000000  7b 22 69 6e/);
  await page.click("button[data-view=json]");
  await page.screenshot({ path: join(shots, "job.png"), fullPage: true });
  page.once("dialog", (d) => d.accept());
  await page.click("#cancel");
  await waitFor("the cancel", async () => (await rest("GET", `/jobs/${jsonJob}`, ADMIN)).status === 404, 10_000);

  await open(page, `#/job/${binJob}`);
  await page.waitForSelector("#payload");
  assert.match(await page.textContent("#payload"), /00 01 02 ff 68 69/);

  // A dead job: lease it, fail it, requeue it from its page.
  const leased = (await ok("POST", "/queues/jobs-page/fetch", { max_jobs: 1 })).jobs[0];
  assert.equal(leased.job.id, binJob);
  await ok("POST", "/nack", { items: [{ token: leased.token, error: "corrupt input", dead: true }] });
  await open(page, `#/job/${binJob}?again`);
  await page.waitForSelector("#requeue");
  assert.match(await page.textContent("#last-error"), /corrupt input/);
  await page.click("#requeue");
  await waitFor("the requeue", async () => (await ok("GET", `/jobs/${binJob}`)).state === "ready", 10_000);
  await page.close();
});

test("dead letters: requeue a selection, purge everything a filter matches", async () => {
  const ids = await enqueue("billing", Array.from({ length: 6 }, (_, i) => ({ payload: `charge ${i}` })));
  const leased = (await ok("POST", "/queues/billing/fetch", { max_jobs: 6 })).jobs;
  assert.equal(leased.length, 6);
  await ok("POST", "/nack", { items: leased.map((j, i) => ({ token: j.token, error: i < 3 ? "card declined" : "gateway timeout", dead: true })) });
  const page = await signedIn(ADMIN);
  await open(page, "#/dead/billing");
  await page.waitForFunction(() => document.querySelectorAll("#dead tbody tr[data-job]").length === 6);
  await page.screenshot({ path: join(shots, "dead-letters.png"), fullPage: true });
  const first = await page.$eval("#dead tbody tr[data-job] input[type=checkbox]", (c) => c.dataset.id);
  await page.check(`#dead input[data-id="${first}"]`);
  await page.click("#requeue-selected");
  await waitFor("the requeued job", async () => (await ok("GET", `/jobs/${first}`)).state === "ready", 10_000);
  const firstError = leased.findIndex((j) => j.job.id === first) < 3 ? "card declined" : "gateway timeout";
  const other = firstError === "card declined" ? "gateway timeout" : "card declined";

  await open(page, `#/dead/billing?error=${encodeURIComponent(other)}`);
  await page.waitForFunction(() => document.querySelectorAll("#dead tbody tr[data-job]").length === 3);
  page.once("dialog", (d) => d.accept());
  await page.click("#purge-all");
  await waitFor("the purge of the matching jobs", async () => {
    const dead = (await ok("GET", "/queues/billing/jobs?state=dead")).jobs;
    return dead.length === 2 && dead.every((j) => j.last_error === firstError);
  }, 10_000);
  assert.ok(ids.includes(first));
  await page.close();
});

test("the cluster page shows every node, shard, leader and lag", async () => {
  const page = await signedIn(ADMIN);
  await open(page, "#/cluster");
  await page.waitForSelector("#shards tbody tr[data-shard]");
  assert.equal(await page.$$eval("#nodes tbody tr", (r) => r.length), 3);
  assert.equal(await page.$$eval("#shards tbody tr[data-shard]", (r) => r.length), 4);
  const leaders = await page.$$eval("#shards tbody tr[data-shard] td:nth-child(2)", (tds) => tds.map((t) => t.textContent));
  assert.ok(leaders.every((l) => /^node [123]$/.test(l)), `${leaders}`);
  // The page refreshes itself: it comes to show the leader the node names.
  await waitFor("the page to show shard 0's leader", async () => {
    const cluster = await ok("GET", "/cluster");
    const shard0 = cluster.nodes.flatMap((n) => n.shards).find((s) => s.shard === 0 && s.role === "leader");
    const shown = await page.$eval("#shards tbody tr[data-shard='0'] td:nth-child(2)", (td) => td.textContent);
    return shard0 && shown === `node ${shard0.leader_id}`;
  }, 20_000);
  assert.match(await page.textContent("#shards"), /lag \d/);
  assert.equal(await page.$$eval("#nodes .badge.ok", (b) => b.length), 3);
  await page.screenshot({ path: join(shots, "cluster.png"), fullPage: true });
  await page.close();
});

test("a read token sees every page but no action, and the API refuses it too", async () => {
  const [id] = await enqueue("viewer-check", [{ payload: "look, don't touch" }]);
  const page = await signedIn(VIEWER);
  assert.match(await page.textContent("#principal"), /viewer · read/);
  await open(page, "#/queue/emails");
  await page.waitForSelector("#jobs");
  assert.equal(await page.$("#queue-actions"), null);
  assert.equal(await page.$("#save-settings"), null);
  assert.equal(await page.$eval("#settings input[name=default_lease_ms]", (i) => i.disabled), true);
  await open(page, `#/job/${id}`);
  await page.waitForSelector("#payload");
  assert.equal(await page.$("#job-actions"), null);
  await open(page, "#/dead/emails");
  await page.waitForSelector("#dead");
  assert.equal(await page.$("#dead input[type=checkbox]"), null);
  assert.equal(await page.$("#dead-actions"), null);
  await page.screenshot({ path: join(shots, "viewer.png"), fullPage: true });
  // Hiding buttons is not the protection: the API refuses the viewer.
  const purge = await rest("POST", "/queues/viewer-check/purge", VIEWER);
  assert.equal(purge.status, 403);
  assert.match(purge.json.error.message, /viewer.*queue-admin/);
  await page.close();
});

test("a read-only console hides actions even from an admin", async () => {
  await ok("POST", "/queues/ro/jobs", { jobs: [{ payload: "x" }] }, readOnlyBase);
  const page = await signedIn(ADMIN, readOnlyBase);
  assert.match(await page.textContent("#who"), /read-only console/);
  await open(page, "#/queue/ro", readOnlyBase);
  await page.waitForSelector("#jobs tbody tr[data-job]");
  assert.equal(await page.$("#queue-actions"), null);
  assert.equal(await page.$("#save-settings"), null);
  await page.close();
});
