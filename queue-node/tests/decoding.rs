//! Raft entries and peer messages under random and damaged bytes: decoding
//! never panics, good entries round-trip, and a node handed garbage by a
//! "peer" answers with an error and keeps serving.

mod common;

use std::time::Duration;

use bytes::Bytes;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{Entry, EntryPayload, LogId};
use proptest::prelude::*;
use raftq_api::v1::raft_transport_client::RaftTransportClient;
use raftq_api::v1::RaftMessage;
use raftq_api::JobId;
use raftq_client::proto as pb;
use raftq_node::ops::{Batch, NewJob, Op, QueueDefaults, When};
use raftq_node::raft_types::TypeConfig;

fn any_op() -> impl Strategy<Value = Op> {
    let id =
        (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(shard, index, position)| JobId {
            shard,
            index,
            position,
        });
    prop_oneof![
        (
            ".{0,12}",
            proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..64), any::<i32>()),
                0..4
            )
        )
            .prop_map(|(queue, jobs)| Op::Enqueue {
                queue,
                jobs: jobs
                    .into_iter()
                    .map(|(payload, priority)| NewJob {
                        payload: Bytes::from(payload),
                        headers: vec![("h".into(), "v".into())],
                        priority,
                        when: When::Delay(5),
                        max_attempts: 3,
                        backoff: None,
                        idempotency_key: Some("key".into()),
                    })
                    .collect(),
            }),
        (
            ".{0,12}",
            ".{0,12}",
            any::<u32>(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(queue, worker, max, lease_ms)| Op::Claim {
                queue,
                worker,
                max,
                lease_ms
            }),
        proptest::collection::vec((id.clone(), any::<u32>()), 0..8)
            .prop_map(|tokens| Op::Ack { tokens }),
        id.prop_map(|id| Op::Cancel { id }),
        Just(Op::Tick),
    ]
}

fn any_entry() -> impl Strategy<Value = Entry<TypeConfig>> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any_op(), 0..6),
    )
        .prop_map(|(term, index, ops)| Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Batch {
                time_ms: index,
                defaults: QueueDefaults::default(),
                ops: ops.into(),
            }),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn entries_round_trip(entry in any_entry()) {
        let bytes = postcard::to_allocvec(&entry).unwrap();
        let back: Entry<TypeConfig> = postcard::from_bytes(&bytes).unwrap();
        prop_assert_eq!(format!("{back:?}"), format!("{entry:?}"));
    }

    #[test]
    fn damaged_entries_decode_or_fail_cleanly(
        entry in any_entry(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = postcard::to_allocvec(&entry).unwrap();
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        let cut = cut.index(bytes.len() + 1);
        for data in [&bytes[..], &bytes[..cut]] {
            if let Ok(e) = postcard::from_bytes::<Entry<TypeConfig>>(data) {
                // Whatever decodes must encode again.
                prop_assert!(postcard::to_allocvec(&e).is_ok());
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = postcard::from_bytes::<Entry<TypeConfig>>(&data);
        let _ = postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(&data);
        let _ = postcard::from_bytes::<VoteRequest<u64>>(&data);
        let _ = postcard::from_bytes::<Batch>(&data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_garbage_gets_an_error_and_the_node_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = common::start_single(dir.path()).await;
    let mut transport = RaftTransportClient::connect(format!("http://{}", node.peer_addr))
        .await
        .unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 64],
        (0..=255u8).collect(),
        b"\x05\xff\xff\xff\xff\xff\xff\xff\xff\x7f".to_vec(),
    ];
    for data in garbage {
        for shard in [0u32, 7] {
            let msg = RaftMessage {
                shard,
                data: data.clone().into(),
                format: 0,
            };
            let status = transport.append_entries(msg.clone()).await.unwrap_err();
            assert!(
                matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::NotFound
                ),
                "append_entries({shard}, {} bytes): {status:?}",
                data.len()
            );
            assert!(transport.vote(msg.clone()).await.is_err());
            assert!(transport.install_snapshot(msg).await.is_err());
        }
    }
    // A message in a format this node cannot read is refused, saying why.
    let newer = RaftMessage {
        shard: 0,
        data: vec![0u8; 8].into(),
        format: raftq_node::store::format::ENTRY_FORMAT + 1,
    };
    let status = transport.append_entries(newer).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("upgrade this node"),
        "{}",
        status.message()
    );
    // Snapshots have a format of their own (3): a newer one is refused too.
    let newer_snapshot = RaftMessage {
        shard: 0,
        data: vec![0u8; 8].into(),
        format: 4,
    };
    let status = transport
        .install_snapshot(newer_snapshot)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("data format 4"),
        "{}",
        status.message()
    );
    // Still the leader, still taking jobs.
    let id = client
        .producer()
        .enqueue("after-garbage", raftq_client::JobSpec::new("ok"))
        .await
        .unwrap();
    assert!(!id.is_empty());
    let status = common::peer(&node)
        .await
        .cluster()
        .status(pb::ClusterStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.shards[0].role, "leader");
    tokio::time::timeout(Duration::from_secs(20), node.shutdown())
        .await
        .unwrap()
        .unwrap();
}
