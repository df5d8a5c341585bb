//! HTTP/1.1 and HTTP/2 through the sidecar's outbound listener and a
//! gateway listener, in one process with a real backend: the protocol
//! toward a backend follows its Service port's declaration (translated
//! when the client speaks the other one), gRPC's `TE: trailers` and
//! trailers pass, and errors the proxy makes up reach gRPC clients as gRPC
//! statuses.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use weft_api::config as api;
use weft_proxy::proxy::Proxy;

struct Setup {
    outbound: SocketAddr,
    gateway: SocketAddr,
    record: Record,
}

/// Services `h1` (declared HTTP/1.1), `h2` (declared h2c), `any`
/// (undeclared), `narrow` (only `/only` routed) and `dead` (its endpoint
/// refuses connections), all but `dead` served by one recording backend; a
/// gateway listener routes `/to-h1`, `/to-h2`, `/to-any` and `/to-dead`.
async fn setup() -> Setup {
    let (backend, record) = recording_backend().await;
    let dead: SocketAddr = ([127, 0, 0, 1], free_port().await).into();
    let port = free_port().await;
    let proxy = Proxy::new();
    let rejected = proxy.install(&api::ConfigUpdate {
        nonce: 1,
        resources: vec![
            service("h1", "10.96.0.1", api::Protocol::Http, vec![rule("/", "h1")]),
            service("h2", "10.96.0.2", api::Protocol::Http2, vec![rule("/", "h2")]),
            service("any", "10.96.0.3", api::Protocol::Detect, vec![rule("/", "any")]),
            service("narrow", "10.96.0.4", api::Protocol::Http2, vec![rule("/only", "h2")]),
            service("dead", "10.96.0.5", api::Protocol::Http2, vec![rule("/", "dead")]),
            endpoints("h1", backend),
            endpoints("h2", backend),
            endpoints("any", backend),
            endpoints("dead", dead),
            gateway(
                port,
                vec![
                    rule("/to-h1", "h1"),
                    rule("/to-h2", "h2"),
                    rule("/to-any", "any"),
                    rule("/to-dead", "dead"),
                    api::HttpRule {
                        timeouts: Some(api::Timeouts {
                            request: Some(prost_types::Duration { seconds: 5, nanos: 0 }),
                            backend_request: None,
                        }),
                        ..rule("/slow", "h2")
                    },
                ],
            ),
        ],
        removed: vec![],
    });
    assert!(rejected.is_empty(), "{rejected:?}");
    let outbound = outbound(proxy.clone()).await;
    let gateway = gateway_on(proxy, port).await;
    Setup { outbound, gateway, record }
}

/// Where a request goes: through the outbound listener to Service `svc`,
/// or through the gateway to its route for `svc`.
#[derive(Debug, Clone, Copy)]
enum Via {
    Outbound,
    Gateway,
}

fn target(via: Via, svc: &str, path: &str) -> (String, String) {
    match via {
        Via::Outbound => (format!("{svc}.ns"), path.to_owned()),
        Via::Gateway => {
            ("edge.example".to_owned(), if path == "/slow" { path.into() } else { format!("/to-{svc}{path}") })
        }
    }
}

async fn send(
    s: &Setup,
    via: Via,
    client_h2: bool,
    svc: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Response<hyper::body::Incoming> {
    let addr = match via {
        Via::Outbound => s.outbound,
        Via::Gateway => s.gateway,
    };
    let (host, path) = target(via, svc, path);
    let mut b = http::Request::post(if client_h2 { format!("http://{host}{path}") } else { path });
    if !client_h2 {
        b = b.header("host", host);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from_static(b"payload"))).unwrap();
    if client_h2 {
        let mut c = h2(addr).await;
        c.send_request(req).await.unwrap()
    } else {
        let mut c = h1(addr).await;
        c.send_request(req).await.unwrap()
    }
}

#[tokio::test]
async fn every_client_protocol_reaches_every_backend_protocol() {
    let s = setup().await;
    for via in [Via::Outbound, Via::Gateway] {
        for client_h2 in [false, true] {
            for (svc, want) in
                [("h1", http::Version::HTTP_11), ("h2", http::Version::HTTP_2), ("any", http::Version::HTTP_11)]
            {
                let before = s.record.lock().unwrap().len();
                let resp = send(&s, via, client_h2, svc, "/x", &[]).await;
                let what = format!("{via:?}, client h2 {client_h2}, backend {svc}");
                assert_eq!(resp.status(), 200, "{what}");
                assert_eq!(resp.version(), if client_h2 { http::Version::HTTP_2 } else { http::Version::HTTP_11 });
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body, format!("{want:?}"), "{what}");
                let seen = s.record.lock().unwrap()[before].clone();
                assert_eq!(seen.version, want, "{what}");
                assert_eq!(seen.body_len, 7, "{what}: the body arrives whole");
                let host = if matches!(via, Via::Outbound) { format!("{svc}.ns") } else { "edge.example".into() };
                assert_eq!(seen.authority, host, "{what}");
                assert!(seen.headers.get_all("host").iter().count() <= 1, "{what}: one authority");
            }
        }
    }
}

