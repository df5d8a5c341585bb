//! Property-based fuzzing of the request path, bounded in time so it runs
//! in CI (`WEFT_FUZZ_SECONDS`, default 15 s per property; docs/fuzzing.md
//! records a 10-minute run):
//!
//! - raw HTTP/1.1 byte streams, generated from a grammar of request
//!   lines, targets, header lists and bodies and then mutated, sent to the
//!   sidecar's real outbound listener (hyper's parser, Weft's validation,
//!   path normalisation, routing and forwarding). Whatever the proxy
//!   answers, every request a backend receives has one Host, not both
//!   Content-Length and Transfer-Encoding, a normalised path, a header
//!   section within the limit, and a path that the route which sent it
//!   there matches (`/app` routes reach only the `/app` backend);
//! - path normalisation: idempotent, always an absolute path without empty
//!   or dot segments, refusing only backslashes and malformed escapes;
//! - route selection against an independent oracle of the Gateway API's
//!   precedence rules, over random route tables and requests;
//! - config updates from the control plane: a realistic update (mesh
//!   roots, inbound ports, a Service with regex matches and filters,
//!   endpoints, a gateway listener, a TLS certificate), encoded and then
//!   mutated byte by byte, installed into a proxy: it never panics, and each
//!   resource it rejects keeps its previous version while the others apply.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_api::config as api;
use weft_proxy::model::{HeaderMatch, HttpMatch, HttpRoute, HttpRule, PathMatch, Source, Timeouts, ValueMatch};
use weft_proxy::proxy::Proxy;
use weft_proxy::route::{RequestInfo, prefix_matches, select};
use weft_proxy::validate::{DEFAULT_MAX_HEADER_BYTES, normalize_path};

/// How long each property runs.
fn budget() -> Duration {
    let secs = std::env::var("WEFT_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    Duration::from_secs(secs)
}

/// Runs `strategy` through `test` in batches until the budget is spent;
/// returns the number of cases run. A failure panics with proptest's
/// shrunk input.
fn run_for<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) -> u64
where
    S::Value: std::fmt::Debug,
{
    let deadline = Instant::now() + budget();
    let cases = std::sync::atomic::AtomicU64::new(0);
    let counted = |input: S::Value| {
        cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        test(input)
    };
    while Instant::now() < deadline {
        // A fresh runner (randomly seeded) per batch: a runner counts its
        // successes and would run nothing more after the first batch.
        // Shrinking is bounded too, so a failure is reported in time.
        let config = Config { cases: 64, failure_persistence: None, max_shrink_time: 60_000, ..Config::default() };
        let mut runner = TestRunner::new(config);
        if let Err(e) = runner.run(&strategy, counted) {
            panic!("{name}: {e}");
        }
    }
    let cases = cases.load(std::sync::atomic::Ordering::Relaxed);
    println!("{name}: {cases} cases in {:?}, no failure", budget());
    cases
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E%2e".to_owned()),
        Just("app".to_owned()),
        Just("%61pp".to_owned()),
        Just("a%2Fb".to_owned()),
        Just("%zz".to_owned()),
        Just("x\\y".to_owned()),
        "[a-z0-9._~%-]{0,6}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    (prop::collection::vec(segment(), 0..7), prop::option::of("[a-z=&/.%]{0,8}")).prop_map(|(segs, query)| {
        let mut p = format!("/{}", segs.join("/"));
        if let Some(q) = query {
            p.push('?');
            p.push_str(&q);
        }
        p
    })
}

