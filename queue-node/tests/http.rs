//! The node's HTTP endpoints: liveness, readiness and Prometheus metrics.

mod common;

use std::time::Duration;

use common::{fast_config, start_with, wait_for};
use raftq_client::{proto as pb, JobSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.1 GET; returns (status code, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fast_config(dir.path());
    config.http_listen = Some("127.0.0.1:0".into());
    let (node, client) = start_with(config).await;
    let http = node.http_addr.expect("http endpoint");

    assert_eq!(get(http, "/healthz").await.0, 200);
    assert_eq!(get(http, "/readyz").await, (200, "ready\n".into()));

    let producer = client.producer();
    for n in 0..3 {
        producer
            .enqueue("mail", JobSpec::new(format!("m{n}")))
            .await
            .expect("enqueue");
    }
    let (code, metrics) = get(http, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("raftq_queue_jobs{shard=\"0\",queue=\"mail\",state=\"ready\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("raftq_shard_is_leader{shard=\"0\"} 1"),
        "{metrics}"
    );
    let batches: f64 = metrics
        .lines()
        .find(|l| l.starts_with("raftq_batches_total{shard=\"0\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("batches counter");
    assert!(batches >= 1.0, "{metrics}");

    // Lease one, ack it; lease another and dead-letter it.
    for dead in [false, true] {
        let leased = common::fetch(&client, "mail", 1).await.remove(0);
        let token = leased.token.expect("token");
        if dead {
            client
                .queue()
                .nack(pb::NackRequest {
                    items: vec![pb::NackItem {
                        token: Some(token),
                        retry_delay_ms: None,
                        error: "bad".into(),
                        dead: true,
                    }],
                })
                .await
                .expect("nack");
        } else {
            client
                .queue()
                .ack(pb::AckRequest {
                    tokens: vec![token],
                })
                .await
                .expect("ack");
        }
    }
    // One lease in 16 is timed to its ack: 32 jobs of one request, two.
    client
        .queue()
        .enqueue(pb::EnqueueRequest {
            queue: "timed".into(),
            jobs: (0..32)
                .map(|n| pb::NewJob {
                    payload: format!("t{n}").into_bytes().into(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .expect("enqueue 32");
    let tokens = common::fetch(&client, "timed", 32)
        .await
        .into_iter()
        .filter_map(|j| j.token)
        .collect::<Vec<_>>();
    assert_eq!(tokens.len(), 32);
    client
        .queue()
        .ack(pb::AckRequest { tokens })
        .await
        .expect("ack 32");
    let (_, metrics) = get(http, "/metrics").await;
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in {metrics}"))
    };
    let q = "shard=\"0\",queue=\"mail\"";
    let timed = "shard=\"0\",queue=\"timed\"";
    assert_eq!(
        value(&format!(
            "raftq_queue_lease_to_ack_seconds_count{{{timed}}}"
        )),
        2.0
    );
    assert_eq!(
        value(&format!(
            "raftq_queue_lease_to_ack_seconds_bucket{{{timed},le=\"+Inf\"}}"
        )),
        2.0
    );
    assert_eq!(
        value(&format!("raftq_queue_operations_total{{{q},op=\"dead\"}}")),
        1.0
    );
    assert_eq!(
        value(&format!("raftq_queue_operations_total{{{q},op=\"acked\"}}")),
        1.0
    );
    // One job is still ready, since the enqueue above.
    let age = value(&format!("raftq_queue_oldest_ready_age_seconds{{{q}}}"));
    assert!(age > 0.0 && age < 60.0, "{age}");
    assert!(value("raftq_raft_write_seconds_count{shard=\"0\"}") >= 3.0);
    assert!(value("raftq_raft_commit_seconds_count{shard=\"0\"}") >= 3.0);
    assert!(value("raftq_raft_apply_seconds_count{shard=\"0\"}") >= 3.0);
    assert_eq!(value("raftq_rocksdb_write_stopped "), 0.0);
    assert!(metrics.contains("# TYPE raftq_raft_write_seconds histogram"));
    assert_eq!(get(http, "/nope").await.0, 404);
    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_node_waiting_to_join_is_live_but_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fast_config(dir.path());
    config.http_listen = Some("127.0.0.1:0".into());
    config.join = true;
    let node = raftq_node::node::start(config).await.expect("start");
    let http = node.http_addr.expect("http endpoint");
    assert_eq!(get(http, "/healthz").await.0, 200);
    let (code, body) = wait_for("readyz answers", Duration::from_secs(10), || async {
        Some(get(http, "/readyz").await)
    })
    .await;
    assert_eq!(code, 503);
    assert!(body.contains("not a member yet"), "{body}");
    node.shutdown().await.expect("shutdown");
}

/// Before the shards are loaded (a rebuild of a large backlog takes
/// minutes) the endpoints already answer: alive, not ready, and why.
#[tokio::test]
async fn a_starting_node_is_live_and_says_what_it_is_doing() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let state = std::sync::Arc::new(raftq_node::http::HttpState::default());
    state.starting("rebuilding the job index of shard 2 (3 of 4)");
    let server = tokio::spawn(raftq_node::http::serve(listener, state.clone()));
    assert_eq!(get(http, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(
        get(http, "/readyz").await,
        (
            503,
            "starting: rebuilding the job index of shard 2 (3 of 4)\n".into()
        )
    );
    let (code, body) = get(http, "/metrics").await;
    assert_eq!(code, 503, "{body}");
    server.abort();
}
