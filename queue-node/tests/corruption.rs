//! A damaged data dir at start: the node must refuse with a clear error and
//! a non-zero exit — never come up with jobs missing, or empty and ready to
//! bootstrap a new cluster. An undamaged dir (after SIGKILL too) starts
//! with every job.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{connect, free_port, wait_for, wait_for_leader, ProcNode};
use raftq_client::proto as pb;
use raftq_client::JobSpec;

const JOBS: usize = 300;

/// A one-node cluster holding `JOBS` jobs, SIGKILLed once the watermark
/// file covers them.
async fn node_with_jobs(dir: &Path) -> ProcNode {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = ProcNode::single(1, &addr, &dir.join("n1"));
    let client = connect(&addr).await;
    wait_for_leader(&client).await;
    for chunk in 0..JOBS / 50 {
        let jobs = (0..50)
            .map(|i| {
                JobSpec::new(format!("job-{chunk}-{i}")).idempotency_key(format!("{chunk}-{i}"))
            })
            .collect();
        client.producer().enqueue_batch("keep", jobs).await.unwrap();
    }
    let applied = node
        .admin()
        .await
        .cluster()
        .status(pb::ClusterStatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .shards[0]
        .applied_index;
    let marks = dir.join("n1").join("applied-watermark");
    wait_for(
        "the watermark to cover every job",
        Duration::from_secs(20),
        || {
            let marks = marks.clone();
            async move {
                let text = std::fs::read_to_string(&marks).ok()?;
                let index: u64 = text.lines().find(|l| l.starts_with("0 "))?[2..]
                    .parse()
                    .ok()?;
                (index >= applied).then_some(())
            }
        },
    )
    .await;
    node.kill();
    node
}

async fn ready_jobs(node: &mut ProcNode) -> u64 {
    node.start();
    let client = connect(&node.addr).await;
    wait_for_leader(&client).await;
    let stats = client
        .admin()
        .stats(pb::StatsRequest {
            queue: "keep".into(),
            local: false,
        })
        .await
        .unwrap()
        .into_inner();
    stats.queues[0].ready
}

/// Starts the node on its damaged dir; it must exit non-zero with an
/// error naming `expect` (any of them).
fn assert_refuses(node: &mut ProcNode, expect: &[&str]) {
    let before = node.log().len();
    node.start();
    let status = node
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("node started on a damaged data dir:\n{}", node.log()));
    assert!(!status.success(), "exit status {status}");
    let log = node.log()[before..].to_string();
    assert!(
        expect.iter().any(|e| log.contains(e)),
        "error should mention one of {expect:?}:\n{log}"
    );
    let error = log
        .lines()
        .find(|l| l.contains("queue-node: error:"))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    eprintln!("refused as expected: {error}");
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

fn largest(paths: Vec<PathBuf>) -> PathBuf {
    paths
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_dir_restarts_with_every_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node_with_jobs(dir.path()).await;
    assert_eq!(ready_jobs(&mut node).await, JOBS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_wal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node_with_jobs(dir.path()).await;
    let wal = largest(files(&dir.path().join("n1"), "log"));
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_refuses(&mut node, &["data was lost"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_wal_is_refused_not_an_empty_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node_with_jobs(dir.path()).await;
    for wal in files(&dir.path().join("n1"), "log") {
        std::fs::remove_file(wal).unwrap();
    }
    assert_refuses(&mut node, &["data was lost", "Corruption", "No such file"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_middle_of_the_wal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node_with_jobs(dir.path()).await;
    let wal = largest(files(&dir.path().join("n1"), "log"));
    let mut bytes = std::fs::read(&wal).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&wal, bytes).unwrap();
    assert_refuses(&mut node, &["Corruption", "corrupt", "data was lost"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node_with_jobs(dir.path()).await;
    let manifest = std::fs::read_dir(dir.path().join("n1"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("MANIFEST-"))
        })
        .expect("a MANIFEST file");
    let mut bytes = std::fs::read(&manifest).unwrap();
    let (mid, end) = (bytes.len() / 2, (bytes.len() / 2 + 32).min(bytes.len()));
    for b in &mut bytes[mid..end] {
        *b ^= 0xff;
    }
    std::fs::write(&manifest, bytes).unwrap();
    assert_refuses(&mut node, &["Corruption", "corrupt"]);
}

/// Sets the data dir's format record (as a newer queue-node would).
fn set_format(dir: &Path, format: u32) {
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, &cfs).unwrap();
    let cf = db.cf_handle("raft_meta").expect("the raft_meta family");
    db.put_cf(cf, b"\xff\xff\xff\xffformat", format.to_be_bytes())
        .unwrap();
    db.flush_wal(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_in_a_newer_format_is_refused_and_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node_with_jobs(dir.path()).await;
    set_format(&dir.path().join("n1"), 3);
    assert_refuses(&mut node, &["data format 3", "reads formats up to 2"]);
    set_format(&dir.path().join("n1"), 2);
    assert_eq!(ready_jobs(&mut node).await, JOBS as u64);
}

/// Rewrites a stopped node's job records as data format 1 left them
/// (`(JobBody, JobStatus)`: the payload and headers in the body). Returns
/// how many it rewrote.
fn make_format_1(dir: &Path) -> usize {
    use raftq_node::ops::{BackoffPolicy, JobContent, JobMeta, JobStatus};

    #[derive(serde::Serialize)]
    struct BodyV1<'a> {
        queue: &'a str,
        payload: &'a bytes::Bytes,
        headers: &'a [(String, String)],
        priority: i32,
        max_attempts: u32,
        backoff: Option<BackoffPolicy>,
        enqueued_at_ms: u64,
        idempotency_key: &'a Option<String>,
    }

    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, &cfs).unwrap();
    let cf = db.cf_handle("state").expect("the state family");
    let records: Vec<_> = db
        .iterator_cf(cf, rocksdb::IteratorMode::Start)
        .map(|r| r.unwrap())
        .collect();
    let mut rewritten = 0;
    for (key, value) in &records {
        if key.len() != 17 || key[4] != b'j' {
            continue;
        }
        let (meta, status, content): (JobMeta, JobStatus, JobContent) =
            postcard::from_bytes(value).unwrap();
        let body = BodyV1 {
            queue: &meta.queue,
            payload: &content.payload,
            headers: &content.headers,
            priority: meta.priority,
            max_attempts: meta.max_attempts,
            backoff: meta.backoff,
            enqueued_at_ms: meta.enqueued_at_ms,
            idempotency_key: &meta.idempotency_key,
        };
        db.put_cf(cf, key, postcard::to_allocvec(&(&body, &status)).unwrap())
            .unwrap();
        rewritten += 1;
    }
    db.flush_cf(cf).unwrap();
    let raft = db.cf_handle("raft_meta").expect("the raft_meta family");
    db.put_cf(raft, b"\xff\xff\xff\xffformat", 1u32.to_be_bytes())
        .unwrap();
    db.flush_wal(true).unwrap();
    rewritten
}

/// A data dir of format 1 (payloads inside the job records) is converted
/// at start: every job is there, with its payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_data_dir_is_converted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node_with_jobs(dir.path()).await;
    // A clean stop leaves the applied state on disk (it skips the WAL and
    // is flushed when RocksDB closes), so every job record is there.
    node.start();
    wait_for_leader(&connect(&node.addr).await).await;
    assert!(node.terminate(Duration::from_secs(20)), "{}", node.log());
    assert_eq!(make_format_1(&dir.path().join("n1")), JOBS);
    assert_eq!(ready_jobs(&mut node).await, JOBS as u64);
    let client = connect(&node.addr).await;
    let jobs = client
        .queue()
        .fetch(pb::FetchRequest {
            queue: "keep".into(),
            worker_id: "w".into(),
            max_jobs: JOBS as u32,
            lease_ms: None,
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let mut payloads: Vec<String> = jobs
        .iter()
        .map(|j| String::from_utf8_lossy(&j.job.as_ref().unwrap().payload).into_owned())
        .collect();
    payloads.sort();
    let mut expected: Vec<String> = (0..JOBS / 50)
        .flat_map(|chunk| (0..50).map(move |i| format!("job-{chunk}-{i}")))
        .collect();
    expected.sort();
    assert_eq!(payloads, expected);
    assert!(
        node.log().contains("data dir converted to format 2"),
        "{}",
        node.log()
    );
}
