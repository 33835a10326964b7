//! The operator's Prometheus metrics and its `/healthz`, `/readyz` and
//! `/metrics` endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<ErrorLabel, Counter>,
    duration: Histogram,
    steps: Family<StepLabel, Counter>,
    /// True while this replica holds the leader lease and reconciles.
    pub leading: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("raftq_operator");
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let steps = Family::<StepLabel, Counter>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        registry.register(
            "membership_steps",
            "Raft membership steps taken, by kind",
            steps.clone(),
        );
        let leading = Gauge::default();
        registry.register(
            "leading",
            "1 while this replica holds the leader lease and reconciles",
            leading.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            steps,
            leading,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, took: Duration, error: Option<&Error>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(e) = error {
            self.failures
                .get_or_create(&ErrorLabel {
                    error: e.metric_label().into(),
                })
                .inc();
        }
    }

    pub fn membership_step(&self, step: &str) {
        self.steps
            .get_or_create(&StepLabel { step: step.into() })
            .inc();
    }

    pub fn failures(&self, label: &str) -> u64 {
        self.failures
            .get_or_create(&ErrorLabel {
                error: label.into(),
            })
            .get()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/healthz` (the process runs), `/readyz` (it holds the leader
/// lease or waits for it: both are healthy states) and `/metrics`.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    StatusCode::OK,
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.render(),
                )
            }),
        )
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
