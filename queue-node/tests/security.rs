//! TLS, tokens, certificate identities, per-queue roles and the limits
//! against idle connections, through real gRPC over loopback.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::certs::{token_hash, Ca, Leaf, NodeFiles};
use common::wait_for;
use raftq_api::v1::raft_transport_client::RaftTransportClient;
use raftq_client::proto as pb;
use raftq_client::{Client, ConnectOptions, JobSpec, TlsOptions};
use raftq_node::config::{AuthConfig, NodeConfig};
use tonic::Code;

const AUTH: &str = "principals:
  - name: producer
    tokens_sha256: ['{producer}']
    grants: [{ role: produce, queues: ['jobs*'] }]
  - name: consumer
    tokens_sha256: ['{consumer}']
    grants:
      - { role: consume, queues: [jobs] }
      - { role: read, queues: [jobs] }
  - name: admin
    tokens_sha256: ['{admin}']
    grants: [{ role: queue-admin, queues: ['*'] }, { role: read, queues: ['*'] }]
  - name: cert-worker
    grants: [{ role: consume, queues: [jobs] }, { role: produce, queues: [jobs] }]
  - name: ops
    grants: [{ role: cluster-admin }]
  - name: eu-worker
    tokens_sha256: ['{eu}']
    grants: [{ role: consume, queues: [jobs.eu] }]
";

fn auth_file(dir: &Path, extra: &str) -> std::path::PathBuf {
    let text = AUTH
        .replace("{producer}", &token_hash("producer-token"))
        .replace("{consumer}", &token_hash("consumer-token"))
        .replace("{admin}", &token_hash("admin-token"))
        .replace("{eu}", &token_hash("eu-token"));
    let path = dir.join("auth.yaml");
    let aside = dir.join("auth.yaml.new");
    std::fs::write(&aside, format!("{text}{extra}")).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    path
}

struct Secure {
    ca: Ca,
    files: NodeFiles,
}

fn secure_config(dir: &Path) -> (NodeConfig, Secure) {
    let ca = Ca::new("cluster CA");
    let files = NodeFiles::write(&dir.join("tls"), &ca, &ca.leaf(&["127.0.0.1"], "node"));
    let mut config = common::fast_config(&dir.join("data"));
    config.tls = Some(files.tls_config());
    config.auth = Some(AuthConfig {
        files: vec![auth_file(dir, "")],
    });
    (config, Secure { ca, files })
}

fn tls(ca: &Ca) -> TlsOptions {
    TlsOptions::new().ca_cert_pem(ca.pem.clone())
}

async fn connect(addr: &str, options: ConnectOptions) -> Result<Client, raftq_client::Error> {
    Client::connect_with(addr, options).await
}

async fn as_token(addr: &str, ca: &Ca, token: &str) -> Client {
    connect(addr, ConnectOptions::new().tls(tls(ca)).token(token))
        .await
        .expect("connect with TLS")
}

async fn as_cert(addr: &str, ca: &Ca, leaf: &Leaf) -> Result<Client, raftq_client::Error> {
    connect(
        addr,
        ConnectOptions::new().tls(tls(ca).client_identity_pem(leaf.cert.clone(), leaf.key.clone())),
    )
    .await
}

async fn enqueue(client: &Client, queue: &str) -> Result<pb::EnqueueResponse, tonic::Status> {
    client
        .queue()
        .enqueue(pb::EnqueueRequest {
            queue: queue.into(),
            jobs: vec![JobSpec::new("x").into_proto()],
        })
        .await
        .map(|r| r.into_inner())
}

