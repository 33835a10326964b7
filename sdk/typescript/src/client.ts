// A connection to a raftq node. Any node will do: it forwards each call to
// its shard's leader. Producers and workers go straight to the leaders
// when the shard map names them (routing.ts).
import {
  credentials,
  Metadata,
  status,
  type ChannelCredentials,
  type ClientOptions as ChannelOptions,
  type ServiceError,
} from "@grpc/grpc-js";
import {
  QueueAdminClient,
  QueueClient,
  type AckResponse,
  type ExtendLeaseResponse,
  type FetchResponse,
  type Job as JobProto,
  type NackResponse,
  type StatsResponse,
  type QueueStats,
  type ShardMap,
  type TokenResult,
} from "./gen/raftq/v1/queue.js";
import { RaftqError } from "./errors.js";
import { fromLeased, type Job } from "./jobs.js";
import { errorText, MAX_MESSAGE_BYTES } from "./limits.js";
import { Producer } from "./producer.js";
import { RetryPolicy } from "./retry.js";
import { isConnectionFailure, Router } from "./routing.js";

/** TLS settings: `caCert` is the CA that signed the node's certificate (PEM;
 * absent trusts the system's roots); `cert` / `key` a client certificate
 * (the caller is then the principal its SAN or CN names); `serverName` the
 * name the node's certificate must carry when it differs from the host. */
export interface TlsOptions {
  caCert?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  serverName?: string;
}

export interface ConnectOptions {
  /** `host:port`, or `https://host:port` with TLS. */
  address: string;
  tls?: TlsOptions;
  /** A bearer token, sent with every call. */
  token?: string;
  /** Send a queue's enqueues and worker stream straight to its shard's
   * leader, from the shard map (default true). False: every call goes to
   * `address`, which forwards it — for a client that can reach that node
   * only (a port-forward, a proxy). */
  routeToLeaders?: boolean;
}

/** Where one call for a queue goes: a leader, or the node connected to. */
export interface Target {
  queue: QueueClient;
  /** The leader's address; undefined for the node connected to. */
  leader?: string;
}

function target(address: string, tls: TlsOptions | undefined): string {
  const match = /^([a-z]+):\/\/(.*)$/.exec(address);
  if (match === null) return address.replace(/\/$/, "");
  const [, scheme, rest] = match;
  if (scheme === "http" && tls !== undefined) {
    throw new TypeError(`${address}: an http:// address with TLS on; use https:// or host:port`);
  }
  if (scheme === "https" && tls === undefined) {
    throw new TypeError(`${address}: an https:// address needs TLS settings (tls: {...})`);
  }
  if (scheme !== "http" && scheme !== "https") throw new TypeError(`${address}: unknown scheme ${scheme}; use host:port`);
  return rest.replace(/\/$/, "");
}

function buffer(value: string | Buffer | undefined): Buffer | null {
  if (value === undefined) return null;
  return typeof value === "string" ? Buffer.from(value) : value;
}

/** The `Fetch` / `Ack` / ... calls by hand, and the channel a Producer and
 * a Worker use. */
export class Client {
  readonly queue: QueueClient;
  readonly admin: QueueAdminClient;
  private readonly token: string | undefined;
  private isClosed = false;
  private readonly router: Router | undefined;

  constructor(options: ConnectOptions) {
    const address = target(options.address, options.tls);
    let creds: ChannelCredentials = credentials.createInsecure();
    const channelOptions: ChannelOptions = {
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      "grpc.keepalive_time_ms": 30_000,
    };
    if (options.tls !== undefined) {
      const { caCert, cert, key, serverName } = options.tls;
      if ((cert === undefined) !== (key === undefined)) {
        throw new TypeError("TLS needs both cert and key for a client certificate, or neither");
      }
      creds = credentials.createSsl(buffer(caCert), buffer(key), buffer(cert));
      if (serverName !== undefined) {
        channelOptions["grpc.ssl_target_name_override"] = serverName;
        channelOptions["grpc.default_authority"] = serverName;
      }
    }
    if (options.token !== undefined && !/^[\x20-\x7e]+$/.test(options.token.trim())) {
      throw new TypeError("the token must be printable ASCII");
    }
    this.token = options.token?.trim();
    this.queue = new QueueClient(address, creds, channelOptions);
    this.admin = new QueueAdminClient(address, creds, channelOptions);
    if (options.routeToLeaders ?? true) {
      this.router = new Router((addr) => new QueueClient(addr, creds, channelOptions));
      // In the background: until the map is read, calls go to the node
      // connected to, which forwards them.
      this.refreshShardMap().catch(() => {});
    }
  }

  /** Reads the shard map from the node connected to. Done after
   * connecting and again when a leader moves; await it to route at once. */
  async refreshShardMap(): Promise<void> {
    if (this.router === undefined) return;
    const map = await unary<ShardMap>((cb) => this.queue.getShardMap({ queues: [] }, this.metadata(), cb));
    this.router.learnMap(map);
  }

