//! The proxy's listeners: outbound (the pod's connections to Services) and
//! inbound (connections to the pod's own ports).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use crate::accept::AcceptBackoff;
use crate::detect::{Detected, detect};
use crate::http::{Destination, outbound};
use crate::metrics::ConnectionLabels;
use crate::model::Protocol;
use crate::orig_dst::original_dst;
use crate::proxy::Proxy;
use crate::reply::{Summary, finish};
use crate::tls::MtlsMode;

/// Accepts outbound connections until the task is dropped.
pub async fn serve_outbound(listener: TcpListener, proxy: Arc<Proxy>) {
    let mut backoff = AcceptBackoff::new("outbound");
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                backoff.accepted();
                let proxy = proxy.clone();
                tokio::spawn(async move { outbound_connection(proxy, stream).await });
            }
            Err(e) => backoff.failed(&e, &proxy.metrics).await,
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
    let proxy_for_limits = proxy.clone();
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move {
            let started = std::time::Instant::now();
            let summary = Summary::of(&req);
            let resp = outbound(proxy.clone(), req, dest).await;
            Ok::<_, Infallible>(finish(&proxy, "outbound", &summary, started, resp))
        }
    });
    let server = http_server(&proxy_for_limits.limits.load());
    if let Err(e) = server.serve_connection_with_upgrades(TokioIo::new(stream), service).await {
        connection_error(&proxy_for_limits, "outbound", &*e);
    }
}

/// The HTTP server every listener runs: HTTP/1.1 and HTTP/2 (prior
/// knowledge), with header limits that refuse what validation would
/// refuse before a whole oversized head is even read.
pub fn http_server(limits: &crate::validate::Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .max_headers(crate::validate::DEFAULT_MAX_HEADERS)
        .max_buf_size(2 * crate::validate::DEFAULT_MAX_HEADER_BYTES)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // A little over the validation limit, so that validation (which counts
    // like HPACK) is what answers, with a reason.
    b.http2().max_header_list_size(2 * crate::validate::DEFAULT_MAX_HEADER_BYTES as u32).adaptive_window(true);
    b
}

/// Logs how an HTTP connection ended with an error, counting clients that
/// did not send a header section in time.
pub fn connection_error(proxy: &Proxy, listener: &'static str, e: &(dyn std::error::Error + 'static)) {
    if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
        proxy.metrics.header_timeouts.get_or_create(&crate::metrics::ListenerLabels { listener }).inc();
        tracing::debug!(listener, "HTTP/1 client too slow to send its header section; connection closed");
    } else {
        tracing::debug!(listener, error = %e, "HTTP connection ended with an error");
    }
}

fn count(proxy: &Proxy, kind: &'static str) {
    proxy.metrics.connections.get_or_create(&ConnectionLabels { kind }).inc();
}

/// Accepts inbound connections and forwards them to the application on
/// `app_ip`, at the port the client asked for.
pub async fn serve_inbound(listener: TcpListener, proxy: Arc<Proxy>, app_ip: IpAddr) {
    let mut backoff = AcceptBackoff::new("inbound");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff.accepted();
                let _ = stream.set_nodelay(true);
                count(&proxy, "inbound");
                let port = original_dst(&stream).or_else(|| stream.local_addr().ok()).map(|a| a.port());
                let Some(port) = port else { continue };
                tracing::trace!(%peer, port, "inbound connection");
                tokio::spawn(inbound_connection(proxy.clone(), stream, peer, SocketAddr::new(app_ip, port)));
            }
            Err(e) => backoff.failed(&e, &proxy.metrics).await,
        }
    }
}

/// How long a permissive inbound waits on a declared opaque port for a
/// client's first bytes before treating the connection as plaintext (a
/// server-first protocol sends nothing until the server speaks).
const PERMISSIVE_PEEK: Duration = Duration::from_millis(200);
/// How long a TLS client has to send its hello and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the first byte of a connection says.
async fn starts_with_tls(stream: &TcpStream, wait: Duration) -> Option<bool> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(wait, stream.peek(&mut first)).await {
        // A TLS record of type handshake (ClientHello).
        Ok(Ok(1)) => Some(first[0] == 0x16),
        Ok(_) => None,
        Err(_) => Some(false),
    }
}

