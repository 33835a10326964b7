//! Hard limits of the protocol. Requests beyond them are rejected with
//! INVALID_ARGUMENT before anything is stored.

/// Largest job payload accepted by default.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Most jobs in one Enqueue request.
pub const MAX_ENQUEUE_BATCH: usize = 10_000;
/// Most tokens in one Ack / Nack / ExtendLease request or worker frame.
pub const MAX_TOKEN_BATCH: usize = 10_000;
/// Most jobs one Fetch may lease.
pub const MAX_FETCH_JOBS: u32 = 1_000;
/// Longest queue name.
pub const MAX_QUEUE_NAME: usize = 128;
/// Most headers on one job, and their combined size.
pub const MAX_HEADERS: usize = 64;
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Longest idempotency key, worker id and error text.
pub const MAX_KEY_BYTES: usize = 256;
pub const MAX_ERROR_BYTES: usize = 4 * 1024;
/// Longest lease and long-poll wait.
pub const MAX_LEASE_MS: i64 = 12 * 3600 * 1000;
pub const MAX_WAIT_MS: i64 = 60_000;
/// Furthest a job may be scheduled into the future (1 year).
pub const MAX_DELAY_MS: i64 = 366 * 24 * 3600 * 1000;
/// Largest gRPC message the node accepts (a full batch of large jobs).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
