//! The reconcile flow against a mocked Kubernetes API server (tower-test),
//! the way kube-rs's controller-rs tests it: every request the reconciler
//! makes is recorded and answered the way the API server would, and the
//! tests assert on what was sent. Queue nodes are an in-memory Raft
//! membership model here; `membership.rs` runs the same steps against real
//! queue-node processes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::{Client, Resource, ResourceExt};
use raftq_api::v1 as pb;
use raftq_operator::crd::{JobQueue, JobQueueSpec, JobQueueStatus};
use raftq_operator::membership::{NodeAdmin, QueueRef};
use raftq_operator::metrics::Metrics;
use raftq_operator::reconcile::{reconcile, Context, FINALIZER};
use serde_json::{json, Value};

/// One request the reconciler sent.
#[derive(Debug, Clone)]
struct Sent {
    method: Method,
    path: String,
    body: Value,
}

impl Sent {
    fn is(&self, method: Method, path_end: &str) -> bool {
        self.method == method && self.path.ends_with(path_end)
    }
}

/// The fake API server's state: the objects it stores (by path, for GET)
/// and all requests received.
#[derive(Default)]
struct ApiState {
    sent: Vec<Sent>,
    objects: std::collections::BTreeMap<String, Value>,
    /// Kinds this API server does not serve (404 on every request), by
    /// a part of their path.
    missing_kinds: Vec<String>,
}

const STS_PATH: &str = "/apis/apps/v1/namespaces/shop/statefulsets/orders";

fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

/// Answers like the API server: applies store and echo the object,
/// creates store it unless it exists (409), GETs return what is stored
/// (404 otherwise), deletes of missing objects are 404.
fn answer(state: &mut ApiState, method: &Method, path: &str, body: &Value) -> (StatusCode, Value) {
    if state
        .missing_kinds
        .iter()
        .any(|k| path.contains(k.as_str()))
    {
        return (StatusCode::NOT_FOUND, status_body(404, "NotFound"));
    }
    match *method {
        Method::GET => match state.objects.get(path) {
            Some(object) => (StatusCode::OK, object.clone()),
            None => (StatusCode::NOT_FOUND, status_body(404, "NotFound")),
        },
        Method::POST if !path.ends_with("/events") => {
            let name = body["metadata"]["name"].as_str().unwrap_or_default();
            let at = format!("{path}/{name}");
            if state.objects.contains_key(&at) {
                return (StatusCode::CONFLICT, status_body(409, "AlreadyExists"));
            }
            state.objects.insert(at, body.clone());
            (StatusCode::CREATED, body.clone())
        }
        Method::DELETE => (StatusCode::NOT_FOUND, status_body(404, "NotFound")),
        // The JobQueue itself (finalizer JSON patches, status applies): the
        // API server answers with the whole object.
        Method::PATCH if path.contains("/jobqueues/") => {
            let mut jq = json!({
                "apiVersion": "raftq.dev/v1alpha1",
                "kind": "JobQueue",
                "metadata": {"name": "orders", "namespace": "shop"},
                "spec": {},
            });
            if let Some(status) = body.get("status") {
                jq["status"] = status.clone();
            }
            (StatusCode::OK, jq)
        }
        Method::PATCH => {
            let mut object = body.clone();
            // The API server keeps the status the controller manager wrote.
            if let Some(old) = state.objects.get(path) {
                if let Some(status) = old.get("status") {
                    object["status"] = status.clone();
                }
            }
            state.objects.insert(path.to_string(), object.clone());
            (StatusCode::OK, object)
        }
        _ => (StatusCode::OK, body.clone()),
    }
}

fn mock_client() -> (Client, Arc<Mutex<ApiState>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let state = Arc::new(Mutex::new(ApiState::default()));
    let server_state = state.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_string();
            let bytes = match request.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Default::default(),
            };
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, reply) = {
                let mut s = server_state.lock().unwrap();
                s.sent.push(Sent {
                    method: method.clone(),
                    path: path.clone(),
                    body: body.clone(),
                });
                answer(&mut s, &method, &path, &body)
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "default"), state)
}

/// In-memory Raft membership of the queue's nodes: which are up, and each
/// node's view of every shard (voters, learners, leader 1 once created).
#[derive(Default)]
struct NodesModel {
    up: BTreeSet<u64>,
    voters: BTreeSet<u64>,
    learners: BTreeSet<u64>,
    shards: u32,
    calls: Vec<String>,
    /// Nodes declared to a placed queue's coordinator (id, draining).
    declared: Vec<(u64, bool)>,
    /// The nodes run without TLS (`tls.mode: disabled`).
    plaintext: bool,
    /// The queue routing once the shard count grew.
    routing: Option<pb::QueueRouting>,
}

struct FakeNodes(Mutex<NodesModel>);

impl FakeNodes {
    fn new(up: impl IntoIterator<Item = u64>, shards: u32) -> Arc<FakeNodes> {
        Arc::new(FakeNodes(Mutex::new(NodesModel {
            up: up.into_iter().collect(),
            shards,
            ..NodesModel::default()
        })))
    }

    fn model(&self) -> std::sync::MutexGuard<'_, NodesModel> {
        self.0.lock().unwrap()
    }

    fn status_of(m: &NodesModel, id: u64) -> pb::ClusterStatus {
        let member = |id: u64, voter| pb::Member {
            node_id: id,
            addr: format!("node-{id}"),
            voter,
            matched_index: 0,
        };
        let in_cluster = m.voters.contains(&id) || m.learners.contains(&id);
        let members: Vec<pb::Member> = if in_cluster {
            m.voters
                .iter()
                .map(|v| member(*v, true))
                .chain(m.learners.iter().map(|l| member(*l, false)))
                .collect()
        } else {
            Vec::new()
        };
        let leader = m
            .voters
            .iter()
            .find(|v| m.up.contains(v))
            .copied()
            .unwrap_or(0);
        pb::ClusterStatus {
            node_id: id,
            addr: format!("node-{id}"),
            client_addr: format!("node-{id}-client"),
            shards: (0..m.shards)
                .map(|shard| pb::ShardStatus {
                    shard,
                    leader_id: if in_cluster { leader } else { 0 },
                    has_leader: in_cluster && leader != 0,
                    term: 2,
                    applied_index: 7,
                    members: members.clone(),
                    ..pb::ShardStatus::default()
                })
                .collect(),
            routing_version: m.routing.as_ref().map_or(0, |r| r.version),
            routing: m.routing.clone(),
        }
    }
}

