//! KEDA's external scaler protocol, driven the way KEDA drives it: a client
//! generated from KEDA's own `externalscaler.proto`, connecting to the
//! node's client port in plaintext or with TLS (and a client certificate),
//! sending the trigger's metadata in every call.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::certs::{token_hash, Ca, Leaf, NodeFiles};
use common::wait_for;
use raftq_api::keda::external_scaler_client::ExternalScalerClient;
use raftq_api::keda::{GetMetricsRequest, ScaledObjectRef};
use raftq_client::proto as pb;
use raftq_client::{Client, ConnectOptions, JobSpec, TlsOptions};
use raftq_node::config::AuthConfig;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

type Keda = ExternalScalerClient<Channel>;

fn scaled(pairs: &[(&str, &str)]) -> ScaledObjectRef {
    let mut metadata: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    // KEDA passes its own keys on too.
    metadata.insert("scalerAddress".into(), "raftq.jobs.svc:7400".into());
    ScaledObjectRef {
        name: "workers".into(),
        namespace: "jobs".into(),
        scaler_metadata: metadata,
    }
}

async fn metric(keda: &mut Keda, object: &ScaledObjectRef) -> Result<f64, tonic::Status> {
    let answer = keda
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(object.clone()),
            metric_name: "raftq-backlog-emails".into(),
        })
        .await?
        .into_inner();
    assert_eq!(answer.metric_values.len(), 1);
    Ok(answer.metric_values[0].metric_value_float)
}

async fn active(keda: &mut Keda, object: &ScaledObjectRef) -> bool {
    keda.is_active(object.clone())
        .await
        .unwrap()
        .into_inner()
        .result
}

async fn enqueue(client: &Client, queue: &str, n: usize) {
    client
        .queue()
        .enqueue(pb::EnqueueRequest {
            queue: queue.into(),
            jobs: (0..n).map(|_| JobSpec::new("x").into_proto()).collect(),
        })
        .await
        .unwrap();
}

