//! Gateway mode in one process: a MeshGateway's listeners installed as the
//! control plane sends them, served on loopback, with real backends.
//! Covers listener choice by host name, route matching per listener, TCP
//! and TLS-passthrough listeners, and listeners and routes that change
//! while the gateway runs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_api::config as api;
use weft_proxy::proxy::Proxy;

/// An HTTP backend answering its own name.
async fn http_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(name))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

/// A TCP backend that sends back what it receives.
async fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A port that was free a moment ago, for a listener of the config.
async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

fn backend(name: &str) -> api::Backend {
    api::Backend {
        source: None,
        service: format!("svc/ns/{name}"),
        port: 80,
        weight: 1,
        filters: vec![],
        unresolved: String::new(),
    }
}

fn endpoints(name: &str, addr: SocketAddr) -> api::Resource {
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

fn http_route(hostnames: &[&str], prefix: &str, to: &str) -> api::HttpRoute {
    api::HttpRoute {
        source: None,
        hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
        rules: vec![api::HttpRule {
            matches: vec![api::HttpMatch {
                path: Some(api::PathMatch { kind: api::path_match::Kind::Prefix as i32, value: prefix.into() }),
                ..Default::default()
            }],
            backends: vec![backend(to)],
            ..Default::default()
        }],
    }
}

fn listener(name: &str, port: u16, protocol: api::listener::Protocol, hostname: &str) -> api::Listener {
    api::Listener {
        name: name.into(),
        port: u32::from(port),
        protocol: protocol as i32,
        hostname: hostname.into(),
        tls: None,
        http_routes: vec![],
        tcp_routes: vec![],
    }
}

fn gateway(version: &str, listeners: Vec<api::Listener>) -> api::Resource {
    api::Resource {
        name: "gw/edge".into(),
        version: version.into(),
        kind: Some(api::resource::Kind::Gateway(api::GatewayListeners {
            name: "edge".into(),
            cross_mesh: false,
            listeners,
        })),
    }
}

async fn get(port: u16, host: &str, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path).header("host", host).body(Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Retries `check` until it holds: the gateway applies listener changes
/// asynchronously.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not happen within 2 s");
}

#[tokio::test]
async fn listeners_route_by_host_and_path_and_follow_updates() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let echo = echo_backend().await;
    let (web, tcp) = (free_port().await, free_port().await);
    let web_listeners = |a_route_to: &str| {
        let mut any = listener("web", web, api::listener::Protocol::Http, "");
        any.http_routes = vec![http_route(&["a.example"], "/", a_route_to), http_route(&[], "/b", "b")];
        let mut api_host = listener("api", web, api::listener::Protocol::Http, "api.example");
        api_host.http_routes = vec![http_route(&["api.example"], "/", "b")];
        vec![any, api_host]
    };
    let mut tcp_listener = listener("tcp", tcp, api::listener::Protocol::Tcp, "");
    tcp_listener.tcp_routes = vec![api::TcpRoute { source: None, hostnames: vec![], backends: vec![backend("echo")] }];

    let proxy = Proxy::new();
    let mut listeners = web_listeners("a");
    listeners.push(tcp_listener);
    let rejected = proxy.install(&api::ConfigUpdate {
        nonce: 1,
        resources: vec![gateway("1", listeners), endpoints("a", a), endpoints("b", b), endpoints("echo", echo)],
        removed: vec![],
    });
    assert!(rejected.is_empty(), "{rejected:?}");
    tokio::spawn(weft_proxy::gateway::serve(proxy.clone(), "127.0.0.1".parse().unwrap()));
    eventually("the HTTP listener opening", async || TcpStream::connect(("127.0.0.1", web)).await.is_ok()).await;

    // The listener for any host: routes by host name, then path.
    assert_eq!(get(web, "a.example", "/").await, (200, "a".into()));
    assert_eq!(get(web, "other.example:8080", "/b/c").await, (200, "b".into()));
    let (status, body) = get(web, "other.example", "/").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("listener web of gateway edge"), "{body}");
    // A host with its own listener gets that listener's routes only.
    assert_eq!(get(web, "api.example", "/anything").await, (200, "b".into()));

    // TCP: bytes go to the backend and back.
    let mut conn = TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"ping");
    drop(conn);

    // An update moves a.example to b and drops the TCP listener; the HTTP
    // listener keeps its socket.
    let rejected = proxy.install(&api::ConfigUpdate {
        nonce: 2,
        resources: vec![gateway("2", web_listeners("b"))],
        removed: vec![],
    });
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(get(web, "a.example", "/").await, (200, "b".into()));
    eventually("the TCP listener closing", async || TcpStream::connect(("127.0.0.1", tcp)).await.is_err()).await;
}

/// The bytes of a ClientHello naming `server`.
fn client_hello(server: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

#[tokio::test]
async fn tls_passthrough_picks_the_route_by_server_name() {
    let echo = echo_backend().await;
    let port = free_port().await;
    let mut tls = listener("tls", port, api::listener::Protocol::Tls, "*.secure.example");
    tls.tls = Some(api::ListenerTls { passthrough: true, certificates: vec![] });
    tls.tcp_routes = vec![api::TcpRoute {
        source: None,
        hostnames: vec!["db.secure.example".into()],
        backends: vec![backend("echo")],
    }];
    let proxy = Proxy::new();
    let rejected = proxy.install(&api::ConfigUpdate {
        nonce: 1,
        resources: vec![gateway("1", vec![tls]), endpoints("echo", echo)],
        removed: vec![],
    });
    assert!(rejected.is_empty(), "{rejected:?}");
    tokio::spawn(weft_proxy::gateway::serve(proxy.clone(), "127.0.0.1".parse().unwrap()));
    eventually("the TLS listener opening", async || TcpStream::connect(("127.0.0.1", port)).await.is_ok()).await;

    // The ClientHello reaches the backend unchanged (the echo sends it back).
    let hello = client_hello("db.secure.example");
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    conn.write_all(&hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, hello);

    // A server name no route serves is closed without reaching a backend.
    for server in ["www.secure.example", "db.elsewhere.example"] {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        conn.write_all(&client_hello(server)).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await.unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{server}: the gateway should close the connection, got {read:?}");
    }
}
