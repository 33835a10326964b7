//! The operator's whole life of a JobQueue on a real control plane with
//! real queue-node processes as its pods (the test plays the kubelet, see
//! `support/kubelet.rs`): create the production example (3 nodes × 4
//! shards, TLS and auth on by default, with the operator's certificates),
//! reach it as a user does (the CA and the starter token from Secret
//! `<name>-admin`; a plaintext or tokenless client is refused), scale
//! 3 → 5 → 3, roll a config change under steady enqueues (no failed
//! client call), rotate the nodes' certificate under load (no failed
//! call, no restart), pause, delete — with every acknowledged job still
//! there at each stage.
//!
//! Skipped, with a message, where there is no control plane or
//! `/etc/hosts` cannot be written (the pods' DNS names live there).

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use raftq_client::proto as pb;
use raftq_client::{Client, ConnectOptions, JobSpec, TlsOptions};
use raftq_operator::crd::JobQueue;
use support::kubelet::Kubelet;
use support::{example, install_crd, queue_node_bin, wait_for, ControlPlane, Operator};

const NS: &str = "default";
const NAME: &str = "orders";
const QUEUES: [&str; 8] = ["q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7"];
const JOBS_PER_QUEUE: u64 = 25;
/// A membership step, a pod start or a rollout on a busy 2-core machine.
const STAGE: Duration = Duration::from_secs(240);

/// How a user connects: TLS with the queue's CA and the starter admin
/// token, both from Secret `<name>-admin` (set once the operator made it).
static USER: std::sync::OnceLock<ConnectOptions> = std::sync::OnceLock::new();
static CA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn user() -> ConnectOptions {
    USER.get().expect("the admin Secret was read").clone()
}

async fn connect(ordinal: u32) -> Result<Client, raftq_client::Error> {
    Client::connect_with(&pod_addr(ordinal), user()).await
}

/// Reads the CA and the token from Secret `<name>-admin`.
async fn read_admin_secret(client: &kube::Client) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let (ca, token) = wait_for("Secret orders-admin", STAGE, || async {
        let s = secrets.get_opt(&format!("{NAME}-admin")).await.ok()??;
        let data = s.data?;
        let text = |k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        Some((text("ca.crt")?, text("token")?))
    })
    .await;
    let _ = CA.set(ca.clone());
    let _ = USER.set(
        ConnectOptions::new()
            .tls(TlsOptions::new().ca_cert_pem(ca))
            .token(token),
    );
}

fn pod_addr(ordinal: u32) -> String {
    format!("{NAME}-{ordinal}.{NAME}-peers.{NS}.svc:7400")
}

/// The JobQueue once the operator reports it settled on `voters`: Running,
/// this generation observed, every shard with a leader, every pod ready.
async fn settled(queues: &Api<JobQueue>, voters: &[i64]) -> Option<JobQueue> {
    let jq = queues.get(NAME).await.ok()?;
    let status = jq.status.as_ref()?;
    let ok = status.phase == "Running"
        && Some(status.observed_generation) == jq.metadata.generation
        && status.voters == voters
        && status.ready_replicas == voters.len() as i32
        && !status.shards.is_empty()
        && status.shards.iter().all(|s| s.leader != 0);
    ok.then_some(jq)
}

async fn patch_spec(queues: &Api<JobQueue>, spec: serde_json::Value) {
    queues
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await
        .expect("patch the JobQueue's spec");
}

/// Ready jobs over every queue, as node `ordinal` answers (from any node
/// the answer is the cluster's).
async fn stored(ordinal: u32) -> Option<u64> {
    let client = connect(ordinal).await.ok()?;
    let stats = client
        .admin()
        .stats(pb::StatsRequest {
            queue: String::new(),
            local: false,
        })
        .await
        .ok()?
        .into_inner();
    Some(stats.queues.iter().map(|q| q.ready).sum())
}