fn id_of(addr: &str) -> u64 {
    addr.trim_start_matches("node-").parse().unwrap()
}

#[tonic::async_trait]
impl NodeAdmin for FakeNodes {
    fn addr(&self, _queue: &QueueRef, id: u64) -> String {
        format!("node-{id}")
    }

    async fn status(
        &self,
        queue: &QueueRef,
        addr: &str,
    ) -> Result<pb::ClusterStatus, tonic::Status> {
        let m = self.model();
        let id = id_of(addr);
        if !m.up.contains(&id) {
            return Err(tonic::Status::unavailable("down"));
        }
        m.check_credentials(queue)?;
        Ok(Self::status_of(&m, id))
    }

    async fn initialize(
        &self,
        queue: &QueueRef,
        addr: &str,
    ) -> Result<pb::ClusterStatus, tonic::Status> {
        let mut m = self.model();
        m.check_credentials(queue)?;
        let id = id_of(addr);
        m.calls.push(format!("initialize {id}"));
        if m.voters.is_empty() {
            m.voters.insert(id);
        }
        Ok(Self::status_of(&m, id))
    }

    async fn add_learner(
        &self,
        queue: &QueueRef,
        addr: &str,
        id: u64,
        _learner_addr: &str,
    ) -> Result<pb::ClusterStatus, tonic::Status> {
        let mut m = self.model();
        m.check_credentials(queue)?;
        m.calls.push(format!("add_learner {id}"));
        if !m.up.contains(&id) {
            return Err(tonic::Status::unavailable("learner down"));
        }
        m.learners.insert(id);
        Ok(Self::status_of(&m, id_of(addr)))
    }

    async fn set_voters(
        &self,
        queue: &QueueRef,
        addr: &str,
        voters: &BTreeSet<u64>,
    ) -> Result<pb::ClusterStatus, tonic::Status> {
        let mut m = self.model();
        m.check_credentials(queue)?;
        m.calls.push(format!("set_voters {voters:?}"));
        m.learners.retain(|l| !voters.contains(l));
        m.voters = voters.clone();
        Ok(Self::status_of(&m, id_of(addr)))
    }

    async fn get_placement(
        &self,
        queue: &QueueRef,
        _addr: &str,
    ) -> Result<pb::PlacementStatus, tonic::Status> {
        let m = self.model();
        m.check_credentials(queue)?;
        Ok(m.placement())
    }

    async fn set_nodes(
        &self,
        queue: &QueueRef,
        _addr: &str,
        nodes: Vec<pb::NodeSpec>,
    ) -> Result<pb::PlacementStatus, tonic::Status> {
        let mut m = self.model();
        m.check_credentials(queue)?;
        m.declared = nodes.iter().map(|n| (n.node_id, n.draining)).collect();
        let call = format!("set_nodes {:?}", m.declared);
        m.calls.push(call);
        Ok(m.placement())
    }

    async fn grow_shards(
        &self,
        queue: &QueueRef,
        _addr: &str,
        shard_count: u32,
    ) -> Result<(), tonic::Status> {
        let mut m = self.model();
        m.check_credentials(queue)?;
        m.calls.push(format!("grow_shards {shard_count}"));
        m.shards = shard_count;
        let version = m.routing.as_ref().map_or(0, |r| r.version) + 1;
        m.routing = Some(pb::QueueRouting {
            version,
            shard_count,
            pins: Default::default(),
        });
        Ok(())
    }
}

impl NodesModel {
    /// What a coordinator reports: the declared nodes, moves done at once.
    fn placement(&self) -> pb::PlacementStatus {
        pb::PlacementStatus {
            coordinator: 1,
            replication_factor: 3,
            declared: self
                .declared
                .iter()
                .map(|(id, draining)| pb::NodeSpec {
                    node_id: *id,
                    addr: format!("node-{id}"),
                    zone: String::new(),
                    draining: *draining,
                })
                .collect(),
            nodes: Vec::new(),
            moves: Vec::new(),
            balanced: true,
        }
    }

    /// The nodes speak TLS unless told otherwise: a call without the
    /// operator's certificate fails as the handshake would.
    fn check_credentials(&self, queue: &QueueRef) -> Result<(), tonic::Status> {
        match (&queue.tls, self.plaintext) {
            (Some(tls), false) if tls.cert_pem.contains("BEGIN CERTIFICATE") => Ok(()),
            (None, true) => Ok(()),
            (tls, _) => Err(tonic::Status::unavailable(format!(
                "TLS mismatch: the operator dialled with TLS {}",
                tls.is_some()
            ))),
        }
    }
}

fn queue(replicas: i32, shards: i32) -> JobQueue {
    let spec: JobQueueSpec =
        serde_json::from_value(json!({"replicas": replicas, "shards": shards})).unwrap();
    let mut jq = JobQueue::new("orders", spec);
    jq.meta_mut().namespace = Some("shop".into());
    jq.meta_mut().uid = Some("4a8d6f1e-0000-4000-8000-000000000001".into());
    jq.meta_mut().generation = Some(1);
    jq
}

fn finalized(mut jq: JobQueue) -> JobQueue {
    jq.finalizers_mut().push(FINALIZER.to_string());
    jq
}

fn context(client: Client, nodes: Arc<FakeNodes>) -> Arc<Context> {
    Arc::new(Context {
        reporter: Reporter {
            controller: "raftq-operator".into(),
            instance: None,
        },
        client,
        failures: Default::default(),
        nodes,
        metrics: Arc::new(Metrics::default()),
        operator_namespace: "raftq-system".into(),
    })
}

/// The condition of `type_` in `status`; panics if it is missing.
fn condition<'a>(status: &'a JobQueueStatus, type_: &str) -> &'a raftq_operator::crd::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status:?}"))
}

/// The status the last status patch carried.
fn last_status(sent: &[Sent]) -> JobQueueStatus {
    let patch = sent
        .iter()
        .rev()
        .find(|s| s.is(Method::PATCH, "/jobqueues/orders/status"))
        .expect("a status patch");
    serde_json::from_value(patch.body["status"].clone()).unwrap()
}

