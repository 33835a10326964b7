//! The `JobQueue` custom resource (`raftq.dev/v1alpha1`): what a user asks
//! for (spec) and what the operator reports back (status).
//!
//! Limits live in the schema (ranges and CEL rules) so the API server itself
//! rejects a bad resource with a reason; the reconciler trusts them.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A durable, Raft-replicated job queue cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "raftq.dev",
    version = "v1alpha1",
    kind = "JobQueue",
    namespaced,
    shortname = "jq",
    status = "JobQueueStatus",
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Shards","type":"integer","jsonPath":".spec.shards"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.auth) || !has(self.auth.enabled) || self.auth.enabled || (has(self.tls) && has(self.tls.allowInsecure) && self.tls.allowInsecure)").message("auth.enabled: false lets anyone who reaches the client port do anything; set tls.allowInsecure: true to accept that"))]
#[x_kube(validation = Rule::new("has(self.replicationFactor) ? self.replicas >= self.replicationFactor : self.replicas % 2 == 1 && self.replicas <= 7").message("without replicationFactor every node holds every shard, so replicas must be odd (1, 3, 5 or 7: Raft needs a majority); with it, replicas must be at least replicationFactor"))]
#[x_kube(validation = Rule::new("self.shards == oldSelf.shards || (has(self.replicationFactor) && self.shards > oldSelf.shards)").message("shards can only grow, and only with replicationFactor (a queue without one has its data laid out by shard for good)"))]
#[x_kube(validation = Rule::new("has(self.replicationFactor) == has(oldSelf.replicationFactor) && (!has(self.replicationFactor) || self.replicationFactor == oldSelf.replicationFactor)").message("replicationFactor is fixed at creation: it can be neither added, removed nor changed later (each shard keeps its number of voters)"))]
pub struct JobQueueSpec {
    /// Queue nodes. Without `replicationFactor`, odd (at most 7) so that a
    /// majority survives the loss of the rest.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 99))]
    pub replicas: i32,
    /// Voters per shard: 1, 3 or 5. Set, each node holds only the shards
    /// placed on it (replicas and leaderships even over the nodes), so
    /// more nodes carry more load; changing `replicas` then moves replicas
    /// onto new pods, or off the highest pods before they are removed.
    /// Unset, every node holds every shard. Fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 1 || self == 3 || self == 5").message("replicationFactor must be 1, 3 or 5"))]
    pub replication_factor: Option<i32>,
    /// Raft groups; queues are spread over them by name. With
    /// `replicationFactor` it may grow (never shrink): new shards are
    /// created, queues that hold jobs stay on their shard, and new queues
    /// spread over all of them. Without, fixed at creation.
    #[serde(default = "default_shards")]
    #[schemars(range(min = 1, max = 64))]
    pub shards: i32,
    #[serde(default)]
    pub batching: Batching,
    #[serde(default)]
    pub durability: Durability,
    #[serde(default)]
    pub storage: Storage,
    /// The queue-node image; defaults to the operator's matching release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub queue_defaults: QueueDefaults,
    /// Encryption of the client and peer ports; on by default, with
    /// certificates the operator issues.
    #[serde(default)]
    pub tls: Tls,
    /// Who may call the nodes, and what they may do; on by default.
    #[serde(default)]
    pub auth: Auth,
    /// The web console every node serves on its client port.
    #[serde(default)]
    pub console: Console,
    /// How Prometheus finds the nodes' metrics.
    #[serde(default)]
    pub monitoring: Monitoring,
    /// Replaced by `spec.tls` (`mode: secret`, `secretName`); refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("false").message("spec.tlsSecretRef was replaced by spec.tls: set tls.mode: secret and tls.secretName"))]
    pub tls_secret_ref: Option<SecretRef>,
    /// Replaced by `spec.auth.secretRef`; refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("false").message("spec.authSecretRef was replaced by spec.auth.secretRef"))]
    pub auth_secret_ref: Option<SecretRef>,
    /// Stop reconciling: the operator leaves every object as it is.
    #[serde(default)]
    pub paused: bool,
}

