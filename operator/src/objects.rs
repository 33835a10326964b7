//! The Kubernetes objects a `JobQueue` owns, built by pure functions of the
//! resource: node config (ConfigMap), peer and client Services, the
//! StatefulSet and its PodDisruptionBudget. No API calls here.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction,
    HTTPGetAction, LifecycleHandler, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, SecretVolumeSource, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{ClientCerts, Durability, JobQueue, TlsMode};
use crate::Error;

/// Clients: `Queue`, `QueueAdmin`.
pub const GRPC_PORT: i32 = 7400;
/// Nodes and the operator: Raft, `ClusterAdmin`, forwarded requests.
pub const PEER_PORT: i32 = 7401;
pub const HTTP_PORT: i32 = 9400;
/// On the one Service that publishes the nodes' metrics port.
const METRICS_LABEL: &str = "raftq.dev/metrics";
/// Where the rendered node config is mounted in the pod.
const CONFIG_DIR: &str = "/etc/raftq/config";
const CONFIG_FILE: &str = "node.yaml";
/// The nodes' certificate, key and (usually) CA.
const TLS_DIR: &str = "/etc/raftq/tls";
/// The CA, when it comes from a Secret of its own (`tls.caSecretName`).
const CA_DIR: &str = "/etc/raftq/ca";
/// The operator's principals (itself and the starter admin).
const AUTH_DIR: &str = "/etc/raftq/auth";
/// The user's principals (`auth.secretRef`).
const USERS_DIR: &str = "/etc/raftq/users";
/// The principals file in the operator's auth Secret, and in a user's.
pub const OPERATOR_PRINCIPALS_KEY: &str = "operator.yaml";
pub const USER_PRINCIPALS_KEY: &str = "principals.yaml";
const DATA_DIR: &str = "/var/lib/raftq";
/// Changes when the node config changes, so the StatefulSet rolls its pods.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "raftq.dev/config-checksum";
/// The image used when the spec names none: the release matching this operator.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/raftq/queue-node:", env!("CARGO_PKG_VERSION"));

/// Names of the objects one `JobQueue` owns.
pub struct Names {
    pub config_map: String,
    pub peer_service: String,
    pub client_service: String,
    pub stateful_set: String,
    pub pdb: String,
    pub network_policy: String,
    /// `operatorManaged`: the CA's certificate and key.
    pub ca_secret: String,
    /// `operatorManaged`, `certManager`: the nodes' certificate.
    pub tls_secret: String,
    /// `operatorManaged`, `certManager`: the operator's client certificate.
    pub operator_secret: String,
    /// The starter admin token (and the CA, to connect with).
    pub admin_secret: String,
    /// The operator's principals file.
    pub auth_secret: String,
    /// The CA certificate for clients (public; a ConfigMap to mount).
    pub ca_bundle: String,
}

pub fn names(jq: &JobQueue) -> Names {
    let name = jq.name_any();
    Names {
        config_map: format!("{name}-config"),
        peer_service: format!("{name}-peers"),
        client_service: name.clone(),
        stateful_set: name.clone(),
        network_policy: format!("{name}-peers"),
        ca_secret: format!("{name}-ca"),
        tls_secret: format!("{name}-tls"),
        operator_secret: format!("{name}-operator"),
        admin_secret: format!("{name}-admin"),
        auth_secret: format!("{name}-auth"),
        ca_bundle: format!("{name}-ca-bundle"),
        pdb: name,
    }
}

/// Where the nodes' TLS files come from: the Secret with the certificate
/// and key, and the one with the CA when separate. `None`: TLS is off.
pub struct TlsSecrets {
    pub cert: String,
    pub ca: Option<String>,
}

pub fn tls_secrets(jq: &JobQueue) -> Option<TlsSecrets> {
    let tls = &jq.spec.tls;
    match tls.mode {
        TlsMode::Disabled => None,
        TlsMode::OperatorManaged | TlsMode::CertManager => Some(TlsSecrets {
            cert: names(jq).tls_secret,
            ca: None,
        }),
        TlsMode::Secret => Some(TlsSecrets {
            cert: tls.secret_name.clone().unwrap_or_default(),
            ca: tls.ca_secret_name.clone(),
        }),
    }
}

