import { status, type ServiceError } from "@grpc/grpc-js";

// Codes that mean the request itself is wrong or not allowed: the same
// request gets the same answer later.
const FINAL = new Set<number>([
  status.INVALID_ARGUMENT,
  status.NOT_FOUND,
  status.FAILED_PRECONDITION,
  status.PERMISSION_DENIED,
  status.UNAUTHENTICATED,
  status.UNIMPLEMENTED,
  status.OUT_OF_RANGE,
  status.ALREADY_EXISTS,
]);

/** A call to a raftq node failed. `details` is the node's message, which
 * says what to change (a field, a role, an address). */
export class RaftqError extends Error {
  constructor(
    /** The gRPC status code (`status` of `@grpc/grpc-js`). */
    readonly code: number,
    readonly details: string,
  ) {
    super(`${status[code] ?? code}: ${details}`);
    this.name = "RaftqError";
  }

  /** Whether the same call may succeed later (an election, a restart,
   * backpressure). */
  get retryable(): boolean {
    return !FINAL.has(this.code);
  }

  static from(error: unknown): RaftqError {
    if (error instanceof RaftqError) return error;
    const e = error as Partial<ServiceError>;
    if (typeof e?.code === "number") return new RaftqError(e.code, e.details ?? e.message ?? "");
    return new RaftqError(status.UNKNOWN, String(error));
  }
}