fn applied_sts_replicas(sent: &[Sent]) -> i64 {
    sent.iter()
        .rev()
        .find(|s| s.is(Method::PATCH, "/statefulsets/orders"))
        .expect("a statefulset apply")
        .body["spec"]["replicas"]
        .as_i64()
        .unwrap()
}

fn event_reasons(sent: &[Sent]) -> Vec<String> {
    sent.iter()
        .filter(|s| s.method == Method::POST && s.path.ends_with("/events"))
        .map(|s| s.body["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Runs reconciles until the membership stops changing, feeding each
/// status back into the resource as the API server would.
async fn settle(mut jq: JobQueue, ctx: &Arc<Context>, api: &Arc<Mutex<ApiState>>) -> JobQueue {
    for _ in 0..10 {
        reconcile(Arc::new(jq.clone()), ctx.clone())
            .await
            .expect("reconcile");
        let status = last_status(&api.lock().unwrap().sent);
        let done = status.phase == "Running" || status.phase == "Degraded";
        jq.status = Some(status);
        if done {
            break;
        }
    }
    jq
}

/// Sets the StatefulSet's ready count, as the controller manager would.
fn mark_ready(api: &Arc<Mutex<ApiState>>, ready: i64) {
    let mut s = api.lock().unwrap();
    if let Some(sts) = s.objects.get_mut(STS_PATH) {
        sts["status"] = json!({"replicas": ready, "readyReplicas": ready});
    }
}

#[tokio::test]
async fn a_new_queue_first_gets_the_finalizer_and_nothing_else() {
    let (client, api) = mock_client();
    let ctx = context(client, FakeNodes::new([1, 2, 3], 2));
    let action = reconcile(Arc::new(queue(3, 2)), ctx)
        .await
        .expect("reconcile");
    assert_eq!(action, Action::await_change());
    let sent = api.lock().unwrap().sent.clone();
    assert_eq!(sent.len(), 1, "only the finalizer patch: {sent:?}");
    assert!(sent[0].is(Method::PATCH, "/namespaces/shop/jobqueues/orders"));
    assert!(sent[0].body.to_string().contains(FINALIZER));
}

#[tokio::test]
async fn create_applies_every_object_bootstraps_and_grows_to_three() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1, 2, 3], 2);
    let ctx = context(client, nodes.clone());
    let jq = finalized(queue(3, 2));

    reconcile(Arc::new(jq.clone()), ctx.clone())
        .await
        .expect("reconcile");
    {
        let sent = api.lock().unwrap().sent.clone();
        for path in [
            "/namespaces/shop/configmaps/orders-config",
            "/namespaces/shop/services/orders-peers",
            "/namespaces/shop/services/orders",
            "/namespaces/shop/networkpolicies/orders-peers",
            "/namespaces/shop/statefulsets/orders",
            "/namespaces/shop/poddisruptionbudgets/orders",
        ] {
            let apply = sent
                .iter()
                .find(|s| s.is(Method::PATCH, path))
                .unwrap_or_else(|| panic!("no apply of {path}: {sent:?}"));
            assert_eq!(
                apply.body["metadata"]["ownerReferences"][0]["name"], "orders",
                "{path} is owned by the JobQueue"
            );
        }
        let cm = sent
            .iter()
            .find(|s| s.path.ends_with("/configmaps/orders-config"))
            .unwrap();
        let node_yaml = cm.body["data"]["node.yaml"].as_str().unwrap();
        assert!(node_yaml.contains("shards: 2"), "{node_yaml}");
        assert_eq!(applied_sts_replicas(&sent), 3);
        // The CA, then the nodes' and the operator's certificates: before
        // the first call to a node, which takes the operator over TLS only.
        assert_eq!(
            event_reasons(&sent),
            [
                "CertificateIssued",
                "CertificateIssued",
                "CertificateIssued",
                "Bootstrapped"
            ]
        );
        assert_eq!(nodes.model().calls, ["initialize 1"]);
    }

    mark_ready(&api, 3);
    let jq = settle(jq, &ctx, &api).await;
    let status = jq.status.clone().unwrap();
    assert_eq!(status.phase, "Running", "{status:?}");
    assert_eq!(status.voters, [1, 2, 3]);
    assert_eq!(status.shards.len(), 2);
    assert_eq!(status.endpoint, "orders.shop.svc:7400");
    let available = condition(&status, "Available");
    assert_eq!(available.status, "True");
    assert_eq!(
        nodes.model().calls,
        [
            "initialize 1",
            "add_learner 2",
            "add_learner 3",
            "set_voters {1, 2, 3}"
        ]
    );
    let reasons = event_reasons(&api.lock().unwrap().sent);
    assert_eq!(
        reasons[3..],
        ["Bootstrapped", "NodeAdded", "NodeAdded", "VotersChanged"]
    );

    // Settled: another reconcile changes nothing in Raft and sends no event.
    let before = api.lock().unwrap().sent.len();
    reconcile(Arc::new(jq), ctx.clone())
        .await
        .expect("reconcile");
    let sent = api.lock().unwrap().sent.clone();
    assert_eq!(event_reasons(&sent[before..]).len(), 0);
    assert_eq!(nodes.model().calls.len(), 4);
}