/// The domain every pod's peer name is under: `<name>-peers.<ns>.svc`.
pub fn peer_domain(jq: &JobQueue) -> String {
    let ns = jq.namespace().unwrap_or_else(|| "default".into());
    format!("{}.{ns}.svc", names(jq).peer_service)
}

/// The names a node certificate must be valid for: every pod (a
/// wildcard, so scaling needs no new certificate), the client Service,
/// and loopback (a `kubectl port-forward`, the preStop hook).
pub fn node_cert_names(jq: &JobQueue) -> Vec<String> {
    let ns = jq.namespace().unwrap_or_else(|| "default".into());
    let svc = names(jq).client_service;
    let peers = peer_domain(jq);
    vec![
        format!("*.{peers}"),
        format!("*.{peers}.cluster.local"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
        format!("{svc}.{ns}"),
        svc,
        "localhost".into(),
        "127.0.0.1".into(),
    ]
}

/// Selector labels shared by the pods and the Services that pick them.
pub fn selector_labels(jq: &JobQueue) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "raftq".to_string()),
        ("app.kubernetes.io/instance".to_string(), jq.name_any()),
        (
            "app.kubernetes.io/component".to_string(),
            "queue-node".to_string(),
        ),
    ])
}

fn labels_of(jq: &JobQueue) -> BTreeMap<String, String> {
    let mut labels = selector_labels(jq);
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "raftq-operator".to_string(),
    );
    labels
}

fn owner_reference(jq: &JobQueue) -> Result<OwnerReference, Error> {
    jq.controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidResource("the JobQueue has no uid yet".into()))
}

pub(crate) fn metadata(jq: &JobQueue, name: &str) -> Result<ObjectMeta, Error> {
    Ok(ObjectMeta {
        name: Some(name.to_string()),
        namespace: jq.namespace(),
        labels: Some(labels_of(jq)),
        owner_references: Some(vec![owner_reference(jq)?]),
        ..ObjectMeta::default()
    })
}

/// The peer address of pod `ordinal`: where other nodes and the operator
/// reach it.
pub fn node_addr(jq: &JobQueue, ordinal: u32) -> String {
    let n = names(jq);
    let ns = jq.namespace().unwrap_or_else(|| "default".into());
    format!(
        "{}-{ordinal}.{}.{ns}.svc:{PEER_PORT}",
        n.stateful_set, n.peer_service
    )
}

/// host:port of the client Service.
pub fn client_endpoint(jq: &JobQueue) -> String {
    let ns = jq.namespace().unwrap_or_else(|| "default".into());
    format!("{}.{ns}.svc:{GRPC_PORT}", names(jq).client_service)
}

/// The pods a placed queue was created with: recorded in its status once
/// it exists, so that a later change of `replicas` does not change every
/// pod's config (the pods added later join instead).
pub fn initial_member_count(jq: &JobQueue) -> i32 {
    jq.status
        .as_ref()
        .and_then(|s| s.initial_members)
        .unwrap_or(jq.spec.replicas)
        .max(1)
}

/// The shard count a placed queue was created with: every pod's config
/// keeps it (the count grows through the cluster's own routing, so a pod
/// restarted after a growth starts the same way and learns it).
pub fn initial_shard_count(jq: &JobQueue) -> i32 {
    jq.status
        .as_ref()
        .and_then(|s| s.initial_shards)
        .unwrap_or(jq.spec.shards)
        .max(1)
}

/// Node id → peer address of each pod the cluster was created with, as
/// each pod advertises itself.
fn initial_members(jq: &JobQueue) -> serde_yaml::Mapping {
    let n = names(jq);
    let domain = peer_domain(jq);
    (0..initial_member_count(jq) as u32)
        .map(|ordinal| {
            (
                serde_yaml::Value::from(crate::membership::node_id(ordinal)),
                serde_yaml::Value::from(format!(
                    "{}-{ordinal}.{domain}:{PEER_PORT}",
                    n.stateful_set
                )),
            )
        })
        .collect()
}