async fn fetch(client: &Client, queue: &str) -> Result<Vec<pb::LeasedJob>, tonic::Status> {
    client
        .queue()
        .fetch(pb::FetchRequest {
            queue: queue.into(),
            worker_id: "w".into(),
            max_jobs: 10,
            lease_ms: None,
            wait_ms: 0,
        })
        .await
        .map(|r| r.into_inner().jobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_tokens_and_roles_guard_the_client_port() {
    let dir = tempfile::tempdir().unwrap();
    let (config, s) = secure_config(dir.path());
    let node = raftq_node::node::start(config).await.expect("start");
    let addr = node.addr.to_string();

    // A plaintext client gets no answer.
    let plain = Client::connect(&addr).await;
    if let Ok(plain) = plain {
        enqueue(&plain, "jobs")
            .await
            .expect_err("plaintext refused");
    }
    // A client trusting another CA refuses the node's certificate.
    let other = Ca::new("another CA");
    let e = connect(&addr, ConnectOptions::new().tls(tls(&other)))
        .await
        .expect_err("untrusted server certificate");
    assert!(e.to_string().contains("not trusted"), "{e}");

    // No credentials, or a wrong token: UNAUTHENTICATED.
    let anonymous = connect(&addr, ConnectOptions::new().tls(tls(&s.ca)))
        .await
        .unwrap();
    let e = enqueue(&anonymous, "jobs").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    assert!(
        e.message().contains("requires credentials"),
        "{}",
        e.message()
    );
    let wrong = as_token(&addr, &s.ca, "guess").await;
    let e = enqueue(&wrong, "jobs").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!e.message().contains("guess"), "the token is never echoed");

    let producer = as_token(&addr, &s.ca, "producer-token").await;
    let consumer = as_token(&addr, &s.ca, "consumer-token").await;
    let admin = as_token(&addr, &s.ca, "admin-token").await;
    wait_for("the node leads", Duration::from_secs(20), || async {
        enqueue(&producer, "jobs").await.ok()
    })
    .await;
    enqueue(&producer, "jobs.eu").await.expect("prefix grant");

    // The producer cannot fetch; PERMISSION_DENIED names who, what, where
    // and the missing role.
    let e = fetch(&producer, "jobs").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.message(),
        "principal `producer` may not call Queue.Fetch on queue `jobs`: it lacks the `consume` role there"
    );
    // The consumer fetches and acks; it cannot purge, nor consume another
    // queue, nor enqueue.
    let jobs = fetch(&consumer, "jobs").await.expect("consume");
    assert_eq!(jobs.len(), 1);
    consumer
        .queue()
        .ack(pb::AckRequest {
            tokens: jobs.iter().filter_map(|j| j.token.clone()).collect(),
        })
        .await
        .expect("ack");
    let e = consumer
        .admin()
        .purge_queue(pb::QueueRef {
            queue: "jobs".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("`queue-admin`"), "{}", e.message());
    let e = fetch(&consumer, "jobs.eu").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        enqueue(&consumer, "jobs").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // A job of a queue the consumer may not consume: its token is refused
    // though tokens name no queue (the leader looks the job up).
    let eu_worker = as_token(&addr, &s.ca, "eu-token").await;
    let eu = fetch(&eu_worker, "jobs.eu")
        .await
        .expect("eu-worker consumes jobs.eu");
    let e = consumer
        .queue()
        .ack(pb::AckRequest {
            tokens: eu.iter().filter_map(|j| j.token.clone()).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("queue `jobs.eu`"), "{}", e.message());
    eu_worker
        .queue()
        .nack(pb::NackRequest {
            items: eu
                .iter()
                .map(|j| pb::NackItem {
                    token: j.token.clone(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .expect("its own worker hands it back");
    // Stats of every queue show a reader only what it may read.
    let all = consumer
        .admin()
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = all.queues.iter().map(|q| q.queue.as_str()).collect();
    assert_eq!(names, ["jobs"]);
    let all = admin
        .admin()
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.queues.len(), 2);
    // The queue admin purges.
    let purged = admin
        .admin()
        .purge_queue(pb::QueueRef {
            queue: "jobs.eu".into(),
        })
        .await
        .expect("queue-admin purges")
        .into_inner();
    assert_eq!(purged.removed, 1);

    // A client certificate names its principal (client certificates are
    // optional on this node's client port).
    let worker = as_cert(&addr, &s.ca, &s.ca.leaf(&[], "cert-worker"))
        .await
        .expect("connect with a client certificate");
    enqueue(&worker, "jobs")
        .await
        .expect("cert-worker produces");
    let e = worker
        .admin()
        .stats(pb::StatsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("`cert-worker`"), "{}", e.message());
    // An unknown certificate name, an expired certificate, a certificate
    // of another CA: refused.
    let stranger = as_cert(&addr, &s.ca, &s.ca.leaf(&[], "stranger"))
        .await
        .unwrap();
    let e = enqueue(&stranger, "jobs").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("stranger"), "{}", e.message());
    for leaf in [
        s.ca.expired(&[], "cert-worker"),
        other.leaf(&[], "cert-worker"),
    ] {
        let refused = match as_cert(&addr, &s.ca, &leaf).await {
            Err(_) => true,
            Ok(c) => enqueue(&c, "jobs").await.is_err(),
        };
        assert!(refused, "a bad client certificate was accepted");
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_takes_members_and_cluster_admins_only() {
    let dir = tempfile::tempdir().unwrap();
    let (config, s) = secure_config(dir.path());
    let node = raftq_node::node::start(config).await.expect("start");
    let peer = node.peer_addr.to_string();

    // TLS without a client certificate: the handshake fails.
    let no_cert = connect(
        &peer,
        ConnectOptions::new().tls(tls(&s.ca)).token("admin-token"),
    )
    .await;
    if let Ok(c) = no_cert {
        c.cluster()
            .status(pb::ClusterStatusRequest::default())
            .await
            .expect_err("no client certificate");
    }
    // A certificate of the cluster CA that is valid for no member: no
    // Raft messages, and ClusterAdmin only with a cluster-admin grant.
    let intruder = s.ca.leaf(&["intruder.example"], "intruder");
    let c = as_cert(&peer, &s.ca, &intruder).await.unwrap();
    let mut raft = RaftTransportClient::new(
        tonic::transport::Endpoint::from_shared(format!("https://{peer}"))
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&s.ca.pem))
                    .identity(tonic::transport::Identity::from_pem(
                        &intruder.cert,
                        &intruder.key,
                    )),
            )
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let e = raft
        .vote(raftq_api::v1::RaftMessage::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("only members"), "{}", e.message());
    let e = c
        .cluster()
        .status(pb::ClusterStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    // A principal without cluster-admin, and one with it.
    let worker = as_cert(&peer, &s.ca, &s.ca.leaf(&[], "cert-worker"))
        .await
        .unwrap();
    let e = worker
        .cluster()
        .step_down(pb::StepDownRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message()
            .contains("may not call ClusterAdmin.StepDown: it lacks the `cluster-admin` role"),
        "{}",
        e.message()
    );
    let ops = as_cert(&peer, &s.ca, &s.ca.leaf(&[], "ops")).await.unwrap();
    ops.cluster()
        .status(pb::ClusterStatusRequest::default())
        .await
        .expect("cluster-admin reaches ClusterAdmin");
    // Client calls are not served on the peer port.
    let e = enqueue(&ops, "jobs").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("client port"), "{}", e.message());
    // Another CA's certificate: no TLS connection at all.
    let other = Ca::new("another CA");
    let refused = match as_cert(&peer, &s.ca, &other.leaf(&["127.0.0.1"], "ops")).await {
        Err(_) => true,
        Ok(c) => c
            .cluster()
            .status(pb::ClusterStatusRequest::default())
            .await
            .is_err(),
    };
    assert!(refused);
    node.shutdown().await.unwrap();
}

/// Certificates and the token file rotate under load: no request fails,
/// new connections get the new certificate, a new token works and a
/// removed one stops working, and the node never restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_tokens_rotate_under_load_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let (config, s) = secure_config(dir.path());
    let node = raftq_node::node::start(config).await.expect("start");
    let addr = node.addr.to_string();
    let producer = as_token(&addr, &s.ca, "producer-token").await;
    wait_for("the node leads", Duration::from_secs(20), || async {
        enqueue(&producer, "jobs").await.ok()
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, done, failed, addr) = (stop.clone(), done.clone(), failed.clone(), addr.clone());
        let ca = s.ca.pem.clone();
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A new connection every tenth request: some handshakes
                // happen during the swap.
                let options = ConnectOptions::new()
                    .tls(TlsOptions::new().ca_cert_pem(ca.clone()))
                    .token("producer-token");
                let client = match Client::connect_with(&addr, options).await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("connect failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                for _ in 0..10 {
                    match enqueue(&client, "jobs").await {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("enqueue failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    n += 1;
                }
            }
            n
        }));
    }
    let progress = |at_least: u64| {
        let done = done.clone();
        async move {
            wait_for("requests flowing", Duration::from_secs(20), || async {
                (done.load(Ordering::Relaxed) >= at_least).then_some(())
            })
            .await
        }
    };
    progress(200).await;

    // A new node certificate from the same CA.
    let renewed = s.ca.leaf(&["127.0.0.1", "renewed.example"], "node-renewed");
    s.files.replace(&renewed);
    let before = done.load(Ordering::Relaxed);
    progress(before + 200).await;
    wait_for(
        "the renewed certificate served",
        Duration::from_secs(20),
        || async {
            let c = as_token(&addr, &s.ca, "producer-token").await;
            let served = c
                .queue()
                .enqueue(pb::EnqueueRequest {
                    queue: "jobs".into(),
                    jobs: vec![JobSpec::new("probe").into_proto()],
                })
                .await
                .is_ok();
            // The served certificate carries the new name.
            let renewed_name = connect(
                &addr,
                ConnectOptions::new()
                    .tls(tls(&s.ca).domain("renewed.example"))
                    .token("producer-token"),
            )
            .await
            .is_ok();
            (served && renewed_name).then_some(())
        },
    )
    .await;

    // A new token added, then the old one removed.
    let path = dir.path().join("auth.yaml");
    let new_token = format!(
        "  - name: producer2\n    tokens_sha256: ['{}']\n    grants: [{{ role: produce, queues: [jobs] }}]\n",
        token_hash("new-token")
    );
    auth_file(dir.path(), &new_token);
    let fresh = as_token(&addr, &s.ca, "new-token").await;
    wait_for(
        "the new token accepted",
        Duration::from_secs(20),
        || async { enqueue(&fresh, "jobs").await.ok() },
    )
    .await;
    let before = done.load(Ordering::Relaxed);
    progress(before + 200).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the rotations"
    );

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(&token_hash("producer-token"), &token_hash("retired")),
    )
    .unwrap();
    wait_for(
        "the removed token refused",
        Duration::from_secs(20),
        || async {
            let e = enqueue(&producer, "jobs").await.err()?;
            (e.code() == Code::Unauthenticated).then_some(())
        },
    )
    .await;
    node.shutdown().await.unwrap();
}