  /** Where `queue`'s next call goes. */
  target(queue: string): Target {
    const leader = this.router?.leader(queue);
    return leader === undefined ? { queue: this.queue } : { queue: leader.queue, leader: leader.addr };
  }

  /** Metadata for one call to `target`: the token, and the direct-route
   * mark for a leader. */
  metadataFor(target: Target): Metadata {
    const metadata = this.metadata();
    if (target.leader !== undefined) metadata.set("x-raftq-route", "direct");
    return metadata;
  }

  /** Learns from a call to `target` that failed: the leader a "not the
   * leader" answer names, a leader out of reach, or a map to read again. */
  async observe(target: Target, error: unknown): Promise<void> {
    if (this.router === undefined) return;
    const e = error as Partial<ServiceError>;
    if (this.router.learnTrailers(e?.metadata)) return;
    const code = typeof e?.code === "number" ? e.code : status.UNKNOWN;
    if (target.leader !== undefined && isConnectionFailure(code, e?.details ?? "")) {
      this.router.markUnreachable(target.leader);
      return;
    }
    if (code === status.UNAVAILABLE && this.router.refreshDue()) await this.refreshShardMap().catch(() => {});
  }

  /** Metadata for one call: the token, if any. */
  metadata(): Metadata {
    const metadata = new Metadata();
    if (this.token !== undefined) metadata.set("authorization", `Bearer ${this.token}`);
    return metadata;
  }

  producer(retry: RetryPolicy = new RetryPolicy()): Producer {
    return new Producer(this, retry);
  }

  /** Counts per queue (every queue when `queue` is empty). */
  async stats(queue = ""): Promise<QueueStats[]> {
    const response = await new RetryPolicy().run(() =>
      unary<StatsResponse>((cb) => this.admin.stats({ queue, local: false }, this.metadata(), cb)),
    );
    return response.queues;
  }

  async getJob(jobId: string): Promise<JobProto> {
    return new RetryPolicy().run(() => unary<JobProto>((cb) => this.admin.getJob({ jobId }, this.metadata(), cb)));
  }

  // Leases by hand, for code that does not use a Worker: fetch, then ack,
  // nack or extend each job with the token it came with. A token from an
  // earlier delivery is refused (FAILED_PRECONDITION, "lease lost").

  /** Leases up to `maxJobs` ready jobs, waiting up to `waitMs` for one. */
  async fetch(
    queue: string,
    options: { maxJobs?: number; leaseMs?: number; waitMs?: number; workerId?: string } = {},
  ): Promise<Job[]> {
    const request = {
      queue,
      workerId: options.workerId ?? "",
      maxJobs: options.maxJobs ?? 1,
      leaseMs: options.leaseMs,
      waitMs: options.waitMs ?? 0,
    };
    const response = await new RetryPolicy().run(() =>
      unary<FetchResponse>((cb) => this.queue.fetch(request, this.metadata(), cb)),
    );
    return response.jobs.map(fromLeased);
  }

  async ack(job: Job): Promise<void> {
    const response = await unary<AckResponse>((cb) => this.queue.ack({ tokens: [job.token] }, this.metadata(), cb));
    one(response.results, job);
  }

  /** Gives the job back: it retries after `retryAfterMs` (or its backoff),
   * or goes to the dead letters with `dead: true`. */
  async nack(job: Job, error = "", options: { retryAfterMs?: number; dead?: boolean } = {}): Promise<void> {
    const item = { token: job.token, error: errorText(error), retryDelayMs: options.retryAfterMs, dead: options.dead ?? false };
    const response = await unary<NackResponse>((cb) => this.queue.nack({ items: [item] }, this.metadata(), cb));
    one(response.results, job);
  }

  /** Extends the lease by `leaseMs` from now (default: the queue's) and
   * returns the new expiry. */
  async extend(job: Job, leaseMs?: number): Promise<Date> {
    const response = await unary<ExtendLeaseResponse>((cb) =>
      this.queue.extendLease({ tokens: [job.token], leaseMs }, this.metadata(), cb),
    );
    job.leaseExpiresAt = new Date(one(response.results, job).leaseExpiresAtMs);
    return job.leaseExpiresAt;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.isClosed;
  }

  close(): void {
    this.isClosed = true;
    this.router?.close();
    this.queue.close();
    this.admin.close();
  }
}

function one(results: TokenResult[], job: Job): TokenResult {
  if (results.length !== 1) throw new RaftqError(13, `the node answered ${results.length} results for job ${job.id}`);
  return results[0];
}

/** A unary call as a promise; failures as RaftqError. */
export function unary<T>(call: (callback: (error: Error | null, value?: T) => void) => unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    call((error, value) => {
      if (error !== null) reject(RaftqError.from(error));
      else if (value === undefined) reject(new RaftqError(13, "the node sent an empty answer"));
      else resolve(value);
    });
  });
}