/// Terminates mTLS (or takes plaintext, as the mesh's mode allows) and
/// forwards to the application: requests one by one (validated first) on
/// a port declared HTTP, bytes as they come on any other.
async fn inbound_connection(proxy: Arc<Proxy>, stream: TcpStream, peer: SocketAddr, app: SocketAddr) {
    let tls = &proxy.tls;
    let mode = tls.mode();
    let protocol = proxy
        .config
        .load()
        .inbound
        .as_ref()
        .and_then(|i| i.ports.iter().find(|(p, _)| *p == app.port()).map(|(_, proto)| *proto));
    if mode == MtlsMode::Off {
        to_application(proxy.clone(), stream, app, protocol).await;
        return;
    }
    // A client-first port (HTTP, or undeclared and so sniffed anyway) can
    // wait for the client's first bytes as long as a handshake may take; a
    // declared opaque port might carry a server-first protocol, so a
    // permissive inbound treats a silent client as plaintext.
    let opaque = protocol == Some(Protocol::Opaque);
    let wait = if mode == MtlsMode::Strict || !opaque { HANDSHAKE_TIMEOUT } else { PERMISSIVE_PEEK };
    let Some(is_tls) = starts_with_tls(&stream, wait).await else { return };
    if !is_tls {
        if mode == MtlsMode::Strict {
            tls.count("inbound", "plaintext_refused");
            tracing::info!(%peer, port = app.port(), "plaintext connection refused: the mesh's mTLS mode is strict");
            return;
        }
        tls.count("inbound", "plaintext");
        to_application(proxy.clone(), stream, app, protocol).await;
        return;
    }
    let Some(state) = tls.state() else {
        tls.count("inbound", "no_certificate");
        tracing::warn!(%peer, "mTLS connection refused: this proxy has no workload certificate yet");
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(state.server_config());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(client)) => {
            tls.count("inbound", "mtls");
            let session = client.get_ref().1;
            let peer_identity = session
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| weft_identity::SpiffeId::from_certificate(c).ok());
            tracing::trace!(%peer, identity = ?peer_identity.map(|i| i.to_string()), "mTLS connection accepted");
            // A peer that forwards opaque TCP says so; its bytes are not HTTP
            // whatever this side believes the port carries.
            let protocol =
                if session.alpn_protocol() == Some(crate::tls::ALPN_TCP) { Some(Protocol::Opaque) } else { protocol };
            to_application(proxy.clone(), client, app, protocol).await;
        }
        Ok(Err(e)) => {
            tls.count("inbound", "handshake_failed");
            tracing::warn!(%peer, error = %e, "mTLS handshake refused (a peer outside this mesh, or an expired certificate)");
        }
        Err(_) => {
            tls.count("inbound", "handshake_failed");
            tracing::warn!(%peer, "mTLS handshake timed out");
        }
    }
}

/// Hands an accepted inbound connection to the application: as HTTP
/// requests when the port is declared HTTP (so they are validated here
/// too, whoever sent them), else as a byte stream.
async fn to_application<I>(proxy: Arc<Proxy>, io: I, app: SocketAddr, protocol: Option<Protocol>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let app_h2 = match protocol {
        Some(Protocol::Http) => false,
        Some(Protocol::Http2) => true,
        _ => {
            let mut io = io;
            match crate::upstream::connect(app).await {
                Ok(mut server) => {
                    let _ = tokio::io::copy_bidirectional(&mut io, &mut server).await;
                }
                Err(e) => tracing::debug!(%app, error = %e, "application connect failed"),
            }
            return;
        }
    };
    let proxy_for_limits = proxy.clone();
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move {
            let started = std::time::Instant::now();
            let summary = Summary::of(&req);
            let resp = crate::http::inbound(proxy.clone(), req, app, app_h2).await;
            Ok::<_, Infallible>(finish(&proxy, "inbound", &summary, started, resp))
        }
    });
    let server = http_server(&proxy_for_limits.limits.load());
    if let Err(e) = server.serve_connection_with_upgrades(TokioIo::new(io), service).await {
        connection_error(&proxy_for_limits, "inbound", &*e);
    }
}
