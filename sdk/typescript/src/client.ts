// A connection to a raftq node. Any node will do: it forwards each call to
// its shard's leader.
import { credentials, Metadata, type ChannelCredentials, type ClientOptions as ChannelOptions } from "@grpc/grpc-js";
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
  type TokenResult,
} from "./gen/raftq/v1/queue.js";
import { RaftqError } from "./errors.js";
import { fromLeased, type Job } from "./jobs.js";
import { errorText, MAX_MESSAGE_BYTES } from "./limits.js";
import { Producer } from "./producer.js";
import { RetryPolicy } from "./retry.js";

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
