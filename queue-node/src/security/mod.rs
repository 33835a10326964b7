//! Who may connect and what they may do. Owns TLS on both ports (with
//! certificates re-read when they change), the connections' limits, the
//! principals that tokens and client certificates stand for, and the one
//! check every handler makes before it routes a request
//! ([`Security::authorize`]). It reads no job state and proposes nothing;
//! a handler that needs a job's queue to decide looks it up and asks
//! [`Caller::may`].

pub mod auth;
pub mod dial;
pub mod exposure;
pub mod identity;
pub mod listener;
pub mod over_limit;
mod rate;
mod stream;
pub mod tls;
mod validity;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::{Request, Status};

pub use auth::Role;
use auth::{Principal, Principals};
use listener::{ConnInfo, ConnStats};
use tls::TlsState;

use crate::config::LimitsConfig;

/// Where a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// `Queue` and `QueueAdmin`, for clients.
    Client,
    /// Raft, `ClusterAdmin` and forwarded requests, for nodes and the
    /// operator.
    Peer,
}

/// The calls, as permissions see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Enqueue,
    Fetch,
    Ack,
    Nack,
    ExtendLease,
    WorkerStream,
    Stats,
    GetQueue,
    GetJob,
    ListJobs,
    ListDead,
    PauseQueue,
    ResumeQueue,
    PurgeQueue,
    SetQueueConfig,
    CancelJob,
    RequeueDead,
    PurgeDead,
    /// A `ClusterAdmin` call, by name.
    Cluster(&'static str),
    /// The cluster's shards and members as the console shows them (REST).
    ClusterView,
    /// Who the caller is and what it may do (REST): any known caller.
    WhoAmI,
    /// Where the shards' leaders are: any known caller.
    GetShardMap,
    /// A Raft message: members only.
    Raft,
}

impl Call {
    /// The role a call needs; `None` for Raft (cluster members only) and
    /// WhoAmI and GetShardMap (any authenticated caller).
    pub fn role(self) -> Option<Role> {
        use Call::*;
        Some(match self {
            Enqueue => Role::Produce,
            Fetch | Ack | Nack | ExtendLease | WorkerStream => Role::Consume,
            Stats | GetQueue | GetJob | ListJobs | ListDead | ClusterView => Role::Read,
            PauseQueue | ResumeQueue | PurgeQueue | SetQueueConfig | CancelJob | RequeueDead
            | PurgeDead => Role::QueueAdmin,
            Cluster(_) => Role::ClusterAdmin,
            Raft | WhoAmI | GetShardMap => return None,
        })
    }

    pub fn name(self) -> String {
        match self {
            Call::Cluster(name) => format!("ClusterAdmin.{name}"),
            Call::Raft => "RaftTransport".into(),
            Call::ClusterView => "GET /api/v1/cluster".into(),
            Call::WhoAmI => "GET /api/v1/whoami".into(),
            Call::Stats
            | Call::GetQueue
            | Call::GetJob
            | Call::ListJobs
            | Call::ListDead
            | Call::PauseQueue
            | Call::ResumeQueue
            | Call::PurgeQueue
            | Call::SetQueueConfig
            | Call::CancelJob
            | Call::RequeueDead
            | Call::PurgeDead => format!("QueueAdmin.{self:?}"),
            _ => format!("Queue.{self:?}"),
        }
    }
}

/// The metadata key of a bearer token.
const AUTHORIZATION: &str = "authorization";
/// On a forwarded request: the principal the forwarding node verified.
const PRINCIPAL: &str = "x-raftq-principal";
/// The principal of a caller when auth is off.
const ANONYMOUS: &str = "anonymous";

/// The verified caller of a request.
#[derive(Clone)]
pub struct Caller {
    pub name: Arc<str>,
    access: Access,
    /// The bearer token it came with, passed on when the request is
    /// forwarded over a peer port without TLS (where the principal alone
    /// cannot be trusted).
    token: Option<AsciiMetadataValue>,
}

#[derive(Clone)]
enum Access {
    /// Auth is off, or the caller is a cluster member.
    Everything,
    Grants(Arc<Principal>),
}

impl Caller {
    /// This node, for what it asks of its peers on its own account: a
    /// member's `node:` principal, which a peer trusts from a verified
    /// member only.
    pub fn this_node(id: u64) -> Caller {
        Caller::everything(&format!("node:{id}"))
    }

    fn everything(name: &str) -> Caller {
        Caller {
            name: name.into(),
            access: Access::Everything,
            token: None,
        }
    }

