//! Notices a RocksDB that has stopped taking writes for good.
//!
//! Most storage failures come back as errors from a write, and openraft
//! stops the shard. But when a flush fails (a full disk, say) after the WAL
//! has room reserved, RocksDB records a background error and *stalls*
//! writes instead: the node would look alive while every shard waits
//! forever. This watch turns that state into an error, so the node exits
//! and its supervisor can restart it (and the operator sees why).

use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::{Duration, Instant};

use rocksdb::DB;

const POLL: Duration = Duration::from_secs(1);
/// Writes stopped after a background error for this long: not recovering.
const GIVE_UP_AFTER: Duration = Duration::from_secs(5);

/// Resolves with a description once writes have been stopped by a
/// background error for [`GIVE_UP_AFTER`]; never while the database is
/// healthy or closed.
pub async fn storage_failure(db: Weak<DB>, data_dir: PathBuf) -> String {
    let mut stopped_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(POLL).await;
        let Some(db) = db.upgrade() else {
            return std::future::pending().await;
        };
        let property = |name: &str| db.property_int_value(name).ok().flatten().unwrap_or(0);
        let errors = property("rocksdb.background-errors");
        let stopped = property("rocksdb.is-write-stopped") == 1;
        drop(db);
        if errors == 0 || !stopped {
            stopped_since = None;
            continue;
        }
        let since = *stopped_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= GIVE_UP_AFTER {
            let cause = last_error_in_log(&data_dir)
                .map(|line| format!(": {line}"))
                .unwrap_or_default();
            return format!(
                "RocksDB has stopped taking writes after {errors} background error(s) (a full or failing disk?){cause}"
            );
        }
    }
}

/// The last error line of RocksDB's own `LOG` file, if it has one.
fn last_error_in_log(data_dir: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(data_dir.join("LOG")).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))
        .ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .find(|l| l.contains("[ERROR]") || l.contains("error") || l.contains("Error"))
        .map(|l| l.trim().chars().take(400).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_last_error_line_of_the_rocksdb_log() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last_error_in_log(dir.path()), None);
        std::fs::write(
            dir.path().join("LOG"),
            "2026/11/23 [db/flush_job.cc] flushing\n\
             2026/11/23 [ERROR] [db/error_handler.cc] Flush failed: IO error: No space left on device\n\
             2026/11/23 [db/db_impl.cc] waiting\n",
        )
        .unwrap();
        let line = last_error_in_log(dir.path()).unwrap();
        assert!(line.contains("No space left on device"), "{line}");
    }
}
