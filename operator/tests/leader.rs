//! Leader election over a Lease, against a mocked API server: take a free
//! lease, renew our own, respect another holder's live lease, take over an
//! expired one, and lose a race (409) without error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::client::Body;
use kube::{Api, Client};
use raftq_operator::leader::LeaseLock;
use raftq_operator::metrics::Metrics;
use serde_json::{json, Value};

/// The fake API server's one Lease, and whether the next write conflicts.
#[derive(Default)]
struct LeaseServer {
    lease: Option<Value>,
    conflict_next_write: bool,
    writes: Vec<Method>,
}

fn mock(state: Arc<Mutex<LeaseServer>>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let bytes = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, reply) = {
                let mut s = state.lock().unwrap();
                match method {
                    Method::GET => match &s.lease {
                        Some(l) => (StatusCode::OK, l.clone()),
                        None => (
                            StatusCode::NOT_FOUND,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                        ),
                    },
                    _ => {
                        s.writes.push(method.clone());
                        if std::mem::take(&mut s.conflict_next_write) {
                            (
                                StatusCode::CONFLICT,
                                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409}),
                            )
                        } else {
                            s.lease = Some(body.clone());
                            (StatusCode::OK, body)
                        }
                    }
                }
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    Client::new(service, "raftq-system")
}

fn lock(client: Client, holder: &str) -> LeaseLock {
    LeaseLock {
        api: Api::namespaced(client, "raftq-system"),
        name: "raftq-operator-leader".into(),
        holder: holder.into(),
        duration: Duration::from_secs(15),
    }
}

fn lease_held_by(holder: &str, renewed: Timestamp) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "raftq-operator-leader", "namespace": "raftq-system", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "renewTime": renewed.to_string(), "leaseTransitions": 3},
    })
}

#[tokio::test]
async fn a_free_lease_is_taken_and_then_renewed() {
    let state = Arc::new(Mutex::new(LeaseServer::default()));
    let me = lock(mock(state.clone()), "operator-a");
    assert!(me.try_acquire().await.expect("acquire"));
    assert!(me.try_acquire().await.expect("renew"));
    let s = state.lock().unwrap();
    assert_eq!(s.writes, [Method::POST, Method::PUT]);
    assert_eq!(
        s.lease.as_ref().unwrap()["spec"]["holderIdentity"],
        "operator-a"
    );
}

#[tokio::test]
async fn another_holders_live_lease_is_respected() {
    let state = Arc::new(Mutex::new(LeaseServer {
        lease: Some(lease_held_by("operator-b", Timestamp::now())),
        ..LeaseServer::default()
    }));
    let me = lock(mock(state.clone()), "operator-a");
    assert!(!me.try_acquire().await.expect("try"));
    assert!(
        state.lock().unwrap().writes.is_empty(),
        "no write to a live lease"
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_counted() {
    let expired = Timestamp::now() - SignedDuration::from_secs(60);
    let state = Arc::new(Mutex::new(LeaseServer {
        lease: Some(lease_held_by("operator-b", expired)),
        ..LeaseServer::default()
    }));
    let me = lock(mock(state.clone()), "operator-a");
    assert!(me.try_acquire().await.expect("take over"));
    let s = state.lock().unwrap();
    let spec = &s.lease.as_ref().unwrap()["spec"];
    assert_eq!(spec["holderIdentity"], "operator-a");
    assert_eq!(spec["leaseTransitions"], 4);
}

#[tokio::test]
async fn losing_the_race_is_not_an_error() {
    let state = Arc::new(Mutex::new(LeaseServer {
        conflict_next_write: true,
        ..LeaseServer::default()
    }));
    let me = lock(mock(state.clone()), "operator-a");
    assert!(!me.try_acquire().await.expect("conflict is a plain no"));
}

#[test]
fn metrics_count_reconciles_failures_and_steps() {
    let m = Metrics::default();
    m.reconciled(Duration::from_millis(12), None);
    m.reconciled(
        Duration::from_millis(3),
        Some(&raftq_operator::Error::NodeAdmin("down".into())),
    );
    m.membership_step("NodeAdded");
    m.leading.set(1);
    let text = m.render();
    assert!(text.contains("raftq_operator_reconciles_total 2"), "{text}");
    assert!(
        text.contains("raftq_operator_reconcile_failures_total{error=\"node_admin\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("raftq_operator_membership_steps_total{step=\"NodeAdded\"} 1"),
        "{text}"
    );
    assert!(text.contains("raftq_operator_leading 1"), "{text}");
    assert_eq!(m.failures("node_admin"), 1);
}