/// The queue-node config file (YAML) every pod of the queue reads. The
/// node id and advertised address differ per pod and come from the
/// environment instead.
pub fn node_config_yaml(jq: &JobQueue) -> Result<String, Error> {
    let s = &jq.spec;
    let q = &s.queue_defaults;
    let mut config = serde_json::json!({
        "data_dir": DATA_DIR,
        "listen": format!("0.0.0.0:{GRPC_PORT}"),
        "peer_listen": format!("0.0.0.0:{PEER_PORT}"),
        "http_listen": format!("0.0.0.0:{HTTP_PORT}"),
        // The operator bootstraps and grows the cluster through the admin API.
        "join": true,
        "shards": initial_shard_count(jq),
        "durability": match s.durability {
            Durability::Fsync => "fsync",
            Durability::Async => "async",
        },
        "batching": {
            "max_batch_ops": s.batching.max_batch_ops,
            "max_batch_bytes": s.batching.max_batch_bytes,
            "linger_min_micros": s.batching.linger_min_micros,
            "linger_max_micros": s.batching.linger_max_micros,
        },
        "console": {
            "enabled": s.console.enabled,
            "read_only": s.console.read_only,
        },
        "queue_defaults": {
            "lease_ms": q.lease_ms,
            "max_attempts": q.max_attempts,
            "backoff_initial_ms": q.backoff_initial_ms,
            "backoff_max_ms": q.backoff_max_ms,
            "backoff_multiplier": q.backoff_multiplier,
        },
    });
    if let Some(factor) = s.replication_factor {
        // Placed shards: every pod starts with the whole membership and
        // the nodes create the cluster themselves, each shard on the
        // voters the layout gives it (the same on every node).
        config["join"] = serde_json::json!(false);
        config["replication_factor"] = serde_json::json!(factor);
    }
    if let Some(memory) = memory_budgets(jq) {
        config["memory"] = memory;
    }
    if let Some(secrets) = tls_secrets(jq) {
        let ca_dir = if secrets.ca.is_some() {
            CA_DIR
        } else {
            TLS_DIR
        };
        config["tls"] = serde_json::json!({
            "cert_file": format!("{TLS_DIR}/tls.crt"),
            "key_file": format!("{TLS_DIR}/tls.key"),
            "ca_file": format!("{ca_dir}/ca.crt"),
            "client_certs": match s.tls.client_certs {
                ClientCerts::None => "none",
                ClientCerts::Optional => "optional",
                ClientCerts::Required => "required",
            },
            // A node joining the cluster takes Raft messages from peers
            // before it knows the membership: any pod of this queue.
            "peer_names": [format!("*.{}", peer_domain(jq))],
        });
    }
    if s.auth.enabled {
        let mut files = vec![format!("{AUTH_DIR}/{OPERATOR_PRINCIPALS_KEY}")];
        if s.auth.secret_ref.is_some() {
            files.push(format!("{USERS_DIR}/{USER_PRINCIPALS_KEY}"));
        }
        config["auth"] = serde_json::json!({ "files": files });
    }
    // Never start a node that would serve the pod network unprotected
    // (a config the insecure switch did not ask for).
    config["require_auth"] = serde_json::json!(!s.tls.allow_insecure);
    let render = |e: serde_yaml::Error| Error::Render(format!("node config: {e}"));
    let mut yaml = serde_yaml::to_value(&config).map_err(render)?;
    if s.replication_factor.is_some() {
        // Node ids are numbers, which a JSON object's keys cannot be.
        yaml["initial_members"] = serde_yaml::Value::Mapping(initial_members(jq));
    }
    serde_yaml::to_string(&yaml).map_err(render)
}

