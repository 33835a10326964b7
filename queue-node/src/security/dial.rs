//! How this node connects to other nodes' peer ports: TCP, then mutual
//! TLS with the current certificate when TLS is on (so a rotated
//! certificate is used by the next connection without a restart).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use super::stream::MaybeTls;
use super::tls::TlsState;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

type Dialed = TokioIo<MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>>;

/// Makes channels to peers.
#[derive(Clone, Default)]
pub struct Dialer {
    tls: Option<Arc<TlsState>>,
    /// The name the peer's certificate must be valid for, when not the
    /// host dialed (a node's own advertised name, dialed on 127.0.0.1).
    server_name: Option<String>,
}

impl Dialer {
    pub fn new(tls: Option<Arc<TlsState>>) -> Dialer {
        Dialer {
            tls,
            server_name: None,
        }
    }

    /// Checks the peer's certificate for `name` instead of the host dialed.
    pub fn verifying_name(mut self, name: Option<String>) -> Dialer {
        self.server_name = name;
        self
    }

    /// A lazily connected channel to the peer port at `addr`; it
    /// reconnects by itself when the peer restarts.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        Ok(Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .http2_adaptive_window(true)
            .connect_with_connector_lazy(self.clone()))
    }
}

impl tower_service::Service<Uri> for Dialer {
    type Response = Dialed;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Dialed>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::other(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| io::Error::other(format!("no port in {uri}")))?;
            let timed_out = || {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {host}:{port} timed out"),
                )
            };
            let tcp =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
                    .await
                    .map_err(|_| timed_out())??;
            tcp.set_nodelay(true)?;
            let Some(tls) = tls else {
                return Ok(TokioIo::new(MaybeTls::Plain(tcp)));
            };
            let expected = server_name.unwrap_or_else(|| host.clone());
            let name = ServerName::try_from(expected.clone()).map_err(|e| {
                io::Error::other(format!("{expected} is not a valid TLS server name: {e}"))
            })?;
            let connector = tokio_rustls::TlsConnector::from(tls.dial());
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| timed_out())??;
            Ok(TokioIo::new(MaybeTls::Tls(Box::new(stream))))
        })
    }
}
