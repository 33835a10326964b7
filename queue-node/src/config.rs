//! Node configuration: a YAML file (the operator renders one into a
//! ConfigMap) and command-line flags that override it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::batcher::BatchConfig;
use crate::ops::{BackoffPolicy, QueueDefaults};
use crate::raft_types::NodeId;
use crate::store::Durability;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// Where clients connect: the `Queue` and `QueueAdmin` services
    /// (port 0 = any free port).
    pub listen: String,
    /// The address of the client port clients use (reported by
    /// `ClusterAdmin.Status`); defaults to the bound client address.
    pub client_advertise: Option<String>,
    /// Where other nodes and cluster administrators connect: the Raft
    /// transport, `ClusterAdmin` and requests forwarded to a shard's
    /// leader. Keep it off the clients' network (the operator's
    /// NetworkPolicy does).
    pub peer_listen: String,
    /// The address of the peer port other nodes use (the address in the
    /// shards' membership); defaults to the bound peer address.
    pub advertise: Option<String>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; none when unset.
    pub http_listen: Option<String>,
    /// The voters of a new cluster, node id → address. Empty: a one-node
    /// cluster of this node. The lowest id initialises the cluster.
    pub initial_members: BTreeMap<NodeId, String>,
    /// Never initialise a cluster; wait to be added by an existing one.
    pub join: bool,
    /// Raft groups per node (1..=64). Queues are spread over them by a hash
    /// of their name, so this is fixed when the data dir is created.
    pub shards: u32,
    /// Voters per shard (1, 3 or 5, at most the initial members): each
    /// node then holds only the shards placed on it, so more nodes carry
    /// more load. Unset: every initial member holds every shard. Fixed
    /// when the data dir is created.
    pub replication_factor: Option<u32>,
    pub durability: Durability,
    pub batching: BatchConfig,
    pub raft: RaftTimings,
    pub queue_defaults: QueueDefaultsConfig,
    pub memory: MemoryConfig,
    /// TLS on both ports: server TLS for clients, mutual TLS between
    /// nodes. Off when unset.
    pub tls: Option<TlsConfig>,
    /// Who may call what. Unset: every caller may do everything.
    pub auth: Option<AuthConfig>,
    /// Refuse to start when a port listens beyond loopback without TLS
    /// or without auth (`--require-auth`).
    pub require_auth: bool,
    pub limits: LimitsConfig,
    /// The web console and the REST API's history window.
    pub console: ConsoleConfig,
}

/// The web console served on the client port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console's pages at `/` of the client port (the REST API
    /// is served either way).
    pub enabled: bool,
    /// Hide every action in the console, whatever the user's roles (the
    /// API still answers callers with the roles for them).
    pub read_only: bool,
    /// How often the queues' depths and rates are sampled for the
    /// console's 15-minute charts.
    pub sample_every_ms: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            read_only: false,
            sample_every_ms: 10_000,
        }
    }
}

/// Certificates, all PEM files, re-read when they change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// This node's certificate chain, served on both ports and presented
    /// to other nodes. Its names must cover the address others use.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The cluster CA: other nodes' certificates, and clients'
    /// certificates, must be signed by it.
    pub ca_file: PathBuf,
    /// Client certificates on the client port: `none`, `optional` (a
    /// certificate, when given, identifies the caller) or `required`.
    #[serde(default)]
    pub client_certs: ClientCerts,
    /// Names (DNS or IP) a peer's certificate may be valid for besides the
    /// hosts in the shards' membership, so that nodes not yet members (a
    /// new node joining) are trusted. `*.domain` admits a certificate for
    /// any host one label under `domain` (every pod of a headless
    /// Service).
    #[serde(default)]
    pub peer_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientCerts {
    #[default]
    None,
    Optional,
    Required,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The principals, their token hashes and their grants (YAML; see
    /// docs/SECURITY.md), re-read when they change. Several files make
    /// one set (the operator's own principals and a user's, say); a name
    /// may appear in only one of them.
    pub files: Vec<PathBuf>,
}

/// Limits against callers that hold resources without using them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections per port; further connections are closed at once.
    pub max_connections: u32,
    /// Concurrent gRPC streams (calls) per connection.
    pub max_streams_per_connection: u32,
    /// A connection that sends nothing for this long is closed (HTTP/2
    /// keepalive answers count, so a healthy idle client stays).
    pub idle_timeout_ms: u64,
    /// The server pings every connection this often ...
    pub keepalive_interval_ms: u64,
    /// ... and closes it when a ping is not answered within this.
    pub keepalive_timeout_ms: u64,
    /// A TLS handshake must complete within this.
    pub handshake_timeout_ms: u64,
    /// A worker stream must send its `open` frame within this.
    pub open_timeout_ms: u64,
    /// Calls per second per principal on the client port; past it,
    /// RESOURCE_EXHAUSTED. 0 = no limit.
    pub requests_per_second_per_principal: u32,
    /// Largest message between nodes (entries, snapshot chunks).
    pub peer_message_mib: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 4096,
            max_streams_per_connection: 1024,
            idle_timeout_ms: 120_000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            open_timeout_ms: 30_000,
            requests_per_second_per_principal: 0,
            peer_message_mib: 512,
        }
    }
}

