//! Opaque TCP: a Service port's TCP routes pick a backend by weight, the
//! balancer picks an endpoint, and bytes are copied both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use crate::model::{ServicePort, TcpRoute};
use crate::proxy::Proxy;
use crate::upstream::connect;

/// Forwards a connection for a Service port.
pub async fn forward_service(proxy: Arc<Proxy>, client: TcpStream, port: &ServicePort) {
    forward_routes(proxy, client, &port.tcp_routes, port.port).await;
}

/// Forwards a connection by the TCP routes of a Service port or a gateway
/// listener (`port` names it in logs).
pub async fn forward_routes<C>(proxy: Arc<Proxy>, mut client: C, routes: &[TcpRoute], port: u16)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // TCP routes carry no matches: the first route serves the port.
    let Some(route) = routes.first() else {
        tracing::debug!(port, "no TCP route for the port; closing");
        return;
    };
    let Some(backend) = crate::http::pick_backend(&route.backends) else { return };
    if let Some(why) = &backend.unresolved {
        tracing::debug!(backend = %backend.service, reason = %why, "unresolved TCP backend; closing");
        return;
    }
    let Some(endpoint) = proxy.endpoint_for(backend) else {
        tracing::debug!(backend = %backend.service, "TCP backend has no endpoints; closing");
        return;
    };
    let _in_flight = endpoint.stats.start();
    let started = Instant::now();
    match endpoint.target.connect(crate::tls::ALPN_TCP).await {
        Ok(mut server) => {
            endpoint.stats.observe(started.elapsed(), true, Instant::now());
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        Err(e) => {
            endpoint.stats.observe(started.elapsed(), false, Instant::now());
            tracing::debug!(endpoint = %endpoint.addr(), error = %e, "TCP connect failed");
        }
    }
}

/// Forwards a connection unchanged to `addr`.
pub async fn forward_to(mut client: TcpStream, addr: SocketAddr) {
    match connect(addr).await {
        Ok(mut server) => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        Err(e) => tracing::debug!(%addr, error = %e, "TCP connect failed"),
    }
}