async fn every_node_stores(ordinals: &[u32], want: u64) {
    for &i in ordinals {
        wait_for(
            &format!("node {} to answer that {want} jobs are stored", i + 1),
            Duration::from_secs(60),
            || async move { (stored(i).await == Some(want)).then_some(()) },
        )
        .await;
    }
}

async fn pod_names(pods: &Api<Pod>) -> BTreeSet<String> {
    pods.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect()
        })
        .unwrap_or_default()
}

/// One SDK producer per pod, each on its own pod's address (as a client
/// behind the Service would be), enqueueing with idempotency keys so a
/// retried call whose answer was lost stores its job once.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    /// `stage` names the keys, so two loads never share one.
    async fn start(pods: u32, stage: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..pods {
            let client = connect(i).await.expect("connect");
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let (mut acked, mut failed) = (0u64, Vec::new());
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{stage}-{i}-{n}");
                    let job = JobSpec::new(key.clone()).idempotency_key(key.clone());
                    match client.producer().enqueue(QUEUES[n as usize % 8], job).await {
                        Ok(_) => acked += 1,
                        Err(e) => failed.push(format!("pod {i}, {key}: {e}")),
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (acked, failed)
            }));
        }
        Load { stop, tasks }
    }

    /// (acknowledged enqueues, failed calls).
    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut acked, mut failed) = (0, Vec::new());
        for t in self.tasks {
            let (a, f) = t.await.expect("producer task");
            acked += a;
            failed.extend(f);
        }
        (acked, failed)
    }
}

