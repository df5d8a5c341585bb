//! Gateway mode: the listeners of one MeshGateway, served on the gateway's
//! own address instead of intercepted pod traffic.
//!
//! Listeners follow the config: a port that appears is bound, one that
//! disappears (or changes protocol) is closed, while connections already
//! accepted run on. Routes change without rebinding: every request and
//! connection looks its listener up in the config in force when it
//! arrives. Backends are reached like a sidecar reaches them: balanced
//! over endpoints, over mTLS to meshed ones.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::http::{Owner, RouteTable, admit, authority_str, full, route_request, split_authority};
use crate::metrics::ConnectionLabels;
use crate::model::{Certificate, Gateway, ListenerProtocol};
use crate::proxy::Proxy;
use crate::reply::{Summary, finish};
use crate::upstream::Body;

/// How a port is served, from the protocol of its listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortKind {
    Http,
    Tcp,
    /// TLS passed through to the backend chosen by the SNI server name.
    TlsPassthrough,
    /// TLS terminated with the listeners' certificates, then HTTP.
    Https,
    /// TLS terminated, then the bytes to the TLS routes' backends.
    TlsTerminate,
}

/// The gateway this proxy serves (a gateway proxy holds exactly one).
fn current_gateway(proxy: &Proxy) -> Option<Arc<Gateway>> {
    proxy.config.load().gateways.values().next().cloned()
}

/// What each port should run, and why a listener is not served.
fn desired_ports(
    gateway: &Gateway,
    certificates: &HashMap<String, Arc<Certificate>>,
) -> (HashMap<u16, PortKind>, Vec<String>) {
    let mut ports = HashMap::new();
    let mut unserved = Vec::new();
    for l in &gateway.listeners {
        let kind = match (l.protocol, l.tls_passthrough) {
            (ListenerProtocol::Http, _) => PortKind::Http,
            (ListenerProtocol::Tcp, _) => PortKind::Tcp,
            (ListenerProtocol::Tls, true) => PortKind::TlsPassthrough,
            (ListenerProtocol::Https | ListenerProtocol::Tls, _) => {
                if !l.certificates.iter().any(|c| certificates.contains_key(c)) {
                    unserved.push(format!(
                        "listener {} ({:?} on port {}) has no usable certificate (of {:?})",
                        l.name, l.protocol, l.port, l.certificates
                    ));
                    continue;
                }
                if l.protocol == ListenerProtocol::Https { PortKind::Https } else { PortKind::TlsTerminate }
            }
        };
        // The translator keeps listeners that share a port compatible; the
        // first one's protocol decides.
        ports.entry(l.port).or_insert(kind);
    }
    (ports, unserved)
}

/// Serves the gateway's listeners on `ip` until the task is dropped.
pub async fn serve(proxy: Arc<Proxy>, ip: IpAddr) {
    let mut updates = proxy.updates();
    let mut running: HashMap<u16, (PortKind, JoinHandle<()>)> = HashMap::new();
    let mut reported: Vec<String> = Vec::new();
    loop {
        let certificates = proxy.config.load().certificates.clone();
        let (desired, unserved) = current_gateway(&proxy).map(|g| desired_ports(&g, &certificates)).unwrap_or_default();
        if unserved != reported {
            for why in &unserved {
                tracing::warn!(reason = %why, "gateway listener not served");
            }
            reported = unserved;
        }
        running.retain(|port, (kind, task)| {
            let keep = desired.get(port) == Some(kind) && !task.is_finished();
            if !keep {
                task.abort();
                tracing::info!(port, "gateway listener closed");
            }
            keep
        });
        let mut failed = false;
        for (&port, &kind) in &desired {
            if running.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::new(ip, port);
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    tracing::info!(%addr, ?kind, "gateway listener open");
                    running.insert(port, (kind, tokio::spawn(accept(proxy.clone(), listener, port, kind))));
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "gateway listener cannot bind; retrying");
                    failed = true;
                }
            }
        }
        if failed {
            // A port still held by a closing listener or another process.
            tokio::select! {
                r = updates.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        } else if updates.changed().await.is_err() {
            return;
        }
    }
}

