//! A JobQueue whose shards are placed on some nodes only, on a real
//! control plane with real queue-node processes as its pods (the test
//! plays the kubelet): 4 pods, 4 shards, `replicationFactor: 3`, TLS and
//! auth as the production example has them. The pods create the cluster
//! themselves; the status shows 3 replicas and 1 leadership per node; a
//! job on every shard is served through any pod. Scaled to 5 pods, the new
//! pod joins and replicas move onto it; scaled back to 4, its replicas move
//! off before it is removed; the jobs stay served throughout. A change of
//! `replicationFactor` is refused by the API server with the reason.
//!
//! Skipped, with a message, where there is no control plane or
//! `/etc/hosts` cannot be written (the pods' DNS names live there).

mod support;

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use raftq_client::proto as pb;
use raftq_client::{Client, ConnectOptions, JobSpec, TlsOptions};
use raftq_operator::crd::JobQueue;
use support::kubelet::Kubelet;
use support::{example, install_crd, queue_node_bin, wait_for, ControlPlane, Operator};

const NS: &str = "default";
const NAME: &str = "ledger";
const PODS: u32 = 4;
const SHARDS: u32 = 4;
const STAGE: Duration = Duration::from_secs(240);

fn pod_addr(ordinal: u32) -> String {
    format!("{NAME}-{ordinal}.{NAME}-peers.{NS}.svc:7400")
}

/// How a user connects: the CA and the starter token from `<name>-admin`.
async fn user(client: &kube::Client) -> ConnectOptions {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), NS);
    let (ca, token) = wait_for("Secret ledger-admin", STAGE, || async {
        let s = secrets.get_opt(&format!("{NAME}-admin")).await.ok()??;
        let data = s.data?;
        let text = |k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        Some((text("ca.crt")?, text("token")?))
    })
    .await;
    ConnectOptions::new()
        .tls(TlsOptions::new().ca_cert_pem(ca))
        .token(token)
}

/// The ready jobs of `queues`, as `client`'s node counts them.
async fn ready_in(client: &Client, queues: &[String]) -> Result<u64, tonic::Status> {
    let stats = client
        .admin()
        .stats(pb::StatsRequest::default())
        .await?
        .into_inner();
    Ok(stats
        .queues
        .iter()
        .filter(|q| queues.contains(&q.queue))
        .map(|q| q.ready)
        .sum())
}

