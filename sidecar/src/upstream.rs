//! Connections to endpoints. Each endpoint address has its own pooled
//! HTTP/1 and HTTP/2 clients and its balancer statistics; they are kept
//! across config updates and dropped when no endpoint set names the
//! address any more.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::balance::EndpointStats;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both sides of the proxy.
pub type Body = BoxBody<Bytes, BoxError>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Dials one fixed address whatever the request's authority says: the
/// authority is the Service's name (kept for the Host and :authority the
/// application sees), the address is the endpoint the balancer chose.
#[derive(Debug, Clone, Copy)]
pub struct FixedConnector(pub SocketAddr);

impl tower::Service<Uri> for FixedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move { connect(addr).await.map(TokioIo::new) })
    }
}

/// Connects to an endpoint, bounded in time, with Nagle off.
pub async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connect to {addr} timed out")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One endpoint address.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub stats: EndpointStats,
    pub http1: Client<FixedConnector, Body>,
    pub http2: Client<FixedConnector, Body>,
}

impl Upstream {
    fn new(addr: SocketAddr) -> Self {
        let connector = FixedConnector(addr);
        let http1 = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(connector);
        let http2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Upstream { addr, stats: EndpointStats::new(Instant::now()), http1, http2 }
    }
}

/// Every endpoint the proxy talks to.
#[derive(Debug, Default)]
pub struct Upstreams {
    by_addr: Mutex<HashMap<SocketAddr, Arc<Upstream>>>,
}

impl Upstreams {
    pub fn get(&self, addr: SocketAddr) -> Arc<Upstream> {
        let mut map = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(addr).or_insert_with(|| Arc::new(Upstream::new(addr))).clone()
    }

    /// Forgets endpoints no longer in the config (in-flight requests keep
    /// their `Arc`).
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.by_addr.lock().unwrap_or_else(|e| e.into_inner()).retain(|addr, _| keep(addr));
    }
}
