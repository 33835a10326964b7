//! Which encoding a data dir and a Raft message use.
//!
//! Everything a node persists (Raft log entries, job, queue and meta
//! records, snapshots) is postcard-encoded. The data dir records its
//! format once; a node refuses, with a message that says what to do, a
//! data dir written in a format newer than it reads, and converts an
//! older one in place at start. Raft messages name the format of what they
//! carry, so a node never applies an entry or installs a snapshot it would
//! misread during a mixed-version rolling restart.
//!
//! - Data format 1: a job record is `(JobBody, JobStatus)`, the payload
//!   and headers inside the body.
//! - Data format 2: a job record is `(JobMeta, JobStatus, JobContent)`:
//!   the metadata first, so a rebuild decodes only that and keeps the
//!   payload and headers on disk. Raft entries are unchanged (format 1);
//!   snapshots, which are the shard's records, name their format (2) in a
//!   field after the records. A format-2 node installs format-1 snapshots
//!   (converting them); a format-1 node refuses format-2 snapshot messages
//!   with "upgrade this node".
//! - Snapshot format 3 (data format still 2): the same records, streamed
//!   as a file of length-prefixed keys and values with a checked end
//!   ([`super::snapshot_file`]) instead of one postcard message, so neither
//!   side holds a whole shard in memory. Snapshots of formats 1 and 2 are
//!   still read (whole); a node before format 3 refuses format-3 snapshot
//!   messages with "upgrade this node".
//!
//! - Entry format 2: a batch may carry `Op::SetNodes` (the nodes declared
//!   for placement, on the metadata shard). Only messages with such an
//!   entry are sent as format 2; every other message stays format 1, so a
//!   node before format 2 takes them all and refuses only those ("upgrade
//!   this node"). The record it writes (`'p'` kind) is skipped by an older
//!   rebuild, so older snapshots and data dirs need no conversion.
//!
//! - Entry format 3: a batch may carry `Op::Fence` or `Op::SetRouting`
//!   (the shard count grew). Sent as format 3 only in messages with such
//!   an entry, like format 2; their records (`'f'`, `'r'` kinds) are
//!   skipped by an older rebuild.
//!
//! The golden-bytes tests below pin every encoding. Any change to a
//! persisted or replicated type that changes those bytes must raise the
//! matching format and teach the node to read (or convert) the old one.

use bytes::Bytes;
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use super::db::{OpenError, Store, CF_RAFT, CF_STATE};
use crate::fsm::keys;
use crate::ops::{answer_bytes, BackoffPolicy, ContentRef, JobMeta, JobStatus};

/// The data-dir format this binary writes, and the newest it reads.
pub const DATA_FORMAT: u32 = 2;
/// The newest format of Raft entries this binary reads.
pub const ENTRY_FORMAT: u32 = 3;
/// The format of votes, heartbeats and entries without a newer op.
pub const BASE_ENTRY_FORMAT: u32 = 1;
/// The format of the snapshots this binary sends (and the newest it reads).
pub const SNAPSHOT_FORMAT: u32 = 3;
/// The last snapshot format that travelled as one postcard message.
const WHOLE_SNAPSHOT_FORMAT: u32 = 2;

/// Node-wide records sort after every shard's (all-ones prefix).
const FORMAT_KEY: &[u8] = b"\xff\xff\xff\xffformat";
/// How far a conversion from format 1 got: the last job key converted.
const CONVERTED_KEY: &[u8] = b"\xff\xff\xff\xffconverted-to-2";
/// Job records converted per synced write.
const CONVERT_CHUNK: usize = 10_000;

/// The format a message carrying `entries` is sent in: the lowest that
/// can carry them all.
pub fn entries_format(entries: &[openraft::Entry<crate::raft_types::TypeConfig>]) -> u32 {
    use crate::ops::Op;
    let op_format = |op: &Op| match op {
        Op::SetNodes { .. } => 2,
        Op::Fence { .. } | Op::SetRouting { .. } => 3,
        _ => BASE_ENTRY_FORMAT,
    };
    entries
        .iter()
        .filter_map(|e| match &e.payload {
            openraft::EntryPayload::Normal(batch) => batch.ops.iter().map(op_format).max(),
            _ => None,
        })
        .max()
        .unwrap_or(BASE_ENTRY_FORMAT)
}