#[tokio::test]
async fn a_spec_change_rolls_the_pods_through_the_config_checksum() {
    let (client, api) = mock_client();
    let ctx = context(client, FakeNodes::new([1], 1));
    let jq = finalized(queue(1, 1));
    reconcile(Arc::new(jq.clone()), ctx.clone())
        .await
        .expect("reconcile");
    let checksum = |sent: &[Sent]| {
        sent.iter()
            .rev()
            .find(|s| s.is(Method::PATCH, "/statefulsets/orders"))
            .unwrap()
            .body["spec"]["template"]["metadata"]["annotations"]["raftq.dev/config-checksum"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = checksum(&api.lock().unwrap().sent);

    let mut changed = jq.clone();
    changed.spec.batching.linger_max_micros = 5000;
    changed.meta_mut().generation = Some(2);
    reconcile(Arc::new(changed), ctx.clone())
        .await
        .expect("reconcile");
    let sent = api.lock().unwrap().sent.clone();
    assert_ne!(checksum(&sent), first, "new node config, new checksum");
    let cm = sent
        .iter()
        .rev()
        .find(|s| s.path.ends_with("/configmaps/orders-config"))
        .unwrap();
    assert!(cm.body["data"]["node.yaml"]
        .as_str()
        .unwrap()
        .contains("linger_max_micros: 5000"));
    // One replica: no PDB (it would block every drain); a stale one is deleted.
    assert!(sent
        .iter()
        .any(|s| s.is(Method::DELETE, "/poddisruptionbudgets/orders")));
    assert_eq!(last_status(&sent).observed_generation, 2);
}

#[tokio::test]
async fn scale_up_adds_learners_then_promotes() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1, 2, 3], 1);
    let ctx = context(client, nodes.clone());
    mark_ready(&api, 3);
    let jq = settle(finalized(queue(3, 1)), &ctx, &api).await;
    assert_eq!(jq.status.as_ref().unwrap().voters, [1, 2, 3]);

    // Scale to 5: the StatefulSet grows at once; pods 3 and 4 come up later.
    let mut five = jq.clone();
    five.spec.replicas = 5;
    reconcile(Arc::new(five.clone()), ctx.clone())
        .await
        .expect("reconcile");
    let status = last_status(&api.lock().unwrap().sent);
    assert_eq!(applied_sts_replicas(&api.lock().unwrap().sent), 5);
    assert_eq!(status.phase, "Scaling");
    let progressing = condition(&status, "Progressing");
    assert_eq!(progressing.status, "True");
    assert!(progressing.message.contains("pod 3"), "{progressing:?}");

    nodes.model().up.extend([4, 5]);
    mark_ready(&api, 5);
    five.status = Some(status);
    let five = settle(five, &ctx, &api).await;
    assert_eq!(five.status.unwrap().voters, [1, 2, 3, 4, 5]);
    assert_eq!(
        nodes.model().calls[4..],
        [
            "add_learner 4",
            "add_learner 5",
            "set_voters {1, 2, 3, 4, 5}"
        ]
    );
}

#[tokio::test]
async fn scale_down_removes_voters_before_the_statefulset_shrinks() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1, 2, 3, 4, 5], 2);
    let ctx = context(client, nodes.clone());
    mark_ready(&api, 5);
    let jq = settle(finalized(queue(5, 2)), &ctx, &api).await;
    assert_eq!(jq.status.as_ref().unwrap().voters, [1, 2, 3, 4, 5]);

    let mut three = jq.clone();
    three.spec.replicas = 3;
    reconcile(Arc::new(three.clone()), ctx.clone())
        .await
        .expect("reconcile");
    {
        let sent = api.lock().unwrap().sent.clone();
        // The voters change in this reconcile; the pods stay until the next.
        assert_eq!(applied_sts_replicas(&sent), 5);
        assert_eq!(nodes.model().calls.last().unwrap(), "set_voters {1, 2, 3}");
    }
    three.status = Some(last_status(&api.lock().unwrap().sent));
    reconcile(Arc::new(three), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(applied_sts_replicas(&api.lock().unwrap().sent), 3);
}

#[tokio::test]
async fn a_placed_queue_declares_its_nodes_grows_and_drains_before_it_shrinks() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1, 2, 3], 2);
    // A placed queue's pods create the cluster themselves.
    nodes.model().voters = [1, 2, 3].into();
    let ctx = context(client, nodes.clone());
    mark_ready(&api, 3);
    let mut placed = finalized(queue(3, 2));
    placed.spec.replication_factor = Some(3);
    let jq = settle(placed, &ctx, &api).await;
    let status = jq.status.clone().unwrap();
    assert_eq!(status.initial_members, Some(3));
    assert_eq!(
        nodes.model().calls.last().unwrap(),
        "set_nodes [(1, false), (2, false), (3, false)]"
    );

    // Scale out: the StatefulSet grows; once pod 3 answers, node 4 is declared.
    let mut four = jq.clone();
    four.spec.replicas = 4;
    nodes.model().up.insert(4);
    reconcile(Arc::new(four.clone()), ctx.clone())
        .await
        .expect("reconcile");
    {
        let sent = api.lock().unwrap().sent.clone();
        assert_eq!(applied_sts_replicas(&sent), 4);
        let last_config: Vec<Sent> = sent
            .iter()
            .rev()
            .filter(|s| s.path.ends_with("/configmaps/orders-config"))
            .take(1)
            .cloned()
            .collect();
        let yaml = applied_node_yaml(&last_config);
        assert!(yaml.contains("3: orders-2"), "{yaml}");
        assert!(
            !yaml.contains("4: orders-3"),
            "the initial members stay the 3 the queue was created with:\n{yaml}"
        );
    }
    assert_eq!(
        nodes.model().calls.last().unwrap(),
        "set_nodes [(1, false), (2, false), (3, false), (4, false)]"
    );

    // Scale in while node 4 holds replicas: it is drained, the pods stay.
    nodes.model().voters = [2, 3, 4].into();
    let mut three = four.clone();
    three.status = Some(last_status(&api.lock().unwrap().sent));
    three.spec.replicas = 3;
    reconcile(Arc::new(three.clone()), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(applied_sts_replicas(&api.lock().unwrap().sent), 4);
    assert_eq!(
        nodes.model().calls.last().unwrap(),
        "set_nodes [(1, false), (2, false), (3, false), (4, true)]"
    );
    // Drained: node 4 leaves the declaration and the StatefulSet.
    nodes.model().voters = [1, 2, 3].into();
    three.status = Some(last_status(&api.lock().unwrap().sent));
    reconcile(Arc::new(three), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(applied_sts_replicas(&api.lock().unwrap().sent), 3);
    assert_eq!(
        nodes.model().calls.last().unwrap(),
        "set_nodes [(1, false), (2, false), (3, false)]"
    );
}

#[tokio::test]
async fn scale_down_that_would_lose_quorum_is_refused_with_a_reason() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1, 2, 3, 4, 5], 1);
    let ctx = context(client, nodes.clone());
    mark_ready(&api, 5);
    let jq = settle(finalized(queue(5, 1)), &ctx, &api).await;

    // Nodes 2 and 3 are down: voters {1,2,3} would have one live member.
    nodes.model().up = [1, 4, 5].into();
    let mut three = jq.clone();
    three.spec.replicas = 3;
    reconcile(Arc::new(three), ctx.clone())
        .await
        .expect("reconcile");
    let sent = api.lock().unwrap().sent.clone();
    let status = last_status(&sent);
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "ChangeRefused")
    );
    assert!(degraded.message.contains("majority"), "{degraded:?}");
    assert_eq!(applied_sts_replicas(&sent), 5, "no pod removed");
    assert!(event_reasons(&sent).contains(&"ChangeRefused".to_string()));
    assert_eq!(nodes.model().voters, [1, 2, 3, 4, 5].into());
}

