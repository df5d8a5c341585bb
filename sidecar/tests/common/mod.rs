//! Shared pieces of the in-process proxy tests: a backend that records
//! what reaches it, config resources as the control plane sends them, and
//! clients that send well-formed (hyper) or malformed (raw bytes) requests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_api::config as api;

/// One request as a backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub version: http::Version,
    pub path: String,
    /// The Host header, or the URI's authority (HTTP/2).
    pub authority: String,
    pub headers: http::HeaderMap,
    pub body_len: usize,
}

pub type Record = Arc<Mutex<Vec<Seen>>>;

/// A backend speaking HTTP/1.1 and h2c that records every request.
/// A path ending in `/trailers` is answered with trailers (`grpc-status:
/// 0`, `x-trailer`);
/// one ending in `/slow` after two seconds; anything else with the
/// protocol version it was asked in.
pub async fn recording_backend() -> (SocketAddr, Record) {
    recording_backend_at("127.0.0.1:0".parse().unwrap()).await
}

/// [`recording_backend`] on a given address.
pub async fn recording_backend_at(addr: SocketAddr) -> (SocketAddr, Record) {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let record: Record = Arc::default();
    let r = record.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let r = r.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let r = r.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        let authority = parts
                            .headers
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_owned)
                            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
                            .unwrap_or_default();
                        r.lock().unwrap().push(Seen {
                            version: parts.version,
                            path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                            authority,
                            headers: parts.headers.clone(),
                            body_len: body.len(),
                        });
                        let path = parts.uri.path();
                        if path.ends_with("/slow") {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        let text = Bytes::from(format!("{:?}", parts.version));
                        let body = if path.ends_with("/trailers") {
                            let mut t = http::HeaderMap::new();
                            t.insert("grpc-status", http::HeaderValue::from_static("0"));
                            t.insert("x-trailer", http::HeaderValue::from_static("yes"));
                            Full::new(text).with_trailers(async move { Some(Ok(t)) }).boxed()
                        } else {
                            Full::new(text).boxed()
                        };
                        Ok::<_, Infallible>(http::Response::new(body))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, record)
}

pub fn prefix_match(prefix: &str) -> api::HttpMatch {
    api::HttpMatch {
        path: Some(api::PathMatch { kind: api::path_match::Kind::Prefix as i32, value: prefix.into() }),
        ..Default::default()
    }
}

pub fn backend_ref(name: &str) -> api::Backend {
    api::Backend {
        source: None,
        service: format!("svc/ns/{name}"),
        port: 80,
        weight: 1,
        filters: vec![],
        unresolved: String::new(),
    }
}

pub fn rule(prefix: &str, to: &str) -> api::HttpRule {
    api::HttpRule { matches: vec![prefix_match(prefix)], backends: vec![backend_ref(to)], ..Default::default() }
}

/// A Service `name.ns` on port 80 declared as `protocol`, with `rules`.
pub fn service(name: &str, vip: &str, protocol: api::Protocol, rules: Vec<api::HttpRule>) -> api::Resource {
    api::Resource {
        name: format!("svc/ns/{name}"),
        version: "1".into(),
        kind: Some(api::resource::Kind::Service(api::Service {
            namespace: "ns".into(),
            name: name.into(),
            vips: vec![vip.into()],
            hostnames: vec![format!("{name}.ns")],
            ports: vec![api::ServicePort {
                port: 80,
                name: "web".into(),
                protocol: protocol as i32,
                http_routes: vec![api::HttpRoute { source: None, hostnames: vec![], rules }],
                tcp_routes: vec![],
            }],
        })),
    }
}

pub fn endpoints(name: &str, addr: SocketAddr) -> api::Resource {
    api::Resource {
        name: format!("ep/ns/{name}"),
        version: "1".into(),
        kind: Some(api::resource::Kind::Endpoints(api::Endpoints {
            namespace: "ns".into(),
            name: name.into(),
            endpoints: vec![api::Endpoint {
                ip: addr.ip().to_string(),
                ports: HashMap::from([(80, u32::from(addr.port()))]),
                identity: String::new(),
                workload: String::new(),
            }],
        })),
    }
}

/// A gateway `edge` with one HTTP listener on `port` carrying `rules`.
pub fn gateway(port: u16, rules: Vec<api::HttpRule>) -> api::Resource {
    api::Resource {
        name: "gw/edge".into(),
        version: "1".into(),
        kind: Some(api::resource::Kind::Gateway(api::GatewayListeners {
            name: "edge".into(),
            cross_mesh: false,
            listeners: vec![api::Listener {
                name: "web".into(),
                port: u32::from(port),
                protocol: api::listener::Protocol::Http as i32,
                hostname: String::new(),
                tls: None,
                http_routes: vec![api::HttpRoute { source: None, hostnames: vec![], rules }],
                tcp_routes: vec![],
            }],
        })),
    }
}

/// Serves the sidecar's outbound listener (used as an explicit proxy).
pub async fn outbound(proxy: Arc<weft_proxy::proxy::Proxy>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(weft_proxy::listen::serve_outbound(listener, proxy));
    addr
}

/// A port that was free a moment ago.
pub async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

/// Serves the gateway's listeners on 127.0.0.1 and waits until `port`
/// accepts connections.
pub async fn gateway_on(proxy: Arc<weft_proxy::proxy::Proxy>, port: u16) -> SocketAddr {
    tokio::spawn(weft_proxy::gateway::serve(proxy, "127.0.0.1".parse().unwrap()));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            return addr;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the gateway did not open port {port}");
}

/// Writes raw bytes, reads until the server closes (or 5 s), and returns
/// the status code of the first response.
pub async fn raw_status(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// An HTTP/2 (prior knowledge) connection to `addr`.
pub async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP/1.1 connection to `addr`.
pub async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// Serves the sidecar's inbound listener on 127.0.0.1 in front of an
/// application on 127.0.0.2 at the same port, declared `protocol`, with
/// mTLS off; returns the listener's address and what the application
/// received.
pub async fn inbound(proxy: Arc<weft_proxy::proxy::Proxy>, protocol: api::Protocol) -> (SocketAddr, Record) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_, record) = recording_backend_at(([127, 0, 0, 2], addr.port()).into()).await;
    let rejected = proxy.install(&api::ConfigUpdate {
        nonce: 100,
        resources: vec![
            api::Resource {
                name: "mesh".into(),
                version: "1".into(),
                kind: Some(api::resource::Kind::Mesh(api::MeshSettings {
                    name: "default".into(),
                    mtls: api::MtlsMode::Off as i32,
                    trust_domain: "default.weft.local".into(),
                    roots_pem: vec![],
                    federated: vec![],
                })),
            },
            api::Resource {
                name: "inbound".into(),
                version: "1".into(),
                kind: Some(api::resource::Kind::Inbound(api::Inbound {
                    ports: vec![api::InboundPort { port: u32::from(addr.port()), protocol: protocol as i32 }],
                })),
            },
        ],
        removed: vec![],
    });
    assert!(rejected.is_empty(), "{rejected:?}");
    tokio::spawn(weft_proxy::listen::serve_inbound(listener, proxy, "127.0.0.2".parse().unwrap()));
    (addr, record)
}
