//! The operator's membership steps against real `queue-node` processes on
//! loopback, each started the way its pod would be: the node config the
//! operator renders, the pod index and advertised address from the
//! environment, and the certificates and principals the operator issues
//! (so every call is the operator's, over mutual TLS, as `cluster-admin`).
//! Grows a cluster 1 → 3 one planned step at a time, checks jobs survive,
//! then shrinks it to 1 and checks the remaining node still serves every
//! job.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use raftq_client::{Client, ConnectOptions, JobSpec, TlsOptions};
use raftq_operator::certs::{self, Day};
use raftq_operator::crd::{JobQueue, JobQueueSpec};
use raftq_operator::membership::{self, ClientTls, GrpcNodeAdmin, Hold, NodeAdmin, QueueRef, Step};
use raftq_operator::{objects, secrets};
use support::queue_node_bin;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A queue-node process started like pod `ordinal` of the StatefulSet.
struct Pod {
    child: Child,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_pod(
    config: &std::path::Path,
    data: &std::path::Path,
    ordinal: u32,
    port: u16,
    client_port: u16,
) -> Pod {
    let child = Command::new(queue_node_bin())
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data.join(format!("pod-{ordinal}")))
        // The pod listens on 0.0.0.0:7400 and :7401; on one machine each
        // needs ports of its own. The operator speaks to the peer port.
        .args(["--listen", &format!("127.0.0.1:{client_port}")])
        .args(["--peer-listen", &format!("127.0.0.1:{port}")])
        .args(["--http-listen", "127.0.0.1:0"])
        .env("RAFTQ_POD_INDEX", ordinal.to_string())
        .env("RAFTQ_ADVERTISE", format!("127.0.0.1:{port}"))
        .env("RAFTQ_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn queue-node");
    Pod { child }
}

fn job_queue(replicas: i32) -> JobQueue {
    let spec: JobQueueSpec = serde_json::from_value(serde_json::json!({
        "replicas": replicas,
        "shards": 2,
        "batching": {"maxBatchOps": 512, "maxBatchBytes": 1048576,
                     "lingerMinMicros": 100, "lingerMaxMicros": 1000},
    }))
    .expect("spec");
    let mut jq = JobQueue::new("orders", spec);
    jq.metadata.namespace = Some("shop".into());
    jq
}