async fn accept(proxy: Arc<Proxy>, listener: TcpListener, port: u16, kind: PortKind) {
    let mut acceptors = TerminatingAcceptor::default();
    let mut backoff = crate::accept::AcceptBackoff::new("gateway");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.accepted();
                stream
            }
            Err(e) => {
                backoff.failed(&e, &proxy.metrics).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        proxy.metrics.connections.get_or_create(&ConnectionLabels { kind: "gateway" }).inc();
        let proxy = proxy.clone();
        let terminating = match kind {
            PortKind::Https | PortKind::TlsTerminate => match acceptors.current(&proxy, port, kind) {
                Some(terminating) => Some(terminating),
                None => continue,
            },
            _ => None,
        };
        tokio::spawn(async move {
            match (kind, terminating) {
                (PortKind::Http, _) => serve_http_or_mesh(proxy, stream, port).await,
                (PortKind::Tcp, _) => serve_tcp(proxy, stream, port).await,
                (PortKind::TlsPassthrough, _) => serve_tls_passthrough(proxy, stream, port).await,
                (_, Some((gateway, acceptor))) => serve_terminated(proxy, stream, port, kind, gateway, acceptor).await,
                (_, None) => {}
            }
        });
    }
}

/// An HTTP listener serves clients outside the mesh in plaintext, and
/// mesh clients (their sidecars) over mTLS: a connection that starts with
/// a TLS handshake record is one of those. The client's certificate must
/// chain to this gateway's mesh, or, for a cross-mesh gateway, to any
/// mesh's trust bundle; a client of another mesh at a gateway that is not
/// cross-mesh is refused at the handshake, logged and counted
/// (`weft_proxy_tls_connections_total{direction="gateway"}`).
async fn serve_http_or_mesh(proxy: Arc<Proxy>, stream: TcpStream, port: u16) {
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    let mut first = [0u8; 1];
    let timeout = proxy.limits.load().header_read_timeout;
    let starts_tls = matches!(
        tokio::time::timeout(timeout, stream.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD
    );
    if !starts_tls {
        return serve_http(proxy, stream, port).await;
    }
    let Some(state) = proxy.tls.state() else {
        proxy.tls.count("gateway", "no_certificate");
        tracing::warn!(port, "a mesh client's TLS handshake arrived before this gateway holds a certificate");
        return;
    };
    let cross_mesh = current_gateway(&proxy).is_some_and(|g| g.cross_mesh);
    let others: Vec<Arc<rustls::RootCertStore>> =
        if cross_mesh { proxy.tls.federation().bundles.values().cloned().collect() } else { Vec::new() };
    let config = match state.gateway_server_config(&others) {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(port, error = %e, "no TLS configuration for mesh clients");
            return;
        }
    };
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(config).accept(stream)).await {
        Ok(Ok(tls)) => {
            let client = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| weft_identity::SpiffeId::from_certificate(c).ok());
            let foreign = client.as_ref().is_some_and(|c| c.trust_domain != state.identity.trust_domain);
            proxy.tls.count("gateway", if foreign { "mtls_cross_mesh" } else { "mtls" });
            tracing::debug!(port, client = ?client.map(|c| c.to_string()), "mesh client over mTLS");
            serve_http(proxy, tls, port).await
        }
        Ok(Err(e)) => {
            proxy.tls.count("gateway", "client_refused");
            tracing::warn!(
                port,
                ?peer,
                cross_mesh,
                error = %e,
                "mesh client refused: its certificate does not chain to a mesh this gateway accepts"
            );
        }
        Err(_) => proxy.tls.count("gateway", "handshake_timeout"),
    }
}

async fn serve_http<S>(proxy: Arc<Proxy>, stream: S, port: u16)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let server = crate::listen::http_server(&proxy.limits.load());
    let for_errors = proxy.clone();
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move {
            let started = Instant::now();
            let summary = Summary::of(&req);
            let (listener, resp) = gateway_request(proxy.clone(), req, port).await;
            Ok::<_, Infallible>(finish(&proxy, &listener, &summary, started, resp))
        }
    });
    if let Err(e) = server.serve_connection_with_upgrades(TokioIo::new(stream), service).await {
        crate::listen::connection_error(&for_errors, "gateway", &*e);
    }
}