#[tokio::test]
async fn paused_changes_nothing_but_the_status() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1, 2, 3], 1);
    let ctx = context(client, nodes.clone());
    let mut jq = finalized(queue(3, 1));
    jq.spec.paused = true;
    reconcile(Arc::new(jq), ctx).await.expect("reconcile");
    let sent = api.lock().unwrap().sent.clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(last_status(&sent).phase, "Paused");
    assert!(nodes.model().calls.is_empty());
}

#[tokio::test]
async fn pausing_a_running_queue_keeps_what_was_observed() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1, 2, 3], 2);
    let ctx = context(client, nodes.clone());
    mark_ready(&api, 3);
    let mut jq = settle(finalized(queue(3, 2)), &ctx, &api).await;
    let calls = nodes.model().calls.len();
    let before = api.lock().unwrap().sent.len();
    jq.spec.paused = true;
    reconcile(Arc::new(jq), ctx).await.expect("reconcile");
    let sent = api.lock().unwrap().sent[before..].to_vec();
    assert_eq!(sent.len(), 1, "only the status: {sent:?}");
    let status = last_status(&sent);
    assert_eq!(status.phase, "Paused");
    assert_eq!(status.voters, [1, 2, 3]);
    assert_eq!(status.shards.len(), 2, "the last observation is kept");
    assert_eq!(condition(&status, "Progressing").reason, "Paused");
    assert_eq!(condition(&status, "Available").status, "True");
    assert_eq!(nodes.model().calls.len(), calls);
}

#[tokio::test]
async fn delete_runs_cleanup_and_removes_the_finalizer() {
    let (client, api) = mock_client();
    let ctx = context(client, FakeNodes::new([1], 1));
    let mut jq = finalized(queue(1, 1));
    jq.meta_mut().deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let action = reconcile(Arc::new(jq), ctx).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    let sent = api.lock().unwrap().sent.clone();
    assert_eq!(event_reasons(&sent), ["Deleting"]);
    let unpatch = sent.last().unwrap();
    assert!(unpatch.is(Method::PATCH, "/jobqueues/orders"));
    assert!(unpatch.body.to_string().contains("remove"), "{unpatch:?}");
}

#[tokio::test]
async fn lost_data_after_bootstrap_is_reported_not_rebootstrapped() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1, 2, 3], 1);
    let ctx = context(client, nodes.clone());
    let mut jq = finalized(queue(3, 1));
    jq.status = Some(JobQueueStatus {
        voters: vec![1, 2, 3],
        ..JobQueueStatus::default()
    });
    reconcile(Arc::new(jq), ctx).await.expect("reconcile");
    let status = last_status(&api.lock().unwrap().sent);
    assert_eq!(status.phase, "Degraded");
    assert!(nodes.model().calls.is_empty(), "never initialised again");
}

#[tokio::test]
async fn a_bad_spec_that_got_past_the_schema_is_refused_with_a_reason() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1, 2], 1);
    let ctx = context(client, nodes.clone());
    let mut jq = finalized(queue(2, 1));
    jq.spec.replicas = 2;
    reconcile(Arc::new(jq), ctx).await.expect("reconcile");
    let sent = api.lock().unwrap().sent.clone();
    assert!(
        !sent.iter().any(|s| s.path.contains("/statefulsets/")),
        "no objects touched: {sent:?}"
    );
    assert_eq!(event_reasons(&sent), ["InvalidSpec"]);
    let status = last_status(&sent);
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded.reason, "InvalidSpec");
    assert!(degraded.message.contains("must be odd"), "{degraded:?}");
    assert!(nodes.model().calls.is_empty());
}

#[tokio::test]
async fn a_placed_queue_grows_its_shard_count_and_refuses_to_shrink_it() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1, 2, 3], 2);
    nodes.model().voters = [1, 2, 3].into();
    let ctx = context(client, nodes.clone());
    mark_ready(&api, 3);
    let mut placed = finalized(queue(3, 2));
    placed.spec.replication_factor = Some(3);
    let jq = settle(placed, &ctx, &api).await;
    assert_eq!(jq.status.as_ref().unwrap().initial_shards, Some(2));

    let mut grown = jq.clone();
    grown.spec.shards = 4;
    let grown = settle(grown, &ctx, &api).await;
    assert!(
        nodes.model().calls.contains(&"grow_shards 4".to_string()),
        "{:?}",
        nodes.model().calls
    );
    let status = grown.status.clone().unwrap();
    assert_eq!(status.shards.len(), 4, "{status:?}");
    assert_eq!(status.initial_shards, Some(2));
    assert!(event_reasons(&api.lock().unwrap().sent).contains(&"ShardsGrown".to_string()));
    // Every pod's config keeps the count the queue was created with.
    let sent = api.lock().unwrap().sent.clone();
    let last_config: Vec<Sent> = sent
        .iter()
        .rev()
        .filter(|s| s.path.ends_with("/configmaps/orders-config"))
        .take(1)
        .cloned()
        .collect();
    let yaml = applied_node_yaml(&last_config);
    assert!(yaml.contains("shards: 2"), "{yaml}");

    // Fewer shards than the cluster has: refused with a reason, no call.
    let calls = nodes.model().calls.len();
    let mut shrunk = grown.clone();
    shrunk.spec.shards = 3;
    reconcile(Arc::new(shrunk), ctx).await.expect("reconcile");
    let status = last_status(&api.lock().unwrap().sent);
    let degraded = condition(&status, "Degraded");
    assert!(degraded.message.contains("only grows"), "{degraded:?}");
    assert_eq!(nodes.model().calls.len(), calls);
}