fn names(ordinals: std::ops::Range<u32>) -> BTreeSet<String> {
    ordinals.map(|i| format!("{NAME}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobqueue_is_created_scaled_rolled_paused_and_deleted() {
    let Some(plane) = ControlPlane::up() else {
        return;
    };
    let client = plane.client().await;
    install_crd(&client).await;
    let kubelet = match Kubelet::start(client.clone(), NS, queue_node_bin()).await {
        Ok(k) => k,
        Err(why) => {
            eprintln!("SKIPPED: {why}; the operator's running-pod tests did not run");
            return;
        }
    };
    let _operator = Operator::start(&plane, "operator");
    let queues: Api<JobQueue> = Api::namespaced(client.clone(), NS);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // Create: the production example, as a user applies it.
    queues
        .create(
            &PostParams::default(),
            &example("production-jobqueue.yaml", NAME),
        )
        .await
        .expect("create the JobQueue");
    wait_for("3 voters, 4 shard leaders", STAGE, || {
        settled(&queues, &[1, 2, 3])
    })
    .await;
    read_admin_secret(&client).await;
    let producer = connect(1).await.expect("connect to pod 1");
    // Refused: a plaintext client, and TLS without a token.
    let plaintext = Client::connect(&pod_addr(1)).await;
    let answer = match plaintext {
        Ok(c) => c.producer().enqueue("q0", JobSpec::new("x")).await.err(),
        Err(e) => Some(e),
    };
    assert!(answer.is_some(), "a plaintext client was served");
    let tokenless = Client::connect_with(
        &pod_addr(1),
        ConnectOptions::new()
            .tls(TlsOptions::new().ca_cert_pem(CA.get().cloned().unwrap_or_default())),
    )
    .await
    .expect("a TLS connection");
    let refused = tokenless
        .producer()
        .enqueue("q0", JobSpec::new("x"))
        .await
        .expect_err("an enqueue without a token was accepted");
    assert!(
        refused.to_string().contains("credentials"),
        "not refused for its credentials: {refused}"
    );
    for q in QUEUES {
        for n in 0..JOBS_PER_QUEUE {
            producer
                .producer()
                .enqueue(q, JobSpec::new(format!("{q}-{n}")))
                .await
                .expect("enqueue");
        }
    }
    let jobs = QUEUES.len() as u64 * JOBS_PER_QUEUE;
    every_node_stores(&[0, 1, 2], jobs).await;

    // Scale up: two more voters; the shard leaders spread over the nodes.
    patch_spec(&queues, serde_json::json!({ "replicas": 5 })).await;
    wait_for("5 voters", STAGE, || settled(&queues, &[1, 2, 3, 4, 5])).await;
    wait_for(
        "the 4 shard leaders on 4 different nodes",
        Duration::from_secs(90),
        || async {
            let jq = queues.get(NAME).await.ok()?;
            let leaders: Vec<i64> = jq.status?.shards.iter().map(|s| s.leader).collect();
            let distinct: BTreeSet<i64> = leaders.iter().copied().collect();
            (leaders.len() == 4 && distinct.len() == 4 && !distinct.contains(&0)).then_some(())
        },
    )
    .await;
    every_node_stores(&[3, 4], jobs).await;

    // Scale down: the two leave Raft first, then their pods and claims go.
    patch_spec(&queues, serde_json::json!({ "replicas": 3 })).await;
    wait_for("3 voters again", STAGE, || settled(&queues, &[1, 2, 3])).await;
    wait_for("pods 3 and 4 gone", STAGE, || async {
        (pod_names(&pods).await == names(0..3) && kubelet.running() == names(0..3)).then_some(())
    })
    .await;
    every_node_stores(&[0, 1, 2], jobs).await;

    // A rolling change: every pod restarts once with the new config, and
    // the status says Progressing, never Degraded, while it rolls.
    let starts_before: Vec<u32> = (0..3)
        .map(|i| kubelet.starts(&format!("{NAME}-{i}")))
        .collect();
    let seen: Arc<Mutex<BTreeSet<(String, String, String)>>> = Arc::default();
    let watching = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (queues, seen, watching) = (queues.clone(), seen.clone(), watching.clone());
        tokio::spawn(async move {
            while watching.load(Ordering::Relaxed) {
                if let Ok(jq) = queues.get(NAME).await {
                    for c in jq.status.map(|s| s.conditions).unwrap_or_default() {
                        if c.status == "True" {
                            seen.lock().unwrap().insert((c.type_, c.reason, c.message));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // Steady enqueues through every pod while they roll, with the SDK's
    // default retries: a client must see no failed call.
    let load = Load::start(3, "rolling").await;
    patch_spec(
        &queues,
        serde_json::json!({ "batching": { "lingerMaxMicros": 3000 } }),
    )
    .await;
    wait_for("the rollout to finish", STAGE, || async {
        let status = sets.get(NAME).await.ok()?.status?;
        let rolled = status.update_revision.is_some()
            && status.current_revision == status.update_revision
            && status.updated_replicas == Some(3)
            && status.ready_replicas == Some(3);
        let restarted =
            (0..3).all(|i| kubelet.starts(&format!("{NAME}-{i}")) > starts_before[i as usize]);
        (rolled && restarted).then_some(())
    })
    .await;
    wait_for("settled after the rollout", STAGE, || {
        settled(&queues, &[1, 2, 3])
    })
    .await;
    watching.store(false, Ordering::Relaxed);
    sampler.await.expect("status sampler");
    let (acked, failed) = load.stop().await;
    assert!(
        failed.is_empty(),
        "{} enqueues failed during the rolling change (SDK retries on); first: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(acked > 0, "no enqueue succeeded during the rolling change");
    eprintln!("rolling change: {acked} enqueues acknowledged, none failed");
    let jobs = jobs + acked;
    let seen = seen.lock().unwrap().clone();
    let degraded: Vec<_> = seen.iter().filter(|(t, _, _)| t == "Degraded").collect();
    assert!(
        degraded.is_empty(),
        "a rolling change was reported as Degraded: {degraded:?}"
    );
    assert!(
        seen.iter()
            .any(|(t, r, _)| t == "Progressing" && r == "RollingUpdate"),
        "the rollout was never reported as Progressing/RollingUpdate; conditions seen: {seen:?}"
    );
    every_node_stores(&[0, 1, 2], jobs).await;

    // Certificate rotation under load: the nodes' certificate is issued
    // again (its Secret deleted, as a leak would call for), the nodes
    // read it in place, no pod restarts and no call fails.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let old_cert = secrets
        .get(&format!("{NAME}-tls"))
        .await
        .expect("the nodes' certificate Secret")
        .data
        .and_then(|d| d.get("tls.crt").cloned())
        .expect("tls.crt");
    let starts_before: Vec<u32> = (0..3)
        .map(|i| kubelet.starts(&format!("{NAME}-{i}")))
        .collect();
    let load = Load::start(3, "rotation").await;
    secrets
        .delete(&format!("{NAME}-tls"), &DeleteParams::default())
        .await
        .expect("delete the certificate Secret");
    wait_for("a new node certificate", STAGE, || async {
        let s = secrets.get_opt(&format!("{NAME}-tls")).await.ok()??;
        let cert = s.data?.get("tls.crt")?.clone();
        (cert != old_cert).then_some(())
    })
    .await;
    wait_for("every node to load the new certificate", STAGE, || async {
        (0..3)
            .all(|i| {
                kubelet
                    .log_tail(&format!("{NAME}-{i}"), 2000)
                    .contains("TLS certificates reloaded")
            })
            .then_some(())
    })
    .await;
    // Calls on fresh connections, which handshake with the new certificate.
    for i in 0..3 {
        connect(i)
            .await
            .expect("connect after the rotation")
            .producer()
            .enqueue(QUEUES[0], JobSpec::new(format!("after-rotation-{i}")))
            .await
            .expect("enqueue after the rotation");
    }
    let (acked, failed) = load.stop().await;
    assert!(
        failed.is_empty(),
        "{} enqueues failed during the certificate rotation; first: {:?}",
        failed.len(),
        failed.first()
    );
    let starts_after: Vec<u32> = (0..3)
        .map(|i| kubelet.starts(&format!("{NAME}-{i}")))
        .collect();
    assert_eq!(starts_after, starts_before, "a rotation restarted a node");
    let jobs = jobs + acked + 3;
    every_node_stores(&[0, 1, 2], jobs).await;

    // Pause: the operator writes only its status; a spec change waits.
    patch_spec(
        &queues,
        serde_json::json!({ "paused": true, "replicas": 5 }),
    )
    .await;
    wait_for("the Paused phase, this generation", STAGE, || async {
        let jq = queues.get(NAME).await.ok()?;
        let status = jq.status?;
        (status.phase == "Paused" && Some(status.observed_generation) == jq.metadata.generation)
            .then_some(())
    })
    .await;
    let replicas = sets
        .get(NAME)
        .await
        .expect("StatefulSet")
        .spec
        .and_then(|s| s.replicas);
    assert_eq!(
        replicas,
        Some(3),
        "a paused JobQueue's StatefulSet was changed"
    );
    patch_spec(
        &queues,
        serde_json::json!({ "paused": false, "replicas": 3 }),
    )
    .await;
    wait_for("Running after the pause", STAGE, || {
        settled(&queues, &[1, 2, 3])
    })
    .await;

    // Delete: the finalizer runs, the objects and the pods go, the data
    // volumes of the remaining nodes stay.
    queues
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("delete the JobQueue");
    wait_for(
        "the JobQueue, its pods and processes gone",
        STAGE,
        || async {
            let gone = queues.get_opt(NAME).await.ok()?.is_none()
                && sets.get_opt(NAME).await.ok()?.is_none()
                && pod_names(&pods).await.is_empty()
                && kubelet.running().is_empty();
            gone.then_some(())
        },
    )
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let kept: BTreeSet<String> = claims
        .list(&ListParams::default())
        .await
        .expect("list claims")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(
        kept,
        (0..3).map(|i| format!("data-{NAME}-{i}")).collect(),
        "the data volumes of nodes 1-3 are kept, those of the scaled-down nodes deleted"
    );
}