    /// `PERMISSION_DENIED` unless the caller holds the role `call` needs
    /// on `queue`.
    pub fn may(&self, call: Call, queue: &str) -> Result<(), Status> {
        let Some(role) = call.role() else {
            return Ok(());
        };
        match &self.access {
            Access::Everything => Ok(()),
            Access::Grants(p) if p.allows(role, queue) => Ok(()),
            Access::Grants(_) => Err(self.denied(call, role, Some(queue))),
        }
    }

    /// Whether the caller holds `role` on every queue (no per-job check
    /// of a queue is needed then).
    pub fn everywhere(&self, role: Role) -> bool {
        match &self.access {
            Access::Everything => true,
            Access::Grants(p) => p.allows_everywhere(role),
        }
    }

    /// The caller's grants as (role, queue pattern); `None` when it may do
    /// everything (auth is off, or it is a cluster member).
    pub fn grants(&self) -> Option<Vec<(Role, String)>> {
        match &self.access {
            Access::Everything => None,
            Access::Grants(p) => Some(
                p.grants()
                    .map(|(role, pattern)| (role, pattern.to_string()))
                    .collect(),
            ),
        }
    }

    /// Whether the caller may read `queue` (what an all-queue listing
    /// shows it).
    pub fn may_read(&self, queue: &str) -> bool {
        self.may(Call::Stats, queue).is_ok()
    }

    fn somewhere(&self, call: Call) -> Result<(), Status> {
        let Some(role) = call.role() else {
            return Ok(());
        };
        match &self.access {
            Access::Everything => Ok(()),
            Access::Grants(p) if p.allows_somewhere(role) => Ok(()),
            Access::Grants(_) => Err(self.denied(call, role, None)),
        }
    }

    fn denied(&self, call: Call, role: Role, queue: Option<&str>) -> Status {
        let message = match (role, queue) {
            (Role::ClusterAdmin, _) | (_, None) => format!(
                "principal `{}` may not call {}: it lacks the `{role}` role{}",
                self.name,
                call.name(),
                if role == Role::ClusterAdmin { "" } else { " on any queue" }
            ),
            (_, Some(queue)) => format!(
                "principal `{}` may not call {} on queue `{queue}`: it lacks the `{role}` role there",
                self.name,
                call.name()
            ),
        };
        Status::permission_denied(message)
    }

    /// Marks `request` (about to be forwarded to a peer) with this caller.
    pub fn stamp(&self, metadata: &mut MetadataMap) {
        if let Ok(name) = AsciiMetadataValue::try_from(&*self.name) {
            metadata.insert(PRINCIPAL, name);
        }
        if let Some(token) = &self.token {
            metadata.insert(AUTHORIZATION, token.clone());
        }
    }
}

/// The principals file, re-read when it changes.
struct AuthState {
    paths: Vec<PathBuf>,
    texts: RwLock<Vec<String>>,
    principals: RwLock<Arc<Principals>>,
}

/// Everything a node's ports check.
pub struct Security {
    pub tls: Option<Arc<TlsState>>,
    auth: Option<AuthState>,
    pub limits: LimitsConfig,
    rate: Option<rate::PerPrincipal>,
    pub dialer: dial::Dialer,
    pub client_conns: Arc<ConnStats>,
    pub peer_conns: Arc<ConnStats>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Auth(String),
}

impl Security {
    pub fn new(
        tls: Option<crate::config::TlsConfig>,
        auth: Option<crate::config::AuthConfig>,
        limits: LimitsConfig,
    ) -> Result<Security, SecurityError> {
        let tls = tls.map(TlsState::load).transpose()?.map(Arc::new);
        let auth = match auth {
            None => None,
            Some(a) => {
                if a.files.is_empty() {
                    return Err(SecurityError::Auth(
                        "auth.files is empty: name at least one principals file".into(),
                    ));
                }
                let texts = read_auth_files(&a.files).map_err(SecurityError::Auth)?;
                let principals = parse_auth_files(&a.files, &texts).map_err(SecurityError::Auth)?;
                Some(AuthState {
                    paths: a.files,
                    texts: RwLock::new(texts),
                    principals: RwLock::new(Arc::new(principals)),
                })
            }
        };
        let rate = (limits.requests_per_second_per_principal > 0)
            .then(|| rate::PerPrincipal::new(limits.requests_per_second_per_principal));
        Ok(Security {
            dialer: dial::Dialer::new(tls.clone()),
            tls,
            auth,
            limits,
            rate,
            client_conns: Arc::default(),
            peer_conns: Arc::default(),
        })
    }

    pub fn auth_enabled(&self) -> bool {
        self.auth.is_some()
    }

