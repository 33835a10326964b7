//! Opens the node's RocksDB and runs the group-commit thread.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Weak};

use openraft::storage::LogFlushed;
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, WriteBufferManager, DB};
use serde::{Deserialize, Serialize};

use crate::raft_types::TypeConfig;

pub const CF_LOG: &str = "raft_log";
pub const CF_RAFT: &str = "raft_meta";
pub const CF_STATE: &str = "state";

/// When an appended Raft entry counts as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync before the entry counts as appended: an acknowledged write
    /// survives power loss.
    #[default]
    Fsync,
    /// Written to the OS before it counts as appended; the disk catches up
    /// on its own (RocksDB syncs the WAL every MiB). Survives a process
    /// crash, not a machine crash.
    Async,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open RocksDB in {path}: {source} (is another queue-node using this data dir, or is it damaged?)")]
    Open {
        path: String,
        source: rocksdb::Error,
    },
    #[error("this data dir was created with {stored} shard(s) but the node was started with {configured}; the shard count of a cluster cannot change (queues are placed by it)")]
    ShardCount { stored: u32, configured: u32 },
    #[error("this data dir was created with replication factor {stored} but the node was started with {configured}; it cannot change yet (moving shards between nodes is not built)")]
    ReplicationFactor { stored: String, configured: String },
    #[error("reading or writing the node record: {0}")]
    NodeRecord(String),
    #[error("this data dir was written in data format {stored}, and this queue-node reads formats up to {readable}: run the newer queue-node that wrote it (a downgrade cannot read it), or restore a backup taken before the upgrade")]
    Format { stored: u32, readable: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteShardError {
    #[error("deleting the shard's records: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("removing the shard's snapshots in {path}: {source}")]
    Snapshots {
        path: String,
        source: std::io::Error,
    },
}

/// Node-wide records in `raft_meta` sort after every shard's (all-ones prefix).
const NODE_SHARDS_KEY: &[u8] = b"\xff\xff\xff\xffshards";
/// The replication factor; 0 for "every initial member".
const NODE_REPLICATION_KEY: &[u8] = b"\xff\xff\xff\xffreplication";
/// The shards this node holds a replica of (big-endian u32s): fixed by the
/// layout at creation, changed by moves.
const NODE_HELD_KEY: &[u8] = b"\xff\xff\xff\xffheld";
/// Set once this node has initialised the shards the layout gave it: a
/// replica opened later (a move, a new shard) is never initialised at a
/// restart as if the cluster were new.
const NODE_BOOTSTRAPPED_KEY: &[u8] = b"\xff\xff\xff\xffbootstrapped";

/// What RocksDB may hold in memory.
#[derive(Debug, Clone, Copy)]
pub struct StoreMemory {
    /// The state's block cache (job records read back from disk).
    pub block_cache_bytes: usize,
    /// Every column family's memtables together: past it RocksDB flushes
    /// the largest, and stalls writes until flushes catch up rather than
    /// grow.
    pub memtable_bytes: usize,
}

/// The node's database plus its fsync thread.
#[derive(Clone)]
pub struct Store {
    pub db: Arc<DB>,
    pub durability: Durability,
    syncer: mpsc::Sender<LogFlushed<TypeConfig>>,
    block_cache: Cache,
    memtables: WriteBufferManager,
    data_dir: std::path::PathBuf,
}

impl Store {
    /// Opens (or creates) the node's RocksDB within `memory`.
    pub fn open(
        dir: &Path,
        durability: Durability,
        memory: StoreMemory,
    ) -> Result<Store, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        let mut opts = Options::default();
        // Compaction runs at a lower CPU priority than serving: on a small
        // machine it otherwise competes with the apply pipeline and shows
        // up as latency spikes; it catches up whenever the node is idle.
        let mut env = rocksdb::Env::new().map_err(|source| OpenError::Open {
            path: dir.display().to_string(),
            source,
        })?;
        env.lower_thread_pool_cpu_priority();
        opts.set_env(&env);
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        opts.set_wal_bytes_per_sync(1 << 20);
        opts.set_keep_log_file_num(3);
        let memtables = WriteBufferManager::new_write_buffer_manager(memory.memtable_bytes, true);
        opts.set_write_buffer_manager(&memtables);
        // A torn last record is what a crash mid-write leaves, and it was
        // never acknowledged: drop it. Damage anywhere else must stop the
        // node, not silently cut the log short (RocksDB's default).
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        opts.set_paranoid_checks(true);
        // A missing or shortened older WAL fails the open too.
        opts.set_track_and_verify_wals_in_manifest(true);
        // The log and the state take the memtables' budget between them
        // (two memtables each, one filling while one flushes); the Raft
        // metadata is tiny.
        let memtable_size = (memory.memtable_bytes / 4).max(1 << 20);
        let mut log_opts = Options::default();
        log_opts.set_compression_type(rocksdb::DBCompressionType::None);
        log_opts.set_write_buffer_size(memtable_size);
        let mut state_opts = Options::default();
        state_opts.set_write_buffer_size(memtable_size);
        state_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Job ids only grow, so a flush overlaps just the newest file of
        // the last level; small files keep each compaction to that file
        // instead of rewriting the whole state (with 64 MiB files an
        // enqueue-heavy node re-read every job at every compaction).
        state_opts.set_target_file_size_base(8 << 20);
        // Job contents are read back one claim at a time: a bloom filter
        // skips the files a key is not in. Index and filter blocks are
        // charged to the block cache but pinned there, for every level:
        // unpinned, the data blocks of contents (each read once) pushed
        // them out, and every claim read and decompressed index blocks
        // again (9 % of a 3-node fetch+ack). They cost a few bytes a job.
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        table.set_unpartitioned_pinning_tier(rocksdb::BlockBasedTablePinningTier::All);
        let block_cache = Cache::new_lru_cache(memory.block_cache_bytes);
        table.set_block_cache(&block_cache);
        state_opts.set_block_based_table_factory(&table);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_LOG, log_opts),
            ColumnFamilyDescriptor::new(CF_RAFT, Options::default()),
            ColumnFamilyDescriptor::new(CF_STATE, state_opts),
        ];
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|source| OpenError::Open {
            path: dir.display().to_string(),
            source,
        })?;
        let db = Arc::new(db);
        let (syncer, pending) = mpsc::channel();
        // A weak handle: the thread must not keep the database open once
        // every shard has let go of it.
        let sync_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("raftq-wal-sync".into())
            .spawn(move || run_syncer(sync_db, pending, durability))
            .map_err(|source| OpenError::CreateDir {
                path: "wal sync thread".into(),
                source,
            })?;
        Ok(Store {
            db,
            durability,
            syncer,
            block_cache,
            memtables,
            data_dir: dir.to_path_buf(),
        })
    }

    /// Where `shard`'s snapshot files are built, received and kept.
    pub fn snapshot_dir(&self, shard: u32) -> std::path::PathBuf {
        self.data_dir
            .join("snapshots")
            .join(format!("shard-{shard}"))
    }

    /// A store with small caches, for tests on a temporary dir.
    #[cfg(test)]
    pub fn open_for_test(dir: &Path) -> Store {
        match Store::open(
            dir,
            Durability::Fsync,
            StoreMemory {
                block_cache_bytes: 8 << 20,
                memtable_bytes: 32 << 20,
            },
        ) {
            Ok(store) => store,
            Err(e) => panic!("opening a test store in {}: {e}", dir.display()),
        }
    }

    /// Bytes in the state's block cache now.
    pub fn block_cache_bytes(&self) -> usize {
        self.block_cache.get_usage()
    }

    /// RocksDB's write-stall signals: whether writes are stopped, the
    /// rate they are slowed to (0 = not slowed), and the bytes compaction
    /// is behind by (summed over column families).
    pub fn stall_signals(&self) -> (bool, u64, u64) {
        let int = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        let pending = [CF_LOG, CF_RAFT, CF_STATE]
            .iter()
            .filter_map(|cf| {
                self.db
                    .property_int_value_cf(self.cf(cf), "rocksdb.estimate-pending-compaction-bytes")
                    .ok()
                    .flatten()
            })
            .sum();
        (
            int("rocksdb.is-write-stopped") > 0,
            int("rocksdb.actual-delayed-write-rate"),
            pending,
        )
    }

    /// Bytes held by every memtable now.
    pub fn memtable_bytes(&self) -> usize {
        self.memtables.get_usage()
    }

    /// Records the shard count on first start; refuses a different one later.
    pub fn check_shard_count(&self, configured: u32) -> Result<(), OpenError> {
        match self.node_record(NODE_SHARDS_KEY, "shard count")? {
            Some(stored) if stored != configured => {
                Err(OpenError::ShardCount { stored, configured })
            }
            Some(_) => Ok(()),
            None => self.put_node_record(NODE_SHARDS_KEY, configured),
        }
    }

    /// Records the replication factor of a new data dir, and refuses a
    /// different one later: the shards this node holds follow from it.
    pub fn check_replication_factor(&self, configured: Option<u32>) -> Result<(), OpenError> {
        let name = |f: u32| match f {
            0 => "unset (every member holds every shard)".to_string(),
            f => f.to_string(),
        };
        let configured = configured.unwrap_or(0);
        match self.node_record(NODE_REPLICATION_KEY, "replication factor")? {
            Some(stored) if stored != configured => Err(OpenError::ReplicationFactor {
                stored: name(stored),
                configured: name(configured),
            }),
            Some(_) => Ok(()),
            None => self.put_node_record(NODE_REPLICATION_KEY, configured),
        }
    }

    /// The shards this node holds; `None` for a data dir that never
    /// recorded them (a new one, or one written before moves existed).
    pub fn held_shards(&self) -> Result<Option<Vec<u32>>, OpenError> {
        let bytes = self
            .db
            .get_cf(self.cf(CF_RAFT), NODE_HELD_KEY)
            .map_err(|e| OpenError::NodeRecord(e.to_string()))?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        if bytes.len() % 4 != 0 {
            return Err(OpenError::NodeRecord(format!(
                "corrupt held-shards record of {} bytes",
                bytes.len()
            )));
        }
        Ok(Some(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }

    /// Records the shards this node holds (synced: a move relies on it).
    pub fn put_held_shards(&self, shards: &[u32]) -> Result<(), OpenError> {
        let bytes: Vec<u8> = shards.iter().flat_map(|s| s.to_be_bytes()).collect();
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(self.cf(CF_RAFT), NODE_HELD_KEY, bytes);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| OpenError::NodeRecord(e.to_string()))
    }

    /// Deletes everything of `shard`: its log, Raft state, job state and
    /// snapshots. Every key of a shard starts with its id (big-endian), so
    /// one range per column family covers it.
    pub fn delete_shard(&self, shard: u32) -> Result<(), DeleteShardError> {
        let from = shard.to_be_bytes();
        // Node-wide records sort after every shard (all-ones prefix).
        let to = shard.saturating_add(1).to_be_bytes();
        let mut batch = rocksdb::WriteBatch::default();
        for cf in [CF_LOG, CF_RAFT, CF_STATE] {
            batch.delete_range_cf(self.cf(cf), from, to);
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        match std::fs::remove_dir_all(self.snapshot_dir(shard)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DeleteShardError::Snapshots {
                path: self.snapshot_dir(shard).display().to_string(),
                source,
            }),
        }
    }

    /// Whether this node has initialised the shards its layout gave it.
    pub fn bootstrapped(&self) -> Result<bool, OpenError> {
        Ok(self
            .node_record(NODE_BOOTSTRAPPED_KEY, "bootstrapped")?
            .is_some())
    }

    /// Records that this node has initialised its layout's shards.
    pub fn put_bootstrapped(&self) -> Result<(), OpenError> {
        self.put_node_record(NODE_BOOTSTRAPPED_KEY, 1)
    }

    /// A node-wide number stored under `key` (`what` names it in errors).
    pub fn node_record(&self, key: &[u8], what: &str) -> Result<Option<u32>, OpenError> {
        let bytes = self
            .db
            .get_cf(self.cf(CF_RAFT), key)
            .map_err(|e| OpenError::NodeRecord(e.to_string()))?;
        bytes
            .map(|bytes| {
                bytes
                    .as_slice()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| {
                        OpenError::NodeRecord(format!("corrupt {what} record {bytes:02x?}"))
                    })
            })
            .transpose()
    }

    pub fn put_node_record(&self, key: &[u8], value: u32) -> Result<(), OpenError> {
        self.db
            .put_cf(self.cf(CF_RAFT), key, value.to_be_bytes())
            .map_err(|e| OpenError::NodeRecord(e.to_string()))
    }

    /// A handle that does not keep the database open (to wait for it to close).
    pub fn weak(&self) -> Weak<DB> {
        Arc::downgrade(&self.db)
    }

    pub fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // The three families are created at open; a missing one is a bug.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} was created at open"))
    }

    /// Writes the state column family's memtables to disk and returns once
    /// they are durable: every state write made before the call is then on
    /// disk. (State writes skip the WAL; see [`super::state_machine`].)
    pub fn flush_state(&self) -> Result<(), rocksdb::Error> {
        self.db.flush_cf(self.cf(CF_STATE))
    }

    /// Reports `callback` once everything written so far is durable.
    pub fn after_sync(&self, callback: LogFlushed<TypeConfig>) {
        if let Err(mpsc::SendError(callback)) = self.syncer.send(callback) {
            callback.log_io_completed(Err(std::io::Error::other("WAL sync thread stopped")));
        }
    }
}

/// Group commit: every callback queued while one fsync runs is answered by
/// the next one, so many appends (of every shard) share one fsync.
fn run_syncer(
    db: Weak<DB>,
    pending: mpsc::Receiver<LogFlushed<TypeConfig>>,
    durability: Durability,
) {
    while let Ok(first) = pending.recv() {
        let mut waiting = vec![first];
        waiting.extend(pending.try_iter());
        let result = match (durability, db.upgrade()) {
            (Durability::Fsync, Some(db)) => db.flush_wal(true).map_err(|e| e.to_string()),
            (Durability::Fsync, None) => Err("database closed".to_string()),
            (Durability::Async, _) => Ok(()),
        };
        for callback in waiting {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(format!("WAL fsync failed: {e}"))),
            };
            callback.log_io_completed(outcome);
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "WAL fsync failed");
        }
    }
}