#[tokio::test]
async fn grpc_calls_keep_te_trailers_and_get_trailers_back() {
    let s = setup().await;
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    for via in [Via::Outbound, Via::Gateway] {
        // To an h2c backend, and to an undeclared one (gRPC only exists over
        // HTTP/2, so it is spoken to in HTTP/2).
        for svc in ["h2", "any"] {
            let before = s.record.lock().unwrap().len();
            let resp = send(&s, via, true, svc, "/trailers", &grpc).await;
            assert_eq!(resp.status(), 200, "{via:?} {svc}");
            let collected = resp.into_body().collect().await.unwrap();
            let trailers = collected
                .trailers()
                .cloned()
                .unwrap_or_else(|| panic!("{via:?} {svc}: no trailers reached the client"));
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["x-trailer"], "yes");
            let seen = s.record.lock().unwrap()[before].clone();
            assert_eq!(seen.version, http::Version::HTTP_2, "{via:?} {svc}");
            assert_eq!(seen.headers.get("te").map(|v| v.to_str().unwrap()), Some("trailers"), "{via:?} {svc}");
        }
    }
}

fn grpc_status(resp: &http::Response<hyper::body::Incoming>) -> Option<String> {
    resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn proxy_errors_reach_grpc_clients_as_grpc_statuses() {
    let s = setup().await;
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    // No route: UNIMPLEMENTED (12), where an HTTP client gets 404.
    for (via, svc, path) in [(Via::Outbound, "narrow", "/pkg.Svc/Method"), (Via::Gateway, "nothing", "/")] {
        let resp = send(&s, via, true, svc, path, &grpc).await;
        assert_eq!((resp.status().as_u16(), grpc_status(&resp).as_deref()), (200, Some("12")), "{via:?}");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert!(resp.headers().contains_key("grpc-message"));
        assert_eq!(send(&s, via, true, svc, path, &[]).await.status(), 404);
    }
    // Unreachable endpoint: UNAVAILABLE (14), where an HTTP client gets 502.
    for via in [Via::Outbound, Via::Gateway] {
        let resp = send(&s, via, true, "dead", "/pkg.Svc/Method", &grpc).await;
        assert_eq!((resp.status().as_u16(), grpc_status(&resp).as_deref()), (200, Some("14")), "{via:?}");
        assert_eq!(send(&s, via, false, "dead", "/x", &[]).await.status(), 502);
    }
    // The call's deadline (grpc-timeout) is sooner than the route's 5 s
    // timeout and the backend's 2 s: DEADLINE_EXCEEDED (4) when it passes.
    for via in [Via::Outbound, Via::Gateway] {
        let started = Instant::now();
        let deadline = [("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "200m")];
        let resp = send(&s, via, true, "h2", "/slow", &deadline).await;
        assert_eq!((resp.status().as_u16(), grpc_status(&resp).as_deref()), (200, Some("4")), "{via:?}");
        assert!(started.elapsed() < Duration::from_millis(1500), "{via:?}: {:?}", started.elapsed());
    }
}

#[tokio::test]
async fn large_bodies_stream_through_in_both_protocols() {
    let s = setup().await;
    let big = Bytes::from(vec![b'x'; 8 << 20]);
    for via in [Via::Outbound, Via::Gateway] {
        for client_h2 in [false, true] {
            let (host, path) = target(via, "h2", "/big");
            let addr = if matches!(via, Via::Outbound) { s.outbound } else { s.gateway };
            let before = s.record.lock().unwrap().len();
            let resp = if client_h2 {
                let req = http::Request::post(format!("http://{host}{path}")).body(Full::new(big.clone())).unwrap();
                h2(addr).await.send_request(req).await.unwrap()
            } else {
                let req = http::Request::post(path).header("host", host).body(Full::new(big.clone())).unwrap();
                h1(addr).await.send_request(req).await.unwrap()
            };
            assert_eq!(resp.status(), 200, "{via:?} h2 {client_h2}");
            let _ = resp.into_body().collect().await.unwrap();
            assert_eq!(s.record.lock().unwrap()[before].body_len, 8 << 20, "{via:?} h2 {client_h2}");
        }
    }
}