/// A non-blocking read of a closed connection ends (or fails), after
/// whatever the server sent first (its HTTP/2 settings); of an open one
/// that sends nothing, it would block.
fn closed(mut stream: &std::net::TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

fn open_idle(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_nonblocking(true).unwrap();
    stream
}

/// A counter or gauge of the node's `/metrics`.
async fn metric(node: &raftq_node::node::NodeHandle, line: &str) -> f64 {
    let metrics = http_get(node.http_addr.unwrap(), "/metrics").await;
    metrics
        .lines()
        .find(|l| l.starts_with(line))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line} in /metrics:\n{metrics}"))
}

/// 2,000 connections that never send a byte are closed by the idle
/// timeout (and counted) while the node serves; a client answering
/// keepalive pings stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::fast_config(dir.path());
    config.http_listen = Some("127.0.0.1:0".into());
    config.limits.idle_timeout_ms = 2_000;
    config.limits.keepalive_interval_ms = 500;
    let (node, client) = common::start_with(config).await;
    let idle: Vec<_> = (0..2_000).map(|_| open_idle(node.addr)).collect();
    enqueue(&client, "busy")
        .await
        .expect("enqueue while 2,000 sit idle");
    wait_for("idle connections closed", Duration::from_secs(30), || {
        let n = idle.iter().filter(|s| closed(s)).count();
        async move { (n == 2_000).then_some(()) }
    })
    .await;
    let stats = client
        .admin()
        .stats(pb::StatsRequest::default())
        .await
        .expect("serving after the idle connections went")
        .into_inner();
    assert_eq!(stats.queues[0].ready, 1);
    let counted = metric(
        &node,
        "raftq_connections_closed_idle_total{port=\"client\"}",
    )
    .await;
    assert!(counted >= 2_000.0, "{counted}");
    node.shutdown().await.unwrap();
}

