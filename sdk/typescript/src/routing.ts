// Sending each queue's requests straight to its shard's leader.
//
// The client reads the shard map (`Queue.GetShardMap`) from the node it
// connected to, keeps a connection per leader, and sends a queue's
// enqueues and worker stream to the leader of the queue's shard with the
// metadata `x-raftq-route: direct`. A node that no longer leads answers
// UNAVAILABLE with the leader in its trailers: the route is updated and the
// retry goes there. Where the map says nothing (no leader yet, an address
// not known, a node without the call) or a leader cannot be reached, calls
// go to the node connected to, which forwards them.
import { status, type Metadata } from "@grpc/grpc-js";
import type { QueueClient, ShardMap } from "./gen/raftq/v1/queue.js";

/** How long a leader that could not be reached is left alone. */
const UNREACHABLE_FOR_MS = 30_000;
/** The map is read again at most this often. */
const REFRESH_AT_MOST_EVERY_MS = 500;

/** The shard that holds `queue` among `shards`: FNV-1a-64 of its UTF-8
 * name, as every node computes it. */
export function shardOf(queue: string, shards: number): number {
  let hash = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(queue, "utf8")) {
    hash ^= BigInt(byte);
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return Number(hash % BigInt(Math.max(shards, 1)));
}

interface Route {
  addr: string;
  term: bigint;
}

export class Router {
  private shardCount = 0;
  /** Queues that stayed on their shard when the shard count grew. */
  private pinned = new Map<string, number>();
  private routingVersion = 0n;
  private readonly leaders = new Map<number, Route>();
  private readonly clients = new Map<string, QueueClient>();
  private readonly unreachable = new Map<string, number>();
  private lastRead = 0;

  constructor(private readonly dial: (addr: string) => QueueClient) {}

  /** Takes a map; a route older (lower term) than one known is ignored. */
  learnMap(map: ShardMap): void {
    const version = BigInt(map.routingVersion);
    if (version >= this.routingVersion) {
      this.shardCount = map.shardCount;
      this.pinned = new Map(Object.entries(map.pinned));
      this.routingVersion = version;
    }
    for (const route of map.shards) {
      if (route.leaderAddr === "") continue;
      const known = this.leaders.get(route.shard);
      const term = BigInt(route.term);
      if (known === undefined || term >= known.term) this.leaders.set(route.shard, { addr: route.leaderAddr, term });
    }
  }

  /** Takes the leader a "not the leader" answer names; whether it named
   * one (else the map should be read again). */
  learnTrailers(metadata: Metadata | undefined): boolean {
    const first = (key: string) => {
      const value = metadata?.get(key)[0];
      return value === undefined ? undefined : value.toString();
    };
    const shard = first("x-raftq-leader-shard");
    const term = first("x-raftq-leader-term");
    if (shard === undefined || term === undefined) return false;
    // The shard count grew since the map was read: queues may live
    // elsewhere now.
    const version = first("x-raftq-routing-version");
    if (version !== undefined && BigInt(version) > this.routingVersion) return false;
    const addr = first("x-raftq-leader-addr");
    if (addr === undefined || addr === "") {
      this.leaders.delete(Number(shard));
      return false;
    }
    const known = this.leaders.get(Number(shard));
    if (known === undefined || BigInt(term) >= known.term) this.leaders.set(Number(shard), { addr, term: BigInt(term) });
    return true;
  }

  refreshDue(): boolean {
    const now = Date.now();
    if (now - this.lastRead < REFRESH_AT_MOST_EVERY_MS) return false;
    this.lastRead = now;
    return true;
  }

  markUnreachable(addr: string): void {
    this.unreachable.set(addr, Date.now());
    this.clients.get(addr)?.close();
    this.clients.delete(addr);
  }

  /** The leader of `queue`'s shard and a client for it, when known. */
  leader(queue: string): { addr: string; queue: QueueClient } | undefined {
    if (this.shardCount === 0) return undefined;
    const route = this.leaders.get(this.pinned.get(queue) ?? shardOf(queue, this.shardCount));
    if (route === undefined) return undefined;
    const since = this.unreachable.get(route.addr);
    if (since !== undefined) {
      if (Date.now() - since < UNREACHABLE_FOR_MS) return undefined;
      this.unreachable.delete(route.addr);
    }
    let client = this.clients.get(route.addr);
    if (client === undefined) {
      client = this.dial(route.addr);
      this.clients.set(route.addr, client);
    }
    return { addr: route.addr, queue: client };
  }

  close(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}

/** Whether a failure came from the connection rather than from a node. */
export function isConnectionFailure(code: number, details: string): boolean {
  return code === status.UNAVAILABLE && /connect|No connection established|ECONNREFUSED|ENOTFOUND|Name resolution/i.test(details);
}
