//! Fault injection under load, judged by a history checker (see
//! `tests/faults.rs` for how to run it and docs/RELIABILITY.md for what each
//! scenario checks).

#[path = "../common/certs.rs"]
pub mod certs;
pub mod cluster;
pub mod history;
#[path = "../common/ports.rs"]
pub mod ports;
pub mod proxy;
pub mod scenarios;
pub mod workload;
