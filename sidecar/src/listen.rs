//! The proxy's listeners: outbound (the pod's connections to Services) and
//! inbound (connections to the pod's own ports).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use crate::detect::{Detected, detect};
use crate::http::{Destination, outbound};
use crate::metrics::ConnectionLabels;
use crate::model::Protocol;
use crate::orig_dst::original_dst;
use crate::proxy::Proxy;

/// Accepts outbound connections until the task is dropped.
pub async fn serve_outbound(listener: TcpListener, proxy: Arc<Proxy>) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let proxy = proxy.clone();
                tokio::spawn(async move { outbound_connection(proxy, stream).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbound accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn outbound_connection(proxy: Arc<Proxy>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let dest = match original_dst(&stream) {
        Some(addr) => Destination::Original(addr),
        None => Destination::Explicit,
    };
    // A redirected connection is HTTP or TCP by its Service port's protocol
    // (sniffed when undeclared, and for addresses that are not Services);
    // one sent to the proxy itself is an explicit HTTP proxy request.
    if let Destination::Original(addr) = dest {
        let port = proxy.config.load().service_by_addr(addr).map(|(_, p)| p.clone());
        let opaque = match port.as_ref().map(|p| p.protocol) {
            Some(Protocol::Http | Protocol::Http2) => false,
            Some(Protocol::Opaque) => true,
            Some(Protocol::Detect) | None => detect(&stream).await == Detected::Opaque,
        };
        if opaque {
            count(&proxy, "outbound_tcp");
            match port {
                Some(port) => crate::tcp::forward_service(proxy, stream, &port).await,
                None => crate::tcp::forward_to(stream, addr).await,
            }
            return;
        }
    }
    count(&proxy, "outbound_http");
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(outbound(proxy, req, dest).await) }
    });
    if let Err(e) =
        auto::Builder::new(TokioExecutor::new()).serve_connection_with_upgrades(TokioIo::new(stream), service).await
    {
        tracing::debug!(error = %e, "outbound HTTP connection ended with an error");
    }
}

fn count(proxy: &Proxy, kind: &'static str) {
    proxy.metrics.connections.get_or_create(&ConnectionLabels { kind }).inc();
}

/// Accepts inbound connections and forwards them to the application on
/// `app_ip`, at the port the client asked for.
pub async fn serve_inbound(listener: TcpListener, proxy: Arc<Proxy>, app_ip: IpAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                count(&proxy, "inbound");
                let port = original_dst(&stream).or_else(|| stream.local_addr().ok()).map(|a| a.port());
                let Some(port) = port else { continue };
                tracing::trace!(%peer, port, "inbound connection");
                tokio::spawn(crate::tcp::forward_to(stream, SocketAddr::new(app_ip, port)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "inbound accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