    fn principals(&self) -> Option<Arc<Principals>> {
        self.auth.as_ref().map(|a| {
            a.principals
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    /// Re-reads the certificates and the principals file when they
    /// changed. A file that does not load is logged and the previous one
    /// stays in force.
    pub fn reload(&self) {
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(true) => tracing::info!("TLS certificates reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    "TLS certificates not reloaded, the previous ones stay in use: {e}"
                ),
            }
        }
        if let Some(auth) = &self.auth {
            let texts = match read_auth_files(&auth.paths) {
                Ok(texts) => texts,
                Err(e) => {
                    tracing::warn!("{e}; the previous principals stay in force");
                    return;
                }
            };
            if *auth.texts.read().unwrap_or_else(|p| p.into_inner()) == texts {
                return;
            }
            match parse_auth_files(&auth.paths, &texts) {
                Ok(principals) => {
                    *auth.principals.write().unwrap_or_else(|p| p.into_inner()) =
                        Arc::new(principals);
                    tracing::info!("auth files reloaded");
                }
                Err(e) => tracing::warn!(
                    "auth files not reloaded, the previous principals stay in force: {e}"
                ),
            }
            *auth.texts.write().unwrap_or_else(|p| p.into_inner()) = texts;
        }
    }

    /// Reloads every `every` until the node stops.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.reload()).await;
        }
    }

    /// Authenticates the caller of `request` and checks that it may make
    /// `call` at all (on `queue`, when the call names one). `members` are
    /// the hosts a peer certificate must be valid for to count as a
    /// cluster member.
    pub fn authorize<T>(
        &self,
        port: Port,
        request: &Request<T>,
        call: Call,
        queue: Option<&str>,
        members: impl FnOnce() -> BTreeSet<String>,
    ) -> Result<Caller, Status> {
        let caller = self.authenticate(port, request, call, members)?;
        match queue {
            Some(queue) => caller.may(call, queue)?,
            None => caller.somewhere(call)?,
        }
        if port == Port::Client {
            if let Some(rate) = &self.rate {
                rate.take(&caller.name)?;
            }
        }
        Ok(caller)
    }

    fn authenticate<T>(
        &self,
        port: Port,
        request: &Request<T>,
        call: Call,
        members: impl FnOnce() -> BTreeSet<String>,
    ) -> Result<Caller, Status> {
        let info = request.extensions().get::<ConnInfo>();
        // Formatted only when a refusal is logged: Raft messages pass here.
        let remote = Remote(info.map(|i| i.remote));
        let cert = info.and_then(|i| i.cert.as_deref());
        let metadata = request.metadata();
        let forwarded = crate::forward::is_forwarded(metadata);
        if port == Port::Peer {
            let member = match (&self.tls, cert) {
                (None, _) => None,
                (Some(tls), Some(cert)) => Some(is_member(cert, tls.peer_names(), members)),
                // The peer port's TLS requires a certificate.
                (Some(_), None) => Some(false),
            };
            if call == Call::Raft || forwarded {
                if member == Some(false) {
                    let what = if forwarded {
                        "forward requests"
                    } else {
                        "send Raft messages"
                    };
                    let who = cert.map_or_else(|| "no certificate".into(), |c| c.describe());
                    tracing::warn!(%remote, "refused {}: {who} is valid for no member of this cluster", call.name());
                    return Err(Status::permission_denied(format!(
                        "only members of this cluster may {what}: {who} is valid for no member's address (nor tls.peer_names)"
                    )));
                }
                if call == Call::Raft {
                    return Ok(Caller::everything("node"));
                }
                // A forwarded request: the principal the forwarding node
                // verified, trusted from a verified member only.
                return match (member, self.principals()) {
                    (_, None) => Ok(Caller::everything(ANONYMOUS)),
                    (Some(true), Some(principals)) => {
                        let name = metadata
                            .get(PRINCIPAL)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        match principals.by_name(name) {
                            Some(p) => Ok(grants(p)),
                            // A member forwarding for itself.
                            None if name.starts_with("node:") => Ok(Caller::everything(name)),
                            None => Err(Status::unauthenticated(format!(
                                "forwarded for principal `{name}`, which this node's auth file does not list (the nodes' auth files differ?)"
                            ))),
                        }
                    }
                    // No TLS between nodes: only a token proves who the
                    // caller is.
                    (_, Some(principals)) => self.by_token(&principals, metadata, remote)?.ok_or_else(|| {
                        Status::unauthenticated(
                            "a request forwarded over a peer port without TLS must carry the caller's token; turn on TLS to forward certificate identities",
                        )
                    }),
                };
            }
            if !matches!(call, Call::Cluster(_)) {
                return Err(Status::permission_denied(format!(
                    "{} is served on the client port; this is the peer port (Raft, ClusterAdmin)",
                    call.name()
                )));
            }
            if let (Some(true), Some(cert)) = (member, cert) {
                return Ok(Caller::everything(&cert.node_name()));
            }
        }
        let Some(principals) = self.principals() else {
            return Ok(Caller::everything(ANONYMOUS));
        };
        if let Some(caller) = self.by_token(&principals, metadata, remote)? {
            return Ok(caller);
        }
        if let Some(cert) = cert {
            return match principals.by_any_name(&cert.names) {
                Some(p) => Ok(grants(p)),
                None => {
                    tracing::warn!(%remote, "refused {}: {} names no principal", call.name(), cert.describe());
                    Err(Status::unauthenticated(format!(
                        "{} names no principal of this node's auth file; add one named after its SAN URI, DNS name or CN",
                        cert.describe()
                    )))
                }
            };
        }
        tracing::warn!(%remote, "refused {}: no credentials", call.name());
        Err(Status::unauthenticated(
            "this node requires credentials: a token (`authorization: Bearer <token>`, RAFTQ_TOKEN for the CLI) or a client certificate",
        ))
    }

    fn by_token(
        &self,
        principals: &Principals,
        metadata: &MetadataMap,
        remote: Remote,
    ) -> Result<Option<Caller>, Status> {
        let Some(value) = metadata.get(AUTHORIZATION) else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            tracing::warn!(%remote, "refused a request: malformed authorization header");
            return Err(Status::unauthenticated(
                "the authorization header must be `Bearer <token>`",
            ));
        };
        match principals.by_token(token) {
            Some(p) => {
                let mut caller = grants(p);
                caller.token = Some(value.clone());
                Ok(Some(caller))
            }
            None => {
                // Never the token itself.
                tracing::warn!(%remote, "refused a request: unknown token");
                Err(Status::unauthenticated(
                    "the token is not known to this node (revoked, mistyped, or for another cluster)",
                ))
            }
        }
    }
}

