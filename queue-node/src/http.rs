//! The node's HTTP endpoints: `/healthz` (the process serves), `/readyz`
//! (every shard has this node as a member and knows a leader, so requests
//! here can be served or forwarded) and `/metrics` (Prometheus text).
//! They answer from the moment the node binds its port: while it is still
//! rebuilding its shards' job indexes (minutes for tens of millions of
//! jobs) `/healthz` says it is alive, so a liveness probe does not kill a
//! node in the middle of a rebuild, and `/readyz` says how far it got.
//!
//! Read-only: this module looks at Raft metrics, batcher counters and the
//! state machines' queue counts; it never writes.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::get;
use openraft::ServerState;
use tokio::net::TcpListener;

use crate::context::NodeContext;

/// What the endpoints serve: the node once it has started, and until then
/// what it is doing.
#[derive(Default)]
pub struct HttpState {
    node: OnceLock<Arc<NodeContext>>,
    starting: Mutex<String>,
    /// Warnings about ports open beyond loopback without TLS or auth,
    /// shown on `/readyz`.
    warnings: Vec<String>,
}

impl HttpState {
    pub fn new(warnings: Vec<String>) -> HttpState {
        HttpState {
            warnings,
            ..HttpState::default()
        }
    }

    /// Says what the starting node is doing (shown by `/readyz`).
    pub fn starting(&self, what: impl Into<String>) {
        *self
            .starting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = what.into();
    }

    pub fn started(&self, node: Arc<NodeContext>) {
        let _ = self.node.set(node);
    }

    fn starting_message(&self) -> String {
        self.starting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

pub fn router(state: Arc<HttpState>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

pub async fn serve(listener: TcpListener, state: Arc<HttpState>) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// Why the node cannot take requests yet, if it cannot.
pub fn not_ready(ctx: &NodeContext) -> Option<String> {
    for shard in ctx.held().iter() {
        let m = shard.raft.metrics().borrow().clone();
        if m.membership_config.membership().get_node(&ctx.id).is_none() {
            return Some(format!(
                "shard {}: this node is not a member yet (waiting to be added)",
                shard.id
            ));
        }
        if m.current_leader.is_none() {
            return Some(format!("shard {}: no leader known", shard.id));
        }
    }
    // Requests for shards held elsewhere are forwarded to their leaders.
    ctx.shard_ids()
        .find(|&s| ctx.local(s).is_none() && ctx.directory.remote_shard(s).is_none())
        .map(|s| format!("shard {s} (held by other nodes): its leader is not known yet"))
}

async fn readyz(State(state): State<Arc<HttpState>>) -> (StatusCode, String) {
    let why = match state.node.get() {
        Some(ctx) => not_ready(ctx),
        None => Some(format!("starting: {}", state.starting_message())),
    };
    let mut answer = match &why {
        None => "ready\n".to_string(),
        Some(why) => format!("{why}\n"),
    };
    for warning in &state.warnings {
        let _ = writeln!(answer, "warning: {warning}");
    }
    let code = match why {
        None => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, answer)
}

async fn metrics(State(state): State<Arc<HttpState>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.node.get() {
        Some(ctx) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            render(ctx),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("starting: {}\n", state.starting_message()),
        )
            .into_response(),
    }
}

/// One metric family: its help, type and samples.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: String, value: impl Into<f64>) {
        self.samples.push((labels, value.into()));
    }
}

fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Connections per port: open now, and those the limits closed.
fn connection_families(ctx: &NodeContext) -> (Family, Family, Family, Family) {
    let mut open = Family::new(
        "raftq_connections_open",
        "gauge",
        "Connections open on the port",
    );
    let mut refused = Family::new(
        "raftq_connections_refused_total",
        "counter",
        "Connections closed at once: limits.max_connections were open",
    );
    let mut handshakes = Family::new(
        "raftq_tls_handshakes_failed_total",
        "counter",
        "TLS handshakes that failed or timed out (plaintext clients, untrusted certificates)",
    );
    let mut idle = Family::new(
        "raftq_connections_closed_idle_total",
        "counter",
        "Connections closed after limits.idle_timeout_ms without a byte",
    );
    let security = &ctx.security;
    for (port, stats) in [
        ("client", &security.client_conns),
        ("peer", &security.peer_conns),
    ] {
        let label = format!("port=\"{port}\"");
        open.add(label.clone(), stats.open.load(Ordering::Relaxed) as f64);
        refused.add(
            label.clone(),
            stats.refused_over_limit.load(Ordering::Relaxed) as f64,
        );
        handshakes.add(
            label.clone(),
            stats.failed_handshakes.load(Ordering::Relaxed) as f64,
        );
        idle.add(label, stats.closed_idle.load(Ordering::Relaxed) as f64);
    }
    (open, refused, handshakes, idle)
}

