//! The TLS accept loop. Each connection's handshake runs on its own task with a short
//! time limit, and each source address may hold only a few handshakes at once, so a slow
//! or hostile client never holds up others. Handshakes that fail (plain
//! TCP, a certificate from another CA, a tampered certificate, TLS 1.2) are logged with
//! the remote address and dropped. Accepted connections carry a [`PeerInfo`] that tonic
//! puts into every request's extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nex_backup_shared::identity::AgentIdentity;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

/// A TLS handshake takes milliseconds; a client that has not finished in this time is
/// holding a slot, not connecting.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once; beyond this new connections are dropped at once, so a
/// flood of idle TCP connections cannot exhaust memory.
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// Handshakes in progress at once from one source address: one source (a compromised
/// customer host, say) cannot take the slots every other agent needs.
const MAX_PENDING_PER_SOURCE: usize = 16;

/// Handshakes in progress per source address.
#[derive(Default)]
struct PerSource(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

impl PerSource {
    fn try_take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<SourceSlot> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = g.entry(ip).or_default();
        if *n >= MAX_PENDING_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(SourceSlot(self.clone(), ip))
    }
}

/// One handshake slot of a source; given back on drop.
struct SourceSlot(Arc<PerSource>, std::net::IpAddr);

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut g = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = g.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                g.remove(&self.1);
            }
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// Present when the client showed a certificate of our CA.
    pub identity: Option<AgentIdentity>,
}

/// An accepted TLS connection.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl TlsConn {
    /// Who is on the other end.
    pub fn peer(&self) -> &PeerInfo {
        &self.info
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accept on `listener` and hand out TLS connections until the receiver is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    let per_source = Arc::new(PerSource::default());
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, "accept connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let Some(slot) = per_source.try_take(remote.ip()) else {
                warn!(%remote, limit = MAX_PENDING_PER_SOURCE,
                    "too many TLS handshakes in progress from this address; connection dropped");
                continue;
            };
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                warn!(%remote, "too many TLS handshakes in progress; connection dropped");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let done = handshake(acceptor, tcp, remote).await;
                drop(permit);
                drop(slot);
                match done {
                    Ok(conn) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(reason) => warn!(%remote, %reason, "TLS connection refused"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Why a connection was refused before it reached the services.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("no TLS handshake within {HANDSHAKE_LIMIT:?}")]
    Slow,
    #[error("TLS handshake: {0}")]
    Handshake(#[source] std::io::Error),
    #[error("client certificate: {0}")]
    Certificate(#[source] nex_backup_shared::error::FormatError),
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Result<TlsConn, Refused> {
    let tls = tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(tcp))
        .await
        .map_err(|_| Refused::Slow)?
        .map_err(Refused::Handshake)?;
    let identity = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => Some(AgentIdentity::from_cert_der(cert).map_err(Refused::Certificate)?),
        None => None,
    };
    debug!(%remote, agent = ?identity.as_ref().map(|i| &i.agent_id), "TLS connection");
    Ok(TlsConn {
        inner: tls,
        info: PeerInfo { remote, identity },
    })
}
