//! The sidecar's request path end to end in one process: config installed
//! as the control plane would send it, the outbound listener used as an
//! explicit proxy, and real backend servers on loopback. Covers what the
//! conformance cases do not: retries, timeouts, mirrors, host rewrites,
//! unresolved backends, unmatched requests, h2c clients, connection reuse
//! and protocol upgrades.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_api::config as api;
use weft_proxy::proxy::Proxy;

/// Requests a backend received: (path, host).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A backend that records what it sees. `/flaky/N` fails with 503 until it
/// has been asked N times; `/slow` answers after two seconds.
async fn backend(name: &'static str) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let record = record.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("").to_owned();
                        let count = {
                            let mut r = record.lock().unwrap();
                            r.push((path.clone(), host));
                            r.iter().filter(|(p, _)| *p == path).count()
                        };
                        if path == "/slow" {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        let status = match path.strip_prefix("/flaky/").and_then(|n| n.parse::<usize>().ok()) {
                            Some(n) if count <= n => 503,
                            _ => 200,
                        };
                        let mut resp = http::Response::new(Full::new(Bytes::from(name)));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (addr, seen)
}

fn millis(ms: u64) -> prost_types::Duration {
    prost_types::Duration { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

fn backend_ref(name: &str, unresolved: &str) -> api::Backend {
    api::Backend {
        source: None,
        service: format!("svc/ns/{name}"),
        port: 80,
        weight: 1,
        filters: vec![],
        unresolved: unresolved.into(),
    }
}

fn rule(prefix: &str, backend: api::Backend) -> api::HttpRule {
    api::HttpRule {
        matches: vec![api::HttpMatch {
            path: Some(api::PathMatch { kind: api::path_match::Kind::Prefix as i32, value: prefix.into() }),
            ..Default::default()
        }],
        backends: vec![backend],
        ..Default::default()
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

async fn start(primary: SocketAddr, mirror: SocketAddr) -> SocketAddr {
    let retry = api::HttpRule {
        retry: Some(api::Retry { attempts: 2, backoff: Some(millis(10)), codes: vec![503] }),
        ..rule("/flaky", backend_ref("primary", ""))
    };
    let slow = api::HttpRule {
        timeouts: Some(api::Timeouts { request: Some(millis(200)), backend_request: None }),
        ..rule("/slow", backend_ref("primary", ""))
    };
    let mirrored = api::HttpRule {
        filters: vec![api::Filter {
            kind: Some(api::filter::Kind::Mirror(api::Mirror {
                backend: Some(backend_ref("mirror", "")),
                numerator: 100,
                denominator: 100,
            })),
        }],
        ..rule("/mirrored", backend_ref("primary", ""))
    };
    let rewritten = api::HttpRule {
        filters: vec![api::Filter {
            kind: Some(api::filter::Kind::Rewrite(api::Rewrite {
                hostname: "elsewhere.example".into(),
                path: Some(api::PathModifier { kind: api::path_modifier::Kind::Prefix as i32, value: "/new".into() }),
            })),
        }],
        ..rule("/old", backend_ref("primary", ""))
    };
    let unresolved = rule("/unresolved", backend_ref("missing", "Service ns/missing not found"));
    let plain = rule("/plain", backend_ref("primary", ""));
    let service = api::Resource {
        name: "svc/ns/web".into(),
        version: "1".into(),
        kind: Some(api::resource::Kind::Service(api::Service {
            namespace: "ns".into(),
            name: "web".into(),
            vips: vec!["10.96.0.1".into()],
            hostnames: vec!["web.ns".into()],
            ports: vec![api::ServicePort {
                port: 80,
                name: "http".into(),
                protocol: api::Protocol::Http as i32,
                http_routes: vec![api::HttpRoute {
                    source: None,
                    hostnames: vec![],
                    rules: vec![retry, slow, mirrored, rewritten, unresolved, plain],
                }],
                tcp_routes: vec![],
            }],
        })),
    };
    let proxy = Proxy::new();
    let rejected = proxy.install(&api::ConfigUpdate {
        nonce: 1,
        resources: vec![service, endpoints("primary", primary), endpoints("mirror", mirror)],
        removed: vec![],
    });
    assert!(rejected.is_empty(), "{rejected:?}");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(weft_proxy::listen::serve_outbound(listener, proxy));
    addr
}

async fn get(proxy: SocketAddr, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path).header("host", "web.ns").body(Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn retries_timeouts_mirrors_rewrites_and_failures() {
    let (primary, primary_seen) = backend("primary").await;
    let (mirror, mirror_seen) = backend("mirror").await;
    let proxy = start(primary, mirror).await;

    // Two 503s, then success: two retries are allowed.
    assert_eq!(get(proxy, "/flaky/2").await, (200, "primary".into()));
    // Three 503s exhaust them: the last 503 is the answer.
    assert_eq!(get(proxy, "/flaky/3").await.0, 503);
    let tries = |p: &str| primary_seen.lock().unwrap().iter().filter(|(path, _)| path == p).count();
    assert_eq!((tries("/flaky/2"), tries("/flaky/3")), (3, 3));

    // The request timeout (200 ms) beats the two-second backend.
    let started = std::time::Instant::now();
    assert_eq!(get(proxy, "/slow").await.0, 504);
    assert!(started.elapsed() < Duration::from_secs(1));

    // The mirror gets a copy; the client gets the primary's answer.
    assert_eq!(get(proxy, "/mirrored/x").await, (200, "primary".into()));
    for _ in 0..50 {
        if mirror_seen.lock().unwrap().iter().any(|(p, _)| p == "/mirrored/x") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(mirror_seen.lock().unwrap().iter().any(|(p, _)| p == "/mirrored/x"), "the mirror saw nothing");

    // Host and path prefix are rewritten on the way to the backend.
    assert_eq!(get(proxy, "/old/page").await.0, 200);
    assert!(
        primary_seen.lock().unwrap().iter().any(|(p, h)| p == "/new/page" && h == "elsewhere.example"),
        "{:?}",
        primary_seen.lock().unwrap()
    );

    // An unresolved backend's share is a 500 that says why; no match is 404.
    let (status, body) = get(proxy, "/unresolved").await;
    assert_eq!(status, 500);
    assert!(body.contains("Service ns/missing not found"), "{body}");
    assert_eq!(get(proxy, "/nothing-here").await.0, 404);
}

/// A backend speaking HTTP/1.1 and h2c (prior knowledge) that answers with
/// the protocol version the request came in.
async fn version_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(format!("{:?}", req.version())))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The backend's Service port says `http` (HTTP/1.1): an h2c client's
/// streams are translated, not passed on in the client's protocol (the
/// per-backend protocol matrix is in tests/protocols.rs).
#[tokio::test]
async fn h2c_with_prior_knowledge_is_routed_and_translated_for_an_http1_backend() {
    let backend = version_backend().await;
    let proxy = start(backend, backend).await;

    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Several streams on the one connection, as a gRPC client sends them.
    for _ in 0..3 {
        let req = http::Request::get("http://web.ns/flaky/0").body(Empty::<Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "HTTP/1.1", "the backend should be spoken to in its declared HTTP/1.1");
    }
    // An unmatched path gets the proxy's 404 over h2 too.
    let req = http::Request::get("http://web.ns/nowhere").body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 404);
    // And HTTP/1.1 clients still reach it as HTTP/1.1.
    let (status, body) = get(proxy, "/flaky/0").await;
    assert_eq!((status, body.as_str()), (200, "HTTP/1.1"));
}

/// A backend that counts the connections it accepts. `/plain/close-soon`
/// answers, then closes its connection 50 ms later without saying so (as a
/// server's idle timeout does); `/plain/ws` switches to a protocol that
/// echoes what it receives; anything else gets 1 KiB.
async fn counting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let close = Arc::new(tokio::sync::Notify::new());
                let closer = close.clone();
                let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                    let closer = closer.clone();
                    async move {
                        let resp = match req.uri().path() {
                            "/plain/close-soon" => {
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    closer.notify_one();
                                });
                                http::Response::new(Full::new(Bytes::from("closing soon")))
                            }
                            "/plain/ws" => {
                                let upgraded = hyper::upgrade::on(&mut req);
                                tokio::spawn(async move {
                                    let Ok(io) = upgraded.await else { return };
                                    let mut io = TokioIo::new(io);
                                    let mut buf = [0u8; 64];
                                    while let Ok(n) = io.read(&mut buf).await {
                                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                            return;
                                        }
                                    }
                                });
                                http::Response::builder()
                                    .status(101)
                                    .header("connection", "upgrade")
                                    .header("upgrade", "echo")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap()
                            }
                            _ => http::Response::new(Full::new(Bytes::from(vec![b'x'; 1024]))),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades();
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = close.notified() => conn.as_mut().graceful_shutdown(),
                }
                let _ = conn.await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn connections_to_an_endpoint_are_reused_and_replaced_when_closed() {
    let (backend, accepted) = counting_backend().await;
    let proxy = start(backend, backend).await;

    // Each `get` is a new client connection; the proxy's connection to the
    // endpoint is the same one throughout.
    for _ in 0..50 {
        let (status, body) = get(proxy, "/plain/a").await;
        assert_eq!((status, body.len()), (200, 1024));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "sequential requests should share one endpoint connection");

    // Concurrent requests need more connections; afterwards they are idle
    // and reused again.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                for _ in 0..20 {
                    assert_eq!(get(proxy, "/plain/b").await.0, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let after_concurrency = accepted.load(Ordering::SeqCst);
    assert!((1..=9).contains(&after_concurrency), "{after_concurrency} connections for 8 concurrent clients");
    for _ in 0..20 {
        assert_eq!(get(proxy, "/plain/c").await.0, 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), after_concurrency, "idle connections should be reused");

    // The endpoint closes its connection while it sits in the pool: the next
    // request goes out on a new one and succeeds.
    assert_eq!(get(proxy, "/plain/close-soon").await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..10 {
        assert_eq!(get(proxy, "/plain/d").await.0, 200);
    }
}

#[tokio::test]
async fn an_upgraded_connection_carries_bytes_both_ways() {
    let (backend, _) = counting_backend().await;
    let proxy = start(backend, backend).await;
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(b"GET /plain/ws HTTP/1.1\r\nHost: web.ns\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "the proxy closed before the response head ended");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for word in ["ping", "pong", "and more"] {
        stream.write_all(word.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; word.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(buf, word.as_bytes());
    }
}