/// Records the format of a new data dir, converts an older one, refuses a
/// newer one. A data dir from before the format was recorded holds
/// format 1.
pub fn check_data_dir(store: &Store) -> Result<(), OpenError> {
    match store.node_record(FORMAT_KEY, "format")? {
        Some(DATA_FORMAT) => match conversion_point(store)? {
            Some(start) => convert_from_1(store, start),
            None => Ok(()),
        },
        Some(0) => Err(OpenError::NodeRecord("corrupt format record 0".into())),
        Some(1) | None => {
            // Format 2 from here on, even if the conversion is cut short:
            // an older queue-node must not read a half-converted dir.
            let raft_cf = store.cf(CF_RAFT);
            let mut batch = WriteBatch::default();
            batch.put_cf(raft_cf, FORMAT_KEY, DATA_FORMAT.to_be_bytes());
            batch.put_cf(raft_cf, CONVERTED_KEY, b"");
            write_synced(store, batch)?;
            convert_from_1(store, Vec::new())
        }
        Some(newer) => Err(OpenError::Format {
            stored: newer,
            readable: DATA_FORMAT,
        }),
    }
}

fn write_synced(store: &Store, batch: WriteBatch) -> Result<(), OpenError> {
    let mut synced = WriteOptions::default();
    synced.set_sync(true);
    store
        .db
        .write_opt(batch, &synced)
        .map_err(|e| OpenError::NodeRecord(format!("converting the data dir to format 2: {e}")))
}

/// Where an unfinished conversion from format 1 resumes: after this key.
fn conversion_point(store: &Store) -> Result<Option<Vec<u8>>, OpenError> {
    store
        .db
        .get_cf(store.cf(CF_RAFT), CONVERTED_KEY)
        .map_err(|e| OpenError::NodeRecord(format!("reading the conversion record: {e}")))
}

/// Why a Raft message is refused: `None` when this node reads its format.
/// Messages from nodes that predate the field say 0, meaning format 1.
pub fn refuse_message(format: u32, readable: u32) -> Option<String> {
    (format > readable).then(|| {
        format!(
            "the sending node uses data format {format}, this node reads formats up to {readable}: \
             upgrade this node before the others (a rolling upgrade goes one node at a time, \
             and every node must run the new version before it writes the new format)"
        )
    })
}

/// Format 1's job body, read only to convert it.
#[derive(Deserialize)]
struct JobBodyV1 {
    queue: std::sync::Arc<str>,
    payload: Bytes,
    headers: Vec<(String, String)>,
    priority: i32,
    max_attempts: u32,
    backoff: Option<BackoffPolicy>,
    enqueued_at_ms: u64,
    idempotency_key: Option<String>,
}

/// A format-1 job record as a format-2 one.
pub fn convert_v1_job(value: &[u8]) -> Result<Vec<u8>, postcard::Error> {
    let (body, status): (JobBodyV1, JobStatus) = postcard::from_bytes(value)?;
    let meta = JobMeta {
        answer_bytes: answer_bytes(
            &body.queue,
            &body.payload,
            &body.headers,
            body.idempotency_key.as_deref(),
        ),
        queue: body.queue,
        priority: body.priority,
        max_attempts: body.max_attempts,
        backoff: body.backoff,
        enqueued_at_ms: body.enqueued_at_ms,
        idempotency_key: body.idempotency_key,
    };
    let content = ContentRef {
        payload: &body.payload,
        headers: &body.headers,
    };
    postcard::to_allocvec(&(&meta, &status, content))
}

fn is_job_record(key: &[u8]) -> bool {
    key.len() == 17 && key[4] == keys::JOB
}

