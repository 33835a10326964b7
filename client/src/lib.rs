//! The raftq Rust SDK.
//!
//! - [`Client`]: a connection to any raftq node (it forwards to leaders).
//! - [`Producer`]: enqueue jobs, one at a time or in batches; retries
//!   through leader elections and restarts ([`RetryPolicy`], which any
//!   other call can use too).
//! - [`Worker`]: one stream per worker process that receives leased jobs,
//!   runs a handler on each with bounded concurrency, extends leases while
//!   handlers run, and acks on `Ok` / nacks on `Err`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), raftq_client::Error> {
//! use raftq_client::{Client, JobSpec, Worker};
//!
//! let client = Client::connect("http://127.0.0.1:7400").await?;
//! let id = client.producer().enqueue("emails", JobSpec::new("hello")).await?;
//! println!("enqueued {id}");
//!
//! Worker::new(client, "emails")
//!     .concurrency(8)
//!     .run(|job| async move {
//!         println!("got {:?}", job.payload);
//!         Ok::<(), String>(())
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Producers write the current OpenTelemetry context's `traceparent` into
//! each job's headers; workers run each handler in a consumer span that is
//! its child (OpenTelemetry's API: install an SDK to record them).
//!
//! This crate depends on the wire protocol only: no storage code.

mod client;
mod error;
mod producer;
mod retry;
mod routing;
mod trace_context;
mod worker;

pub use client::{Client, ConnectOptions, Credentials, TlsOptions, Transport};
pub use error::{connection_hint, Error};
pub use producer::{JobSpec, Producer};
pub use raftq_api::v1 as proto;
pub use retry::RetryPolicy;
pub use worker::{Job, Worker};