fn default_replicas() -> i32 {
    3
}

fn default_shards() -> i32 {
    1
}

/// How a shard's leader groups operations into Raft entries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Batching {
    #[schemars(range(min = 1, max = 65536))]
    pub max_batch_ops: i64,
    #[schemars(range(min = 1024, max = 67108864))]
    pub max_batch_bytes: i64,
    #[schemars(range(min = 0, max = 100000))]
    pub linger_min_micros: i64,
    #[schemars(range(min = 0, max = 100000))]
    pub linger_max_micros: i64,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_batch_ops: 4096,
            max_batch_bytes: 8 * 1024 * 1024,
            linger_min_micros: 200,
            linger_max_micros: 2000,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every acknowledged write is on disk (one fsync covers a whole batch).
    #[default]
    Fsync,
    /// Writes reach the OS but are not synced: faster, and a machine crash
    /// can lose the last few milliseconds (replicas still hold them).
    Async,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Volume size per node, e.g. `10Gi`.
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            size: "10Gi".into(),
            storage_class_name: None,
        }
    }
}

/// The web console on the nodes' client port (the REST API is served
/// either way).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Console {
    /// Serve the console's pages.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Show no action in the console, whatever a user's roles.
    #[serde(default)]
    pub read_only: bool,
}

fn yes() -> bool {
    true
}

impl Default for Console {
    fn default() -> Self {
        Console {
            enabled: true,
            read_only: false,
        }
    }
}

/// Scraping of the nodes' metrics by the Prometheus Operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    #[serde(default)]
    pub service_monitor: ServiceMonitor,
}

/// A `ServiceMonitor` (monitoring.coreos.com/v1) for the client Service's
/// `metrics` port, created while the Prometheus Operator's CRD is installed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitor {
    /// Create it when the cluster has the ServiceMonitor kind; `false`
    /// deletes one created before.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often Prometheus scrapes each node (a Prometheus duration).
    #[serde(default = "default_scrape_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: String,
    /// Labels on the ServiceMonitor, e.g. the `release` a Prometheus
    /// selects monitors by.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

fn default_scrape_interval() -> String {
    "30s".into()
}

impl Default for ServiceMonitor {
    fn default() -> Self {
        ServiceMonitor {
            enabled: true,
            interval: default_scrape_interval(),
            labels: Default::default(),
        }
    }
}

/// Settings for queues that do not set their own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueDefaults {
    #[schemars(range(min = 1))]
    pub lease_ms: i64,
    #[schemars(range(min = 1))]
    pub max_attempts: i32,
    #[schemars(range(min = 1))]
    pub backoff_initial_ms: i64,
    #[schemars(range(min = 1))]
    pub backoff_max_ms: i64,
    #[schemars(range(min = 1.0))]
    pub backoff_multiplier: f64,
}