/// Converts every format-1 job record after `start` in place, a chunk per
/// synced write that also records how far it got, so a conversion cut
/// short resumes there.
fn convert_from_1(store: &Store, mut start: Vec<u8>) -> Result<(), OpenError> {
    let (cf, raft_cf) = (store.cf(CF_STATE), store.cf(CF_RAFT));
    let mut converted = 0u64;
    loop {
        let mut batch = WriteBatch::default();
        let mut last = None;
        let mut in_chunk = 0;
        let scan = store
            .db
            .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward));
        for item in scan {
            let (key, value) =
                item.map_err(|e| OpenError::NodeRecord(format!("reading job records: {e}")))?;
            // `start` itself was converted by the chunk before.
            if !is_job_record(&key) || (!start.is_empty() && *key == *start) {
                continue;
            }
            let record = convert_v1_job(&value).map_err(|e| {
                OpenError::NodeRecord(format!(
                    "job record {key:02x?} is not in data format 1 ({e}): the data dir is corrupt"
                ))
            })?;
            batch.put_cf(cf, &key, record);
            last = Some(key);
            in_chunk += 1;
            if in_chunk == CONVERT_CHUNK {
                break;
            }
        }
        converted += in_chunk as u64;
        let done = in_chunk < CONVERT_CHUNK;
        if done {
            batch.delete_cf(raft_cf, CONVERTED_KEY);
        } else if let Some(key) = &last {
            batch.put_cf(raft_cf, CONVERTED_KEY, key);
        }
        write_synced(store, batch)?;
        if done {
            if converted > 0 {
                tracing::info!(jobs = converted, "data dir converted to format 2");
            }
            return Ok(());
        }
        tracing::info!(jobs = converted, "converting the data dir to format 2");
        start = last.map(|k| k.to_vec()).unwrap_or_default();
    }
}

/// A snapshot as it travels: the shard's records and clock, then the
/// format of the records (absent before format 2).
#[derive(Serialize, Deserialize)]
pub struct SnapshotPayload {
    pub now_ms: u64,
    pub records: Vec<(Bytes, Bytes)>,
    pub format: u32,
}

#[derive(Deserialize)]
struct SnapshotPayloadV1 {
    now_ms: u64,
    records: Vec<(Bytes, Bytes)>,
}

