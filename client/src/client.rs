use std::time::Duration;

use raftq_api::limits::MAX_MESSAGE_BYTES;
use raftq_api::v1::cluster_admin_client::ClusterAdminClient;
use raftq_api::v1::queue_admin_client::QueueAdminClient;
use raftq_api::v1::queue_client::QueueClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{Error, Producer};

/// The channel every call goes through: the connection, and the caller's
/// token on each request.
pub type Transport = InterceptedService<Channel, Credentials>;

/// Adds the bearer token, if any, to each request.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    authorization: Option<AsciiMetadataValue>,
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

/// How to connect: TLS and credentials.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    tls: Option<TlsOptions>,
    token: Option<String>,
}

impl ConnectOptions {
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
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

/// A connection to a raftq node. Cheap to clone; clones share the
/// connection.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    credentials: Credentials,
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
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| bad_address(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_adaptive_window(true);
        if let Some(tls) = &options.tls {
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
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| bad_address(format!("TLS settings: {}", crate::error::chain(&e))))?;
        }
        let authorization = match &options.token {
            None => None,
            Some(token) => Some(
                AsciiMetadataValue::try_from(format!("Bearer {}", token.trim()))
                    .map_err(|_| Error::Invalid("the token must be printable ASCII".into()))?,
            ),
        };
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            addr: uri,
            tls: options.tls.is_some(),
            source,
        })?;
        Ok(Client {
            channel,
            credentials: Credentials { authorization },
        })
    }

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