/// One request as raw bytes: a grammar of the parts that matter to
/// framing, authority and paths, then an optional byte-level mutation.
fn raw_request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![Just("GET"), Just("POST"), Just("OPTIONS"), Just("PUT"), Just("CONNECT"), Just("G T")];
    let version =
        prop_oneof![4 => Just("HTTP/1.1"), 1 => Just("HTTP/1.0"), 1 => Just("HTTP/2.0"), 1 => Just("HTTX/1.1")];
    let host =
        prop_oneof![Just("web.ns"), Just("Web.NS:80"), Just("other.example"), Just("web.ns, x"), Just("a b"), Just("")];
    let target = prop_oneof![
        4 => path(),
        1 => path().prop_map(|p| format!("http://web.ns{p}")),
        1 => path().prop_map(|p| format!("http://other.example{p}")),
        1 => Just("*".to_owned()),
        1 => Just("web.ns:80".to_owned()),
    ];
    let header = prop_oneof![
        host.prop_map(|h| format!("Host: {h}")),
        prop_oneof![Just("0"), Just("3"), Just("5"), Just("-1"), Just("3, 3"), Just("99999999999999999999")]
            .prop_map(|v| format!("Content-Length: {v}")),
        prop_oneof![Just("chunked"), Just("gzip"), Just("gzip, chunked"), Just("chunked, gzip")]
            .prop_map(|v| format!("Transfer-Encoding: {v}")),
        prop_oneof![Just("trailers"), Just("gzip")].prop_map(|v| format!("TE: {v}")),
        prop_oneof![Just("close"), Just("keep-alive, x-drop"), Just("upgrade")]
            .prop_map(|v| format!("Connection: {v}")),
        Just("X-Drop: 1".to_owned()),
        Just("Upgrade: websocket".to_owned()),
        Just("Content-Type: application/grpc".to_owned()),
        "[A-Za-z-]{1,8}: [ -~]{0,12}",
        (0usize..80_000).prop_map(|n| format!("X-Big: {}", "v".repeat(n))),
    ];
    let body = prop_oneof![Just(String::new()), Just("abc".to_owned()), Just("3\r\nabc\r\n0\r\n\r\n".to_owned())];
    let mutation = prop_oneof![
        6 => Just(None),
        1 => (any::<usize>(), any::<u8>()).prop_map(Some),
    ];
    (method, target, version, prop::collection::vec(header, 0..6), body, mutation).prop_map(
        |(m, t, v, hs, body, mutation)| {
            let mut raw = format!("{m} {t} {v}\r\n");
            for h in hs {
                raw.push_str(&h);
                raw.push_str("\r\n");
            }
            raw.push_str("\r\n");
            raw.push_str(&body);
            let mut bytes = raw.into_bytes();
            if let Some((at, byte)) = mutation {
                let at = at % bytes.len().max(1);
                bytes.insert(at, byte);
            }
            bytes
        },
    )
}

/// Whether what a backend received is what validation promises.
fn check_received(seen: &Seen, must_match_app: bool, connection_named_drop: bool) -> Result<(), String> {
    let hosts = seen.headers.get_all("host").iter().count();
    if hosts > 1 {
        return Err(format!("{hosts} Host lines"));
    }
    if seen.headers.contains_key("content-length") && seen.headers.contains_key("transfer-encoding") {
        return Err("Content-Length with Transfer-Encoding".into());
    }
    let path = seen.path.split('?').next().unwrap_or("");
    match normalize_path(path) {
        Ok(n) if n == path => {}
        other => return Err(format!("path {path:?} is not normal: {other:?}")),
    }
    let size: usize = seen.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum();
    if size > DEFAULT_MAX_HEADER_BYTES {
        return Err(format!("a {size}-byte header section"));
    }
    if prefix_matches("/app", path) != must_match_app {
        return Err(format!("path {path:?} reached the wrong backend"));
    }
    if connection_named_drop && seen.headers.contains_key("x-drop") {
        return Err("a header the request's Connection named was forwarded".into());
    }
    Ok(())
}

