//! The operator against a real Kubernetes control plane (etcd,
//! kube-apiserver, kube-controller-manager from `../shared/k8s/`), run as
//! its own process with its CRD installed the way a user installs it.
//!
//! What a mocked API server cannot show: that a new JobQueue is reconciled
//! at all (the watch filter and the finalizer write), that a deleted owned
//! object comes back at once, and that a stopping operator releases its
//! leader Lease. Skipped, with a message, where the control plane is not
//! there (set `RAFTQ_K8S_DIR` to its folder, or keep it at `../shared/k8s`
//! beside the checkout).

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use raftq_operator::crd::JobQueue;
use support::{example, install_crd, wait_for, ControlPlane, Operator};

/// Create → reconciled (no later edit needed); a deleted owned Service and
/// ConfigMap come back well before the idle requeue; SIGTERM releases the
/// Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_on_a_real_api_server() {
    let Some(plane) = ControlPlane::up() else {
        return;
    };
    let client = plane.client().await;
    install_crd(&client).await;
    let operator = Operator::start(&plane, "operator-a");

    let queues: Api<JobQueue> = Api::namespaced(client.clone(), "default");
    queues
        .create(&PostParams::default(), &example("dev-jobqueue.yaml", "dev"))
        .await
        .expect("create the JobQueue");

    // A new JobQueue is reconciled on its own: the StatefulSet appears and
    // a status is written, without any later edit of the spec.
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    wait_for(
        "the StatefulSet of a new JobQueue",
        Duration::from_secs(30),
        || async { sets.get_opt("dev").await.ok().flatten() },
    )
    .await;
    let phase = wait_for("a status phase", Duration::from_secs(30), || async {
        let jq = queues.get("dev").await.ok()?;
        jq.status.map(|s| s.phase).filter(|p| !p.is_empty())
    })
    .await;
    assert_ne!(
        phase, "Running",
        "no pods run here, yet the status says Running"
    );

    // Owned objects are watched: a deleted Service and ConfigMap come back
    // at once (the idle requeue is 60 s; 20 s tells the two apart).
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let old_uid = services
        .get("dev")
        .await
        .expect("client Service")
        .metadata
        .uid;
    services
        .delete("dev", &DeleteParams::default())
        .await
        .expect("delete the client Service");
    wait_for(
        "the client Service to come back",
        Duration::from_secs(20),
        || async {
            let svc = services.get_opt("dev").await.ok().flatten()?;
            (svc.metadata.uid != old_uid && svc.metadata.deletion_timestamp.is_none()).then_some(())
        },
    )
    .await;
    let old_uid = maps
        .get("dev-config")
        .await
        .expect("ConfigMap")
        .metadata
        .uid;
    maps.delete("dev-config", &DeleteParams::default())
        .await
        .expect("delete the ConfigMap");
    wait_for(
        "the ConfigMap to come back",
        Duration::from_secs(20),
        || async {
            let map = maps.get_opt("dev-config").await.ok().flatten()?;
            (map.metadata.uid != old_uid).then_some(())
        },
    )
    .await;

    // A graceful stop releases the leader Lease: a standby need not wait
    // for it to expire.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let held = leases
        .get("raftq-operator-leader")
        .await
        .expect("the leader Lease");
    assert_eq!(
        held.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("operator-a")
    );
    let status = operator.stop();
    assert!(status.success(), "the operator exited with {status}");
    let released = leases
        .get("raftq-operator-leader")
        .await
        .expect("the leader Lease");
    assert_eq!(
        released.spec.and_then(|s| s.holder_identity),
        None,
        "the Lease still names a holder after a graceful stop"
    );

    // A second operator takes over at once and reconciles a new JobQueue.
    let _standby = Operator::start(&plane, "operator-b");
    queues
        .create(
            &PostParams::default(),
            &example("dev-jobqueue.yaml", "second"),
        )
        .await
        .expect("create a second JobQueue");
    wait_for(
        "the second JobQueue's StatefulSet",
        Duration::from_secs(30),
        || async { sets.get_opt("second").await.ok().flatten() },
    )
    .await;

    // Deleting a JobQueue runs the finalizer and removes it.
    queues
        .delete("second", &DeleteParams::default())
        .await
        .expect("delete the JobQueue");
    wait_for(
        "the deleted JobQueue to go",
        Duration::from_secs(30),
        || async {
            queues
                .get_opt("second")
                .await
                .ok()
                .and_then(|q| q.is_none().then_some(()))
        },
    )
    .await;
}