/// What the node may hold in memory, part by part, in MiB. A part left
/// unset is sized from the memory the node may use — its cgroup's limit
/// (what a container's memory limit sets), else the machine's — so a node
/// in a small container is not killed by defaults meant for a big one
/// ([`crate::memory::Budgets::resolve`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// The job index (every live job's scheduling metadata and status):
    /// enqueues are refused with `RESOURCE_EXHAUSTED` once it would grow
    /// past this (128 bytes counted per live job). Unset: half the memory
    /// the node may use. 0 = no limit.
    pub index_mib: Option<u64>,
    /// Payloads and headers of live jobs kept in memory so that serving
    /// them needs no disk read (all shards together). Jobs enqueued while
    /// it is full are read from disk when served. Unset: 256, or an eighth
    /// of the node's memory if that is less. 0 = none.
    pub content_cache_mib: Option<u64>,
    /// RocksDB's block cache for the state (job records and contents read
    /// back from disk). Unset: 64, or a sixteenth of the node's memory if
    /// that is less (at least 8).
    pub block_cache_mib: Option<u64>,
    /// RocksDB's memtables (recent writes of the log and the state, before
    /// they are flushed to files), all together; writes stall rather than
    /// grow past it. Unset: 128, or a sixteenth of the node's memory if
    /// that is less (at least 8). At least 4.
    pub memtable_mib: Option<u64>,
    /// The Raft logs' newest entries kept in memory (all shards together,
    /// shared out evenly), so apply and replication do not read them back
    /// from disk. Unset: 16 per shard up to 64, or a thirty-second of the
    /// node's memory if that is less (at least 1 per shard).
    pub log_cache_mib: Option<u64>,
    /// Enqueue requests held at once (decoded, waiting for their Raft
    /// entry to apply, or forwarded to the leader); past it enqueues get
    /// RESOURCE_EXHAUSTED until earlier ones are answered. A request
    /// larger than the whole budget is taken when nothing else is held.
    /// Unset: 128, or a sixteenth of the node's memory if that is less
    /// (at least 16). At least 1.
    pub requests_mib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTimings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Take a snapshot (and purge the log behind it) every this many entries.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot, so a briefly lagging follower
    /// can catch up from the log instead of a whole snapshot.
    pub logs_kept_after_snapshot: u64,
    /// How often a node checks that shard leaderships are spread evenly
    /// and, if it leads two more than another node, hands one over.
    /// 0 turns balancing off.
    pub leader_balance_every_ms: u64,
    /// The most snapshot data this node sends per second, over all its
    /// shards (a move filling a new replica, a follower far behind), so
    /// that replication keeps its bandwidth. 0: no limit.
    pub snapshot_send_mib_per_sec: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueDefaultsConfig {
    pub lease_ms: u64,
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub backoff_multiplier: f64,
    pub dedup_window_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 1,
            data_dir: PathBuf::from("raftq-data"),
            listen: "127.0.0.1:7400".into(),
            client_advertise: None,
            peer_listen: "127.0.0.1:7401".into(),
            advertise: None,
            http_listen: None,
            initial_members: BTreeMap::new(),
            join: false,
            shards: 1,
            replication_factor: None,
            durability: Durability::Fsync,
            batching: BatchConfig::default(),
            raft: RaftTimings::default(),
            queue_defaults: QueueDefaultsConfig::default(),
            memory: MemoryConfig::default(),
            tls: None,
            auth: None,
            require_auth: false,
            limits: LimitsConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_every_entries: 20_000,
            logs_kept_after_snapshot: 1_000,
            leader_balance_every_ms: 5_000,
            snapshot_send_mib_per_sec: 64,
        }
    }
}