#[tokio::test]
async fn a_shard_count_change_is_refused_and_the_cluster_left_alone() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1], 2);
    let ctx = context(client, nodes.clone());
    mark_ready(&api, 1);
    let jq = settle(finalized(queue(1, 2)), &ctx, &api).await;
    let calls = nodes.model().calls.len();
    let mut changed = jq.clone();
    changed.spec.shards = 4;
    reconcile(Arc::new(changed), ctx).await.expect("reconcile");
    let status = last_status(&api.lock().unwrap().sent);
    let degraded = condition(&status, "Degraded");
    assert!(
        degraded.message.contains("set it back to 2"),
        "{degraded:?}"
    );
    assert_eq!(nodes.model().calls.len(), calls);
}

#[test]
fn failed_reconciles_back_off_up_to_five_minutes() {
    use raftq_operator::reconcile::retry_delay;
    use std::time::Duration;
    assert_eq!(retry_delay(1), Duration::from_secs(5));
    assert_eq!(retry_delay(2), Duration::from_secs(10));
    assert_eq!(retry_delay(4), Duration::from_secs(40));
    assert_eq!(retry_delay(30), Duration::from_secs(300));
}

#[test]
fn a_bad_spec_is_rejected_by_the_schema_with_a_reason() {
    let crd = serde_json::to_value(<JobQueue as kube::CustomResourceExt>::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"];
    assert_eq!(spec["replicas"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(spec["replicas"]["maximum"].as_f64(), Some(99.0));
    let spec_rules = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["x-kubernetes-validations"]
        .to_string();
    assert!(
        spec_rules.contains("self.replicas % 2 == 1") && spec_rules.contains("must be odd"),
        "{spec_rules}"
    );
    assert!(
        spec_rules.contains("replicationFactor is fixed at creation"),
        "{spec_rules}"
    );
    assert!(spec["replicationFactor"]["x-kubernetes-validations"]
        .to_string()
        .contains("must be 1, 3 or 5"));
    assert_eq!(spec["shards"]["maximum"].as_f64(), Some(64.0));
    assert!(
        spec_rules.contains("shards can only grow, and only with replicationFactor"),
        "{spec_rules}"
    );
    assert_eq!(spec["durability"]["enum"], json!(["fsync", "async"]));
}

/// The object the API server stores at `path` (under namespace `shop`).
fn stored(api: &Arc<Mutex<ApiState>>, path: &str) -> Option<Value> {
    api.lock()
        .unwrap()
        .objects
        .get(&format!("/api/v1/namespaces/shop/{path}"))
        .cloned()
}

/// The node config of the first ConfigMap apply.
fn applied_node_yaml(sent: &[Sent]) -> String {
    sent.iter()
        .find(|s| s.path.ends_with("/configmaps/orders-config"))
        .expect("a ConfigMap apply")
        .body["data"]["node.yaml"]
        .as_str()
        .expect("node.yaml")
        .to_string()
}

/// The pod volumes of the last StatefulSet apply, as JSON text.
fn applied_volumes(sent: &[Sent]) -> String {
    sent.iter()
        .rev()
        .find(|s| s.is(Method::PATCH, "/statefulsets/orders"))
        .expect("a StatefulSet apply")
        .body["spec"]["template"]["spec"]["volumes"]
        .to_string()
}

/// Stores Secret `name` with `data` (key → text), as a user or
/// cert-manager would create it.
fn put_secret(api: &Arc<Mutex<ApiState>>, name: &str, data: &[(&str, &str)]) {
    use base64::Engine;
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    api.lock().unwrap().objects.insert(
        format!("/api/v1/namespaces/shop/secrets/{name}"),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": name, "namespace": "shop"}, "data": data}),
    );
}

fn secret_text(secret: &Value, key: &str) -> String {
    use base64::Engine;
    let b64 = secret["data"][key].as_str().unwrap_or_default();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default(),
    )
    .unwrap()
}

fn with_spec(spec: Value) -> JobQueue {
    let mut jq = finalized(queue(1, 1));
    let mut full = json!({"replicas": 1, "shards": 1});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    jq.spec = serde_json::from_value(full).unwrap();
    jq
}

#[tokio::test]
async fn operator_managed_tls_issues_once_mounts_the_secrets_and_renews_when_due() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1], 1);
    let ctx = context(client, nodes.clone());
    let jq = finalized(queue(1, 1));
    reconcile(Arc::new(jq.clone()), ctx.clone())
        .await
        .expect("reconcile");

    let ca = stored(&api, "secrets/orders-ca").expect("the CA Secret");
    let ca_pem = secret_text(&ca, "ca.crt");
    assert!(ca_pem.contains("BEGIN CERTIFICATE"));
    assert!(secret_text(&ca, "ca.key").contains("PRIVATE KEY"));
    for name in ["orders-tls", "orders-operator"] {
        let s = stored(&api, &format!("secrets/{name}")).expect(name);
        assert_eq!(secret_text(&s, "ca.crt"), ca_pem, "{name} names its CA");
        assert!(secret_text(&s, "tls.key").contains("PRIVATE KEY"));
        assert!(s["metadata"]["annotations"]["raftq.dev/not-after"].is_string());
        assert_eq!(s["metadata"]["ownerReferences"][0]["name"], "orders");
    }
    let bundle = stored(&api, "configmaps/orders-ca-bundle").expect("the CA bundle");
    assert_eq!(bundle["data"]["ca.crt"], ca_pem.as_str());
    let admin = stored(&api, "secrets/orders-admin").expect("the admin Secret");
    let token = secret_text(&admin, "token");
    assert!(token.starts_with("rq_"), "{token}");
    let auth = stored(&api, "secrets/orders-auth").expect("the auth Secret");
    let principals = secret_text(&auth, "operator.yaml");
    assert!(principals.contains("raftq-operator"));
    assert!(!principals.contains(&token), "only the token's hash");

    // The pods mount them and the node config points at them.
    let sent = api.lock().unwrap().sent.clone();
    let volumes = applied_volumes(&sent);
    assert!(
        volumes.contains("\"secretName\":\"orders-tls\"")
            && volumes.contains("\"secretName\":\"orders-auth\""),
        "{volumes}"
    );
    let node_yaml = applied_node_yaml(&sent);
    for line in [
        "cert_file: /etc/raftq/tls/tls.crt",
        "ca_file: /etc/raftq/tls/ca.crt",
        "client_certs: optional",
        "'*.orders-peers.shop.svc'",
        "/etc/raftq/auth/operator.yaml",
        "require_auth: true",
    ] {
        assert!(node_yaml.contains(line), "{line} in {node_yaml}");
    }
    let status = last_status(&sent);
    let certs = condition(&status, "CertificatesReady");
    assert_eq!(
        (certs.status.as_str(), certs.reason.as_str()),
        ("True", "Issued")
    );

    // Another reconcile issues nothing: same CA, same certificates.
    let node_cert = secret_text(&stored(&api, "secrets/orders-tls").unwrap(), "tls.crt");
    let before = api.lock().unwrap().sent.len();
    reconcile(Arc::new(jq.clone()), ctx.clone())
        .await
        .expect("reconcile");
    let sent = api.lock().unwrap().sent[before..].to_vec();
    assert!(!event_reasons(&sent).contains(&"CertificateIssued".to_string()));
    assert_eq!(
        secret_text(&stored(&api, "secrets/orders-tls").unwrap(), "tls.crt"),
        node_cert
    );
    assert_eq!(
        secret_text(&stored(&api, "secrets/orders-admin").unwrap(), "token"),
        token,
        "the admin token is made once"
    );

    // Within 30 days of expiry: a new node certificate, an event, the CA kept.
    {
        let mut state = api.lock().unwrap();
        let tls = state
            .objects
            .get_mut("/api/v1/namespaces/shop/secrets/orders-tls")
            .unwrap();
        let soon = k8s_openapi::jiff::Timestamp::now()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_hours(24 * 10))
            .unwrap();
        tls["metadata"]["annotations"]["raftq.dev/not-after"] =
            json!(raftq_operator::certs::Day::of(soon).to_string());
    }
    let before = api.lock().unwrap().sent.len();
    reconcile(Arc::new(jq), ctx).await.expect("reconcile");
    let sent = api.lock().unwrap().sent[before..].to_vec();
    let renewed: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.path.ends_with("/events") && s.body["reason"] == "CertificateIssued")
        .collect();
    assert_eq!(renewed.len(), 1, "only the node certificate: {renewed:?}");
    assert!(
        renewed[0].body["note"]
            .as_str()
            .unwrap()
            .contains("orders-tls (it expires on"),
        "{:?}",
        renewed[0].body["note"]
    );
    let renewed_tls = stored(&api, "secrets/orders-tls").unwrap();
    assert_ne!(secret_text(&renewed_tls, "tls.crt"), node_cert);
    assert_eq!(secret_text(&renewed_tls, "ca.crt"), ca_pem);
}

