//! The durable-applied watermark: a small file beside RocksDB recording,
//! per shard, a log index the state machine had applied and whose log
//! entries were synced (so the state up to it can always be rebuilt).
//!
//! RocksDB cannot tell a WAL that was cut short (or a database whose
//! files went missing) from one that never held more; without this check
//! such a node would start with jobs missing, or empty and ready to
//! bootstrap a new cluster. Once a second the node syncs the WAL and
//! rewrites the file (atomically); at start every shard's state or log must
//! reach at least as far as the file says, or the node refuses to start. The
//! file lags by up to a second, so a torn tail from a crash (never
//! acknowledged) still recovers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::shard::ShardShared;
use crate::store::Store;

pub const FILE_NAME: &str = "applied-watermark";
const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line} is not `<shard> <index>`: {text:?}")]
    Parse {
        path: String,
        line: usize,
        text: String,
    },
    #[error(
        "shard {shard}: RocksDB holds the state up to log index {found}, but index {durable} was \
         applied and synced before: data was lost from the WAL or the database files (truncated, \
         deleted or restored from an older copy?). Refusing to start with a shorter history. \
         Restore the whole data dir from a backup, or wipe it and add this node to the cluster \
         again as a new member."
    )]
    Behind {
        shard: u32,
        found: u64,
        durable: u64,
    },
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// The recorded indexes; empty when the file does not exist (a new node).
pub fn read(data_dir: &Path) -> Result<BTreeMap<u32, u64>, WatermarkError> {
    let path = path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(WatermarkError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line
            .split_once(' ')
            .and_then(|(s, n)| Some((s.parse().ok()?, n.trim().parse().ok()?)));
        let Some((shard, index)) = parsed else {
            return Err(WatermarkError::Parse {
                path: path.display().to_string(),
                line: i + 1,
                text: line.to_string(),
            });
        };
        out.insert(shard, index);
    }
    Ok(out)
}

/// Refuses a shard whose history (applied state or log, whichever reaches
/// further) is behind the recorded index.
pub fn verify(
    recorded: &BTreeMap<u32, u64>,
    shard: u32,
    applied: u64,
) -> Result<(), WatermarkError> {
    match recorded.get(&shard) {
        Some(&durable) if applied < durable => Err(WatermarkError::Behind {
            shard,
            found: applied,
            durable,
        }),
        _ => Ok(()),
    }
}

/// Writes the file atomically: a temp file, fsync, rename, fsync the dir.
pub fn write(data_dir: &Path, indexes: &BTreeMap<u32, u64>) -> std::io::Result<()> {
    let mut text = String::from(
        "# raftq: per shard, a log index applied and synced; checked at start. Do not edit.\n",
    );
    for (shard, index) in indexes {
        text.push_str(&format!("{shard} {index}\n"));
    }
    let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path(data_dir))?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// Removes `shard`'s line, for a replica dropped (or opened anew) here:
/// its old index says nothing about a new copy.
pub fn forget(data_dir: &Path, shard: u32) -> Result<(), WatermarkError> {
    let mut indexes = read(data_dir)?;
    if indexes.remove(&shard).is_none() {
        return Ok(());
    }
    write(data_dir, &indexes).map_err(|source| WatermarkError::Read {
        path: path(data_dir).display().to_string(),
        source,
    })
}

/// Flush the state once any shard's durable index trails its applied
/// index by this many entries, so the log can be purged behind snapshots
/// without a flush in the purge itself...
const FLUSH_AFTER_ENTRIES: u64 = 4096;
/// ...or once anything applied has waited this long, so a restart after a
/// crash re-applies little even on a quiet shard.
const FLUSH_AFTER: Duration = Duration::from_secs(60);

/// Keeps the file current: once a second, if any shard applied more, sync
/// the WAL (so the log entries behind what was applied are durable) and
/// rewrite the file. Also flushes the state (which skips the WAL) now and
/// then, advancing every shard's durable index.
/// `shards` gives the replicas held at each look (a move changes them).
pub async fn run(
    store: Store,
    data_dir: PathBuf,
    shards: impl Fn() -> Vec<(u32, Arc<ShardShared>)> + Send + 'static,
) {
    let mut written: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last_flush = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let shards = shards();
        let lag = shards
            .iter()
            .map(|(_, s)| s.written_index().saturating_sub(s.durable_index()))
            .max()
            .unwrap_or(0);
        if lag >= FLUSH_AFTER_ENTRIES || (lag > 0 && last_flush.elapsed() >= FLUSH_AFTER) {
            let (store, shards) = (store.clone(), shards.clone());
            let flushed = tokio::task::spawn_blocking(move || {
                let written: Vec<u64> = shards.iter().map(|(_, s)| s.written_index()).collect();
                store.flush_state()?;
                for ((_, shard), index) in shards.iter().zip(written) {
                    shard.set_durable_index(index);
                }
                Ok::<_, rocksdb::Error>(())
            })
            .await;
            match flushed {
                Ok(Ok(())) => last_flush = tokio::time::Instant::now(),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot flush the state to disk"),
                Err(e) => tracing::warn!(error = %e, "state flush task failed"),
            }
        }
        let now: BTreeMap<u32, u64> = shards
            .iter()
            .map(|(id, shared)| (*id, shared.applied_index()))
            .collect();
        if now == written {
            continue;
        }
        let (db, dir, indexes) = (store.db.clone(), data_dir.clone(), now.clone());
        let result = tokio::task::spawn_blocking(move || {
            db.flush_wal(true).map_err(std::io::Error::other)?;
            write(&dir, &indexes)
        })
        .await;
        match result {
            Ok(Ok(())) => written = now,
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot record the applied watermark"),
            Err(e) => tracing::warn!(error = %e, "watermark task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_a_shorter_history() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty(), "no file: a new node");
        let marks: BTreeMap<u32, u64> = [(0, 120), (3, 7)].into();
        write(dir.path(), &marks).unwrap();
        let back = read(dir.path()).unwrap();
        assert_eq!(back, marks);
        assert!(verify(&back, 0, 120).is_ok());
        assert!(verify(&back, 0, 500).is_ok());
        assert!(verify(&back, 9, 0).is_ok(), "a shard with no record passes");
        let err = verify(&back, 3, 2).unwrap_err().to_string();
        assert!(err.contains("shard 3") && err.contains("index 7"), "{err}");
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_record() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "0 12\nnonsense\n").unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