/// Past `limits.max_connections` a connection is closed at once, counted,
/// and the node serves the ones it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::fast_config(dir.path());
    config.http_listen = Some("127.0.0.1:0".into());
    config.limits.max_connections = 50;
    let (node, client) = common::start_with(config).await;
    // The client's own connection and 49 more fill the limit.
    let held: Vec<_> = (0..49).map(|_| open_idle(node.addr)).collect();
    wait_for("the limit filled", Duration::from_secs(10), || async {
        let open = metric(&node, "raftq_connections_open{port=\"client\"}").await;
        (open >= 50.0).then_some(())
    })
    .await;
    let extra: Vec<_> = (0..10).map(|_| open_idle(node.addr)).collect();
    wait_for(
        "connections over the limit closed",
        Duration::from_secs(10),
        || {
            let n = extra.iter().filter(|s| closed(s)).count();
            async move { (n == 10).then_some(()) }
        },
    )
    .await;
    assert!(
        held.iter().all(|s| !closed(s)),
        "held connections stay open"
    );
    let refused = metric(&node, "raftq_connections_refused_total{port=\"client\"}").await;
    assert_eq!(refused, 10.0);
    enqueue(&client, "busy")
        .await
        .expect("the held connection serves");
    // Connections that never sent a byte do not hold a shutdown up past
    // its drain time (the idle timeout here is the default 120 s).
    let started = std::time::Instant::now();
    node.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    drop((held, extra));
}

