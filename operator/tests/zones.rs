//! A placed JobQueue whose pods run on Nodes in three zones, on a real
//! control plane with real queue-node processes as its pods: 4 pods on
//! Nodes labelled `topology.kubernetes.io/zone` a, b, c, a (the test plays
//! the kubelet), 4 shards at `replicationFactor: 3`. The operator declares
//! each node with its pod's zone, and the coordinator spreads every
//! shard's 3 replicas over the 3 zones: the two pods alone in their zones
//! hold every shard, the two sharing zone a hold half each (evenly placed
//! without zones, each pod would hold 3).
//!
//! Skipped, with a message, where there is no control plane or
//! `/etc/hosts` cannot be written (the pods' DNS names live there).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{DeleteParams, PostParams};
use kube::Api;
use raftq_operator::crd::JobQueue;
use support::kubelet::Kubelet;
use support::{example, install_crd, queue_node_bin, wait_for, ControlPlane, Operator};

const NS: &str = "default";
const NAME: &str = "zoned";
const STAGE: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_jobqueue_spreads_each_shard_over_its_pods_zones() {
    let Some(plane) = ControlPlane::up() else {
        return;
    };
    let client = plane.client().await;
    install_crd(&client).await;
    let kubelet =
        match Kubelet::start_in_zones(client.clone(), NS, queue_node_bin(), &["a", "b", "c"]).await
        {
            Ok(k) => k,
            Err(why) => {
                eprintln!("SKIPPED: {why}; the operator's zones test did not run");
                return;
            }
        };
    let _operator = Operator::start(&plane, "operator");
    let queues: Api<JobQueue> = Api::namespaced(client.clone(), NS);

    let mut jq = example("production-jobqueue.yaml", NAME);
    jq.spec.replicas = 4;
    jq.spec.shards = 4;
    jq.spec.replication_factor = Some(3);
    queues
        .create(&PostParams::default(), &jq)
        .await
        .expect("create the JobQueue");

    // Nodes 1 and 4 (pods 0 and 3) share zone a.
    let spread: BTreeMap<i64, i32> = BTreeMap::from([(1, 2), (2, 4), (3, 4), (4, 2)]);
    let status = wait_for(
        "every shard's replicas spread over the 3 zones",
        STAGE,
        || async {
            let status = queues.get(NAME).await.ok()?.status?;
            let replicas: BTreeMap<i64, i32> = status
                .nodes
                .iter()
                .map(|n| (n.node_id, n.replicas))
                .collect();

            (status.phase == "Running"
                && status.moves.is_empty()
                && status.shards.iter().all(|s| s.leader != 0)
                && replicas == spread)
                .then_some(status)
        },
    )
    .await;
    assert_eq!(status.shards.len(), 4, "{status:?}");
    assert_eq!(kubelet.running().len(), 4);

    queues
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("delete the JobQueue");
    wait_for("the pods gone", STAGE, || async {
        kubelet.running().is_empty().then_some(())
    })
    .await;
}
