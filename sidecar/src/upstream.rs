//! Endpoints. Each endpoint address has its own connection pool and its
//! balancer statistics; they are kept across config updates and dropped
//! when no endpoint set names the address any more.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::balance::EndpointStats;
use crate::pool::Pool;
use crate::tls::{MeshTls, MtlsMode};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both sides of the proxy.
pub type Body = BoxBody<Bytes, BoxError>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to an endpoint: plaintext, or mTLS to its proxy.
#[derive(Debug)]
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Connects to an address, bounded in time, with Nagle off.
pub async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connect to {addr} timed out")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An endpoint address and the identity its proxy must present (empty:
/// the endpoint has no proxy, so it is reached in plaintext).
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub identity: String,
    tls: Arc<MeshTls>,
}

impl Target {
    /// Connects, with mTLS when the mesh asks for it and the endpoint has a
    /// proxy in another pod (a pod calling a Service that selects itself
    /// reaches its own application directly). Without a certificate yet, strict mode fails the connection
    /// (its peer would refuse plaintext) and permissive mode sends
    /// plaintext.
    pub async fn connect(&self, alpn: &'static [u8]) -> std::io::Result<UpstreamIo> {
        let mode = self.tls.mode();
        if mode == MtlsMode::Off || self.identity.is_empty() || self.tls.is_local(self.addr.ip()) {
            return Ok(UpstreamIo::Plain(connect(self.addr).await?));
        }
        let Some(state) = self.tls.state() else {
            if mode == MtlsMode::Strict {
                self.tls.count("outbound", "no_certificate");
                return Err(std::io::Error::other(format!(
                    "no workload certificate yet; strict mTLS to {} ({}) is not possible",
                    self.addr, self.identity
                )));
            }
            self.tls.count("outbound", "plaintext");
            return Ok(UpstreamIo::Plain(connect(self.addr).await?));
        };
        // A peer of another mesh (a cross-mesh gateway) is verified with
        // that mesh's trust bundle, chosen by the trust domain it must name.
        let domain = crate::tls::trust_domain_of(&self.identity);
        let config = if domain == state.identity.trust_domain {
            state.client_config(&self.identity, alpn).map_err(std::io::Error::other)?
        } else {
            let Some(roots) = self.tls.federation().bundles.get(domain).cloned() else {
                self.tls.count("outbound", "no_trust_bundle");
                return Err(std::io::Error::other(format!(
                    "{} ({}) is in trust domain {domain}, whose trust bundle this proxy does not hold",
                    self.addr, self.identity
                )));
            };
            state.client_config_trusting(roots, &self.identity, alpn).map_err(std::io::Error::other)?
        };
        let stream = connect(self.addr).await?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let handshake = tokio_rustls::TlsConnector::from(config).connect(name, stream);
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => {
                self.tls.count("outbound", "mtls");
                Ok(UpstreamIo::Tls(Box::new(tls)))
            }
            Ok(Err(e)) => {
                self.tls.count("outbound", "handshake_failed");
                tracing::warn!(endpoint = %self.addr, expected = %self.identity, error = %e, "mTLS handshake failed");
                Err(e)
            }
            Err(_) => {
                self.tls.count("outbound", "handshake_failed");
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("mTLS handshake with {} timed out", self.addr),
                ))
            }
        }
    }
}

/// One endpoint address: its connections and its balancer statistics.
#[derive(Debug)]
pub struct Upstream {
    pub target: Arc<Target>,
    pub stats: EndpointStats,
    pub pool: Pool,
}

impl Upstream {
    fn new(target: Arc<Target>) -> Self {
        Upstream { pool: Pool::new(target.clone()), target, stats: EndpointStats::new(Instant::now()) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.target.addr
    }
}

/// Every endpoint the proxy talks to.
#[derive(Debug)]
pub struct Upstreams {
    /// By address, then expected identity: an address that changes hands
    /// (a pod IP reused by another workload) gets fresh connections. Two
    /// levels so a lookup borrows the identity instead of allocating.
    by_addr: Mutex<HashMap<SocketAddr, HashMap<String, Arc<Upstream>>>>,
    tls: Arc<MeshTls>,
}

impl Upstreams {
    pub fn new(tls: Arc<MeshTls>) -> Self {
        Upstreams { by_addr: Mutex::new(HashMap::new()), tls }
    }

    pub fn get(&self, addr: SocketAddr, identity: &str) -> Arc<Upstream> {
        let mut map = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
        let by_identity = map.entry(addr).or_default();
        if let Some(u) = by_identity.get(identity) {
            return u.clone();
        }
        let target = Arc::new(Target { addr, identity: identity.to_owned(), tls: self.tls.clone() });
        let upstream = Arc::new(Upstream::new(target));
        by_identity.insert(identity.to_owned(), upstream.clone());
        upstream
    }

    /// Closes idle connections past their timeout, on every endpoint.
    pub fn sweep(&self, now: Instant) {
        let map = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
        for u in map.values().flat_map(|by_identity| by_identity.values()) {
            u.pool.sweep(now);
        }
    }

    /// Forgets endpoints no longer in the config (in-flight requests keep
    /// their `Arc`).
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.by_addr.lock().unwrap_or_else(|e| e.into_inner()).retain(|addr, _| keep(addr));
    }
}