/// `GET path` over plain HTTP/1.1; the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// `limits.requests_per_second_per_principal`: a principal over its rate
/// gets RESOURCE_EXHAUSTED naming it and the setting; another principal
/// is not held back; a second later the first may call again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_request_rate_is_held_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, s) = secure_config(dir.path());
    config.limits.requests_per_second_per_principal = 20;
    let node = raftq_node::node::start(config).await.expect("start");
    let addr = node.addr.to_string();
    let producer = as_token(&addr, &s.ca, "producer-token").await;
    let admin = as_token(&addr, &s.ca, "admin-token").await;
    wait_for("the node leads", Duration::from_secs(20), || async {
        enqueue(&producer, "jobs").await.ok()
    })
    .await;
    let mut refused = None;
    for _ in 0..100 {
        if let Err(e) = enqueue(&producer, "jobs").await {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("100 requests at once exceed 20 per second");
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message().contains("`producer`")
            && e.message().contains("requests_per_second_per_principal"),
        "{}",
        e.message()
    );
    admin
        .admin()
        .stats(pb::StatsRequest::default())
        .await
        .expect("another principal is not held back");
    wait_for("the rate refills", Duration::from_secs(5), || async {
        enqueue(&producer, "jobs").await.ok()
    })
    .await;
    node.shutdown().await.unwrap();
}

/// With `require_auth`, a node that would listen beyond loopback without
/// TLS and auth refuses to start, saying why.
#[tokio::test]
async fn require_auth_refuses_an_open_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::fast_config(dir.path());
    config.listen = "0.0.0.0:0".into();
    config.require_auth = true;
    let e = raftq_node::node::start(config)
        .await
        .err()
        .expect("refused");
    let e = format!("{e:#}");
    assert!(
        e.contains("require_auth") && e.contains("without TLS"),
        "{e}"
    );
}

/// A request over the message size limit is refused with
/// RESOURCE_EXHAUSTED (tonic's own code would be OUT_OF_RANGE), and the
/// node serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = common::start_single(dir.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // A client without its own limit, as any language's client may be.
    let mut raw = raftq_api::v1::queue_client::QueueClient::new(channel)
        .max_encoding_message_size(usize::MAX);
    let payload = vec![b'x'; raftq_api::limits::MAX_MESSAGE_BYTES + 1024];
    let e = raw
        .enqueue(pb::EnqueueRequest {
            queue: "big".into(),
            jobs: vec![JobSpec::new(payload).into_proto()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("too large"), "{}", e.message());
    enqueue(&client, "small").await.expect("serving on");
    node.shutdown().await.unwrap();
}
