use std::sync::Arc;
use std::time::Duration;

use raftq_api::limits::MAX_MESSAGE_BYTES;
use raftq_api::v1::cluster_admin_client::ClusterAdminClient;
use raftq_api::v1::queue_admin_client::QueueAdminClient;
use raftq_api::v1::queue_client::QueueClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::routing::{self, Dial, Router};
use crate::{Error, Producer};

/// The channel every call goes through: the connection, and the caller's
/// token on each request.
pub type Transport = InterceptedService<Channel, Credentials>;

/// Adds the bearer token, if any, to each request, and the direct-route
/// mark on requests sent to the leader the shard map names.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    authorization: Option<AsciiMetadataValue>,
    direct: bool,
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        if self.direct {
            request
                .metadata_mut()
                .insert("x-raftq-route", AsciiMetadataValue::from_static("direct"));
        }
        Ok(request)
    }
}

/// TLS settings of a connection.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
}

impl TlsOptions {
    /// TLS trusting the system's root certificates.
    pub fn new() -> TlsOptions {
        TlsOptions::default()
    }

    /// Trust only this CA (PEM): the one that signed the server's
    /// certificate (the cluster CA).
    pub fn ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> TlsOptions {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Present this client certificate and key (PEM): the caller is then
    /// the principal its SAN or CN names.
    pub fn client_identity_pem(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> TlsOptions {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// The name the server's certificate must carry, when it differs from
    /// the host connected to.
    pub fn domain(mut self, name: impl Into<String>) -> TlsOptions {
        self.domain = Some(name.into());
        self
    }
}

/// How to connect: TLS, credentials, and whether to send requests
/// straight to shard leaders.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    tls: Option<TlsOptions>,
    token: Option<String>,
    route_to_leaders: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            tls: None,
            token: None,
            route_to_leaders: true,
        }
    }
}

impl ConnectOptions {
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Send a queue's requests (producer, worker) straight to its shard's
    /// leader, from the shard map (on unless turned off). Off: every
    /// request goes to the node connected to, which forwards it — for a
    /// client that can reach that node only (a port-forward, a proxy).
    pub fn route_to_leaders(mut self, on: bool) -> ConnectOptions {
        self.route_to_leaders = on;
        self
    }

    pub fn tls(mut self, tls: TlsOptions) -> ConnectOptions {
        self.tls = Some(tls);
        self
    }

    /// A bearer token, sent with every request.
    pub fn token(mut self, token: impl Into<String>) -> ConnectOptions {
        self.token = Some(token.into());
        self
    }
}

/// A connection to a raftq node (and, with routing on, to the shards'
/// leaders). Cheap to clone; clones share the connections.
#[derive(Clone, Debug)]
pub struct Client {
    /// Where this client's calls go: the node connected to, or a leader.
    channel: Channel,
    /// The node connected to.
    seed: Channel,
    credentials: Credentials,
    router: Option<Arc<Router>>,
    /// The leader this client sends to, for a client from
    /// [`Client::for_queue`].
    leader: Option<String>,
}

impl Client {
    /// Connects to `addr` (`http://host:port`, or `host:port`) in
    /// plaintext, without credentials.
    pub async fn connect(addr: &str) -> Result<Client, Error> {
        Client::connect_with(addr, ConnectOptions::default()).await
    }