/// The Prometheus text exposition of this node.
pub fn render(ctx: &NodeContext) -> String {
    let mut leader = Family::new(
        "raftq_shard_is_leader",
        "gauge",
        "1 if this node leads the shard",
    );
    let mut term = Family::new(
        "raftq_shard_term",
        "gauge",
        "Current Raft term of the shard",
    );
    let mut applied = Family::new(
        "raftq_shard_applied_index",
        "gauge",
        "Last log index applied to the shard's state machine",
    );
    let mut last_log = Family::new(
        "raftq_shard_last_log_index",
        "gauge",
        "Last log index stored for the shard",
    );
    let mut written = Family::new(
        "raftq_shard_written_index",
        "gauge",
        "Last log index whose state is written to RocksDB (the last checkpoint, at most a second behind)",
    );
    let mut durable = Family::new(
        "raftq_shard_durable_index",
        "gauge",
        "Last log index whose state is flushed to disk (the log is kept from here on)",
    );
    let mut purged = Family::new(
        "raftq_shard_purged_index",
        "gauge",
        "Last log index removed behind a snapshot",
    );
    let mut batches = Family::new(
        "raftq_batches_total",
        "counter",
        "Raft entries this node proposed as the shard's leader",
    );
    let mut batch_ops = Family::new(
        "raftq_batch_ops_total",
        "counter",
        "Operations carried by those entries (ops / batches = mean batch size)",
    );
    let mut batch_bytes = Family::new(
        "raftq_batch_bytes_total",
        "counter",
        "Approximate bytes carried by those entries",
    );
    let mut forwarded = Family::new(
        "raftq_forwarded_requests_total",
        "counter",
        "Requests this node forwarded to the shard's leader (clients that route by the shard map send none)",
    );
    let mut jobs = Family::new(
        "raftq_queue_jobs",
        "gauge",
        "Jobs in a queue by state (as this node's replica has applied them)",
    );
    let mut totals = Family::new(
        "raftq_queue_operations_total",
        "counter",
        "Jobs enqueued, acked, nacked, expired leases and jobs dead-lettered per queue, as this node applied them since it started",
    );
    let mut oldest = Family::new(
        "raftq_queue_oldest_ready_age_seconds",
        "gauge",
        "How long the queue's longest-waiting ready job has been ready (0 when none is)",
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // Histograms are rendered apart: each sample is several lines.
    let mut histograms = String::new();
    let mut lease_to_ack = Vec::new();
    let mut writes = Vec::new();
    let mut commits = Vec::new();
    let mut applies = Vec::new();
    // Every shard's, held here or not: a request for any can be forwarded.
    for shard in ctx.shard_ids() {
        forwarded.add(format!("shard=\"{shard}\""), ctx.forwarded(shard) as f64);
    }
    for shard in ctx.held().iter() {
        let s = format!("shard=\"{}\"", shard.id);
        let m = shard.raft.metrics().borrow().clone();
        leader.add(s.clone(), u8::from(m.state == ServerState::Leader));
        term.add(s.clone(), m.current_term as f64);
        applied.add(s.clone(), m.last_applied.map_or(0, |l| l.index) as f64);
        last_log.add(s.clone(), m.last_log_index.unwrap_or(0) as f64);
        written.add(s.clone(), shard.shared.written_index() as f64);
        durable.add(s.clone(), shard.shared.durable_index() as f64);
        purged.add(s.clone(), m.purged.map_or(0, |l| l.index) as f64);
        let b = &shard.batcher.stats;
        batches.add(s.clone(), b.batches.load(Ordering::Relaxed) as f64);
        batch_ops.add(s.clone(), b.ops.load(Ordering::Relaxed) as f64);
        batch_bytes.add(s.clone(), b.bytes.load(Ordering::Relaxed) as f64);
        writes.push((s.clone(), b.write_seconds.snapshot()));
        commits.push((s.clone(), b.commit_seconds.snapshot()));
        applies.push((s.clone(), shard.shared.apply_seconds.snapshot()));
        for q in shard.shared.state().all_stats() {
            let base = format!("{s},queue=\"{}\"", label_value(&q.queue));
            for (state, n) in [
                ("ready", q.ready),
                ("scheduled", q.scheduled),
                ("leased", q.leased),
                ("dead", q.dead),
            ] {
                jobs.add(format!("{base},state=\"{state}\""), n as f64);
            }
            for (op, n) in [
                ("enqueued", q.totals.enqueued),
                ("acked", q.totals.acked),
                ("nacked", q.totals.nacked),
                ("expired", q.totals.expired),
                ("dead", q.totals.died),
            ] {
                totals.add(format!("{base},op=\"{op}\""), n as f64);
            }
            let age = q.oldest_ready_ms.map_or(0, |at| now_ms.saturating_sub(at));
            oldest.add(base.clone(), age as f64 / 1000.0);
            lease_to_ack.push((base, q.lease_to_ack));
        }
    }
    let mut budget = Family::new(
        "raftq_memory_budget_bytes",
        "gauge",
        "Memory budgets of the node's parts (0 = no limit): the job index (enqueues are refused past it), payloads kept in memory, RocksDB's block cache and memtables, the Raft logs' recent entries",
    );
    let mut used = Family::new(
        "raftq_memory_used_bytes",
        "gauge",
        "Memory the node's parts hold now (the job index is estimated from its live jobs)",
    );
    let memory = &ctx.memory;
    let index_used = crate::memory::MemoryBudget::index_used(&ctx.held());
    budget.add("part=\"index\"".into(), memory.index_bytes as f64);
    budget.add(
        "part=\"content_cache\"".into(),
        memory.content_cache.budget() as f64,
    );
    budget.add(
        "part=\"block_cache\"".into(),
        memory.block_cache_bytes as f64,
    );
    budget.add("part=\"memtables\"".into(), memory.memtable_bytes as f64);
    budget.add("part=\"log_cache\"".into(), memory.log_cache_bytes as f64);
    budget.add("part=\"requests\"".into(), memory.requests.bytes() as f64);
    used.add("part=\"requests\"".into(), memory.requests.used() as f64);
    used.add("part=\"index\"".into(), index_used as f64);
    used.add(
        "part=\"content_cache\"".into(),
        memory.content_cache.bytes() as f64,
    );
    used.add(
        "part=\"block_cache\"".into(),
        memory.store.block_cache_bytes() as f64,
    );
    used.add(
        "part=\"memtables\"".into(),
        memory.store.memtable_bytes() as f64,
    );
    used.add(
        "part=\"log_cache\"".into(),
        ctx.held()
            .iter()
            .map(|s| s.shared.log_cache_bytes())
            .sum::<u64>() as f64,
    );
    let (stopped, delayed, pending) = memory.store.stall_signals();
    let mut write_stopped = Family::new(
        "raftq_rocksdb_write_stopped",
        "gauge",
        "1 while RocksDB stops writes (too many memtables or level-0 files, or compaction too far behind)",
    );
    write_stopped.add(String::new(), u8::from(stopped));
    let mut delayed_rate = Family::new(
        "raftq_rocksdb_delayed_write_rate_bytes",
        "gauge",
        "The rate RocksDB slows writes to, in bytes per second (0 = not slowed)",
    );
    delayed_rate.add(String::new(), delayed as f64);
    let mut pending_compaction = Family::new(
        "raftq_rocksdb_pending_compaction_bytes",
        "gauge",
        "Bytes RocksDB estimates compaction is behind by",
    );
    pending_compaction.add(String::new(), pending as f64);
    let mut expiry = Family::new(
        "raftq_tls_certificate_expiry_timestamp_seconds",
        "gauge",
        "When the certificates this node uses expire (seconds since the Unix epoch): its own and the first of its CA bundle's; absent when TLS is off",
    );
    if let Some(tls) = &ctx.security.tls {
        let e = tls.expiry();
        for (which, at) in [("node", e.certificate), ("ca", e.ca)] {
            if let Some(at) = at {
                expiry.add(format!("certificate=\"{which}\""), at as f64);
            }
        }
    }
    let (open, refused, handshakes, idle) = connection_families(ctx);
    let mut out = String::new();
    for f in [
        leader,
        term,
        applied,
        last_log,
        written,
        durable,
        purged,
        batches,
        batch_ops,
        batch_bytes,
        forwarded,
        jobs,
        totals,
        oldest,
        write_stopped,
        delayed_rate,
        pending_compaction,
        expiry,
        budget,
        used,
        open,
        refused,
        handshakes,
        idle,
    ] {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (labels, value) in f.samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{} {value}", f.name);
            } else {
                let _ = writeln!(out, "{}{{{labels}}} {value}", f.name);
            }
        }
    }
    for (name, help, samples) in [
        (
            "raftq_queue_lease_to_ack_seconds",
            "From a job's lease to its ack (the batch clock's milliseconds), for leases this node applied since it started",
            lease_to_ack,
        ),
        (
            "raftq_raft_write_seconds",
            "On the shard's leader: from proposing a batch to its entry applied (replication to a quorum, fsync, apply)",
            writes,
        ),
        (
            "raftq_raft_commit_seconds",
            "On the shard's leader: from proposing a batch to its committed entry reaching the state machine (replication to a quorum with fsync, and any wait behind earlier entries)",
            commits,
        ),
        (
            "raftq_raft_apply_seconds",
            "Applying a group of committed entries to the shard's state (state machine and RocksDB write), on every replica",
            applies,
        ),
    ] {
        let _ = writeln!(histograms, "# HELP {name} {help}");
        let _ = writeln!(histograms, "# TYPE {name} histogram");
        for (labels, counts) in samples {
            counts.render(&mut histograms, name, &labels);
        }
    }
    out.push_str(&histograms);
    out
}