/// The node's memory budgets from the pod's memory limit: half for the
/// job index (enqueues are refused past it, so the pod is never killed for
/// a backlog), an eighth for payloads kept in memory, a sixteenth each for
/// RocksDB's block cache and memtables, and for enqueue requests held;
/// the rest for the Raft log's recent entries, connections and the
/// runtime. No limit: the node's defaults.
fn memory_budgets(jq: &JobQueue) -> Option<serde_json::Value> {
    let limit = jq.spec.resources.as_ref()?.limits.as_ref()?.get("memory")?;
    let mib = quantity_bytes(&limit.0)? >> 20;
    Some(serde_json::json!({
        "index_mib": mib / 2,
        "content_cache_mib": mib / 8,
        "block_cache_mib": (mib / 16).max(8),
        "memtable_mib": (mib / 16).max(8),
        "requests_mib": (mib / 16).max(1),
    }))
}

/// A Kubernetes memory quantity (`4Gi`, `512Mi`, `1G`, `1048576`) in
/// bytes; `None` for forms a memory limit does not use.
fn quantity_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let scale: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    Some((value * scale as f64) as u64)
}

pub fn config_map(jq: &JobQueue) -> Result<ConfigMap, Error> {
    Ok(ConfigMap {
        metadata: metadata(jq, &names(jq).config_map)?,
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_string(),
            node_config_yaml(jq)?,
        )])),
        ..ConfigMap::default()
    })
}