#[test]
fn raw_http1_requests_through_the_outbound_listener() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (proxy_addr, app, other) = rt.block_on(async {
        let (app_addr, app) = recording_backend().await;
        let (other_addr, other) = recording_backend().await;
        let proxy = Proxy::new();
        let rejected = proxy.install(&api::ConfigUpdate {
            nonce: 1,
            resources: vec![
                service("web", "10.96.0.1", api::Protocol::Http, vec![rule("/app", "app"), rule("/", "other")]),
                service("app", "10.96.0.2", api::Protocol::Http, vec![rule("/", "app")]),
                service("other", "10.96.0.3", api::Protocol::Http, vec![rule("/", "other")]),
                endpoints("app", app_addr),
                endpoints("other", other_addr),
            ],
            removed: vec![],
        });
        assert!(rejected.is_empty(), "{rejected:?}");
        (outbound(proxy).await, app, other)
    });
    let send = |bytes: &[u8], addr: SocketAddr| -> Vec<u8> {
        rt.block_on(async {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(bytes).await;
            let _ = s.shutdown().await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
            out
        })
    };
    // Every request is tagged with its case number (an `X-Case` line right
    // after the request line), so that a request reaching a backend late
    // (after its client gave up) is judged against its own case.
    let next_case = std::sync::atomic::AtomicU64::new(0);
    let named_drop = std::sync::Mutex::new(std::collections::HashMap::<u64, bool>::new());
    let checked = std::sync::Mutex::new((0usize, 0usize));
    let cases = run_for("raw HTTP/1 requests", raw_request(), |mut bytes| {
        let n = next_case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") {
            bytes.splice(end + 2..end + 2, format!("X-Case: {n}\r\n").into_bytes());
        }
        let named = String::from_utf8_lossy(&bytes).contains("Connection: keep-alive, x-drop");
        named_drop.lock().unwrap().insert(n, named);
        let answer = send(&bytes, proxy_addr);
        if !answer.is_empty() && !answer.starts_with(b"HTTP/1.") {
            return Err(TestCaseError::fail(format!("not an HTTP/1 answer: {:?}", String::from_utf8_lossy(&answer))));
        }
        let mut cursor = checked.lock().unwrap();
        let (app_seen, other_seen) = (app.lock().unwrap().clone(), other.lock().unwrap().clone());
        for (record, is_app, from) in [(&app_seen, true, cursor.0), (&other_seen, false, cursor.1)] {
            for seen in &record[from..] {
                let case = seen.headers.get("x-case").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
                let named = case.and_then(|c| named_drop.lock().unwrap().get(&c).copied()).unwrap_or(false);
                check_received(seen, is_app, named).map_err(|why| {
                    TestCaseError::fail(format!(
                        "{why}; case {case:?}, now {n}: {:?}; seen {seen:?}",
                        String::from_utf8_lossy(&bytes)
                    ))
                })?;
            }
        }
        *cursor = (app_seen.len(), other_seen.len());
        Ok(())
    });
    assert!(cases > 0);
}

#[test]
fn normalised_paths_are_normal() {
    run_for("path normalisation", "/[a-zA-Z0-9/.%~\\\\_-]{0,40}", |p| {
        match normalize_path(&p) {
            Ok(n) => {
                prop_assert!(n.starts_with('/'), "{p:?} -> {n:?}");
                prop_assert!(!n.contains("//"), "{p:?} -> {n:?}");
                prop_assert!(n.split('/').all(|s| s != "." && s != ".."), "{p:?} -> {n:?}");
                let again = normalize_path(&n).map_err(|e| TestCaseError::fail(format!("{n:?}: {e}")))?;
                prop_assert_eq!(again.as_ref(), n.as_ref(), "not idempotent for {:?}", p);
            }
            Err(_) => {
                let bad_escape = p.match_indices('%').any(|(i, _)| {
                    let h = p.as_bytes().get(i + 1..i + 3);
                    !h.is_some_and(|h| h.iter().all(|b| b.is_ascii_hexdigit()))
                });
                prop_assert!(p.contains('\\') || bad_escape, "refused {p:?}");
            }
        }
        Ok(())
    });
}

/// A random match over a small alphabet of paths, methods and headers.
fn http_match() -> impl Strategy<Value = HttpMatch> {
    let path = prop_oneof![
        prop_oneof![Just("/"), Just("/a"), Just("/a/b"), Just("/ab")].prop_map(|p| PathMatch::Prefix(p.to_owned())),
        prop_oneof![Just("/a"), Just("/a/b"), Just("/c")].prop_map(|p| PathMatch::Exact(p.to_owned())),
    ];
    let method = prop::option::of(prop_oneof![Just(Method::GET), Just(Method::POST)]);
    let headers =
        prop::collection::vec((prop_oneof![Just("x-a"), Just("x-b")], prop_oneof![Just("1"), Just("2")]), 0..3)
            .prop_map(|hs| {
                hs.into_iter()
                    .map(|(n, v)| HeaderMatch {
                        name: http::HeaderName::from_static(n),
                        value: ValueMatch::Exact(v.into()),
                    })
                    .collect()
            });
    (path, method, headers).prop_map(|(path, method, headers)| HttpMatch {
        path,
        headers,
        query_params: vec![],
        method,
    })
}

