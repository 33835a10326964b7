//! The operator's ServiceMonitor on a real API server: none while the
//! Prometheus Operator's CRD is missing (and the JobQueue still
//! reconciles); created once the CRD is installed (`tests/prometheus/`,
//! the Prometheus Operator's own), valid against its schema, selecting the
//! client Service alone; deleted when the JobQueue turns it off. Skipped,
//! with a message, where the control plane is not there.

mod support;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::Api;
use raftq_operator::crd::JobQueue;
use support::{example, install_crd, wait_for, ControlPlane, Operator};

fn selects(selector: &serde_json::Value, service: &Service) -> bool {
    let labels = service.metadata.labels.clone().unwrap_or_default();
    selector["matchLabels"]
        .as_object()
        .expect("matchLabels")
        .iter()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_monitor_follows_the_prometheus_operator_crd_and_the_spec() {
    let Some(plane) = ControlPlane::up() else {
        return;
    };
    let client = plane.client().await;
    install_crd(&client).await;
    let _operator = Operator::start(&plane, "operator-a");

    let queues: Api<JobQueue> = Api::namespaced(client.clone(), "default");
    let mut jq = example("dev-jobqueue.yaml", "metered");
    jq.spec.monitoring.service_monitor.interval = "15s".into();
    jq.spec
        .monitoring
        .service_monitor
        .labels
        .insert("release".into(), "prometheus".into());
    queues
        .create(&PostParams::default(), &jq)
        .await
        .expect("create the JobQueue");
    // Without the Prometheus Operator the JobQueue reconciles all the same.
    wait_for("a status phase", Duration::from_secs(30), || async {
        let jq = queues.get("metered").await.ok()?;
        jq.status.map(|s| s.phase).filter(|p| !p.is_empty())
    })
    .await;

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/prometheus/monitoring.coreos.com_servicemonitors.yaml"),
    )
    .expect("the ServiceMonitor CRD");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("CRD yaml");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("install the ServiceMonitor CRD");

    // The next reconcile creates it; the server checked it against the
    // Prometheus Operator's schema.
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
    ));
    let monitors: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let monitor = wait_for(
        "the operator's ServiceMonitor",
        Duration::from_secs(90),
        || async { monitors.get_opt("metered").await.ok().flatten() },
    )
    .await;
    let owner = &monitor.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("JobQueue", "metered")
    );
    let labels = monitor.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["release"], "prometheus", "the spec's labels");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "raftq-operator");
    let spec = &monitor.data["spec"];
    assert_eq!(spec["endpoints"][0]["port"], "metrics");
    assert_eq!(spec["endpoints"][0]["interval"], "15s");
    assert_eq!(spec["namespaceSelector"]["matchNames"][0], "default");

    // It selects the client Service, which has the `metrics` port, and
    // not the peer Service with the same app labels.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let client_service = services.get("metered").await.expect("client Service");
    let peer_service = services.get("metered-peers").await.expect("peer Service");
    assert!(selects(&spec["selector"], &client_service));
    assert!(!selects(&spec["selector"], &peer_service));
    assert!(client_service
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .any(|p| p.name.as_deref() == Some("metrics")));

    // Turned off in the spec: the operator deletes it.
    queues
        .patch(
            "metered",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": {"monitoring": {"serviceMonitor": {"enabled": false}}}
            })),
        )
        .await
        .expect("turn the ServiceMonitor off");
    wait_for(
        "the ServiceMonitor to be deleted",
        Duration::from_secs(60),
        || async {
            monitors
                .get_opt("metered")
                .await
                .ok()
                .and_then(|m| m.is_none().then_some(()))
        },
    )
    .await;

    // A bad interval is refused by the CRD's schema with a reason.
    let refused = queues
        .patch(
            "metered",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": {"monitoring": {"serviceMonitor": {"interval": "soon"}}}
            })),
        )
        .await
        .expect_err("an interval that is no duration");
    assert!(
        refused.to_string().contains("interval"),
        "the refusal names the field: {refused}"
    );
}