fn checksum(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn grpc_port() -> ServicePort {
    ServicePort {
        name: Some("grpc".into()),
        port: GRPC_PORT,
        target_port: Some(IntOrString::String("grpc".into())),
        app_protocol: Some("kubernetes.io/h2c".into()),
        ..ServicePort::default()
    }
}

fn peer_port() -> ServicePort {
    ServicePort {
        name: Some("peer".into()),
        port: PEER_PORT,
        target_port: Some(IntOrString::String("peer".into())),
        app_protocol: Some("kubernetes.io/h2c".into()),
        ..ServicePort::default()
    }
}

/// Headless: stable DNS per pod for Raft traffic, published before the pods
/// are ready (a node must reach its peers to become ready at all). Only the
/// peer port: clients use the client Service.
pub fn peer_service(jq: &JobQueue) -> Result<Service, Error> {
    Ok(Service {
        metadata: metadata(jq, &names(jq).peer_service)?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(jq)),
            ports: Some(vec![peer_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// What workers connect to: any ready node (each forwards to shard leaders).
pub fn client_service(jq: &JobQueue) -> Result<Service, Error> {
    let mut metadata = metadata(jq, &names(jq).client_service)?;
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(METRICS_LABEL.into(), "true".into());
    Ok(Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(jq)),
            ports: Some(vec![
                grpc_port(),
                ServicePort {
                    name: Some("metrics".into()),
                    port: HTTP_PORT,
                    target_port: Some(IntOrString::String("http".into())),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// Who may reach the queue's pods: anyone the cluster's network lets in on
/// the client and metrics ports; on the peer port (Raft, ClusterAdmin)
/// only the queue's own pods and the operator's.
pub fn network_policy(jq: &JobQueue, operator_namespace: &str) -> Result<NetworkPolicy, Error> {
    let port = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    };
    let pods = |labels: BTreeMap<String, String>| LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    };
    Ok(NetworkPolicy {
        metadata: metadata(jq, &names(jq).network_policy)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods(selector_labels(jq))),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    ports: Some(vec![port(GRPC_PORT), port(HTTP_PORT)]),
                    from: None,
                },
                NetworkPolicyIngressRule {
                    ports: Some(vec![port(PEER_PORT)]),
                    from: Some(vec![
                        NetworkPolicyPeer {
                            pod_selector: Some(pods(selector_labels(jq))),
                            ..NetworkPolicyPeer::default()
                        },
                        NetworkPolicyPeer {
                            namespace_selector: Some(pods(BTreeMap::from([(
                                "kubernetes.io/metadata.name".to_string(),
                                operator_namespace.to_string(),
                            )]))),
                            pod_selector: Some(pods(BTreeMap::from([(
                                "app.kubernetes.io/name".to_string(),
                                "raftq-operator".to_string(),
                            )]))),
                            ..NetworkPolicyPeer::default()
                        },
                    ]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    })
}

/// The pod's read-only volumes and where they are mounted: the node
/// config, and the Secrets TLS and auth need. A Secret's update reaches
/// the files in place; the nodes re-read them, no pod restarts.
fn pod_volumes(jq: &JobQueue) -> Vec<(Volume, &'static str)> {
    let n = names(jq);
    let secret = |volume: &str, name: &str| Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name.into()),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mut volumes = vec![(
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: n.config_map.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        CONFIG_DIR,
    )];
    if let Some(tls) = tls_secrets(jq) {
        volumes.push((secret("tls", &tls.cert), TLS_DIR));
        if let Some(ca) = &tls.ca {
            volumes.push((secret("ca", ca), CA_DIR));
        }
    }
    if jq.spec.auth.enabled {
        volumes.push((secret("auth", &n.auth_secret), AUTH_DIR));
        if let Some(users) = &jq.spec.auth.secret_ref {
            volumes.push((secret("users", &users.name), USERS_DIR));
        }
    }
    volumes
}

/// `replicas` is the StatefulSet size the membership plan allows now: during
/// a scale-down it stays above the spec until the removed nodes left Raft.
pub fn stateful_set(jq: &JobQueue, replicas: i32) -> Result<StatefulSet, Error> {
    let n = names(jq);
    let spec = &jq.spec;
    let config_sum = checksum(&node_config_yaml(jq)?);
    let mut template_labels = labels_of(jq);
    template_labels.remove("app.kubernetes.io/managed-by");
    let mounts = pod_volumes(jq);
    let container = Container {
        name: "queue-node".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())),
        image_pull_policy: spec.image_pull_policy.clone(),
        args: Some(vec![
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        ]),
        env: Some(vec![
            env_from_field("POD_NAME", "metadata.name"),
            // Node id = ordinal + 1, stable across restarts and rescheduling.
            env_from_field(
                "RAFTQ_POD_INDEX",
                "metadata.labels['apps.kubernetes.io/pod-index']",
            ),
            env(
                "RAFTQ_ADVERTISE",
                &format!(
                    "$(POD_NAME).{}.{}.svc:{PEER_PORT}",
                    n.peer_service,
                    jq.namespace().unwrap_or_else(|| "default".into())
                ),
            ),
            env(
                "RAFTQ_CLIENT_ADVERTISE",
                &format!(
                    "$(POD_NAME).{}.{}.svc:{GRPC_PORT}",
                    n.peer_service,
                    jq.namespace().unwrap_or_else(|| "default".into())
                ),
            ),
            env("RAFTQ_LOG", "info,openraft=warn"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: GRPC_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("peer".into()),
                container_port: PEER_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(http_probe("/readyz", 2, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        lifecycle: Some(k8s_openapi::api::core::v1::Lifecycle {
            // End the node's worker streams (they reconnect elsewhere) and
            // hand every shard it leads to a caught-up peer before the
            // kubelet sends SIGTERM, so a rolling restart costs no election.
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "queue-node".into(),
                        "step-down".into(),
                        "--drain-workers".into(),
                        "--addr".into(),
                        format!("127.0.0.1:{PEER_PORT}"),
                        // With TLS, the call is made with the node's own
                        // certificate, checked for RAFTQ_ADVERTISE's name.
                        "--config".into(),
                        format!("{CONFIG_DIR}/{CONFIG_FILE}"),
                    ]),
                }),
                ..LifecycleHandler::default()
            }),
            ..k8s_openapi::api::core::v1::Lifecycle::default()
        }),
        resources: spec.resources.clone(),
        volume_mounts: Some(
            mounts
                .iter()
                .map(|(volume, dir)| VolumeMount {
                    name: volume.name.clone(),
                    mount_path: dir.to_string(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                })
                .chain([VolumeMount {
                    name: "data".into(),
                    mount_path: DATA_DIR.into(),
                    ..VolumeMount::default()
                }])
                .collect(),
        ),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(spec.storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    Ok(StatefulSet {
        metadata: metadata(jq, &n.stateful_set)?,
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(n.peer_service.clone()),
            // Pods start together: a node is ready only once it is in the
            // cluster, which needs its peers running first.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(jq)),
                ..LabelSelector::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            // Queue data outlives the resource unless someone deletes the claims.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Delete".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_CHECKSUM_ANNOTATION.to_string(),
                        config_sum,
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    termination_grace_period_seconds: Some(30),
                    volumes: Some(mounts.into_iter().map(|(v, _)| v).collect()),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

/// At most one node down by voluntary disruption, so a drain never takes a
/// majority. `None` for one replica: a PDB there would block every drain.
pub fn pod_disruption_budget(jq: &JobQueue) -> Result<Option<PodDisruptionBudget>, Error> {
    if jq.spec.replicas <= 1 {
        return Ok(None);
    }
    Ok(Some(PodDisruptionBudget {
        metadata: metadata(jq, &names(jq).pdb)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(jq)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }))
}

/// Where the Prometheus Operator's `ServiceMonitor` kind is served.
pub fn service_monitor_resource() -> kube::discovery::ApiResource {
    kube::discovery::ApiResource {
        group: "monitoring.coreos.com".into(),
        version: "v1".into(),
        api_version: "monitoring.coreos.com/v1".into(),
        kind: "ServiceMonitor".into(),
        plural: "servicemonitors".into(),
    }
}

/// A `ServiceMonitor` scraping every node through the client Service's
/// `metrics` port. It selects that Service alone: the peer Service has
/// the same labels but not the `raftq.dev/metrics` one.
pub fn service_monitor(jq: &JobQueue) -> Result<serde_json::Value, Error> {
    let wanted = &jq.spec.monitoring.service_monitor;
    let mut meta = metadata(jq, &names(jq).client_service)?;
    let mut labels = wanted.labels.clone();
    // Ours win: they are what the operator finds its objects by.
    labels.extend(labels_of(jq));
    meta.labels = Some(labels);
    let mut selector = selector_labels(jq);
    selector.insert(METRICS_LABEL.into(), "true".into());
    Ok(serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": { "matchLabels": selector },
            "namespaceSelector": { "matchNames": [jq.namespace()] },
            "endpoints": [{
                "port": "metrics",
                "path": "/metrics",
                "interval": wanted.interval,
            }],
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::JobQueueSpec;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn queue(replicas: i32, shards: i32) -> JobQueue {
        let spec: JobQueueSpec =
            serde_json::from_value(serde_json::json!({"replicas": replicas, "shards": shards}))
                .expect("spec");
        let mut jq = JobQueue::new("orders", spec);
        jq.metadata.namespace = Some("shop".into());
        jq.metadata.uid = Some("uid-1".into());
        jq
    }

    #[test]
    fn node_config_carries_shards_batching_and_defaults() {
        let mut jq = queue(3, 4);
        jq.spec.durability = Durability::Async;
        jq.spec.batching.max_batch_ops = 1024;
        jq.spec.queue_defaults.lease_ms = 5_000;
        jq.spec.console.read_only = true;
        let yaml: serde_json::Value =
            serde_yaml::from_str(&node_config_yaml(&jq).expect("render")).expect("yaml");
        assert_eq!(yaml["shards"], 4);
        assert_eq!(yaml["durability"], "async");
        assert_eq!(
            yaml["join"], true,
            "the operator bootstraps, never the node"
        );
        assert_eq!(yaml["batching"]["max_batch_ops"], 1024);
        assert_eq!(yaml["queue_defaults"]["lease_ms"], 5000);
        assert_eq!(yaml["console"]["enabled"], true);
        assert_eq!(yaml["console"]["read_only"], true);
        assert_eq!(yaml["listen"], "0.0.0.0:7400");
        assert_eq!(yaml["http_listen"], "0.0.0.0:9400");
        assert!(
            yaml.get("memory").is_none(),
            "no limit: the node's defaults"
        );
    }

    #[test]
    fn placed_shards_start_every_pod_with_the_whole_membership() {
        let mut jq = queue(6, 12);
        jq.spec.replication_factor = Some(3);
        let text = node_config_yaml(&jq).expect("render");
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
        assert_eq!(
            yaml["join"], false,
            "the nodes create the cluster themselves"
        );
        assert_eq!(yaml["replication_factor"], 3);
        let members = yaml["initial_members"].as_mapping().expect("a map");
        assert_eq!(members.len(), 6);
        assert_eq!(
            members[&serde_yaml::Value::from(6u64)],
            "orders-5.orders-peers.shop.svc:7401",
            "{text}"
        );
        // Each pod advertises the same address.
        let sts = stateful_set(&jq, 6).expect("statefulset");
        let pod = sts.spec.and_then(|s| s.template.spec).expect("pod spec");
        let advertise = pod.containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "RAFTQ_ADVERTISE")
            .and_then(|e| e.value.clone());
        assert_eq!(
            advertise.as_deref(),
            Some("$(POD_NAME).orders-peers.shop.svc:7401")
        );
        // Without a factor the operator grows the cluster itself.
        jq.spec.replication_factor = None;
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&node_config_yaml(&jq).expect("render")).expect("yaml");
        assert_eq!(yaml["join"], true);
        assert!(yaml.get("initial_members").is_none());
    }

    #[test]
    fn memory_budgets_follow_the_pod_memory_limit() {
        let mut jq = queue(3, 1);
        jq.spec.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("4Gi".into()),
            )])),
            ..ResourceRequirements::default()
        });
        let yaml: serde_json::Value =
            serde_yaml::from_str(&node_config_yaml(&jq).expect("render")).expect("yaml");
        assert_eq!(yaml["memory"]["index_mib"], 2048);
        assert_eq!(yaml["memory"]["content_cache_mib"], 512);
        assert_eq!(yaml["memory"]["block_cache_mib"], 256);
        assert_eq!(yaml["memory"]["memtable_mib"], 256);
        assert_eq!(yaml["memory"]["requests_mib"], 256);
        assert_eq!(quantity_bytes("512Mi"), Some(512 << 20));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("100m"), None);
    }

    #[test]
    fn every_object_is_owned_and_labelled() {
        let jq = queue(3, 1);
        let owned = [
            config_map(&jq).expect("cm").metadata,
            peer_service(&jq).expect("svc").metadata,
            client_service(&jq).expect("svc").metadata,
            stateful_set(&jq, 3).expect("sts").metadata,
            pod_disruption_budget(&jq)
                .expect("pdb")
                .expect("3 replicas")
                .metadata,
        ];
        for meta in owned {
            let owner = &meta.owner_references.as_ref().expect("owner")[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str()),
                ("JobQueue", "orders")
            );
            assert_eq!(owner.controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("shop"));
            let labels = meta.labels.expect("labels");
            assert_eq!(labels["app.kubernetes.io/instance"], "orders");
        }
    }

    #[test]
    fn the_service_monitor_selects_the_client_service_alone() {
        let mut jq = queue(3, 1);
        jq.spec
            .monitoring
            .service_monitor
            .labels
            .insert("release".into(), "prometheus".into());
        // A user's label cannot take over the operator's own.
        jq.spec
            .monitoring
            .service_monitor
            .labels
            .insert("app.kubernetes.io/managed-by".into(), "someone-else".into());
        let monitor = service_monitor(&jq).expect("monitor");
        assert_eq!(monitor["metadata"]["name"], "orders");
        assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
        assert_eq!(
            monitor["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "raftq-operator"
        );
        assert_eq!(
            monitor["metadata"]["ownerReferences"][0]["kind"],
            "JobQueue"
        );
        assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "30s");
        let selector: BTreeMap<String, String> =
            serde_json::from_value(monitor["spec"]["selector"]["matchLabels"].clone())
                .expect("matchLabels");
        let selects = |meta: &ObjectMeta| {
            let labels = meta.labels.clone().unwrap_or_default();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        };
        assert!(selects(&client_service(&jq).expect("svc").metadata));
        assert!(!selects(&peer_service(&jq).expect("svc").metadata));
    }

    #[test]
    fn an_object_without_uid_is_an_error_not_a_panic() {
        let mut jq = queue(1, 1);
        jq.metadata.uid = None;
        assert!(matches!(config_map(&jq), Err(Error::InvalidResource(_))));
    }

    #[test]
    fn peer_service_is_headless_and_publishes_unready_pods() {
        let spec = peer_service(&queue(3, 1)).expect("svc").spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let peer_ports: Vec<i32> = spec.ports.expect("ports").iter().map(|p| p.port).collect();
        assert_eq!(peer_ports, [PEER_PORT], "only the peer port");
        let client = client_service(&queue(3, 1))
            .expect("svc")
            .spec
            .expect("spec");
        let ports: Vec<i32> = client
            .ports
            .expect("ports")
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, [GRPC_PORT, HTTP_PORT], "never the peer port");
    }

    #[test]
    fn statefulset_runs_nodes_with_identity_probes_and_handoff() {
        let mut jq = queue(3, 2);
        jq.spec.image = Some("registry.example/queue-node:1.2".into());
        jq.spec.storage.storage_class_name = Some("fast".into());
        let sts = stateful_set(&jq, 5).expect("sts");
        let spec = sts.spec.expect("spec");
        assert_eq!(
            spec.replicas,
            Some(5),
            "the size the membership plan allows"
        );
        assert_eq!(spec.service_name.as_deref(), Some("orders-peers"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let pod = spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.example/queue-node:1.2"));
        let env: BTreeMap<_, _> = c
            .env
            .as_ref()
            .expect("env")
            .iter()
            .map(|e| (e.name.as_str(), e))
            .collect();
        assert_eq!(
            env["RAFTQ_POD_INDEX"]
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.labels['apps.kubernetes.io/pod-index']"
        );
        assert_eq!(
            env["RAFTQ_ADVERTISE"].value.as_deref(),
            Some("$(POD_NAME).orders-peers.shop.svc:7401")
        );
        let ready = c.readiness_probe.as_ref().expect("readiness");
        assert_eq!(
            ready.http_get.as_ref().unwrap().path.as_deref(),
            Some("/readyz")
        );
        let live = c.liveness_probe.as_ref().expect("liveness");
        assert_eq!(
            live.http_get.as_ref().unwrap().path.as_deref(),
            Some("/healthz")
        );
        let pre_stop = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(
            pre_stop.exec.as_ref().unwrap().command.as_ref().unwrap()[..2],
            ["queue-node".to_string(), "step-down".to_string()]
        );
        assert!(pre_stop
            .exec
            .as_ref()
            .unwrap()
            .command
            .as_ref()
            .unwrap()
            .contains(&"--drain-workers".to_string()));
        let claim = &spec.volume_claim_templates.expect("claims")[0];
        let claim_spec = claim.spec.as_ref().expect("claim spec");
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "10Gi"
        );
    }

    #[test]
    fn config_change_changes_the_pod_template_checksum() {
        let checksum = |jq: &JobQueue| {
            stateful_set(jq, 3)
                .expect("sts")
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CONFIG_CHECKSUM_ANNOTATION]
                .clone()
        };
        let jq = queue(3, 1);
        let mut faster = jq.clone();
        faster.spec.batching.linger_min_micros = 50;
        assert_eq!(checksum(&jq), checksum(&jq.clone()), "stable");
        assert_ne!(checksum(&jq), checksum(&faster));
        // The replica count is not node config: scaling rolls no pods.
        let mut more = jq.clone();
        more.spec.replicas = 5;
        assert_eq!(checksum(&jq), checksum(&more));
    }

    #[test]
    fn pdb_allows_one_down_and_none_for_a_single_node() {
        let pdb = pod_disruption_budget(&queue(3, 1))
            .expect("pdb")
            .expect("some");
        assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
        assert!(pod_disruption_budget(&queue(1, 1)).expect("pdb").is_none());
    }
}
