//! Malformed requests at the sidecar's outbound and inbound listeners and
//! at a gateway listener, sent as raw bytes (or, for HTTP/2, with a client that sends
//! what it is given): each gets the status RFC 9110/9112/9113 asks for,
//! and no backend receives anything. Paths are normalised before matching
//! and forwarded normalised.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use weft_api::config as api;
use weft_proxy::proxy::Proxy;
use weft_proxy::validate::Limits;

struct Setup {
    outbound: SocketAddr,
    gateway: SocketAddr,
    inbound: SocketAddr,
    app: Record,
    other: Record,
    /// What the pod's own application received through the inbound.
    local_app: Record,
}

/// Service `web.ns` (and the gateway's listener) route `/app` to one
/// backend and everything else to another. Request bodies are limited to
/// 1 KiB.
async fn setup() -> Setup {
    let (app_addr, app) = recording_backend().await;
    let (other_addr, other) = recording_backend().await;
    let port = free_port().await;
    let rules = || vec![rule("/app", "app"), rule("/", "other")];
    let proxy = Proxy::new();
    proxy.limits.store(std::sync::Arc::new(Limits { max_body_bytes: Some(1024), ..Limits::default() }));
    let rejected = proxy.install(&api::ConfigUpdate {
        nonce: 1,
        resources: vec![
            service("web", "10.96.0.1", api::Protocol::Http, rules()),
            service("app", "10.96.0.2", api::Protocol::Http, vec![rule("/", "app")]),
            service("other", "10.96.0.3", api::Protocol::Http, vec![rule("/", "other")]),
            endpoints("app", app_addr),
            endpoints("other", other_addr),
            gateway(port, rules()),
        ],
        removed: vec![],
    });
    assert!(rejected.is_empty(), "{rejected:?}");
    let outbound = outbound(proxy.clone()).await;
    let (inbound, local_app) = inbound(proxy.clone(), api::Protocol::Http).await;
    let gateway = gateway_on(proxy, port).await;
    Setup { outbound, gateway, inbound, app, other, local_app }
}

impl Setup {
    fn received(&self) -> usize {
        self.app.lock().unwrap().len() + self.other.lock().unwrap().len() + self.local_app.lock().unwrap().len()
    }