fn routes() -> impl Strategy<Value = Vec<HttpRoute>> {
    let rule = prop::collection::vec(http_match(), 1..3).prop_map(|matches| HttpRule {
        name: String::new(),
        matches,
        filters: vec![],
        backends: vec![],
        timeouts: Timeouts::default(),
        retry: None,
        failure: None,
    });
    let hostnames = prop::collection::vec(prop_oneof![Just("a.example"), Just("*.example")], 0..2);
    prop::collection::vec((hostnames, prop::collection::vec(rule, 1..3)), 1..4).prop_map(|rs| {
        rs.into_iter()
            .enumerate()
            .map(|(i, (hostnames, rules))| HttpRoute {
                source: Source { kind: "HTTPRoute".into(), namespace: "ns".into(), name: format!("r{i}") },
                label: Arc::from(format!("ns/r{i}").as_str()),
                latency: Arc::default(),
                hostnames: hostnames.into_iter().map(str::to_owned).collect(),
                rules,
            })
            .collect()
    })
}

/// Host kind and length, path kind and length, method, header count.
type Rank = (u8, usize, u8, usize, usize, usize);
/// Route, rule and match indexes.
type Position = (usize, usize, usize);

/// The oracle: the Gateway API's precedence, written from the spec's
/// list, independently of `route::select`: the most specific match of any
/// rule wins, the first listed among equals.
fn oracle(
    routes: &[HttpRoute],
    host: &str,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<(usize, usize, usize)> {
    let mut best: Option<(Rank, Position)> = None;
    for (ri, route) in routes.iter().enumerate() {
        let host_rank = if route.hostnames.is_empty() {
            Some((0u8, 0usize))
        } else {
            route
                .hostnames
                .iter()
                .filter_map(|h| match h.strip_prefix('*') {
                    Some(suffix) => (host.ends_with(suffix) && host.len() > suffix.len()).then_some((1, suffix.len())),
                    None => (h == host).then_some((2, 0)),
                })
                .max()
        };
        let Some((hk, hl)) = host_rank else { continue };
        for (ui, rule) in route.rules.iter().enumerate() {
            for (mi, m) in rule.matches.iter().enumerate() {
                let (kind, len) = match &m.path {
                    PathMatch::Exact(p) if p == path => (2u8, p.len()),
                    PathMatch::Prefix(p)
                        if p == "/"
                            || path == p
                            || path.strip_prefix(p.as_str()).is_some_and(|r| r.starts_with('/')) =>
                    {
                        (1, p.len())
                    }
                    _ => continue,
                };
                if m.method.as_ref().is_some_and(|x| x != method) {
                    continue;
                }
                if !m.headers.iter().all(|h| {
                    let got: Vec<&str> = headers.get_all(&h.name).iter().filter_map(|v| v.to_str().ok()).collect();
                    !got.is_empty() && h.value.matches(&got.join(","))
                }) {
                    continue;
                }
                let key = (hk, hl, kind, len, usize::from(m.method.is_some()), m.headers.len());
                if best.as_ref().is_none_or(|(k, _)| key > *k) {
                    best = Some((key, (ri, ui, mi)));
                }
            }
        }
    }
    best.map(|(_, at)| at)
}

#[test]
fn route_selection_follows_the_precedence_oracle() {
    let request = (
        prop_oneof![Just("a.example"), Just("b.example"), Just("example")],
        prop_oneof![Just(Method::GET), Just(Method::POST)],
        prop_oneof![Just("/"), Just("/a"), Just("/a/"), Just("/a/b"), Just("/ab"), Just("/c"), Just("/a/bc")],
        prop::collection::vec((prop_oneof![Just("x-a"), Just("x-b")], prop_oneof![Just("1"), Just("2")]), 0..3),
    );
    run_for("route selection", (routes(), request), |(routes, (host, method, path, hs))| {
        let mut headers = HeaderMap::new();
        for (n, v) in hs {
            headers.append(n, HeaderValue::from_static(v));
        }
        let info = RequestInfo { host, method: &method, path, query: None, headers: &headers };
        let got = select(&routes, &info).map(|s| {
            let ri = routes.iter().position(|r| std::ptr::eq(r, s.route)).unwrap();
            let ui = routes[ri].rules.iter().position(|r| std::ptr::eq(r, s.rule)).unwrap();
            let mi = routes[ri].rules[ui].matches.iter().position(|m| std::ptr::eq(m, s.matched)).unwrap();
            (ri, ui, mi)
        });
        prop_assert_eq!(got, oracle(&routes, host, &method, path, &headers));
        Ok(())
    });
}

/// A realistic update: every kind of resource, with the fields that need
/// parsing (PEM, IP addresses, regexes, ports) filled in.
fn seed_update() -> api::ConfigUpdate {
    let ca = rcgen::generate_simple_self_signed(vec!["store.example".to_string()]).expect("a certificate");
    let chain_pem = ca.cert.pem();
    let key_pem = ca.signing_key.serialize_pem();
    let mut regex_rule = rule("/app", "app");
    regex_rule.matches.push(api::HttpMatch {
        headers: vec![api::StringMatch {
            kind: api::string_match::Kind::Regex as i32,
            name: "x-user".into(),
            value: "^(alice|bob)[0-9]{1,3}$".into(),
        }],
        method: "GET".into(),
        ..Default::default()
    });
    regex_rule.filters.push(api::Filter {
        kind: Some(api::filter::Kind::RequestHeaderModifier(api::HeaderModifier {
            set: vec![api::Header { name: "x-weft".into(), value: "1".into() }],
            add: vec![],
            remove: vec!["x-drop".into()],
        })),
    });
    api::ConfigUpdate {
        nonce: 1,
        removed: vec![],
        resources: vec![
            api::Resource {
                name: "mesh".into(),
                version: "1".into(),
                kind: Some(api::resource::Kind::Mesh(api::MeshSettings {
                    name: "default".into(),
                    mtls: api::MtlsMode::Permissive as i32,
                    trust_domain: "default.weft.local".into(),
                    roots_pem: vec![chain_pem.clone()],
                    federated: vec![],
                })),
            },
            api::Resource {
                name: "inbound".into(),
                version: "1".into(),
                kind: Some(api::resource::Kind::Inbound(api::Inbound {
                    ports: vec![api::InboundPort { port: 9080, protocol: api::Protocol::Http as i32 }],
                })),
            },
            service("app", "10.96.0.10", api::Protocol::Http, vec![regex_rule, rule("/", "app")]),
            endpoints("app", "10.0.0.7:8080".parse().unwrap()),
            gateway(8443, vec![rule("/", "app")]),
            api::Resource {
                name: "cert/ns/store".into(),
                version: "1".into(),
                kind: Some(api::resource::Kind::Certificate(api::TlsCertificate {
                    namespace: "ns".into(),
                    name: "store".into(),
                    chain_pem,
                    key_pem,
                })),
            },
        ],
    }
}

/// Byte-level mutations of an encoded update: (position, operation, byte).
fn mutations() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), 0u8..4, any::<u8>()), 1..12)
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match op {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 => {
                bytes.remove(at);
            }
            _ => bytes[at] ^= 1 << (byte % 8),
        }
    }
    bytes
}