/// One request on an HTTP listener port: the listener whose host name
/// admits the request's host, then its routes. Returns the listener's
/// name (for logs) with the response.
async fn gateway_request(proxy: Arc<Proxy>, req: Request<Incoming>, port: u16) -> (String, Response<Body>) {
    let started = Instant::now();
    let unmatched = || format!("port {port}");
    let req = match admit(&proxy, req) {
        Ok(req) => req,
        Err(refused) => return (unmatched(), *refused),
    };
    let Some(gateway) = current_gateway(&proxy) else {
        return (unmatched(), full(StatusCode::SERVICE_UNAVAILABLE, "this gateway has no listeners yet"));
    };
    let uri = req.uri().clone();
    let host_header = req.headers().get(header::HOST).cloned();
    let (host, _) = split_authority(authority_str(&uri, host_header.as_ref()).unwrap_or(""));
    let Some(listener) = gateway.listener_for(port, &host) else {
        let text = format!("no listener of gateway {} on port {port} serves host {host:?}", gateway.name);
        return (unmatched(), full(StatusCode::NOT_FOUND, text));
    };
    let table = RouteTable {
        routes: &listener.http_routes,
        port,
        // A redirect without a scheme keeps the one the client used: https
        // on a listener that terminated TLS.
        scheme: if listener.protocol == ListenerProtocol::Https { "https" } else { "http" },
        owner: Owner::Listener { gateway: &gateway.name, listener: &listener.name },
    };
    (listener.name.clone(), route_request(proxy.clone(), req, table, &host, started).await)
}

async fn serve_tcp(proxy: Arc<Proxy>, stream: TcpStream, port: u16) {
    let Some(gateway) = current_gateway(&proxy) else { return };
    let Some(listener) = gateway.listeners_on(port).into_iter().next() else { return };
    crate::tcp::forward_routes(proxy.clone(), stream, &listener.tcp_routes, port).await;
}

/// The certificates of the listeners on one port, chosen by the client's
/// SNI server name: a certificate naming the server exactly, else one with
/// a matching wildcard, else the first certificate of the listener whose
/// host name admits the server name, else the port's first certificate
/// (for clients that send no SNI). Built for each configuration (see
/// [`TerminatingAcceptor`]), so a rotated certificate serves new
/// connections while the connections already open keep theirs.
#[derive(Debug)]
struct PortCertificates {
    /// (listener host name, its certificates), most specific listener first.
    listeners: Vec<(String, Vec<Arc<Certificate>>)>,
}

impl PortCertificates {
    fn of(gateway: &Gateway, certificates: &HashMap<String, Arc<Certificate>>, port: u16) -> Self {
        let listeners = gateway
            .listeners_on(port)
            .into_iter()
            .map(|l| {
                let certs: Vec<Arc<Certificate>> =
                    l.certificates.iter().filter_map(|c| certificates.get(c).cloned()).collect();
                (l.hostname.clone(), certs)
            })
            .filter(|(_, certs)| !certs.is_empty())
            .collect();
        PortCertificates { listeners }
    }

    fn choose(&self, server_name: Option<&str>) -> Option<&Arc<Certificate>> {
        let all = || self.listeners.iter().flat_map(|(_, certs)| certs.iter());
        if let Some(sni) = server_name {
            if let Some(best) = all().filter_map(|c| c.serves(sni).map(|score| (score, c))).max_by_key(|(s, _)| *s) {
                return Some(best.1);
            }
            if let Some((_, certs)) = self.listeners.iter().find(|(host, _)| crate::model::hostname_matches(host, sni))
            {
                return certs.first();
            }
        }
        all().next()
    }
}

impl rustls::server::ResolvesServerCert for PortCertificates {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.choose(hello.server_name()).map(|c| c.key.clone())
    }
}

/// TLS terminated with the port's certificates; then HTTP, or the bytes to
/// the TLS route of the listener the server name picks.
/// The TLS acceptor of one terminating port, built once per configuration
/// (not per connection: building a rustls `ServerConfig` costs more than a
/// resumed handshake, and one config keeps its session cache and ticket
/// keys across connections). A new configuration (a rotated certificate, a
/// changed listener) builds a new one for the connections after it.
#[derive(Default)]
struct TerminatingAcceptor {
    /// The configuration it was built from (kept so the comparison by
    /// pointer cannot be fooled by a freed and reused allocation).
    built_from: Option<Arc<crate::state::Config>>,
    current: Option<(Arc<Gateway>, tokio_rustls::TlsAcceptor)>,
}