/// Where a request came from, for logs.
#[derive(Clone, Copy)]
struct Remote(Option<std::net::SocketAddr>);

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

fn grants(p: &Arc<Principal>) -> Caller {
    Caller {
        name: p.name.clone(),
        access: Access::Grants(p.clone()),
        token: None,
    }
}

fn read_auth_files(paths: &[PathBuf]) -> Result<Vec<String>, String> {
    paths
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read the auth file {}: {e}", p.display()))
        })
        .collect()
}

fn parse_auth_files(paths: &[PathBuf], texts: &[String]) -> Result<Principals, String> {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Principals::parse_all(
        names
            .iter()
            .map(String::as_str)
            .zip(texts.iter().map(String::as_str)),
    )
    .map_err(|e| format!("auth files: {e}"))
}

/// Whether `cert` is valid for a member's host, or for one of the
/// configured peer names.
fn is_member(
    cert: &identity::PeerCert,
    peer_names: &[String],
    members: impl FnOnce() -> BTreeSet<String>,
) -> bool {
    use std::sync::atomic::Ordering;
    if cert.member.load(Ordering::Relaxed) {
        return true;
    }
    let member = peer_names.iter().any(|n| match n.strip_prefix("*.") {
        Some(domain) => cert.names_a_host_under(domain),
        None => cert.is_valid_for(n),
    }) || members().iter().any(|host| cert.is_valid_for(host));
    if member {
        cert.member.store(true, Ordering::Relaxed);
    }
    member
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, LimitsConfig};

    fn with_files(files: Vec<PathBuf>) -> Result<Security, SecurityError> {
        Security::new(None, Some(AuthConfig { files }), LimitsConfig::default())
    }

    #[test]
    fn bad_auth_files_stop_the_start_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let error = |files| match with_files(files) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        assert!(error(Vec::new()).contains("auth.files is empty"));
        let missing = dir.path().join("missing.yaml");
        assert!(error(vec![missing]).contains("cannot read the auth file"));
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(
            &a,
            "principals:\n- name: op\n  grants: [{role: cluster-admin}]\n",
        )
        .unwrap();
        std::fs::write(&b, "principals:\n- name: op\n").unwrap();
        let twice = error(vec![a.clone(), b]);
        assert!(twice.contains("listed twice"), "{twice}");
        assert!(with_files(vec![a]).is_ok_and(|s| s.auth_enabled()));
    }
}
