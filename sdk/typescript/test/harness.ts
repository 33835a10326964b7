// Real queue-node processes for the SDK's tests. The binaries come from
// RAFTQ_BIN_DIR, or else CARGO_TARGET_DIR (default the repository's
// target)/debug; scripts/sdk-test.sh builds them first.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, closeSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { credentials, Metadata, type ChannelCredentials } from "@grpc/grpc-js";
import { ClusterAdminClient, type ClusterStatus } from "../src/gen/raftq/v1/cluster.js";
import { QueueAdminClient } from "../src/gen/raftq/v1/queue.js";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..");

export function binary(name: string): string {
  const dir = process.env.RAFTQ_BIN_DIR ?? join(process.env.CARGO_TARGET_DIR ?? join(repo, "target"), "debug");
  const path = join(dir, name);
  if (!existsSync(path)) throw new Error(`${path} not found: build it with \`cargo build --workspace\` (or set RAFTQ_BIN_DIR)`);
  return path;
}

const tempDirs: string[] = [];
const running = new Set<ChildProcess>();

// Each node's RocksDB directory is a few tens of MB: left behind, every
// run would eat into the disk. At exit, stop what still runs and delete.
process.on("exit", () => {
  for (const proc of running) proc.kill("SIGKILL");
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "raftq-ts-"));
  tempDirs.push(dir);
  return dir;
}

const lowestPort = 10_000;
let nextPort = 0;

function ephemeralStart(): number {
  try {
    const start = Number.parseInt(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").split(/\s+/)[0] ?? "", 10);
    return start > lowestPort + 1_000 ? start : 32_768;
  } catch {
    return 32_768;
  }
}

function tryListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => { resolve(false); });
    server.listen(port, "127.0.0.1", () => server.close(() => { resolve(true); }));
  });
}

/**
 * A loopback address free now and below the kernel's ephemeral range: a
 * port picked by binding port 0 comes from that range, and before (or
 * while restarting) its node listens, an outgoing connection can be given
 * it, so the node cannot listen ("Address already in use"). The search
 * starts at an offset spread by process so concurrent runs seldom collide.
 */
export async function freeAddr(): Promise<string> {
  const span = ephemeralStart() - lowestPort;
  const offset = (process.pid * 7_919) % span;
  for (let i = 0; i < span; i++) {
    const port = lowestPort + ((offset + nextPort++) % span);
    if (await tryListen(port)) return `127.0.0.1:${port}`;
  }
  throw new Error("no free loopback port below the ephemeral range");
}

/** Polls `check` until it returns something other than undefined / false. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let value: T | undefined | false;
    try {
      value = await check();
    } catch {
      value = undefined;
    }
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export class Node {
  proc: ChildProcess | undefined;
  constructor(
    readonly id: number,
    readonly addr: string,
    readonly peerAddr: string,
    readonly dir: string,
    readonly members: string,
    readonly extra: string[],
  ) {}

  start(): void {
    const log = openSync(`${this.dir}.log`, "a");
    this.proc = spawn(
      binary("queue-node"),
      ["--node-id", `${this.id}`, "--listen", this.addr, "--peer-listen", this.peerAddr, "--data-dir", this.dir, "--initial-members", this.members, ...this.extra],
      { stdio: ["ignore", "ignore", log], env: { ...process.env, RAFTQ_LOG: "info,openraft=warn" } },
    );
    closeSync(log);
    const proc = this.proc;
    running.add(proc);
    proc.once("exit", () => running.delete(proc));
  }

  async kill(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (proc === undefined || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGKILL");
    await exited;
  }

  log(): string {
    return existsSync(`${this.dir}.log`) ? readFileSync(`${this.dir}.log`, "utf8") : "";
  }

  /** Raft status from the peer port, or undefined while it is down. */
  status(): Promise<ClusterStatus | undefined> {
    const client = new ClusterAdminClient(this.peerAddr, credentials.createInsecure());
    return new Promise((resolve) => {
      client.status({ routingVersion: 0 }, new Metadata(), { deadline: Date.now() + 2000 }, (error, value) => {
        client.close();
        resolve(error === null ? value : undefined);
      });
    });
  }

  /** Waits until the node answers a linearizable Stats call. */
  async waitServing(token?: string, creds: ChannelCredentials = credentials.createInsecure()): Promise<void> {
    await waitFor(`node ${this.id} to serve`, () => {
      if (this.proc?.exitCode !== null && this.proc?.exitCode !== undefined) {
        throw new Error(`queue-node ${this.id} exited:\n${this.log().slice(-3000)}`);
      }
      const client = new QueueAdminClient(this.addr, creds);
      const metadata = new Metadata();
      if (token !== undefined) metadata.set("authorization", `Bearer ${token}`);
      return new Promise<boolean>((resolve) => {
        client.stats({ queue: "", local: false }, metadata, { deadline: Date.now() + 2000 }, (error) => {
          client.close();
          resolve(error === null);
        });
      });
    }, 60_000);
  }
}

export async function spawnCluster(root: string, n: number, extra: string[] = []): Promise<Node[]> {
  const peers = await Promise.all(Array.from({ length: n }, freeAddr));
  const addrs = await Promise.all(Array.from({ length: n }, freeAddr));
  const members = peers.map((p, i) => `${i + 1}=${p}`).join(",");
  const nodes = peers.map((p, i) => new Node(i + 1, addrs[i], p, join(root, `n${i + 1}`), members, extra));
  for (const node of nodes) node.start();
  return nodes;
}

/** `raftq dev-certs`: a CA, a node certificate, an admin token, an auth file. */
export function devCerts(root: string): { dir: string; ca: string; token: string; nodeArgs: string[] } {
  const dir = join(root, "certs");
  execFileSync(binary("raftq"), ["dev-certs", "--out", dir], { stdio: "ignore" });
  return {
    dir,
    ca: join(dir, "ca.pem"),
    token: readFileSync(join(dir, "token"), "utf8").trim(),
    nodeArgs: ["--tls-cert", join(dir, "node.pem"), "--tls-key", join(dir, "node-key.pem"), "--tls-ca", join(dir, "ca.pem"), "--auth-file", join(dir, "auth.yaml")],
  };
}