/// A queue name on `shard`.
fn queue_on(shard: u32) -> String {
    (0..)
        .map(|i| format!("ledger-{i}"))
        .find(|q| raftq_api::shard_of(q, SHARDS) == shard)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_jobqueue_creates_itself_and_spreads_its_shards() {
    let Some(plane) = ControlPlane::up() else {
        return;
    };
    let client = plane.client().await;
    install_crd(&client).await;
    let kubelet = match Kubelet::start(client.clone(), NS, queue_node_bin()).await {
        Ok(k) => k,
        Err(why) => {
            eprintln!("SKIPPED: {why}; the operator's placed-pod test did not run");
            return;
        }
    };
    let _operator = Operator::start(&plane, "operator");
    let queues: Api<JobQueue> = Api::namespaced(client.clone(), NS);

    let mut jq = example("production-jobqueue.yaml", NAME);
    jq.spec.replicas = PODS as i32;
    jq.spec.shards = SHARDS as i32;
    // Refused by the API server, with the reason: 4 nodes that all hold
    // every shard, and a factor Raft does not use.
    for (factor, reason) in [
        (None, "replicas must be odd"),
        (Some(2), "replicationFactor must be 1, 3 or 5"),
        (Some(5), "at least replicationFactor"),
    ] {
        let mut bad = jq.clone();
        bad.spec.replication_factor = factor;
        let refused = queues
            .create(&PostParams::default(), &bad)
            .await
            .expect_err("a bad layout was accepted");
        assert!(refused.to_string().contains(reason), "{refused}");
    }
    jq.spec.replication_factor = Some(3);
    queues
        .create(&PostParams::default(), &jq)
        .await
        .expect("create the JobQueue");

    // Running, every shard led, each node holding 3 shards and leading 1.
    let settled = wait_for(
        "4 nodes with 3 replicas and 1 leadership each",
        STAGE,
        || async {
            let jq = queues.get(NAME).await.ok()?;
            let status = jq.status.clone()?;
            let even = status.nodes.len() == PODS as usize
                && status.nodes.iter().all(|n| n.replicas == 3 && n.leads == 1);
            (status.phase == "Running"
                && status.shards.len() == SHARDS as usize
                && status.shards.iter().all(|s| s.leader != 0)
                && even)
                .then_some(jq)
        },
    )
    .await;
    let status = settled.status.expect("status");
    assert_eq!(status.voters.len(), 3, "shard 0 has 3 voters: {status:?}");
    let settled_message = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert_eq!(
        settled_message, "3 voters in each of 4 shards, on 4 nodes",
        "{status:?}"
    );

    // A job on every shard, enqueued through pod 0 and served through pod
    // 3: each pod holds only 3 of the 4 shards.
    let options = user(&client).await;
    let first = Client::connect_with(&pod_addr(0), options.clone().route_to_leaders(false))
        .await
        .expect("connect to pod 0");
    let last = Client::connect_with(&pod_addr(3), options.clone().route_to_leaders(false))
        .await
        .expect("connect to pod 3");
    let queue_names: Vec<String> = (0..SHARDS).map(queue_on).collect();
    for queue in &queue_names {
        first
            .producer()
            .enqueue(queue, JobSpec::new(format!("for {queue}")))
            .await
            .unwrap_or_else(|e| panic!("enqueue on {queue}: {e}"));
    }
    let stats = wait_for(
        "pod 3 to count every job",
        Duration::from_secs(60),
        || async {
            let stats = last
                .admin()
                .stats(pb::StatsRequest::default())
                .await
                .ok()?
                .into_inner();
            let ready: u64 = stats
                .queues
                .iter()
                .filter(|q| queue_names.contains(&q.queue))
                .map(|q| q.ready)
                .sum();
            (ready == u64::from(SHARDS)).then_some(stats)
        },
    )
    .await;
    assert!(stats.queues.len() >= SHARDS as usize, "{stats:?}");

    // Scale out: pod 4 joins, the coordinator moves replicas onto it.
    let scale = |replicas: u32| {
        let queues = queues.clone();
        async move {
            queues
                .patch(
                    NAME,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } })),
                )
                .await
                .expect("scale the JobQueue");
        }
    };
    let spread = |pods: usize| {
        let queues = queues.clone();
        async move {
            let jq = queues.get(NAME).await.ok()?;
            let status = jq.status?;
            let total: i32 = status.nodes.iter().map(|n| n.replicas).sum();
            let lowest = status.nodes.iter().map(|n| n.replicas).min()?;
            let highest = status.nodes.iter().map(|n| n.replicas).max()?;
            (status.phase == "Running"
                && status.nodes.len() == pods
                && total == 3 * SHARDS as i32
                && highest - lowest <= 1
                && status.moves.is_empty()
                && status.initial_members == Some(PODS as i32))
            .then_some(status)
        }
    };
    scale(PODS + 1).await;
    let grown = wait_for("5 nodes with the 12 replicas even over them", STAGE, || {
        spread(PODS as usize + 1)
    })
    .await;
    assert!(
        grown
            .nodes
            .iter()
            .any(|n| n.node_id == 5 && n.replicas >= 2),
        "{grown:?}"
    );
    assert_eq!(kubelet.running().len(), PODS as usize + 1);

    // Scale in: pod 4's replicas move away first, then it is removed.
    scale(PODS).await;
    let shrunk = wait_for("4 nodes again, 3 replicas each", STAGE, || async {
        let status = spread(PODS as usize).await?;
        (kubelet.running().len() == PODS as usize).then_some(status)
    })
    .await;
    assert!(shrunk.nodes.iter().all(|n| n.replicas == 3), "{shrunk:?}");
    let ready = ready_in(&last, &queue_names)
        .await
        .expect("stats after the moves");
    assert_eq!(ready, u64::from(SHARDS), "every job is still there");

    // The shard count grows: 2 new shards, placed on the 4 nodes; the jobs
    // stay where they were, a new queue lands on a new shard. Fewer
    // shards are refused by the API server, with the reason.
    let grown_shards = SHARDS + 2;
    queues
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "shards": grown_shards } })),
        )
        .await
        .expect("grow the shard count");
    let grown = wait_for("6 shards, each led, even over 4 nodes", STAGE, || async {
        let jq = queues.get(NAME).await.ok()?;
        let status = jq.status?;
        let total: i32 = status.nodes.iter().map(|n| n.replicas).sum();
        let lowest = status.nodes.iter().map(|n| n.replicas).min()?;
        let highest = status.nodes.iter().map(|n| n.replicas).max()?;
        (status.phase == "Running"
            && status.shards.len() == grown_shards as usize
            && status.shards.iter().all(|s| s.leader != 0)
            && total == 3 * grown_shards as i32
            && highest - lowest <= 1)
            .then_some(status)
    })
    .await;
    assert_eq!(grown.initial_shards, Some(SHARDS as i32), "{grown:?}");
    let on_new_shard = (0..)
        .map(|i| format!("after-growth-{i}"))
        .find(|q| raftq_api::shard_of(q, grown_shards) == grown_shards - 1)
        .unwrap_or_default();
    let id = wait_for(
        "an enqueue on a new shard",
        Duration::from_secs(60),
        || async {
            first
                .producer()
                .enqueue(&on_new_shard, JobSpec::new("new"))
                .await
                .ok()
        },
    )
    .await;
    assert!(id.starts_with(&format!("{}-", grown_shards - 1)), "{id}");
    let ready = ready_in(&last, &queue_names)
        .await
        .expect("stats after the growth");
    assert_eq!(ready, u64::from(SHARDS), "every job is still there");
    let refused = queues
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "shards": SHARDS } })),
        )
        .await
        .expect_err("fewer shards were accepted");
    assert!(
        refused.to_string().contains("shards can only grow"),
        "{refused}"
    );

    // The replication factor is fixed: a change is refused with the reason.
    let refused = queues
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "replicationFactor": 1 } })),
        )
        .await
        .expect_err("a change of the replication factor was accepted");
    assert!(
        refused
            .to_string()
            .contains("replicationFactor is fixed at creation"),
        "{refused}"
    );

    queues
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("delete the JobQueue");
    wait_for("the pods gone", STAGE, || async {
        kubelet.running().is_empty().then_some(())
    })
    .await;
}