impl TerminatingAcceptor {
    fn current(
        &mut self,
        proxy: &Proxy,
        port: u16,
        kind: PortKind,
    ) -> Option<(Arc<Gateway>, tokio_rustls::TlsAcceptor)> {
        let config = proxy.config.load_full();
        if !self.built_from.as_ref().is_some_and(|built| Arc::ptr_eq(built, &config)) {
            self.current = terminating_acceptor(&config, port, kind);
            self.built_from = Some(config);
        }
        self.current.clone()
    }
}

fn terminating_acceptor(
    config: &crate::state::Config,
    port: u16,
    kind: PortKind,
) -> Option<(Arc<Gateway>, tokio_rustls::TlsAcceptor)> {
    let gateway = config.gateways.values().next().cloned()?;
    let resolver = Arc::new(PortCertificates::of(&gateway, &config.certificates, port));
    let builder = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .ok()?;
    let mut server = builder.with_no_client_auth().with_cert_resolver(resolver);
    if kind == PortKind::Https {
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    Some((gateway, tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

async fn serve_terminated(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    port: u16,
    kind: PortKind,
    gateway: Arc<Gateway>,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    let tls = match tokio::time::timeout(CLIENT_HELLO_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(port, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(port, "TLS handshake not finished in time; closing");
            return;
        }
    };
    match kind {
        PortKind::Https => serve_http(proxy, tls, port).await,
        _ => {
            let sni = tls.get_ref().1.server_name().map(str::to_ascii_lowercase).unwrap_or_default();
            let Some(listener) = gateway.listener_for(port, &sni) else {
                tracing::debug!(port, server_name = %sni, "TLS: no listener serves the server name; closing");
                return;
            };
            let routes: Vec<_> = listener
                .tcp_routes
                .iter()
                .filter(|r| {
                    r.hostnames.is_empty() || r.hostnames.iter().any(|h| crate::model::hostname_matches(h, &sni))
                })
                .cloned()
                .collect();
            crate::tcp::forward_routes(proxy.clone(), tls, &routes, port).await;
        }
    }
}

/// Most a ClientHello may take before the gateway gives up on reading its
/// server name.
const MAX_CLIENT_HELLO: usize = 16 * 1024;
/// How long a client has to send its ClientHello.
const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS passthrough: the server name of the ClientHello (read without
/// consuming it) picks the listener and its TLS route; the bytes, the
/// ClientHello included, then go to the backend unchanged.
async fn serve_tls_passthrough(proxy: Arc<Proxy>, stream: TcpStream, port: u16) {
    let sni = match tokio::time::timeout(CLIENT_HELLO_TIMEOUT, peek_server_name(&stream)).await {
        Ok(Ok(Some(name))) => name,
        Ok(Ok(None)) => {
            tracing::debug!(port, "TLS passthrough: the ClientHello names no server; closing");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(port, error = %e, "TLS passthrough: no ClientHello; closing");
            return;
        }
        Err(_) => {
            tracing::debug!(port, "TLS passthrough: no ClientHello in time; closing");
            return;
        }
    };
    let Some(gateway) = current_gateway(&proxy) else { return };
    let Some(listener) = gateway.listener_for(port, &sni) else {
        tracing::debug!(port, server_name = %sni, "TLS passthrough: no listener serves the server name; closing");
        return;
    };
    let routes: Vec<_> = listener
        .tcp_routes
        .iter()
        .filter(|r| r.hostnames.is_empty() || r.hostnames.iter().any(|h| crate::model::hostname_matches(h, &sni)))
        .cloned()
        .collect();
    crate::tcp::forward_routes(proxy.clone(), stream, &routes, port).await;
}

/// The SNI server name of the ClientHello at the start of `stream`, read
/// with `peek` so the bytes stay for the backend.
async fn peek_server_name(stream: &TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = vec![0u8; 1024];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a ClientHello"));
        }
        let mut acceptor = rustls::server::Acceptor::default();
        let mut reader: &[u8] = &buf[..n];
        acceptor.read_tls(&mut reader)?;
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(accepted.client_hello().server_name().map(|s| s.to_ascii_lowercase())),
            Ok(None) if n < buf.len() => {
                // More of the ClientHello is on its way; peek reports the
                // socket readable while unread bytes wait, so poll gently.
                if n == seen {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen = n;
            }
            Ok(None) if buf.len() < MAX_CLIENT_HELLO => buf.resize(buf.len() * 2, 0),
            Ok(None) => return Ok(None),
            Err((e, _)) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())),
        }
    }
}
