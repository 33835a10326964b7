//! Accepting connections on a port: at most `limits.max_connections` at
//! once, the TLS handshake (bounded in time, off the accept loop), and an
//! idle timeout that closes connections which send nothing. Each
//! connection carries a [`ConnInfo`] into its requests' extensions: where
//! it came from and the certificate it presented.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;

use super::identity::PeerCert;
use super::stream::MaybeTls;
use super::tls::TlsState;
use super::Port;
use crate::config::LimitsConfig;

/// What a request knows about its connection.
#[derive(Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// The certificate the caller presented (verified by the handshake).
    pub cert: Option<Arc<PeerCert>>,
}

/// Counts per port, for `/metrics`.
#[derive(Default)]
pub struct ConnStats {
    pub open: AtomicU64,
    pub refused_over_limit: AtomicU64,
    pub failed_handshakes: AtomicU64,
    pub closed_idle: AtomicU64,
}

pub struct Conn {
    io: MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>,
    info: ConnInfo,
    idle_timeout: Duration,
    last_read: Instant,
    idle: Pin<Box<Sleep>>,
    stats: Arc<ConnStats>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last_read = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => loop {
                // The timer is moved only when it fires: resetting it on
                // every read would cost a timer-wheel update per read.
                if this.idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = this.last_read + this.idle_timeout;
                if deadline <= Instant::now() {
                    this.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(remote = %this.info.remote, "closing a connection idle for {:?}", this.idle_timeout);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle too long",
                    )));
                }
                this.idle.as_mut().reset(deadline);
            },
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The connections accepted on `listener`, ready to serve. The accept
/// task ends when the stream is dropped (the server stopped).
pub fn incoming(
    listener: TcpListener,
    port: Port,
    tls: Option<Arc<TlsState>>,
    limits: &LimitsConfig,
    stats: Arc<ConnStats>,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(256);
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    let max = limits.max_connections;
    let handshake = Duration::from_millis(limits.handshake_timeout_ms);
    let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait for some to free.
                    tracing::warn!(?port, "accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                let refused = stats.refused_over_limit.fetch_add(1, Ordering::Relaxed);
                if refused.is_power_of_two() {
                    tracing::warn!(%remote, ?port, "closed a connection: {max} are open (limits.max_connections); {} refused so far", refused + 1);
                }
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (tx, tls, stats) = (tx.clone(), tls.clone(), stats.clone());
            tokio::spawn(async move {
                let io = match tls {
                    None => MaybeTls::Plain(tcp),
                    Some(tls) => {
                        let config = match port {
                            Port::Client => tls.client_port(),
                            Port::Peer => tls.peer_port(),
                        };
                        let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
                        match tokio::time::timeout(handshake, accept).await {
                            Ok(Ok(stream)) => MaybeTls::Tls(Box::new(stream)),
                            Ok(Err(e)) => {
                                stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(%remote, ?port, "TLS handshake failed: {e} (a plaintext client, or a certificate this node does not trust)");
                                return;
                            }
                            Err(_) => {
                                stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(%remote, ?port, "closed a connection that did not finish its TLS handshake within {handshake:?}");
                                return;
                            }
                        }
                    }
                };
                let cert = match &io {
                    MaybeTls::Tls(stream) => stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|der| Arc::new(PeerCert::new(der.clone().into_owned()))),
                    MaybeTls::Plain(_) => None,
                };
                stats.open.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                let conn = Conn {
                    io,
                    info: ConnInfo { remote, cert },
                    idle_timeout,
                    last_read: now,
                    idle: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
                    stats,
                    _permit: permit,
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}
