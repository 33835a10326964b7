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
    let mut node = ProcNode::spawn(1, &addr, &dir.join("n1"), &format!("1={addr}"));
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
    let applied = client
        .cluster()
        .status(pb::ClusterStatusRequest {})
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
    set_format(&dir.path().join("n1"), 2);
    assert_refuses(&mut node, &["data format 2", "reads formats up to 1"]);
    set_format(&dir.path().join("n1"), 1);
    assert_eq!(ready_jobs(&mut node).await, JOBS as u64);
}
