//! Which encoding a data dir and a Raft message use.
//!
//! Everything a node persists (Raft log entries, job, queue and meta
//! records, snapshots) is postcard-encoded in one format, recorded once per
//! data dir: a node refuses, with a message that says what to do, a data
//! dir written in a format it does not read. Raft messages name the format
//! of the entries and snapshots they carry, so a node never applies an
//! entry it would misread during a mixed-version rolling restart.
//!
//! Format 1 is the encoding pinned by the golden-bytes tests below. Any
//! change to a persisted or replicated type that changes those bytes must
//! raise [`FORMAT`] and teach the node to read (or convert) the old one.

use super::db::{OpenError, Store};

/// The format this binary writes, and the newest it reads.
pub const FORMAT: u32 = 1;

/// Node-wide records sort after every shard's (all-ones prefix).
const FORMAT_KEY: &[u8] = b"\xff\xff\xff\xffformat";

/// Records the format of a new data dir; refuses one it does not read. A
/// data dir from before the format was recorded holds format 1.
pub fn check_data_dir(store: &Store) -> Result<(), OpenError> {
    match store.node_record(FORMAT_KEY, "format")? {
        Some(FORMAT) => Ok(()),
        Some(0) => Err(OpenError::NodeRecord("corrupt format record 0".into())),
        Some(newer) => Err(OpenError::Format {
            stored: newer,
            readable: FORMAT,
        }),
        None => store.put_node_record(FORMAT_KEY, FORMAT),
    }
}

/// Why a Raft message is refused: `None` when this node reads its format.
/// Messages from nodes that predate the field say 0, meaning format 1.
pub fn refuse_message(format: u32) -> Option<String> {
    (format > FORMAT).then(|| {
        format!(
            "the sending node uses data format {format}, this node reads formats up to {FORMAT}: \
             upgrade this node before the others (a rolling upgrade goes one node at a time, \
             and every node must run the new version before it writes the new format)"
        )
    })
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

    #[test]
    fn job_records_keep_their_encoding() {
        let body = JobBody {
            queue: Arc::from("q"),
            payload: Bytes::from_static(b"hi"),
            headers: vec![("k".into(), "v".into())],
            priority: 4,
            max_attempts: 0,
            backoff: None,
            enqueued_at_ms: 1_700_000_000_000,
            idempotency_key: None,
        };
        let status = JobStatus {
            state: JobState::Leased,
            attempt: 3,
            retry_base: 1,
            due_at_ms: 1_700_000_030_000,
            last_error: Some("boom".into()),
            worker: Some("w".into()),
        };
        let record = postcard::to_allocvec(&(&body, &status)).expect("encodes");
        assert_eq!(hex(&record), GOLDEN_JOB_RECORD);
        let status_only = postcard::to_allocvec(&status).expect("encodes");
        assert_eq!(hex(&status_only), GOLDEN_STATUS_RECORD);
    }

    const GOLDEN_BATCH: &str = concat!(
        "80d095ffbc31b0ea010ae807e0a712000000000000004080dddb010d0001710102",
        "686901016b0176010105030164e807000000000000004001036b65790101710177",
        "0701f4030201030902010301030902020001650104010309020300050171010601",
        "710701710101000164e8070000000000000040010208030902090171010309020a",
        "0171000b0c0103090204",
    );
    const GOLDEN_JOB_RECORD: &str =
        "017102686901016b017608000080d095ffbc3100020301b0ba97ffbc310104626f6f6d010177";
    const GOLDEN_STATUS_RECORD: &str = "020301b0ba97ffbc310104626f6f6d010177";
}
