//! `examples/keda-scaledobject.yaml` on a real API server with KEDA's own
//! CRDs installed (`tests/keda/`, copied from KEDA v2.21.0): the server
//! takes the ScaledObject and TriggerAuthentication as written, and refuses
//! the mistakes a user makes with them (KEDA's metadata values are strings).
//! The scaler service itself is tested over gRPC in
//! `queue-node/tests/keda.rs`. Skipped, with a message, where the control
//! plane is not there.

mod support;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::Api;
use serde::Deserialize;
use support::{wait_for, ControlPlane};

fn keda(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("keda.sh", "v1alpha1", kind))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keda_example_is_a_valid_scaled_object_on_a_real_api_server() {
    let Some(plane) = ControlPlane::up() else {
        return;
    };
    let client = plane.client().await;
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in [
        "keda.sh_scaledobjects.yaml",
        "keda.sh_triggerauthentications.yaml",
    ] {
        let text = std::fs::read_to_string(here.join("tests/keda").join(file)).unwrap();
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        crds.create(&PostParams::default(), &crd)
            .await
            .unwrap_or_else(|e| panic!("install {file}: {e}"));
        wait_for(
            "KEDA's CRD to be established",
            Duration::from_secs(30),
            || {
                let (crds, name) = (crds.clone(), name.clone());
                async move {
                    let crd = crds.get(&name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let jobs: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "jobs"}
    }))
    .unwrap();
    namespaces
        .create(&PostParams::default(), &jobs)
        .await
        .unwrap();

    let example = std::fs::read_to_string(here.join("../examples/keda-scaledobject.yaml")).unwrap();
    let mut scaled_object = None;
    for doc in serde_yaml::Deserializer::from_str(&example) {
        let value = serde_yaml::Value::deserialize(doc).unwrap();
        let object: DynamicObject = serde_yaml::from_value(value).unwrap();
        let kind = object.types.as_ref().unwrap().kind.clone();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "jobs", &keda(&kind));
        // The server checks it against KEDA's schema, unknown fields included.
        let params = PostParams {
            field_manager: Some("raftq-test".into()),
            ..PostParams::default()
        };
        let created = api
            .create(&params, &object)
            .await
            .unwrap_or_else(|e| panic!("the API server refused the example's {kind}: {e}"));
        if kind == "ScaledObject" {
            scaled_object = Some(created);
        }
    }
    let created = scaled_object.expect("the example holds a ScaledObject");
    let trigger = &created.data["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "external-push");
    assert_eq!(trigger["metadata"]["queue"], "emails");
    assert_eq!(
        created.data["spec"]["minReplicaCount"], 0,
        "scales from zero"
    );

    // The mistakes KEDA's schema catches: a number where KEDA wants a
    // string, a trigger without a type, min above max.
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "jobs", &keda("ScaledObject"));
    let broken = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut object = created.clone();
        object.metadata = kube::api::ObjectMeta {
            name: Some("broken".into()),
            namespace: Some("jobs".into()),
            ..Default::default()
        };
        edit(&mut object.data);
        object
    };
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "a number for targetPerReplica",
            Box::new(|d| d["spec"]["triggers"][0]["metadata"]["targetPerReplica"] = 200.into()),
        ),
        (
            "a trigger without a type",
            Box::new(|d| {
                d["spec"]["triggers"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("type");
            }),
        ),
        (
            "minReplicaCount above maxReplicaCount",
            Box::new(|d| d["spec"]["minReplicaCount"] = 80.into()),
        ),
    ];
    for (what, edit) in cases {
        let refused = api.create(&PostParams::default(), &broken(&*edit)).await;
        match refused {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 422, "{what}: {e:?}"),
            other => panic!("{what}: accepted ({other:?})"),
        }
    }
}