    /// Connects to `addr` with TLS and credentials as `options` say.
    pub async fn connect_with(addr: &str, options: ConnectOptions) -> Result<Client, Error> {
        let bad_address = |reason: String| Error::BadAddress {
            addr: addr.to_string(),
            reason,
        };
        let host_port = addr
            .split_once("://")
            .map_or(addr, |(_, rest)| rest)
            .trim_end_matches('/');
        let uri = match (&options.tls, addr.split_once("://")) {
            (Some(_), Some(("http", _))) => {
                return Err(bad_address(
                    "an http:// address with TLS on: use https:// or host:port".into(),
                ))
            }
            (Some(_), _) => format!("https://{host_port}"),
            (None, Some(("https", _))) => {
                return Err(bad_address(
                    "an https:// address needs TLS settings (--tls / TlsOptions)".into(),
                ))
            }
            (None, _) => format!("http://{host_port}"),
        };
        let tls_config = match &options.tls {
            None => None,
            Some(tls) => {
                let mut config = ClientTlsConfig::new();
                config = match &tls.ca_pem {
                    Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
                    None => config.with_native_roots(),
                };
                if let Some((cert, key)) = &tls.identity {
                    config = config.identity(Identity::from_pem(cert, key));
                }
                if let Some(domain) = &tls.domain {
                    config = config.domain_name(domain.clone());
                }
                Some(config)
            }
        };
        let seed_endpoint = endpoint(&uri, tls_config.as_ref()).map_err(bad_address)?;
        let authorization = match &options.token {
            None => None,
            Some(token) => Some(
                AsciiMetadataValue::try_from(format!("Bearer {}", token.trim()))
                    .map_err(|_| Error::Invalid("the token must be printable ASCII".into()))?,
            ),
        };
        let channel = seed_endpoint
            .connect()
            .await
            .map_err(|source| Error::Connect {
                addr: uri,
                tls: options.tls.is_some(),
                source,
            })?;
        let router = options.route_to_leaders.then(|| {
            let scheme = if tls_config.is_some() {
                "https"
            } else {
                "http"
            };
            let dial: Dial = Box::new(move |addr: &str| {
                endpoint(&format!("{scheme}://{addr}"), tls_config.as_ref()).ok()
            });
            Arc::new(Router::new(dial))
        });
        let client = Client {
            seed: channel.clone(),
            channel,
            credentials: Credentials {
                authorization,
                direct: false,
            },
            router,
            leader: None,
        };
        if client.router.is_some() {
            // In the background: until the map is read, requests go to
            // the node connected to, which forwards them.
            let reader = client.clone();
            tokio::spawn(async move {
                let _ = reader.refresh_shard_map().await;
            });
        }
        Ok(client)
    }

    /// Reads the shard map from the node connected to. Done once at
    /// connect and again when a leader moves; call it to route at once.
    pub async fn refresh_shard_map(&self) -> Result<(), Error> {
        let Some(router) = &self.router else {
            return Ok(());
        };
        let map = self
            .seed()
            .queue()
            .get_shard_map(raftq_api::v1::GetShardMapRequest::default())
            .await?
            .into_inner();
        router.learn_map(&map);
        Ok(())
    }

    /// The client for `queue`'s requests: to its shard's leader when the
    /// shard map names one, else this client (whose node forwards).
    pub fn for_queue(&self, queue: &str) -> Client {
        let Some(shard) = self.router.as_ref().and_then(|r| r.shard_of(queue)) else {
            return self.clone();
        };
        self.for_shard(shard)
    }

    /// The client for requests on `shard` (a job id's first part).
    pub fn for_shard(&self, shard: u32) -> Client {
        let Some(router) = &self.router else {
            return self.clone();
        };
        match router.leader(shard) {
            Some((addr, channel)) => Client {
                channel,
                seed: self.seed.clone(),
                credentials: Credentials {
                    direct: true,
                    ..self.credentials.clone()
                },
                router: self.router.clone(),
                leader: Some(addr),
            },
            None => self.seed(),
        }
    }

    /// This client as connected: to the node it connected to, which
    /// forwards.
    fn seed(&self) -> Client {
        Client {
            channel: self.seed.clone(),
            seed: self.seed.clone(),
            credentials: Credentials {
                direct: false,
                ..self.credentials.clone()
            },
            router: self.router.clone(),
            leader: None,
        }
    }

    /// Learns from a call that failed through this client: the leader a
    /// "not the leader" answer names, a leader that cannot be reached, or
    /// a map to read again.
    pub async fn observe_failure(&self, status: &tonic::Status) {
        let Some(router) = &self.router else {
            return;
        };
        if router.learn_status(status) {
            return;
        }
        if let (Some(addr), true) = (&self.leader, routing::is_transport_failure(status)) {
            router.unreachable(addr);
            return;
        }
        if status.code() == tonic::Code::Unavailable && router.refresh_due() {
            let _ = self.refresh_shard_map().await;
        }
    }
}

/// An endpoint with the connection settings every raftq connection uses.
fn endpoint(uri: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(uri.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_adaptive_window(true);
    match tls {
        None => Ok(endpoint),
        Some(config) => endpoint
            .tls_config(config.clone())
            .map_err(|e| format!("TLS settings: {}", crate::error::chain(&e))),
    }
}

impl Client {
    fn transport(&self) -> Transport {
        InterceptedService::new(self.channel.clone(), self.credentials.clone())
    }

    /// The raw generated client of the `Queue` service.
    pub fn queue(&self) -> QueueClient<Transport> {
        QueueClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The raw generated client of the `QueueAdmin` service.
    pub fn admin(&self) -> QueueAdminClient<Transport> {
        QueueAdminClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The raw generated client of the `ClusterAdmin` service (served on
    /// a node's peer port: connect a client there for it).
    pub fn cluster(&self) -> ClusterAdminClient<Transport> {
        ClusterAdminClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn producer(&self) -> Producer {
        Producer::new(self.clone())
    }
}