#[tokio::test]
async fn cert_manager_certificates_are_applied_and_the_nodes_wait_for_their_secrets() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1], 1);
    let ctx = context(client, nodes.clone());
    let jq = with_spec(json!({"tls": {
        "mode": "certManager", "issuerRef": {"name": "corp", "kind": "ClusterIssuer"}
    }}));
    reconcile(Arc::new(jq.clone()), ctx.clone())
        .await
        .expect("reconcile");
    let sent = api.lock().unwrap().sent.clone();
    for name in ["orders-tls", "orders-operator"] {
        let cert = sent
            .iter()
            .find(|s| {
                s.is(
                    Method::PATCH,
                    &format!("/apis/cert-manager.io/v1/namespaces/shop/certificates/{name}"),
                )
            })
            .unwrap_or_else(|| panic!("no Certificate {name}: {sent:?}"));
        assert_eq!(cert.body["spec"]["issuerRef"]["name"], "corp");
        assert_eq!(cert.body["spec"]["secretName"], name);
    }
    assert!(
        stored(&api, "secrets/orders-ca").is_none(),
        "no CA of our own"
    );
    assert!(nodes.model().calls.is_empty(), "no node called without TLS");
    let status = last_status(&sent);
    let certs = condition(&status, "CertificatesReady");
    assert_eq!(
        (certs.status.as_str(), certs.reason.as_str()),
        ("False", "WaitingForIssuer")
    );
    assert_eq!(status.phase, "Pending");

    // cert-manager fills the Secrets: the nodes are called, over TLS.
    let ca = raftq_operator::certs::new_ca(
        "corp",
        raftq_operator::certs::Day::of(k8s_openapi::jiff::Timestamp::now()),
    )
    .unwrap();
    for name in ["orders-tls", "orders-operator"] {
        put_secret(
            &api,
            name,
            &[
                ("tls.crt", &ca.cert_pem),
                ("tls.key", &ca.key_pem),
                ("ca.crt", &ca.cert_pem),
            ],
        );
    }
    reconcile(Arc::new(jq), ctx).await.expect("reconcile");
    assert_eq!(nodes.model().calls, ["initialize 1"]);
    let status = last_status(&api.lock().unwrap().sent);
    assert_eq!(condition(&status, "CertificatesReady").status, "True");
}

#[tokio::test]
async fn cert_manager_mode_without_cert_manager_says_so() {
    let (client, api) = mock_client();
    api.lock()
        .unwrap()
        .missing_kinds
        .push("/cert-manager.io/".into());
    let ctx = context(client, FakeNodes::new([1], 1));
    let jq = with_spec(json!({"tls": {"mode": "certManager", "issuerRef": {"name": "corp"}}}));
    reconcile(Arc::new(jq), ctx).await.expect("reconcile");
    let status = last_status(&api.lock().unwrap().sent);
    let certs = condition(&status, "CertificatesReady");
    assert_eq!(certs.reason, "CertManagerMissing");
    assert!(certs.message.contains("install cert-manager"), "{certs:?}");
    assert_eq!(
        condition(&status, "Degraded").reason,
        "CertificatesNotReady"
    );
}