/// What the operator would write for `jq` (`tls.mode: operatorManaged`):
/// the CA, the nodes' certificate (`<dir>/tls`) and the principals file
/// (`<dir>/auth`); returns the operator's queue reference with its
/// client certificate, and the starter admin token.
fn operator_credentials(jq: &JobQueue, dir: &std::path::Path) -> (QueueRef, String) {
    let today = Day::of(k8s_openapi::jiff::Timestamp::now());
    let ca_name = secrets::ca_common_name(jq);
    let ca = certs::new_ca(&ca_name, today).expect("CA");
    let issue = |leaf| certs::issue(&ca_name, &ca.key_pem, &leaf, today, 90).expect("issue");
    let node = issue(secrets::node_leaf(jq));
    let operator = issue(secrets::operator_leaf());
    let token = certs::random_token().expect("token");
    for (path, text) in [
        ("tls/tls.crt", &node.cert_pem),
        ("tls/tls.key", &node.key_pem),
        ("tls/ca.crt", &ca.cert_pem),
        ("auth/operator.yaml", &secrets::operator_principals(&token)),
    ] {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    let queue = QueueRef {
        namespace: "shop".into(),
        name: "orders".into(),
        tls: Some(Arc::new(ClientTls {
            ca_pem: ca.cert_pem.clone(),
            cert_pem: operator.cert_pem,
            key_pem: operator.key_pem,
        })),
    };
    (queue, token)
}

/// Plans and executes steps until the plan is settled; returns the steps.
async fn converge(
    admin: &GrpcNodeAdmin,
    queue: &QueueRef,
    replicas: i32,
    bootstrapped: bool,
) -> Vec<Step> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut steps = Vec::new();
    let mut bootstrapped = bootstrapped;
    loop {
        let observed = membership::observe(admin, queue, replicas).await;
        let plan = membership::plan(replicas, bootstrapped, &observed);
        match plan.next {
            Ok(step) => {
                membership::execute(admin, queue, &observed, &step)
                    .await
                    .unwrap_or_else(|e| panic!("{step:?} failed: {e}"));
                bootstrapped = true;
                steps.push(step);
            }
            Err(Hold::Settled) => return steps,
            Err(Hold::Refused(why)) => panic!("refused: {why}"),
            Err(Hold::Waiting(why)) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still waiting after 60s: {why}; steps so far {steps:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_three_then_shrink_to_one_keeps_every_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jq = job_queue(3);
    let (queue, admin_token) = operator_credentials(&jq, dir.path());
    // The pod's mount points, under the test's directory.
    let rendered = objects::node_config_yaml(&jq).expect("render");
    assert!(rendered.contains("/etc/raftq/tls/tls.crt"), "{rendered}");
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        rendered.replace("/etc/raftq/", &format!("{}/", dir.path().display())),
    )
    .expect("write config");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let ports_by_id: BTreeMap<u64, u16> = (1..=3).zip(ports.iter().copied()).collect();
    let mut pods: Vec<Option<Pod>> = (0..3)
        .map(|i| {
            Some(start_pod(
                &config,
                dir.path(),
                i,
                ports[i as usize],
                client_ports[i as usize],
            ))
        })
        .collect();
    let by_id = Arc::new(ports_by_id);
    let admin = GrpcNodeAdmin {
        addr_of: Box::new(move |_, id| format!("127.0.0.1:{}", by_id[&id])),
        ..GrpcNodeAdmin::default()
    };

    let steps = converge(&admin, &queue, 3, false).await;
    assert_eq!(
        steps,
        [
            Step::Bootstrap,
            Step::AddLearner { id: 2 },
            Step::AddLearner { id: 3 },
            Step::SetVoters {
                voters: [1, 2, 3].into()
            },
        ]
    );
    // The peer port takes the operator only with its certificate.
    let plaintext = QueueRef {
        tls: None,
        ..queue.clone()
    };
    // (The node's TLS listener drops a client that speaks plaintext.)
    let refused = admin
        .status(&plaintext, &format!("127.0.0.1:{}", ports[0]))
        .await;
    assert!(refused.is_err(), "a call without TLS answered: {refused:?}");
    for port in &ports {
        let status = admin
            .status(&queue, &format!("127.0.0.1:{port}"))
            .await
            .expect("status");
        for shard in &status.shards {
            let voters: Vec<u64> = shard
                .members
                .iter()
                .filter(|m| m.voter)
                .map(|m| m.node_id)
                .collect();
            assert_eq!(
                voters,
                [1, 2, 3],
                "node {} shard {}",
                status.node_id,
                shard.shard
            );
        }
    }

    // Jobs on both shards, through the highest pod (it forwards to leaders).
    let user = ConnectOptions::new()
        .tls(TlsOptions::new().ca_cert_pem(queue.tls.as_ref().unwrap().ca_pem.clone()))
        .token(admin_token.clone());
    let client = Client::connect_with(&format!("127.0.0.1:{}", client_ports[2]), user.clone())
        .await
        .expect("connect");
    let producer = client.producer();
    let queues = ["emails", "invoices", "thumbnails", "webhooks"];
    for q in queues {
        for n in 0..25 {
            producer
                .enqueue(q, JobSpec::new(format!("{q}-{n}")))
                .await
                .unwrap_or_else(|e| panic!("enqueue to {q}: {e}"));
        }
    }

    // Shrink to one: the voters change first, then pods 1 and 2 can go.
    let steps = converge(&admin, &queue, 1, true).await;
    assert_eq!(steps, [Step::SetVoters { voters: [1].into() }]);
    pods[1].take();
    pods[2].take();

    let client = Client::connect_with(&format!("127.0.0.1:{}", client_ports[0]), user)
        .await
        .expect("connect");
    for q in queues {
        let stats = client
            .admin()
            .stats(raftq_client::proto::StatsRequest {
                queue: q.into(),
                local: false,
            })
            .await
            .unwrap_or_else(|e| panic!("stats of {q} on the last node: {e}"))
            .into_inner();
        let ready: u64 = stats.queues.iter().map(|s| s.ready).sum();
        assert_eq!(ready, 25, "queue {q} on the remaining node: {stats:?}");
    }
}
