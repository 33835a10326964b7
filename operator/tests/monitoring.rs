//! The chart's Grafana dashboard and alert rules query only metrics that
//! exist: every `raftq_*` name in them must be exported by a real
//! `queue-node` process's `/metrics` or by the operator's.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The metric names of a Prometheus text exposition (from its `# TYPE`
/// lines and its samples).
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let name = match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        };
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            names.insert(name.to_string());
        }
    }
    names
}

/// Every `raftq_...` name in `text`.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("raftq_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Not a part of a longer word (e.g. a label value `my_raftq_x`).
        let before = rest[..at].chars().last();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// Whether `name` (as a query writes it: a histogram's `_bucket`, a
/// counter's `_total`) is one of `names`.
fn is_exported(name: &str, names: &BTreeSet<String>) -> bool {
    names.contains(name)
        || ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| names.contains(base))
            })
}

async fn scrape(addr: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_query_only_exported_metrics() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/raftq-operator");
    let dashboard = std::fs::read_to_string(chart.join("dashboards/raftq.json")).unwrap();
    let rules = std::fs::read_to_string(chart.join("templates/monitoring.yaml")).unwrap();
    let dashboard_json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut queries = String::new();
    for panel in dashboard_json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push_str(target["expr"].as_str().unwrap());
            queries.push('\n');
        }
    }
    queries.push_str(&dashboard_json["templating"].to_string());
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
    {
        queries.push_str(line);
        queries.push('\n');
    }
    let wanted = referenced(&queries);
    assert!(wanted.len() >= 20, "{wanted:?}");

    // A real node's metrics, on a loopback address of this test's own.
    let dir = tempfile::tempdir().unwrap();
    let ip = format!("127.77.{}.1", std::process::id() % 250);
    let http = format!("{ip}:9400");
    let mut node = Command::new(support::queue_node_bin())
        .args(["--node-id", "1", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &format!("{ip}:7400")])
        .args(["--peer-listen", &format!("{ip}:7401")])
        .args(["--http-listen", &http])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("queue-node starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let node_text = loop {
        if let Some(text) = scrape(&http).await {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the node's /metrics never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = node.kill();
    let _ = node.wait();

    let metrics = raftq_operator::metrics::Metrics::default();
    // Labelled families show only once they have a child.
    metrics.failures("probe");
    metrics.membership_step("probe");
    let mut names = exported(&node_text);
    names.extend(exported(&metrics.render()));
    let missing: Vec<&String> = wanted.iter().filter(|n| !is_exported(n, &names)).collect();
    assert!(
        missing.is_empty(),
        "queried but exported by neither the node nor the operator: {missing:?}"
    );
    // And the check itself can fail.
    assert!(!is_exported("raftq_no_such_metric", &names));
}