impl Default for QueueDefaultsConfig {
    fn default() -> Self {
        let d = QueueDefaults::default();
        QueueDefaultsConfig {
            lease_ms: d.lease_ms,
            max_attempts: d.max_attempts,
            backoff_initial_ms: d.backoff.initial_ms,
            backoff_max_ms: d.backoff.max_ms,
            backoff_multiplier: d.backoff.multiplier,
            dedup_window_ms: d.dedup_window_ms,
        }
    }
}

impl QueueDefaultsConfig {
    pub fn to_defaults(&self) -> QueueDefaults {
        QueueDefaults {
            lease_ms: self.lease_ms,
            max_attempts: self.max_attempts,
            backoff: BackoffPolicy {
                initial_ms: self.backoff_initial_ms,
                max_ms: self.backoff_max_ms,
                multiplier: self.backoff_multiplier,
            },
            dedup_window_ms: self.dedup_window_ms,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl NodeConfig {
    pub fn from_file(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Whether this node joins an existing cluster instead of creating
    /// one: `join`, or, with a replication factor, not being among the
    /// initial members (a node added after the cluster was created: it
    /// holds no shard until the coordinator moves replicas to it).
    pub fn joins(&self) -> bool {
        self.join
            || (self.replication_factor.is_some()
                && !self.initial_members.is_empty()
                && !self.initial_members.contains_key(&self.node_id))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        self.batching.validate().map_err(ConfigError::Invalid)?;
        if !(1..=crate::routing::MAX_SHARDS).contains(&self.shards) {
            return invalid(format!(
                "shards must be in 1..={} (got {})",
                crate::routing::MAX_SHARDS,
                self.shards
            ));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_ms {
            return invalid(format!(
                "raft: election_timeout_min_ms ({}) must be greater than heartbeat_ms ({}) and both > 0",
                r.election_timeout_min_ms, r.heartbeat_ms
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return invalid(
                "raft: election_timeout_max_ms must be greater than election_timeout_min_ms".into(),
            );
        }
        let listed = self.initial_members.contains_key(&self.node_id);
        if !self.initial_members.is_empty() && !listed && self.replication_factor.is_none() {
            return invalid(format!(
                "initial_members does not list this node (node_id {}); list every voter, this node included",
                self.node_id
            ));
        }
        if let Some(factor) = self.replication_factor {
            if self.join && (self.initial_members.is_empty() || listed) {
                return invalid(format!(
                    "replication_factor {factor} with join: set initial_members to the members the cluster was created with, without this node; the joining node computes the same placement from them, holds no shard until the cluster's coordinator moves replicas to it (declare it with SetNodes), and asks them who leads each shard (a node not among the initial members joins without join set)"
                ));
            }
            let members = if self.initial_members.is_empty() {
                [(self.node_id, String::new())].into()
            } else {
                self.initial_members.clone()
            };
            crate::layout::Layout::new(&members, self.shards, Some(factor))
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        let q = &self.queue_defaults;
        if q.lease_ms == 0
            || q.max_attempts == 0
            || q.backoff_initial_ms == 0
            || q.backoff_max_ms < q.backoff_initial_ms
        {
            return invalid("queue_defaults: lease_ms, max_attempts and backoff_initial_ms must be > 0 and backoff_max_ms >= backoff_initial_ms".into());
        }
        if !(q.backoff_multiplier.is_finite() && q.backoff_multiplier >= 1.0) {
            return invalid("queue_defaults: backoff_multiplier must be >= 1.0".into());
        }
        if let Some(n) = self.memory.memtable_mib.filter(|&n| n < 4) {
            return invalid(format!(
                "memory.memtable_mib must be at least 4 (got {n}): RocksDB needs room for the log's and the state's memtables"
            ));
        }
        if self.memory.requests_mib == Some(0) {
            return invalid(
                "memory.requests_mib must be at least 1: no enqueue could be taken".into(),
            );
        }
        let l = &self.limits;
        if l.max_connections == 0
            || l.max_streams_per_connection == 0
            || l.idle_timeout_ms == 0
            || l.keepalive_interval_ms == 0
            || l.keepalive_timeout_ms == 0
            || l.handshake_timeout_ms == 0
            || l.open_timeout_ms == 0
            || l.peer_message_mib == 0
        {
            return invalid("limits: every limit but requests_per_second_per_principal must be > 0 (a 0 would refuse every caller)".into());
        }
        if !(100..=60_000).contains(&self.console.sample_every_ms) {
            return invalid(format!(
                "console.sample_every_ms must be in 100..=60000 (got {})",
                self.console.sample_every_ms
            ));
        }
        if l.idle_timeout_ms <= l.keepalive_interval_ms {
            return invalid(format!(
                "limits.idle_timeout_ms ({}) must be longer than limits.keepalive_interval_ms ({}): idle clients answering pings would be closed",
                l.idle_timeout_ms, l.keepalive_interval_ms
            ));
        }
        if self.listen == self.peer_listen && !self.listen.ends_with(":0") {
            return invalid(format!(
                "listen and peer_listen are both {}: the client port and the peer port must differ",
                self.listen
            ));
        }
        if let Some(n) = self
            .memory
            .log_cache_mib
            .filter(|&n| n < u64::from(self.shards))
        {
            return invalid(format!(
                "memory.log_cache_mib must be at least 1 per shard ({} here; got {n})",
                self.shards
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_round_trip_and_partial_files() {
        let yaml = "node_id: 2\ninitial_members: {1: '127.0.0.1:1', 2: '127.0.0.1:2'}\nbatching: {max_batch_ops: 64}\ndurability: async\n";
        let c: NodeConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.batching.max_batch_ops, 64);
        assert_eq!(
            c.batching.max_in_flight,
            BatchConfig::default().max_in_flight
        );
        assert_eq!(c.durability, Durability::Async);
        c.validate().unwrap();
        let back: NodeConfig = serde_yaml::from_str(&serde_yaml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(serde_yaml::from_str::<NodeConfig>("nodeid: 1\n").is_err());
        let c = NodeConfig {
            initial_members: [(5, "x:1".to_string())].into(),
            ..NodeConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("does not list this node"));
        let mut c = NodeConfig::default();
        c.batching.linger_min_micros = 10_000;
        assert!(c.validate().is_err());
        let mut c = NodeConfig::default();
        c.console.sample_every_ms = 50;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("console.sample_every_ms must be in 100..=60000"));
        assert!(serde_yaml::from_str::<NodeConfig>("console: {readonly: true}\n").is_err());
    }

    #[test]
    fn a_replication_factor_needs_enough_members_and_a_joiner_names_the_initial_ones() {
        let six = |factor| NodeConfig {
            initial_members: (1..=6).map(|id| (id, format!("n{id}:7500"))).collect(),
            shards: 12,
            replication_factor: Some(factor),
            ..NodeConfig::default()
        };
        six(3).validate().unwrap();
        let err = |c: NodeConfig| c.validate().unwrap_err().to_string();
        assert!(err(six(2)).contains("not 1, 3 or 5"), "{}", err(six(2)));
        let three = NodeConfig {
            initial_members: (1..=3).map(|id| (id, format!("n{id}:7500"))).collect(),
            ..six(5)
        };
        assert!(
            err(three.clone()).contains("needs 5 voters"),
            "{}",
            err(three)
        );
        let joining = NodeConfig {
            join: true,
            ..six(3)
        };
        assert!(
            err(joining.clone()).contains("without this node"),
            "{}",
            err(joining)
        );
        let added = NodeConfig {
            join: true,
            node_id: 7,
            ..six(3)
        };
        added.validate().unwrap();
        assert!(added.joins());
        let implied = NodeConfig {
            node_id: 7,
            ..six(3)
        };
        implied.validate().unwrap();
        assert!(implied.joins(), "not an initial member: it joins");
        assert!(!six(3).joins());
        let alone = NodeConfig {
            replication_factor: Some(3),
            ..NodeConfig::default()
        };
        assert!(
            err(alone.clone()).contains("1 initial member"),
            "{}",
            err(alone)
        );
    }
}