#[test]
fn mutated_config_updates_never_crash_the_proxy_and_rejections_keep_the_previous_version() {
    use prost::Message;
    let seed = seed_update();
    let encoded = seed.encode_to_vec();
    let with_rejections = std::sync::atomic::AtomicU64::new(0);
    let cases = run_for("config updates", mutations(), |edits| {
        let proxy = Proxy::new();
        let rejected = proxy.install(&seed);
        prop_assert!(rejected.is_empty(), "the seed itself was rejected: {rejected:?}");
        let before = proxy.config.load_full();
        let Ok(mut update) = api::ConfigUpdate::decode(mutate(encoded.clone(), &edits).as_slice()) else {
            // Not an update at all: the stream would fail to decode it.
            return Ok(());
        };
        // New versions, so that what applied is visible.
        for r in &mut update.resources {
            r.version = format!("{}-mutated", r.version);
        }
        let rejected = proxy.install(&update);
        if !rejected.is_empty() {
            with_rejections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let after = proxy.config.load_full();
        let mut names: Vec<&str> = update.resources.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        let unique = names.windows(2).all(|w| w[0] != w[1]);
        for r in update.resources.iter().filter(|_| unique) {
            let version = after.versions.get(&r.name);
            if rejected.iter().any(|x| x.resource == r.name) {
                prop_assert_eq!(version, before.versions.get(&r.name), "a rejected resource replaced {}", r.name);
            } else if !update.removed.contains(&r.name) {
                prop_assert_eq!(version, Some(&r.version), "an accepted resource was not applied: {}", r.name);
            }
        }
        prop_assert!(rejected.iter().all(|x| !x.error.is_empty()), "a rejection without a reason");
        // The proxy still answers with what it holds.
        let _ = after.service_named("app.ns");
        Ok(())
    });
    let with_rejections = with_rejections.into_inner();
    println!("config updates: {with_rejections} of {cases} mutated updates had resources rejected");
    // The mutations reach validation, not only the decoder.
    assert!(with_rejections > 0);
}