async fn ready(client: &Client, queue: &str) -> u64 {
    let stats = client
        .admin()
        .stats(pb::StatsRequest {
            queue: queue.into(),
            local: false,
        })
        .await
        .unwrap()
        .into_inner();
    stats.queues.first().map_or(0, |q| q.ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_scales_workers_from_zero_and_a_push_stream_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = common::start_single(dir.path()).await;
    let mut keda = ExternalScalerClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let emails = scaled(&[("queue", "emails"), ("targetPerReplica", "10")]);

    let spec = keda
        .get_metric_spec(emails.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    assert_eq!(spec.metric_specs[0].metric_name, "raftq-backlog-emails");
    assert_eq!(spec.metric_specs[0].target_size_float, 10.0);
    assert_eq!(spec.metric_specs[0].target_size, 10);

    // An unknown queue has no backlog: the workers stay at zero.
    assert_eq!(metric(&mut keda, &emails).await.unwrap(), 0.0);
    assert!(!active(&mut keda, &emails).await);
    let mut pushed = keda
        .stream_is_active(emails.clone())
        .await
        .unwrap()
        .into_inner();
    let first = pushed.message().await.unwrap().unwrap();
    assert!(!first.result, "the stream starts with the activity now");

    enqueue(&client, "emails", 25).await;
    assert_eq!(metric(&mut keda, &emails).await.unwrap(), 25.0);
    assert!(active(&mut keda, &emails).await);
    let change = tokio::time::timeout(Duration::from_secs(10), pushed.message())
        .await
        .expect("the stream pushes the change")
        .unwrap()
        .unwrap();
    assert!(change.result);

    // Leased jobs are the workers' own: counted only when asked.
    let leased = common::fetch(&client, "emails", 5).await;
    assert_eq!(leased.len(), 5);
    assert_eq!(metric(&mut keda, &emails).await.unwrap(), 20.0);
    let with_leased = scaled(&[("queue", "emails"), ("includeLeased", "true")]);
    assert_eq!(metric(&mut keda, &with_leased).await.unwrap(), 25.0);

    // Activation above a threshold.
    let above_30 = scaled(&[("queue", "emails"), ("activationBacklog", "30")]);
    assert!(!active(&mut keda, &above_30).await);

    // A paused queue has no backlog a worker could take.
    client
        .admin()
        .pause_queue(pb::QueueRef {
            queue: "emails".into(),
        })
        .await
        .unwrap();
    assert_eq!(metric(&mut keda, &emails).await.unwrap(), 0.0);
    let change = tokio::time::timeout(Duration::from_secs(10), pushed.message())
        .await
        .expect("the stream pushes the pause")
        .unwrap()
        .unwrap();
    assert!(!change.result);

    // Settings it does not know, or bad values, are refused with the key,
    // and nothing stored changes.
    for (pairs, key) in [
        (
            &[("queue", "emails"), ("queueLength", "5")][..],
            "queueLength",
        ),
        (
            &[("queue", "emails"), ("targetPerReplica", "-1")][..],
            "targetPerReplica",
        ),
        (&[("targetPerReplica", "5")][..], "queue"),
    ] {
        let object = scaled(pairs);
        for refused in [
            keda.get_metric_spec(object.clone()).await.unwrap_err(),
            keda.is_active(object.clone()).await.unwrap_err(),
            metric(&mut keda, &object).await.unwrap_err(),
            keda.stream_is_active(object.clone()).await.unwrap_err(),
        ] {
            assert_eq!(refused.code(), Code::InvalidArgument, "{pairs:?}");
            assert!(refused.message().contains(key), "{}", refused.message());
        }
    }
    assert_eq!(ready(&client, "emails").await, 20);

    // The optional spec stream is declined, as KEDA expects of a scaler
    // whose targets never change.
    let declined = keda.stream_metric_spec(emails.clone()).await.unwrap_err();
    assert_eq!(declined.code(), Code::Unimplemented);
    node.shutdown().await.unwrap();
}

const AUTH: &str = "principals:
  - name: keda
    grants: [{ role: read, queues: ['emails*'] }]
  - name: worker-token
    tokens_sha256: ['{worker}']
    grants: [{ role: consume, queues: [emails] }, { role: read, queues: [emails] }]
  - name: producer
    tokens_sha256: ['{producer}']
    grants: [{ role: produce, queues: ['*'] }]
";

async fn keda_over_tls(addr: &str, ca: &Ca, identity: Option<&Leaf>) -> Keda {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("127.0.0.1");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    ExternalScalerClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_a_scaler_needs_the_read_role_by_certificate_or_token() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let files = NodeFiles::write(
        &dir.path().join("tls"),
        &ca,
        &ca.leaf(&["127.0.0.1"], "node"),
    );
    let auth = dir.path().join("auth.yaml");
    std::fs::write(
        &auth,
        AUTH.replace("{worker}", &token_hash("worker-secret"))
            .replace("{producer}", &token_hash("producer-secret")),
    )
    .unwrap();
    let mut config = common::fast_config(&dir.path().join("data"));
    config.tls = Some(files.tls_config());
    config.auth = Some(AuthConfig { files: vec![auth] });
    let node = raftq_node::node::start(config).await.unwrap();
    let addr = node.addr.to_string();
    let producer = common::connect_with(
        &addr,
        ConnectOptions::new()
            .tls(TlsOptions::new().ca_cert_pem(ca.pem.clone()))
            .token("producer-secret"),
    )
    .await;
    wait_for("the node to take jobs", Duration::from_secs(30), || {
        let producer = producer.clone();
        async move {
            producer
                .queue()
                .enqueue(pb::EnqueueRequest {
                    queue: "emails".into(),
                    jobs: vec![JobSpec::new("x").into_proto()],
                })
                .await
                .ok()
        }
    })
    .await;
    enqueue(&producer, "emails", 2).await;
    let emails = scaled(&[("queue", "emails")]);

    // KEDA with neither a certificate nor a token.
    let mut anonymous = keda_over_tls(&addr, &ca, None).await;
    let refused = metric(&mut anonymous, &emails).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Code::Unauthenticated,
        "{}",
        refused.message()
    );
    let refused = anonymous
        .stream_is_active(emails.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // KEDA's client certificate names the `keda` principal.
    let mut by_cert = keda_over_tls(&addr, &ca, Some(&ca.leaf(&[], "keda"))).await;
    assert_eq!(metric(&mut by_cert, &emails).await.unwrap(), 3.0);
    let other = scaled(&[("queue", "billing")]);
    let refused = metric(&mut by_cert, &other).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("keda"), "{}", refused.message());

    // Or the trigger carries the workers' token, resolved by KEDA from
    // their environment (`tokenFromEnv`).
    let with_token = scaled(&[("queue", "emails"), ("tokenFromEnv", "worker-secret")]);
    assert_eq!(metric(&mut anonymous, &with_token).await.unwrap(), 3.0);
    assert!(active(&mut anonymous, &with_token).await);
    let wrong = scaled(&[("queue", "emails"), ("tokenFromEnv", "guess")]);
    let refused = metric(&mut anonymous, &wrong).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    // The producer token may enqueue, not read.
    let producing = scaled(&[("queue", "emails"), ("tokenFromEnv", "producer-secret")]);
    let refused = metric(&mut anonymous, &producing).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    node.shutdown().await.unwrap();
}
