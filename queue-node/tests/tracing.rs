//! Trace context from producer to worker through a real node: the job
//! carries the producer's `traceparent`; the handler runs in a consumer
//! span that is its child. Its own test binary, since it installs a global
//! tracer provider.

mod common;

use std::time::Duration;

use common::{start_single, wait_for};
use opentelemetry::trace::{FutureExt, SpanKind, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{global, Context};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use raftq_client::{JobSpec, Worker};

#[tokio::test]
async fn the_handler_span_is_a_child_of_the_producer_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    global::set_tracer_provider(provider.clone());

    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_single(dir.path()).await;
    let tracer = provider.tracer("test");
    let parent = tracer.start("checkout");
    let parent_cx = Context::current_with_span(parent);
    let parent_span = parent_cx.span().span_context().clone();
    let id = client
        .producer()
        .enqueue("traced", JobSpec::new("x"))
        .with_context(parent_cx.clone())
        .await
        .unwrap();
    parent_cx.span().end();
    let stored = client
        .admin()
        .get_job(raftq_client::proto::JobRef { job_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stored.headers.get("traceparent").map(String::as_str),
        Some(format!("00-{}-{}-01", parent_span.trace_id(), parent_span.span_id()).as_str())
    );

    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::new(client.clone(), "traced");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(
        move |_job| {
            let seen = seen_tx.clone();
            async move {
                let _ = seen.send(Context::current().span().span_context().clone());
                Ok::<(), String>(())
            }
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let inside = tokio::time::timeout(Duration::from_secs(20), seen_rx.recv())
        .await
        .unwrap()
        .unwrap();
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();

    let handler = wait_for("the handler span", Duration::from_secs(10), || {
        let spans = exporter.get_finished_spans().unwrap_or_default();
        async move { spans.into_iter().find(|s| s.name == "traced process") }
    })
    .await;
    assert_eq!(handler.span_context.trace_id(), parent_span.trace_id());
    assert_eq!(handler.parent_span_id, parent_span.span_id());
    assert_eq!(handler.span_kind, SpanKind::Consumer);
    assert_eq!(inside.span_id(), handler.span_context.span_id());
    node.shutdown().await.unwrap();
}
