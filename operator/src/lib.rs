//! raftq's Kubernetes operator: reconciles `JobQueue` resources into a
//! StatefulSet of queue nodes and manages their Raft membership.
//!
//! Data flows one way: [`reconcile`] reads the resource and the nodes'
//! status, asks [`membership::plan`] for the next step, applies the objects
//! [`objects`] builds, performs the step and writes the status [`status`]
//! computes. Certificates and auth Secrets come first ([`credentials`],
//! deciding with the pure [`secrets`] and [`certs`]). Building objects and
//! planning are pure; only `reconcile`, `credentials`,
//! `membership::execute` and [`leader`] talk to the outside.

pub mod certs;
pub mod crd;
pub mod credentials;
mod error;
pub mod leader;
pub mod membership;
pub mod metrics;
pub mod objects;
pub mod reconcile;
pub mod secrets;
pub mod status;
pub mod zones;

pub use error::Error;