#[tokio::test]
async fn own_secrets_are_checked_for_every_key_before_the_nodes_are_called() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1], 1);
    let ctx = context(client, nodes.clone());
    let jq = with_spec(json!({"tls": {
        "mode": "secret", "secretName": "my-tls", "caSecretName": "my-ca",
        "operatorSecretName": "my-operator"
    }}));
    reconcile(Arc::new(jq.clone()), ctx.clone())
        .await
        .expect("reconcile");
    let status = last_status(&api.lock().unwrap().sent);
    let certs = condition(&status, "CertificatesReady");
    assert_eq!(certs.reason, "SecretMissing");
    for key in ["my-tls/tls.crt", "my-operator/tls.key", "my-ca/ca.crt"] {
        assert!(certs.message.contains(key), "{key}: {certs:?}");
    }
    assert!(nodes.model().calls.is_empty());
    let sent = api.lock().unwrap().sent.clone();
    let volumes = applied_volumes(&sent);
    assert!(
        volumes.contains("\"secretName\":\"my-tls\"")
            && volumes.contains("\"secretName\":\"my-ca\""),
        "the user's Secrets are mounted: {volumes}"
    );

    let ca = raftq_operator::certs::new_ca(
        "mine",
        raftq_operator::certs::Day::of(k8s_openapi::jiff::Timestamp::now()),
    )
    .unwrap();
    let pair = [
        ("tls.crt", ca.cert_pem.as_str()),
        ("tls.key", ca.key_pem.as_str()),
    ];
    put_secret(&api, "my-tls", &pair);
    put_secret(&api, "my-operator", &pair);
    put_secret(&api, "my-ca", &[("ca.crt", &ca.cert_pem)]);
    reconcile(Arc::new(jq), ctx).await.expect("reconcile");
    assert_eq!(nodes.model().calls, ["initialize 1"]);
    let status = last_status(&api.lock().unwrap().sent);
    assert_eq!(condition(&status, "CertificatesReady").reason, "Provided");
}

#[tokio::test]
async fn insecure_mode_touches_no_secret_and_calls_the_nodes_in_plaintext() {
    let (client, api) = mock_client();
    let nodes = FakeNodes::new([1], 1);
    nodes.model().plaintext = true;
    let ctx = context(client, nodes.clone());
    let jq = with_spec(json!({
        "tls": {"mode": "disabled", "allowInsecure": true}, "auth": {"enabled": false}
    }));
    reconcile(Arc::new(jq), ctx).await.expect("reconcile");
    let sent = api.lock().unwrap().sent.clone();
    assert!(
        !sent.iter().any(|s| s.path.contains("/secrets")),
        "no Secret read or written: {sent:?}"
    );
    assert_eq!(nodes.model().calls, ["initialize 1"]);
    let status = last_status(&sent);
    assert!(status
        .conditions
        .iter()
        .all(|c| c.type_ != "CertificatesReady"));
    let node_yaml = applied_node_yaml(&sent);
    assert!(
        !node_yaml
            .lines()
            .any(|l| l.starts_with("tls:") || l.starts_with("auth:")),
        "{node_yaml}"
    );
    assert!(node_yaml.contains("require_auth: false"), "{node_yaml}");
}

#[tokio::test]
async fn a_missing_or_bad_user_principals_secret_is_reported() {
    let (client, api) = mock_client();
    let ctx = context(client, FakeNodes::new([1], 1));
    let jq = with_spec(json!({"auth": {"secretRef": {"name": "team-principals"}}}));
    reconcile(Arc::new(jq.clone()), ctx.clone())
        .await
        .expect("reconcile");
    let sent = api.lock().unwrap().sent.clone();
    assert!(event_reasons(&sent).contains(&"AuthSecretInvalid".to_string()));
    let degraded = condition(&last_status(&sent), "Degraded").clone();
    assert_eq!(degraded.reason, "AuthSecretInvalid");
    assert!(degraded.message.contains("team-principals"), "{degraded:?}");
    let node_yaml = applied_node_yaml(&sent);
    assert!(
        node_yaml.contains("/etc/raftq/users/principals.yaml"),
        "{node_yaml}"
    );

    put_secret(
        &api,
        "team-principals",
        &[(
            "principals.yaml",
            "principals:\n- name: billing\n  grants: [{role: consume, queues: ['billing.*']}]\n",
        )],
    );
    let before = api.lock().unwrap().sent.len();
    reconcile(Arc::new(jq), ctx).await.expect("reconcile");
    let sent = api.lock().unwrap().sent[before..].to_vec();
    assert!(!event_reasons(&sent).contains(&"AuthSecretInvalid".to_string()));
    assert_ne!(
        condition(&last_status(&sent), "Degraded").reason,
        "AuthSecretInvalid"
    );
}

#[tokio::test]
async fn a_service_monitor_is_applied_when_its_kind_exists_and_deleted_when_turned_off() {
    let (client, api) = mock_client();
    let ctx = context(client, FakeNodes::new([1], 1));
    let path = "/apis/monitoring.coreos.com/v1/namespaces/shop/servicemonitors/orders";
    let jq = with_spec(json!({
        "replicas": 1,
        "monitoring": {"serviceMonitor": {"interval": "10s", "labels": {"release": "prom"}}}
    }));
    reconcile(Arc::new(jq), ctx.clone())
        .await
        .expect("reconcile");
    let sent = api.lock().unwrap().sent.clone();
    let apply = sent
        .iter()
        .find(|s| s.is(Method::PATCH, path))
        .unwrap_or_else(|| panic!("no ServiceMonitor apply: {sent:?}"));
    assert_eq!(apply.body["metadata"]["labels"]["release"], "prom");
    assert_eq!(apply.body["spec"]["endpoints"][0]["interval"], "10s");

    let jq =
        with_spec(json!({"replicas": 1, "monitoring": {"serviceMonitor": {"enabled": false}}}));
    reconcile(Arc::new(jq), ctx).await.expect("reconcile");
    let sent = api.lock().unwrap().sent.clone();
    assert!(sent.iter().any(|s| s.is(Method::DELETE, path)), "{sent:?}");
}

#[tokio::test]
async fn without_the_prometheus_operator_the_queue_reconciles_all_the_same() {
    let (client, api) = mock_client();
    api.lock()
        .unwrap()
        .missing_kinds
        .push("/monitoring.coreos.com/".into());
    let ctx = context(client, FakeNodes::new([1], 1));
    reconcile(Arc::new(with_spec(json!({"replicas": 1}))), ctx)
        .await
        .expect("a missing ServiceMonitor kind is no error");
    let sent = api.lock().unwrap().sent.clone();
    assert!(sent.iter().any(|s| s.path.contains("/servicemonitors/")));
    assert!(sent
        .iter()
        .any(|s| s.is(Method::PATCH, "/jobqueues/orders/status")));
}