    fn listeners(&self) -> [(&'static str, SocketAddr); 3] {
        [("outbound", self.outbound), ("gateway", self.gateway), ("inbound", self.inbound)]
    }

    /// The routing listeners (the inbound forwards to its one application).
    fn routing_listeners(&self) -> [(&'static str, SocketAddr); 2] {
        [("outbound", self.outbound), ("gateway", self.gateway)]
    }
}

#[tokio::test]
async fn malformed_http1_requests_are_refused_before_any_backend() {
    let s = setup().await;
    let big = "v".repeat(70 * 1024);
    let huge = "v".repeat(300 * 1024);
    let many: String = (0..120).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let cases: Vec<(&str, String, u16)> = vec![
        ("two Host lines", "GET /x HTTP/1.1\r\nHost: web.ns\r\nHost: other.example\r\n\r\n".into(), 400),
        (
            "a Transfer-Encoding that does not end in chunked",
            "POST /x HTTP/1.1\r\nHost: web.ns\r\nTransfer-Encoding: gzip\r\n\r\nabc".into(),
            400,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            "POST /x HTTP/1.0\r\nHost: web.ns\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        (
            "two different Content-Lengths",
            "POST /x HTTP/1.1\r\nHost: web.ns\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".into(),
            400,
        ),
        (
            "absolute form naming another host",
            "GET http://web.ns/x HTTP/1.1\r\nHost: other.example\r\n\r\n".into(),
            400,
        ),
        ("no Host in HTTP/1.1", "GET /x HTTP/1.1\r\n\r\n".into(), 400),
        ("a list in Host", "GET /x HTTP/1.1\r\nHost: web.ns, other.example\r\n\r\n".into(), 400),
        ("a backslash in the path", "GET /app\\..\\x HTTP/1.1\r\nHost: web.ns\r\n\r\n".into(), 400),
        ("a malformed escape", "GET /x%zz HTTP/1.1\r\nHost: web.ns\r\n\r\n".into(), 400),
        ("CONNECT", "CONNECT web.ns:80 HTTP/1.1\r\nHost: web.ns:80\r\n\r\n".into(), 501),
        ("CONNECT in absolute form", "CONNECT http://web.ns/app HTTP/1.1\r\nHost: web.ns\r\n\r\n".into(), 501),
        ("an authority-form target", "GET web.ns:80 HTTP/1.1\r\nHost: web.ns:80\r\n\r\n".into(), 400),
        ("a header section over the limit", format!("GET /x HTTP/1.1\r\nHost: web.ns\r\nX-Big: {big}\r\n\r\n"), 431),
        (
            "a header section over the read buffer",
            format!("GET /x HTTP/1.1\r\nHost: web.ns\r\nX-Big: {huge}\r\n\r\n"),
            431,
        ),
        ("too many header fields", format!("GET /x HTTP/1.1\r\nHost: web.ns\r\n{many}\r\n"), 431),
        (
            "a declared body over the limit",
            "POST /x HTTP/1.1\r\nHost: web.ns\r\nContent-Length: 2048\r\n\r\n".into(),
            413,
        ),
    ];
    for (listener, addr) in s.listeners() {
        for (what, request, want) in &cases {
            let (status, text) = raw_status(addr, request.as_bytes()).await;
            assert_eq!(status, *want, "{listener}: {what}: {}", text.lines().next().unwrap_or(""));
            assert_eq!(s.received(), 0, "{listener}: {what}: a backend received the refused request");
        }
    }
}

/// Content-Length together with Transfer-Encoding: hyper, which parses
/// requests before Weft sees them, takes the RFC 9112 §6.3 alternative to
/// a 400: the message is framed by Transfer-Encoding alone, its
/// Content-Length is dropped (so it is never forwarded beside a
/// chunked body, which is what smuggling needs) and the connection is
/// closed after the response, so no second request can hide in the
/// body. What a smuggler would append never reaches a backend.
#[tokio::test]
async fn length_with_chunked_is_framed_by_chunked_alone_and_closes_the_connection() {
    let s = setup().await;
    for (listener, addr) in s.listeners() {
        let record = if listener == "inbound" { &s.local_app } else { &s.other };
        let before = record.lock().unwrap().len();
        let smuggled = "POST /x HTTP/1.1\r\nHost: web.ns\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n\
                        0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: web.ns\r\n\r\n";
        let (status, text) = raw_status(addr, smuggled.as_bytes()).await;
        assert_eq!(status, 200, "{listener}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{listener}: one response, then the connection closes");
        let seen: Vec<Seen> = record.lock().unwrap()[before..].to_vec();
        assert_eq!(seen.len(), 1, "{listener}: {seen:?}");
        assert_eq!(seen[0].path, "/x");
        assert!(!seen[0].headers.contains_key("content-length"), "{listener}: Content-Length forwarded");
        assert_eq!(seen[0].body_len, 0);
    }
    assert_eq!(s.app.lock().unwrap().len(), 0);
}

#[tokio::test]
async fn an_http2_host_that_disagrees_with_the_authority_is_refused() {
    let s = setup().await;
    for (listener, addr) in s.listeners() {
        let req = http::Request::get("http://web.ns/x")
            .header("host", "other.example")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = h2(addr).await.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 400, "{listener}");
        // The same request with agreeing names is served.
        let req =
            http::Request::get("http://web.ns/x").header("host", "web.ns:80").body(Full::new(Bytes::new())).unwrap();
        assert_eq!(h2(addr).await.send_request(req).await.unwrap().status(), 200, "{listener}");
    }
    assert_eq!(s.app.lock().unwrap().len(), 0);
    assert_eq!(s.other.lock().unwrap().len(), 2, "only the agreeing requests arrive");
    assert_eq!(s.local_app.lock().unwrap().len(), 1, "only the agreeing request arrives");
}

#[tokio::test]
async fn paths_are_normalised_before_matching_and_forwarded_normalised() {
    let s = setup().await;
    // The inbound forwards normalised paths too.
    let (status, _) = raw_status(s.inbound, b"GET /a/./b/../c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 200);
    assert_eq!(s.local_app.lock().unwrap().last().map(|r| r.path.clone()).as_deref(), Some("/a/c"));
    for (listener, addr) in s.routing_listeners() {
        for (sent, backend_is_app, forwarded) in [
            ("/app/../x", false, "/x"),
            ("/app/%2e%2e/x", false, "/x"),
            ("/x/../app/y", true, "/app/y"),
            ("//app//y?q=/../z", true, "/app/y?q=/../z"),
            ("/%61pp/y", true, "/app/y"),
            ("/app%2F..%2Fx", false, "/app%2F..%2Fx"),
        ] {
            let (app_before, other_before) = (s.app.lock().unwrap().len(), s.other.lock().unwrap().len());
            let request = format!("GET {sent} HTTP/1.1\r\nHost: web.ns\r\nConnection: close\r\n\r\n");
            let (status, _) = raw_status(addr, request.as_bytes()).await;
            assert_eq!(status, 200, "{listener}: {sent}");
            let record = if backend_is_app { &s.app } else { &s.other };
            let seen =
                record.lock().unwrap().last().cloned().unwrap_or_else(|| panic!("{listener}: {sent}: no request"));
            assert_eq!(seen.path, forwarded, "{listener}: {sent}");
            let (app_after, other_after) = (s.app.lock().unwrap().len(), s.other.lock().unwrap().len());
            assert_eq!(
                (app_after - app_before, other_after - other_before),
                if backend_is_app { (1, 0) } else { (0, 1) },
                "{listener}: {sent} reached the wrong backend"
            );
        }
    }
}

/// A body without a declared length is cut off at the limit, and the
/// client hears 413.
#[tokio::test]
async fn a_streamed_body_over_the_limit_is_cut_off_with_413() {
    let s = setup().await;
    for (listener, addr) in s.listeners() {
        let chunk = "x".repeat(600);
        let request = format!(
            "POST /x HTTP/1.1\r\nHost: web.ns\r\nTransfer-Encoding: chunked\r\n\r\n\
             258\r\n{chunk}\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
        );
        let (status, text) = raw_status(addr, request.as_bytes()).await;
        assert_eq!(status, 413, "{listener}: {}", text.lines().next().unwrap_or(""));
    }
}