/// A snapshot, its records as this node stores them: a format-1 snapshot
/// (from a node not yet upgraded) has its job records converted.
pub fn decode_snapshot(data: &[u8]) -> Result<SnapshotPayload, postcard::Error> {
    match postcard::from_bytes::<SnapshotPayload>(data) {
        Ok(payload) if payload.format <= WHOLE_SNAPSHOT_FORMAT => Ok(payload),
        Ok(_) => Err(postcard::Error::DeserializeBadEncoding),
        // Format 1 ended after the records.
        Err(postcard::Error::DeserializeUnexpectedEnd) => {
            let old: SnapshotPayloadV1 = postcard::from_bytes(data)?;
            let records = old
                .records
                .into_iter()
                .map(|(key, value)| {
                    if is_job_record(&key) {
                        Ok((key, Bytes::from(convert_v1_job(&value)?)))
                    } else {
                        Ok((key, value))
                    }
                })
                .collect::<Result<_, postcard::Error>>()?;
            Ok(SnapshotPayload {
                now_ms: old.now_ms,
                records,
                format: WHOLE_SNAPSHOT_FORMAT,
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    //! Golden bytes: the encoding of every replicated and persisted type,
    //! pinned. If one of these fails, the format changed: raise `FORMAT`
    //! and keep reading the old one, or undo the change.

    use std::sync::Arc;

    use bytes::Bytes;
    use raftq_api::JobId;

    use crate::ops::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn id(index: u64) -> JobId {
        JobId {
            shard: 3,
            index,
            position: 2,
        }
    }

    fn every_op() -> Batch {
        let backoff = BackoffPolicy {
            initial_ms: 100,
            max_ms: 1_000,
            multiplier: 2.0,
        };
        Batch {
            time_ms: 1_700_000_000_000,
            defaults: QueueDefaults::default(),
            ops: Arc::from(vec![
                Op::Enqueue {
                    queue: "q".into(),
                    jobs: vec![NewJob {
                        payload: Bytes::from_static(b"hi"),
                        headers: vec![("k".into(), "v".into())],
                        priority: -1,
                        when: When::Delay(5),
                        max_attempts: 3,
                        backoff: Some(backoff),
                        idempotency_key: Some("key".into()),
                    }],
                },
                Op::Claim {
                    queue: "q".into(),
                    worker: "w".into(),
                    max: 7,
                    lease_ms: Some(500),
                },
                Op::Ack {
                    tokens: vec![(id(9), 1)],
                },
                Op::Nack {
                    items: vec![Nack {
                        id: id(9),
                        attempt: 2,
                        retry_delay_ms: None,
                        error: "e".into(),
                        dead: true,
                    }],
                },
                Op::Extend {
                    tokens: vec![(id(9), 3)],
                    lease_ms: None,
                },
                Op::SetPaused {
                    queue: "q".into(),
                    paused: true,
                },
                Op::PurgeQueue { queue: "q".into() },
                Op::SetQueueConfig {
                    queue: "q".into(),
                    patch: QueueConfigPatch {
                        lease_ms: Some(1),
                        max_attempts: None,
                        backoff: Some(backoff),
                        dedup_window_ms: Some(2),
                    },
                },
                Op::Cancel { id: id(9) },
                Op::RequeueDead {
                    queue: "q".into(),
                    ids: vec![id(9)],
                },
                Op::PurgeDead {
                    queue: "q".into(),
                    ids: vec![],
                },
                Op::Tick,
                Op::Release {
                    tokens: vec![(id(9), 4)],
                },
            ]),
        }
    }

    #[test]
    fn raft_entries_keep_their_encoding() {
        let bytes = postcard::to_allocvec(&every_op()).expect("encodes");
        assert_eq!(hex(&bytes), GOLDEN_BATCH);
        let back: Batch = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, every_op());
    }

    fn leased_status() -> JobStatus {
        JobStatus {
            state: JobState::Leased,
            attempt: 3,
            retry_base: 1,
            due_at_ms: 1_700_000_030_000,
            last_error: Some("boom".into()),
            worker: Some("w".into()),
        }
    }

    #[test]
    fn job_records_keep_their_encoding() {
        let meta = JobMeta {
            queue: Arc::from("q"),
            priority: 4,
            max_attempts: 0,
            backoff: None,
            enqueued_at_ms: 1_700_000_000_000,
            idempotency_key: None,
            answer_bytes: answer_bytes("q", b"hi", &[("k".into(), "v".into())], None),
        };
        let status = leased_status();
        let content = JobContent {
            payload: Bytes::from_static(b"hi"),
            headers: vec![("k".into(), "v".into())],
        };
        let written = ContentRef {
            payload: &content.payload,
            headers: &content.headers,
        };
        let record = postcard::to_allocvec(&(&meta, &status, written)).expect("encodes");
        assert_eq!(hex(&record), GOLDEN_JOB_RECORD);
        let (m, s, c): (JobMeta, JobStatus, JobContent) =
            postcard::from_bytes(&record).expect("decodes");
        assert_eq!((m, s, c), (meta.clone(), status.clone(), content));
        // A rebuild decodes the metadata and status only.
        let (prefix, _content): ((JobMeta, JobStatus), _) =
            postcard::take_from_bytes(&record).expect("decodes");
        assert_eq!(prefix, (meta, status.clone()));
        let status_only = postcard::to_allocvec(&status).expect("encodes");
        assert_eq!(hex(&status_only), GOLDEN_STATUS_RECORD);
    }

    /// A job record of data format 1 (the body carried the payload)
    /// converts to exactly today's job record.
    #[test]
    fn format_1_job_records_convert() {
        let record = super::convert_v1_job(&unhex(GOLDEN_JOB_RECORD_V1)).expect("converts");
        assert_eq!(hex(&record), GOLDEN_JOB_RECORD);
    }

    /// Format-1 records of `n` jobs of shard 0 written into `store`, as a
    /// queue-node of that format left them.
    fn write_v1_jobs(store: &super::Store, n: u64) -> Vec<Vec<u8>> {
        let v1 = unhex(GOLDEN_JOB_RECORD_V1);
        let cf = store.cf(super::CF_STATE);
        (0..n)
            .map(|i| {
                let id = JobId {
                    shard: 0,
                    index: 10 + i / 4,
                    position: (i % 4) as u32,
                };
                let key = crate::fsm::keys::job_key(crate::fsm::keys::JOB, id);
                store.db.put_cf(cf, key, &v1).expect("write");
                key.to_vec()
            })
            .collect()
    }

    fn assert_all_converted(store: &super::Store, jobs: &[Vec<u8>]) {
        let cf = store.cf(super::CF_STATE);
        for key in jobs {
            let record = store.db.get_cf(cf, key).expect("read").expect("job record");
            assert_eq!(hex(&record), GOLDEN_JOB_RECORD, "job {key:02x?}");
        }
        assert_eq!(
            store
                .node_record(super::FORMAT_KEY, "format")
                .expect("read"),
            Some(super::DATA_FORMAT)
        );
        assert_eq!(super::conversion_point(store).expect("read"), None);
    }

    /// A format-1 data dir is converted in place at start, over several
    /// chunks; a conversion cut short after its first chunk resumes after
    /// it and converts nothing twice (a record converted twice would not
    /// decode as format 1, and the start would fail).
    #[test]
    fn a_format_1_data_dir_converts_and_a_cut_conversion_resumes() {
        let n = 2 * super::CONVERT_CHUNK as u64 + 17;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = super::Store::open_for_test(dir.path());
        let jobs = write_v1_jobs(&store, n);
        store
            .put_node_record(super::FORMAT_KEY, 1)
            .expect("format 1");
        super::check_data_dir(&store).expect("converts");
        assert_all_converted(&store, &jobs);
        drop(store);

        let dir = tempfile::tempdir().expect("temp dir");
        let store = super::Store::open_for_test(dir.path());
        let jobs = write_v1_jobs(&store, n);
        // What a run cut short after its first chunk left behind.
        let cf = store.cf(super::CF_STATE);
        let first = &jobs[..super::CONVERT_CHUNK];
        for key in first {
            let v1 = store.db.get_cf(cf, key).expect("read").expect("record");
            let record = super::convert_v1_job(&v1).expect("converts");
            store.db.put_cf(cf, key, record).expect("write");
        }
        let raft_cf = store.cf(super::CF_RAFT);
        store
            .db
            .put_cf(raft_cf, super::CONVERTED_KEY, &first[first.len() - 1])
            .expect("write");
        store
            .put_node_record(super::FORMAT_KEY, super::DATA_FORMAT)
            .expect("format 2");
        super::check_data_dir(&store).expect("resumes");
        assert_all_converted(&store, &jobs);
    }

    /// A snapshot from a node still on format 1 installs as format 2; one
    /// in format 2 decodes as it was sent.
    #[test]
    fn format_1_snapshots_convert_on_install() {
        use crate::fsm::keys::{job_key, JOB, STATUS};
        let key = |k: [u8; 17]| Bytes::copy_from_slice(&k);
        let status = Bytes::from(postcard::to_allocvec(&leased_status()).expect("encodes"));

        #[derive(serde::Serialize)]
        struct V1<'a> {
            now_ms: u64,
            records: &'a [(Bytes, Bytes)],
        }
        let v1_records = vec![
            (
                key(job_key(JOB, id(1))),
                Bytes::from(unhex(GOLDEN_JOB_RECORD_V1)),
            ),
            (key(job_key(STATUS, id(1))), status.clone()),
        ];
        let v1 = postcard::to_allocvec(&V1 {
            now_ms: 7,
            records: &v1_records,
        })
        .expect("encodes");
        let expected = vec![
            (
                key(job_key(JOB, id(1))),
                Bytes::from(unhex(GOLDEN_JOB_RECORD)),
            ),
            (key(job_key(STATUS, id(1))), status),
        ];
        let installed = super::decode_snapshot(&v1).expect("converts");
        assert_eq!((installed.now_ms, &installed.records), (7, &expected));

        let v2 = postcard::to_allocvec(&super::SnapshotPayload {
            now_ms: 7,
            records: expected.clone(),
            format: 2,
        })
        .expect("encodes");
        let installed = super::decode_snapshot(&v2).expect("decodes");
        assert_eq!(installed.records, expected);
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    const GOLDEN_BATCH: &str = concat!(
        "80d095ffbc31b0ea010ae807e0a712000000000000004080dddb010d0001710102",
        "686901016b0176010105030164e807000000000000004001036b65790101710177",
        "0701f4030201030902010301030902020001650104010309020300050171010601",
        "710701710101000164e8070000000000000040010208030902090171010309020a",
        "0171000b0c0103090204",
    );
    /// Data format 1: `(JobBody, JobStatus)`, payload and headers inside.
    const GOLDEN_JOB_RECORD_V1: &str =
        "017102686901016b017608000080d095ffbc3100020301b0ba97ffbc310104626f6f6d010177";
    /// Data format 2: `(JobMeta, JobStatus, JobContent)`.
    const GOLDEN_JOB_RECORD: &str = concat!(
        "017108000080d095ffbc31008d01",         // JobMeta
        "020301b0ba97ffbc310104626f6f6d010177", // JobStatus
        "02686901016b0176",                     // JobContent
    );
    const GOLDEN_STATUS_RECORD: &str = "020301b0ba97ffbc310104626f6f6d010177";
}