impl Default for QueueDefaults {
    fn default() -> Self {
        QueueDefaults {
            lease_ms: 30_000,
            max_attempts: 10,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
            backoff_multiplier: 2.0,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    pub name: String,
}

/// TLS on both ports. The peer port (Raft, ClusterAdmin) always uses
/// mutual TLS; the client port serves TLS and asks clients for a
/// certificate as `clientCerts` says.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'disabled' || self.allowInsecure").message("tls.mode: disabled sends jobs and tokens in clear text; set tls.allowInsecure: true to accept that"))]
#[x_kube(validation = Rule::new("self.mode == 'certManager' ? has(self.issuerRef) : !has(self.issuerRef)").message("tls.issuerRef is used with tls.mode: certManager, and only then"))]
#[x_kube(validation = Rule::new("self.mode == 'secret' ? has(self.secretName) && has(self.operatorSecretName) : !has(self.secretName) && !has(self.caSecretName) && !has(self.operatorSecretName)").message("tls.mode: secret needs secretName and operatorSecretName (caSecretName optional); the other modes take none of them"))]
pub struct Tls {
    #[serde(default)]
    pub mode: TlsMode,
    /// `certManager`: the Issuer or ClusterIssuer that signs the nodes'
    /// and the operator's certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
    /// `secret`: the nodes' certificate (`tls.crt`, `tls.key`, and
    /// `ca.crt` unless `caSecretName` is set), valid for
    /// `*.<name>-peers.<namespace>.svc` and the client Service's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// `secret`: the CA (`ca.crt`) that signed every certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_name: Option<String>,
    /// `secret`: the operator's client certificate (`tls.crt`, `tls.key`)
    /// from the same CA, naming `raftq-operator` (CN, DNS or URI SAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_secret_name: Option<String>,
    /// Client certificates on the client port: `none`, `optional` (a
    /// certificate naming a principal authenticates it) or `required`.
    #[serde(default)]
    pub client_certs: ClientCerts,
    /// Accept `mode: disabled` and `auth.enabled: false`.
    #[serde(default)]
    pub allow_insecure: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TlsMode {
    /// The operator keeps a CA per JobQueue (Secret `<name>-ca`) and
    /// issues and renews the certificates.
    #[default]
    OperatorManaged,
    /// cert-manager issues them from `issuerRef`.
    CertManager,
    /// Bring your own Secrets.
    Secret,
    /// No TLS (needs `allowInsecure`).
    Disabled,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClientCerts {
    None,
    #[default]
    Optional,
    Required,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    pub name: String,
    /// `Issuer` (in the JobQueue's namespace) or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    #[schemars(regex(pattern = r"^(Issuer|ClusterIssuer)$"))]
    pub kind: String,
    #[serde(default = "default_issuer_group")]
    pub group: String,
}

fn default_issuer_kind() -> String {
    "Issuer".into()
}

fn default_issuer_group() -> String {
    "cert-manager.io".into()
}

/// Authentication and per-queue permissions on the client port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// Off only with `tls.allowInsecure`: then anyone who reaches the
    /// client port may do anything.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// A Secret whose `principals.yaml` lists principals, their tokens'
    /// SHA-256 hashes and their grants (docs/SECURITY.md). Changes reach
    /// the nodes without a restart. The operator adds its own principal
    /// (`raftq-operator`) and a starter one (`admin`, token in Secret
    /// `<name>-admin`); those two names are reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

fn enabled() -> bool {
    true
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            enabled: true,
            secret_ref: None,
        }
    }
}

/// What the operator last observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobQueueStatus {
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pending, Bootstrapping, Scaling, Running, Degraded, Paused, Deleting.
    #[serde(default)]
    pub phase: String,
    /// Node ids that vote in every shard (with `replicationFactor`: in
    /// shard 0).
    #[serde(default)]
    pub voters: Vec<i64>,
    #[serde(default)]
    pub shards: Vec<ShardStatus>,
    /// How many shards each node holds and leads.
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
    /// With `replicationFactor`: the pods the cluster was created with
    /// (they start with the whole initial membership; pods added later
    /// join, and get replicas by moves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_members: Option<i32>,
    /// With `replicationFactor`: the shard count the cluster was created
    /// with (every pod's config keeps it; the count grows through the
    /// cluster's own routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_shards: Option<i32>,
    /// With `replicationFactor`: the replica moves under way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<MoveStatus>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// host:port clients connect to (the client Service).
    #[serde(default)]
    pub endpoint: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    pub shard: i32,
    /// Node id of the leader; 0 while there is none.
    pub leader: i64,
    pub term: i64,
    pub applied_index: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node_id: i64,
    /// Shards it votes in.
    pub replicas: i32,
    /// Shards it leads.
    pub leads: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoveStatus {
    pub shard: i32,
    /// The node losing its replica; 0 for none.
    pub from_node: i64,
    /// The node getting one; 0 for none.
    pub to_node: i64,
    /// add_learner, catch_up, move_leader, swap, drop_old_copy, ...
    pub phase: String,
}

/// A standard Kubernetes condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Available, Progressing or Degraded.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
    #[serde(default)]
    pub observed_generation: i64,
}
