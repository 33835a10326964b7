//! The failure domain of each queue node: the `topology.kubernetes.io/zone`
//! label of the Kubernetes Node its pod runs on. A placed queue declares
//! its nodes with their zones, and placement spreads each shard's
//! replicas over as many zones as there are.
//!
//! [`zones_of`] is pure; [`observe`] reads the pods and their Nodes.
//! Owns nothing else; changes nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::crd::JobQueue;

/// The well-known label of a Node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Node id → zone of each pod of `stateful_set` bound to a Node that
/// carries the zone label (`nodes`: Node name → its zone label).
pub fn zones_of(
    stateful_set: &str,
    pods: &[Pod],
    nodes: &BTreeMap<String, String>,
) -> BTreeMap<u64, String> {
    pods.iter()
        .filter_map(|pod| {
            let ordinal: u32 = pod
                .name_any()
                .strip_prefix(stateful_set)?
                .strip_prefix('-')?
                .parse()
                .ok()?;
            let node = pod.spec.as_ref()?.node_name.as_ref()?;
            let zone = nodes.get(node)?;
            Some((crate::membership::node_id(ordinal), zone.clone()))
        })
        .collect()
}

/// The zones of the queue's pods, read from the API server.
pub async fn observe(client: &Client, jq: &JobQueue) -> Result<BTreeMap<u64, String>, kube::Error> {
    let ns = jq.namespace().unwrap_or_default();
    let selector = crate::objects::selector_labels(jq)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let api: Api<Node> = Api::all(client.clone());
    let mut nodes = BTreeMap::new();
    for name in pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
    {
        if nodes.contains_key(&name) {
            continue;
        }
        if let Some(zone) = api
            .get_opt(&name)
            .await?
            .and_then(|n| n.labels().get(ZONE_LABEL).cloned())
        {
            nodes.insert(name, zone);
        }
    }
    Ok(zones_of(
        &crate::objects::names(jq).stateful_set,
        &pods,
        &nodes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: node.map(str::to_owned),
            ..Default::default()
        });
        pod
    }

    #[test]
    fn each_pod_gets_its_nodes_zone() {
        let pods = [
            pod("orders-0", Some("a1")),
            pod("orders-1", Some("b1")),
            pod("orders-2", None),
            pod("orders-3", Some("unlabelled")),
            pod("orders-x", Some("a1")),
            pod("other-0", Some("a1")),
        ];
        let nodes = BTreeMap::from([
            ("a1".to_string(), "zone-a".to_string()),
            ("b1".to_string(), "zone-b".to_string()),
        ]);
        assert_eq!(
            zones_of("orders", &pods, &nodes),
            BTreeMap::from([(1, "zone-a".to_string()), (2, "zone-b".to_string())])
        );
    }
}
