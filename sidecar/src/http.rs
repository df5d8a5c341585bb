//! Outbound HTTP: one request in, routed by the Service's rules, filtered,
//! split by weight, balanced over endpoints, retried and timed out as the
//! rule says, one response out. Every failure is an HTTP response with a
//! body that says what went wrong.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::filters::{self, RedirectFrom};
use crate::grpc;
use crate::metrics::{LabelValue, NO_LABEL, RequestLabels, RouteLabels};
use crate::model::{Backend, Filter, HttpRule, PathMatch, Service, ServicePort};
use crate::proxy::Proxy;
use crate::reply::{Kind, LocalReply, Served};
use crate::route::{self, RequestInfo};
use crate::upstream::{Body, BoxError, Upstream};
use crate::validate;

/// Request bodies up to this size are kept so a retry or mirror can send
/// them again; larger ones are streamed once.
const MAX_BUFFERED_BODY: usize = 64 * 1024;

/// Headers that belong to one hop, never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// A response the proxy makes up itself, of the kind its status implies
/// (404: nothing serves it; 502, 503: unavailable; 504: a timeout).
pub fn full(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let kind = match status.as_u16() {
        404 => Kind::NoRoute,
        502 | 503 => Kind::Unavailable,
        504 => Kind::Timeout,
        400 | 413 | 431 => Kind::Invalid,
        _ => Kind::Other,
    };
    local(kind, status, text)
}

/// A response the proxy makes up itself: plain text saying why, marked so
/// that [`crate::reply::finish`] can log it and answer gRPC clients in
/// gRPC.
pub fn local(kind: Kind, status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let message = text.into();
    let mut body = message.clone();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.extensions_mut().insert(LocalReply { kind, message });
    r
}

/// Validates a request head at a listener (see [`crate::validate`]) and
/// puts its normalised target in place; a refused request gets its 4xx
/// here and goes no further.
pub fn admit<B>(proxy: &Proxy, mut req: Request<B>) -> Result<Request<B>, Box<Response<Body>>> {
    let limits = **proxy.limits.load();
    let head = validate::Head { method: req.method(), uri: req.uri(), version: req.version(), headers: req.headers() };
    match validate::check(head, &limits) {
        Ok(None) => Ok(req),
        Ok(Some(normal)) => {
            *req.uri_mut() = normal;
            Ok(req)
        }
        Err(why) => {
            count(proxy, &NO_LABEL, &NO_LABEL, why.status(), Instant::now());
            tracing::debug!(reason = %why, uri = %req.uri(), "request refused");
            let mut resp = local(Kind::Invalid, why.status(), why.to_string());
            // What follows a malformed HTTP/1 request on its connection
            // cannot be trusted to be framed as its client meant.
            if req.version() < Version::HTTP_2 {
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Err(Box::new(resp))
        }
    }
}

fn empty_body() -> Body {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

/// Where an outbound connection was going.
#[derive(Debug, Clone, Copy)]
pub enum Destination {
    /// Redirected by iptables: the original destination picks the Service.
    Original(SocketAddr),
    /// Sent to the proxy itself: the Host header picks the Service.
    Explicit,
}

/// Serves one outbound request.
pub async fn outbound(proxy: Arc<Proxy>, req: Request<Incoming>, dest: Destination) -> Response<Body> {
    let started = Instant::now();
    let req = match admit(&proxy, req) {
        Ok(req) => req,
        Err(refused) => return *refused,
    };
    let config = proxy.config.load_full();
    // Shared-buffer copies (no bytes copied), so the host name can be
    // borrowed while the request moves on.
    let uri = req.uri().clone();
    let host_header = req.headers().get(header::HOST).cloned();
    let authority = authority_str(&uri, host_header.as_ref());
    let (host, port) = split_authority(authority.unwrap_or(""));
    let found = match dest {
        Destination::Original(addr) => config.service_by_addr(addr),
        Destination::Explicit => {
            port.or(Some(80)).and_then(|p| config.service_by_host(&host, p)).or_else(|| sole_port(&config, &host, port))
        }
    };
    let Some((service, service_port)) = found else {
        return match dest {
            // Not a Service: pass it on to where it was going.
            Destination::Original(addr) => passthrough(&proxy, req, addr, started).await,
            Destination::Explicit if config.knows_host(&host) => {
                count(&proxy, &NO_LABEL, &NO_LABEL, StatusCode::BAD_GATEWAY, started);
                full(StatusCode::BAD_GATEWAY, format!("Service {host:?} has no port {}", port.unwrap_or(80)))
            }
            Destination::Explicit => {
                count(&proxy, &NO_LABEL, &NO_LABEL, StatusCode::BAD_GATEWAY, started);
                full(StatusCode::BAD_GATEWAY, format!("no Service is named {host:?}"))
            }
        };
    };
    // Borrowed from `config`, which this request holds until it ends.
    let table = RouteTable {
        routes: &service_port.http_routes,
        port: service_port.port,
        scheme: "http",
        owner: Owner::Service(service),
    };
    route_request(proxy, req, table, &host, started).await
}

/// The routes a request is matched against, and where they came from.
#[derive(Debug, Clone, Copy)]
pub struct RouteTable<'a> {
    pub routes: &'a [crate::model::HttpRoute],
    /// The port the client addressed: the Service port, or the gateway
    /// listener's (redirects keep it).
    pub port: u16,
    /// The scheme the client used, for redirects.
    pub scheme: &'static str,
    pub owner: Owner<'a>,
}

/// Who owns a route table, for the text of a 404.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    Service(&'a Service),
    Listener { gateway: &'a str, listener: &'a str },
}

impl std::fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Service(s) => write!(f, "Service {}/{}", s.namespace, s.name),
            Owner::Listener { gateway, listener } => write!(f, "listener {listener} of gateway {gateway}"),
        }
    }
}

/// With an explicit host but no port, a Service with a single port serves
/// it (`curl http://reviews.bookinfo/` for a Service on 9080).
fn sole_port<'a>(
    config: &'a crate::state::Config,
    host: &str,
    port: Option<u16>,
) -> Option<(&'a Arc<Service>, &'a ServicePort)> {
    if port.is_some() {
        return None;
    }
    let s = config.service_named(host)?;
    match s.ports.as_slice() {
        [only] => Some((s, only)),
        _ => None,
    }
}

/// The request's authority: its URI's, else its Host header's.
pub(crate) fn authority_str<'a>(uri: &'a Uri, host_header: Option<&'a HeaderValue>) -> Option<&'a str> {
    uri.authority().map(|a| a.as_str()).or_else(|| host_header.and_then(|h| h.to_str().ok()))
}

/// Host (lower case, without port or trailing dot) and port of an
/// authority; the host is copied only when it has upper-case letters.
pub(crate) fn split_authority(authority: &str) -> (Cow<'_, str>, Option<u16>) {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (authority, None), // bare IPv6
        Some((h, p)) => (h, p.parse().ok()),
        None => (authority, None),
    };
    let host = host.trim_end_matches('.');
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    (host, port)
}

fn count(proxy: &Proxy, route: &LabelValue, backend: &LabelValue, status: StatusCode, started: Instant) {
    proxy
        .metrics
        .requests
        .get_or_create(&RequestLabels { route: route.clone(), backend: backend.clone(), status: status.as_u16() })
        .inc();
    proxy.metrics.latency.get_or_create(&RouteLabels { route: route.clone() }).observe(started.elapsed().as_secs_f64());
}

/// Routes one request by `table`: match, filters, backend choice, and the
/// exchange with an endpoint (sidecar and gateway alike).
pub async fn route_request(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
    table: RouteTable<'_>,
    host: &str,
    started: Instant,
) -> Response<Body> {
    // A shared-buffer copy, so path and query stay borrowed while the
    // request's parts move.
    let uri = req.uri().clone();
    let path = uri.path();
    let query = uri.query();
    let info = RequestInfo { host, method: req.method(), path, query, headers: req.headers() };
    let Some(selected) = route::select(table.routes, &info) else {
        count(&proxy, &NO_LABEL, &NO_LABEL, StatusCode::NOT_FOUND, started);
        return full(StatusCode::NOT_FOUND, format!("no route of {} matches {path}", table.owner));
    };
    let route_label = &selected.route.label;
    let rule = selected.rule;
    let matched_prefix = match &selected.matched.path {
        PathMatch::Prefix(p) => Some(p.as_str()),
        _ => None,
    };
    if let Some(failure) = &rule.failure {
        count(&proxy, route_label, &NO_LABEL, StatusCode::INTERNAL_SERVER_ERROR, started);
        return served(full(StatusCode::INTERNAL_SERVER_ERROR, failure.clone()), route_label, None);
    }

    // CORS: a preflight is answered here; other responses get the headers.
    let cors = rule.filters.iter().find_map(|f| if let Filter::Cors(c) = f { Some(c) } else { None });
    if let Some(c) = cors
        && filters::is_preflight(req.method(), req.headers())
    {
        let mut resp = Response::new(empty_body());
        resp.headers_mut().extend(filters::cors_headers(c, req.headers(), true));
        respond_filters(&rule.filters, &mut resp);
        count(&proxy, route_label, &NO_LABEL, resp.status(), started);
        return resp;
    }
    let cors_out = cors.map(|c| filters::cors_headers(c, req.headers(), false));

    if let Some(r) = rule.filters.iter().find_map(|f| if let Filter::Redirect(r) = f { Some(r) } else { None }) {
        let from = RedirectFrom { scheme: table.scheme, host, listener_port: table.port, path, query, matched_prefix };
        let location = filters::redirect_location(r, &from);
        let mut resp = Response::new(empty_body());
        *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND);
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        respond_filters(&rule.filters, &mut resp);
        count(&proxy, route_label, &NO_LABEL, resp.status(), started);
        return resp;
    }

    let mut req = req;
    let client_upgrade = (req.version() == Version::HTTP_11 && req.headers().contains_key(header::UPGRADE))
        .then(|| hyper::upgrade::on(&mut req));
    let grpc_deadline = if grpc::is_grpc(req.headers()) { grpc::timeout(req.headers()) } else { None };
    let (mut parts, body) = req.into_parts();
    let mut rewritten = Rewritten::default();
    apply_request_filters(&rule.filters, &mut parts.headers, &mut rewritten, path, query, matched_prefix);

    let Some(backend) = pick_backend(&rule.backends) else {
        count(&proxy, route_label, &NO_LABEL, StatusCode::INTERNAL_SERVER_ERROR, started);
        let resp = local(
            Kind::Unavailable,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the rule has no backend with a weight above zero",
        );
        return served(resp, route_label, None);
    };
    let backend_label = &backend.label;
    if let Some(why) = &backend.unresolved {
        count(&proxy, route_label, backend_label, StatusCode::INTERNAL_SERVER_ERROR, started);
        let resp = local(
            Kind::Unavailable,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("backend {backend_label} is unresolved: {why}"),
        );
        return served(resp, route_label, Some(backend_label));
    }
    apply_request_filters(&backend.filters, &mut parts.headers, &mut rewritten, path, query, matched_prefix);

    let upgrade = parts.headers.get(header::UPGRADE).cloned().filter(|_| parts.version == Version::HTTP_11);
    let use_h2 = upstream_h2(&proxy.config.load(), backend, &parts);
    strip_hop_by_hop(&mut parts.headers, use_h2);
    if let Some(u) = &upgrade {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, u.clone());
    }
    let host_header = parts.headers.get(header::HOST).cloned();
    let fallback_authority;
    let authority = match rewritten.authority.as_deref().or_else(|| authority_str(&uri, host_header.as_ref())) {
        Some(a) => a,
        None => {
            fallback_authority = format!("{host}:{}", table.port);
            &fallback_authority
        }
    };
    let target = match upstream_uri(&uri, rewritten.path_and_query, authority, use_h2) {
        Ok(t) => t,
        Err(()) => {
            count(&proxy, route_label, backend_label, StatusCode::BAD_REQUEST, started);
            let resp = full(StatusCode::BAD_REQUEST, format!("cannot forward to authority {authority:?}"));
            return served(resp, route_label, Some(backend_label));
        }
    };
    parts.uri = target;
    set_host(&mut parts.headers, host_header.as_ref(), authority, use_h2);

    let mirrors: Vec<&crate::model::Mirror> = rule
        .filters
        .iter()
        .chain(backend.filters.iter())
        .filter_map(|f| if let Filter::Mirror(m) = f { Some(m) } else { None })
        .collect();
    let retry = rule.retry.as_ref().filter(|r| r.attempts > 0);
    let replayable = upgrade.is_none() && (retry.is_some() || !mirrors.is_empty());
    let body = if replayable { buffer(body, &parts.headers).await } else { Err(body) };

    // The route's request timeout, or the call's own deadline when that is
    // sooner: the client gives up then anyway, and a gRPC client must hear
    // DEADLINE_EXCEEDED rather than a later UNAVAILABLE.
    let request_timeout = match (rule.timeouts.request, grpc_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let send = Sending { proxy: &proxy, backend, use_h2 };
    let mut resp = match body {
        Ok(bytes) => {
            for m in &mirrors {
                mirror(&proxy, m, &parts, &bytes);
            }
            let attempt = send.with_retries(rule, &parts, bytes);
            match request_timeout {
                Some(t) => tokio::time::timeout(t, attempt).await.unwrap_or_else(|_| timeout_response()),
                None => attempt.await,
            }
        }
        Err(body) => {
            let body = limited(&proxy, body);
            // An upgraded connection outlives any request timeout.
            let per_try = if upgrade.is_some() { None } else { rule.timeouts.backend_request };
            let attempt = send.once(parts, body, per_try);
            let resp = match request_timeout.filter(|_| upgrade.is_none()) {
                Some(t) => tokio::time::timeout(t, attempt).await.unwrap_or_else(|_| Err(Box::new(timeout_response()))),
                None => attempt.await,
            };
            let mut resp = resp.unwrap_or_else(|r| *r);
            if let Some(client_side) = client_upgrade
                && resp.status() == StatusCode::SWITCHING_PROTOCOLS
            {
                splice_upgrade(client_side, hyper::upgrade::on(&mut resp));
            }
            resp
        }
    };
    if let Some(extra) = cors_out {
        resp.headers_mut().extend(extra);
    }
    respond_filters(&rule.filters, &mut resp);
    respond_filters(&backend.filters, &mut resp);
    backend.counters.inc(&proxy.metrics.requests, route_label, backend_label, resp.status().as_u16());
    selected.route.latency.observe(&proxy.metrics.latency, route_label, started.elapsed().as_secs_f64());
    served(resp, route_label, Some(backend_label))
}

/// A streamed request body, cut off at `--max-request-body` when one is
/// set (the attempt then answers 413; declared lengths were checked
/// before anything was sent).
fn limited(proxy: &Proxy, body: Incoming) -> Body {
    match proxy.limits.load().max_body_bytes {
        Some(max) => Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX)).boxed(),
        None => body.map_err(BoxError::from).boxed(),
    }
}

/// Records the route and backend a response came through (the endpoint is
/// recorded by the attempt that reached it).
fn served(mut resp: Response<Body>, route: &LabelValue, backend: Option<&LabelValue>) -> Response<Body> {
    let s = resp.extensions_mut().get_or_insert_default::<Served>();
    s.route = Some(route.clone());
    s.backend = backend.cloned();
    resp
}

/// Whether a backend is spoken to in HTTP/2: as its Service port declares
/// (`appProtocol` `kubernetes.io/h2c`, `h2c`, `grpc`, `http2`, or such a
/// port name), else HTTP/1.1. gRPC calls always go in HTTP/2, the only
/// protocol gRPC is defined on (the translator reports a GRPCRoute backend
/// declared HTTP/1.1 as `UnsupportedProtocol`), and upgrade requests in
/// HTTP/1.1. The client's protocol does not decide: the proxy translates.
fn upstream_h2(config: &crate::state::Config, backend: &Backend, parts: &http::request::Parts) -> bool {
    // An HTTP/1.1 upgrade (WebSocket) exists only in HTTP/1.1.
    if parts.version == Version::HTTP_11 && parts.headers.contains_key(header::UPGRADE) {
        return false;
    }
    grpc::is_grpc(&parts.headers) || config.backend_protocol(backend) == Some(crate::model::Protocol::Http2)
}

/// HTTP/1.1 carries the authority in Host; HTTP/2 in `:authority`, so a
/// Host line (which an HTTP/1.1 client sent) is dropped rather than sent
/// beside it.
fn set_host(headers: &mut HeaderMap, host_header: Option<&HeaderValue>, authority: &str, use_h2: bool) {
    if use_h2 {
        headers.remove(header::HOST);
    } else if host_header.and_then(|h| h.to_str().ok()) != Some(authority)
        && let Ok(v) = HeaderValue::from_str(authority)
    {
        headers.insert(header::HOST, v);
    }
}

/// Serves one request that arrived for the pod's own application (the
/// inbound listener, on a port declared HTTP): validated like every other
/// listener's requests, then forwarded to `app` in the port's declared
/// protocol (gRPC calls in HTTP/2).
pub async fn inbound(proxy: Arc<Proxy>, req: Request<Incoming>, app: SocketAddr, app_h2: bool) -> Response<Body> {
    let mut req = match admit(&proxy, req) {
        Ok(req) => req,
        Err(refused) => return *refused,
    };
    let client_upgrade = (req.version() == Version::HTTP_11 && req.headers().contains_key(header::UPGRADE))
        .then(|| hyper::upgrade::on(&mut req));
    // An HTTP/1.1 upgrade (WebSocket) exists only in HTTP/1.1.
    let use_h2 = (app_h2 || grpc::is_grpc(req.headers())) && client_upgrade.is_none();
    let (mut parts, body) = req.into_parts();
    let upgrade = parts.headers.get(header::UPGRADE).cloned().filter(|_| parts.version == Version::HTTP_11);
    strip_hop_by_hop(&mut parts.headers, use_h2);
    if let Some(u) = &upgrade {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, u.clone());
    }
    parts.extensions.clear();
    if use_h2 && parts.uri.authority().is_none() && !parts.headers.contains_key(header::HOST) {
        // An HTTP/1.0 request without Host: name the application.
        if let Ok(v) = HeaderValue::from_str(&app.to_string()) {
            parts.headers.insert(header::HOST, v);
        }
    }
    let mut req = request_from(&parts, limited(&proxy, body), use_h2);
    if retarget(&mut req, use_h2).is_err() {
        return full(StatusCode::BAD_REQUEST, "cannot forward the request's authority");
    }
    let upstream = proxy.upstreams.get(app, "");
    let mut resp = attempt(&upstream, req, use_h2, None).await.unwrap_or_else(|r| *r);
    if let Some(client_side) = client_upgrade
        && resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        splice_upgrade(client_side, hyper::upgrade::on(&mut resp));
    }
    resp
}

/// Joins the client's and the endpoint's upgraded connections (WebSocket)
/// once both sides have switched protocols.
fn splice_upgrade(client: hyper::upgrade::OnUpgrade, server: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(client), Ok(server)) = (client.await, server.await) else {
            tracing::debug!("upgrade did not complete");
            return;
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut server = hyper_util::rt::TokioIo::new(server);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
            tracing::debug!(error = %e, "upgraded connection ended");
        }
    });
}

/// A failed attempt, already turned into the response the client gets.
type Failed = Box<Response<Body>>;

fn timeout_response() -> Response<Body> {
    local(Kind::Timeout, StatusCode::GATEWAY_TIMEOUT, "request timeout")
}

/// What the URL rewrite filters replaced; `None` keeps the request's own.
#[derive(Debug, Default)]
struct Rewritten {
    authority: Option<String>,
    path_and_query: Option<String>,
}

/// Request-side filters: header modifiers and URL rewrites, in order. A
/// path rewrite always starts from the path the client sent, and the
/// query string is kept.
fn apply_request_filters(
    fs: &[Filter],
    headers: &mut HeaderMap,
    rewritten: &mut Rewritten,
    original_path: &str,
    query: Option<&str>,
    matched_prefix: Option<&str>,
) {
    for f in fs {
        match f {
            Filter::RequestHeaders(m) => filters::modify_headers(m, headers),
            Filter::Rewrite(r) => {
                if let Some(h) = &r.hostname {
                    rewritten.authority = Some(h.clone());
                    if let Ok(v) = HeaderValue::from_str(h) {
                        headers.insert(header::HOST, v);
                    }
                }
                if let Some(p) = &r.path {
                    let new_path = filters::modify_path(p, original_path, matched_prefix);
                    rewritten.path_and_query = Some(match query {
                        Some(q) => format!("{new_path}?{q}"),
                        None => new_path,
                    });
                }
            }
            _ => {}
        }
    }
}

/// The URI sent to the endpoint: origin-form for HTTP/1.1 (the Host
/// header carries the authority), absolute for HTTP/2 (`:authority`).
/// The request's own path is reused, not copied, unless rewritten.
fn upstream_uri(uri: &Uri, rewritten_path: Option<String>, authority: &str, use_h2: bool) -> Result<Uri, ()> {
    let path_and_query = match rewritten_path {
        Some(p) => http::uri::PathAndQuery::try_from(p).map_err(|_| ())?,
        None => match uri.path_and_query() {
            Some(pq) => pq.clone(),
            None => http::uri::PathAndQuery::from_static("/"),
        },
    };
    if !use_h2 {
        return Ok(Uri::from(path_and_query));
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(http::uri::Authority::try_from(authority).map_err(|_| ())?);
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).map_err(|_| ())
}

fn respond_filters(fs: &[Filter], resp: &mut Response<Body>) {
    for f in fs {
        if let Filter::ResponseHeaders(m) = f {
            filters::modify_headers(m, resp.headers_mut());
        }
    }
}

/// Removes the headers that belong to the client's hop. `TE: trailers`
/// survives toward an HTTP/2 endpoint: RFC 9113 §8.2.2 allows exactly
/// that value, and gRPC servers refuse calls without it; any other TE
/// value is dropped.
fn strip_hop_by_hop(headers: &mut HeaderMap, to_h2: bool) {
    // Most requests carry none of them: one pass over the names decides.
    let any = headers.keys().any(|k| k == header::CONNECTION || k == header::UPGRADE || HOP_BY_HOP.contains(k));
    if !any {
        return;
    }
    let trailers = to_h2
        && headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers")));
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(n);
    }
    headers.remove(header::UPGRADE);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Weighted choice; `None` when every weight is zero.
pub fn pick_backend(backends: &[Backend]) -> Option<&Backend> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut n = fastrand::u64(..total);
    for b in backends {
        let w = u64::from(b.weight);
        if n < w {
            return Some(b);
        }
        n -= w;
    }
    None
}

/// Reads a body that fits the replay limit; gives it back unread when it
/// may not (no length, or too long).
async fn buffer(body: Incoming, headers: &HeaderMap) -> Result<Bytes, Incoming> {
    use http_body::Body as _;
    let length =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let fits = body.is_end_stream() || length.is_some_and(|l| l <= MAX_BUFFERED_BODY);
    if !fits {
        return Err(body);
    }
    match Limited::new(body, MAX_BUFFERED_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        // The client went away or lied about the length: nothing to send.
        Err(_) => Ok(Bytes::new()),
    }
}

fn request_from(parts: &http::request::Parts, body: Body, use_h2: bool) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.headers_mut() = parts.headers.clone();
    *req.version_mut() = if use_h2 { Version::HTTP_2 } else { Version::HTTP_11 };
    req
}

fn full_body(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Sends a copy to the mirror backend (for the configured share) and
/// forgets it: its response and its failures do not touch the request.
/// The copy goes in the mirror backend's own protocol.
fn mirror(proxy: &Arc<Proxy>, m: &crate::model::Mirror, parts: &http::request::Parts, body: &Bytes) {
    if fastrand::u32(..m.denominator.max(1)) >= m.numerator {
        return;
    }
    let Some(upstream) = proxy.endpoint_for(&m.backend) else { return };
    let use_h2 = upstream_h2(&proxy.config.load(), &m.backend, parts);
    let mut req = request_from(parts, full_body(body.clone()), use_h2);
    if retarget(&mut req, use_h2).is_err() {
        return;
    }
    tokio::spawn(async move {
        if let Ok(resp) = tokio::time::timeout(Duration::from_secs(10), upstream.pool.send(req, use_h2)).await
            && let Ok(resp) = resp
        {
            // Drain so the connection can be reused.
            let _ = resp.into_body().collect().await;
        }
    });
}

/// Puts a request's target in the form its protocol needs: absolute with
/// no Host line for HTTP/2, origin-form with Host for HTTP/1.1.
fn retarget(req: &mut Request<Body>, use_h2: bool) -> Result<(), ()> {
    let uri = req.uri().clone();
    let pq = uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    if use_h2 && uri.authority().is_none() {
        let host = req.headers_mut().remove(header::HOST).ok_or(())?;
        let authority = http::uri::Authority::try_from(host.as_bytes()).map_err(|_| ())?;
        *req.uri_mut() =
            Uri::builder().scheme("http").authority(authority).path_and_query(pq).build().map_err(|_| ())?;
    } else if !use_h2 && let Some(authority) = uri.authority() {
        if !req.headers().contains_key(header::HOST) {
            let v = HeaderValue::from_str(authority.as_str()).map_err(|_| ())?;
            req.headers_mut().insert(header::HOST, v);
        }
        req.headers_mut().remove(header::TE);
        *req.uri_mut() = Uri::from(pq);
    }
    Ok(())
}

struct Sending<'a> {
    proxy: &'a Arc<Proxy>,
    backend: &'a Backend,
    use_h2: bool,
}

impl Sending<'_> {
    /// One attempt with a streamed body; the request head is moved, not
    /// copied. Errors are already responses.
    async fn once(
        &self,
        mut parts: http::request::Parts,
        body: Body,
        per_try: Option<Duration>,
    ) -> Result<Response<Body>, Failed> {
        parts.version = if self.use_h2 { Version::HTTP_2 } else { Version::HTTP_11 };
        // What the server side attached to the request stays on this side.
        parts.extensions.clear();
        let mut req = Request::from_parts(parts, body);
        // A request that could not even be written (no connection to the
        // endpoint: it is starting, stopping or gone) goes to another one;
        // nothing was sent, so this is safe for any method.
        let mut tried = Vec::new();
        loop {
            let Some(upstream) = self.proxy.endpoint_avoiding(self.backend, &tried) else {
                return Err(Box::new(no_endpoints(self.backend)));
            };
            match attempt_keeping(&upstream, req, self.use_h2, per_try).await {
                Ok(resp) => return Ok(resp),
                Err(NoResponse { unsent: Some(unsent), .. }) if tried.len() + 1 < CONNECT_ATTEMPTS => {
                    tracing::debug!(endpoint = %upstream.addr(), "no connection to the endpoint; trying another");
                    tried.push(upstream.addr());
                    req = unsent;
                }
                Err(failed) => return Err(failed.response),
            }
        }
    }

    /// Attempts with a replayable body, retrying as the rule allows; each
    /// attempt sends a copy of the request head.
    async fn with_retries(&self, rule: &HttpRule, parts: &http::request::Parts, body: Bytes) -> Response<Body> {
        let retry = rule.retry.as_ref();
        let tries = 1 + retry.map_or(0, |r| r.attempts);
        let mut last = None;
        for n in 0..tries {
            if n > 0
                && let Some(r) = retry
            {
                tokio::time::sleep(r.backoff).await;
            }
            let Some(upstream) = self.proxy.endpoint_for(self.backend) else {
                return no_endpoints(self.backend);
            };
            let req = request_from(parts, full_body(body.clone()), self.use_h2);
            let result = attempt(&upstream, req, self.use_h2, rule.timeouts.backend_request).await;
            let retryable = match &result {
                Ok(resp) => retry.is_some_and(|r| r.codes.contains(&resp.status().as_u16())),
                Err(_) => true,
            };
            if !retryable || n + 1 == tries {
                return result.unwrap_or_else(|r| *r);
            }
            tracing::debug!(endpoint = %upstream.addr(), attempt = n + 1, "retrying");
            last = Some(result);
        }
        last.map(|r| r.unwrap_or_else(|r| *r)).unwrap_or_else(|| full(StatusCode::BAD_GATEWAY, "no attempt was made"))
    }
}

fn no_endpoints(backend: &Backend) -> Response<Body> {
    full(StatusCode::SERVICE_UNAVAILABLE, format!("backend {} has no endpoints", backend.label))
}

/// Endpoints a request that could not be written is offered to.
const CONNECT_ATTEMPTS: usize = 3;

/// An attempt without a response: the error response, and the request when
/// it was never written.
struct NoResponse {
    response: Failed,
    unsent: Option<Request<Body>>,
}

/// One request to one endpoint, with its statistics updated. A connection
/// failure or timeout becomes a 502/504 response in `Err`.
async fn attempt(
    upstream: &Upstream,
    req: Request<Body>,
    use_h2: bool,
    per_try: Option<Duration>,
) -> Result<Response<Body>, Failed> {
    attempt_keeping(upstream, req, use_h2, per_try).await.map_err(|n| n.response)
}

/// [`attempt`], keeping the request when it was never written.
async fn attempt_keeping(
    upstream: &Upstream,
    req: Request<Body>,
    use_h2: bool,
    per_try: Option<Duration>,
) -> Result<Response<Body>, NoResponse> {
    let _in_flight = upstream.stats.start();
    let started = Instant::now();
    let connects = upstream.pool.connects();
    let call = upstream.pool.send_or_return(req, use_h2);
    let outcome = match per_try {
        Some(t) => tokio::time::timeout(t, call).await.map_err(|_| ()),
        None => Ok(call.await),
    };
    let mut unsent = None;
    let now = Instant::now();
    let endpoint = Served { endpoint: Some(upstream.addr()), ..Served::default() };
    let mut result = match outcome {
        Ok(Ok(resp)) => {
            let ok = !resp.status().is_server_error();
            // A request that waited for a new connection (TCP and mTLS
            // handshakes) would make a new endpoint look slow for as long
            // as the estimate takes to decay.
            if ok && upstream.pool.connects() != connects {
                upstream.stats.observe_success_without_sample(now);
            } else {
                upstream.stats.observe(now - started, ok, now);
            }
            Ok(resp)
        }
        Ok(Err((e, returned))) => {
            unsent = returned;
            upstream.stats.observe(now - started, false, now);
            tracing::debug!(endpoint = %upstream.addr(), error = %e, "request to endpoint failed");
            let chain = error_chain(&e);
            let resp = if has_source::<http_body_util::LengthLimitError>(&e) {
                local(
                    Kind::Invalid,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body exceeds the limit ({chain})"),
                )
            } else {
                local(
                    Kind::Unavailable,
                    StatusCode::BAD_GATEWAY,
                    format!("endpoint {} failed: {chain}", upstream.addr()),
                )
            };
            Err(Box::new(resp))
        }
        Err(()) => {
            upstream.stats.observe(now - started, false, now);
            Err(Box::new(local(
                Kind::Timeout,
                StatusCode::GATEWAY_TIMEOUT,
                format!("endpoint {} did not answer in time", upstream.addr()),
            )))
        }
    };
    match &mut result {
        Ok(r) => r.extensions_mut().insert(endpoint),
        Err(r) => r.extensions_mut().insert(endpoint),
    };
    result.map_err(|response| NoResponse { response, unsent })
}

/// Whether an error of type `T` is somewhere in `e`'s chain.
fn has_source<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.is::<T>() {
            return true;
        }
        next = err.source();
    }
    false
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// A redirected connection to an address that is not a Service: forwarded
/// unchanged to where it was going.
async fn passthrough(proxy: &Arc<Proxy>, req: Request<Incoming>, addr: SocketAddr, started: Instant) -> Response<Body> {
    let upstream = proxy.upstreams.get(addr, "");
    let use_h2 = req.version() == Version::HTTP_2;
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, use_h2);
    let host_header = parts.headers.get(header::HOST).cloned();
    let fallback = addr.to_string();
    let authority = authority_str(&parts.uri, host_header.as_ref()).unwrap_or(&fallback);
    match upstream_uri(&parts.uri, None, authority, use_h2) {
        Ok(uri) => {
            if !use_h2
                && host_header.is_none()
                && let Ok(v) = HeaderValue::from_str(authority)
            {
                parts.headers.insert(header::HOST, v);
            }
            parts.uri = uri;
        }
        Err(()) => return full(StatusCode::BAD_REQUEST, format!("cannot forward to authority {authority:?}")),
    }
    let req = request_from(&parts, body.map_err(BoxError::from).boxed(), use_h2);
    let resp = attempt(&upstream, req, use_h2, None).await.unwrap_or_else(|r| *r);
    count(proxy, &NO_LABEL, &LabelValue::from(addr.to_string()), resp.status(), started);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Source;

    fn backend(name: &str, weight: u32) -> Backend {
        Backend::new(Source::default(), format!("svc/ns/{name}"), 80, weight)
    }

    #[test]
    fn weights_split_traffic() {
        let backends = [backend("a", 90), backend("b", 10), backend("zero", 0)];
        let mut a = 0;
        for _ in 0..20_000 {
            match pick_backend(&backends).unwrap().service.as_str() {
                "svc/ns/a" => a += 1,
                "svc/ns/b" => {}
                other => panic!("picked {other}"),
            }
        }
        let share = f64::from(a) / 20_000.0;
        assert!((share - 0.9).abs() < 0.02, "{share}");
    }

    #[test]
    fn all_zero_weights_pick_nothing() {
        assert!(pick_backend(&[backend("a", 0)]).is_none());
        assert!(pick_backend(&[]).is_none());
    }

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(split_authority("Reviews.Bookinfo:9080"), ("reviews.bookinfo".into(), Some(9080)));
        assert_eq!(split_authority("reviews."), ("reviews".into(), None));
        assert_eq!(split_authority("[::1]:80"), ("[::1]".into(), Some(80)));
    }

    #[test]
    fn connection_named_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn te_trailers_survives_toward_http2_only() {
        let te = |value: &'static str, to_h2: bool| {
            let mut h = HeaderMap::new();
            h.insert(header::TE, HeaderValue::from_static(value));
            strip_hop_by_hop(&mut h, to_h2);
            h.get(header::TE).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(te("trailers", true).as_deref(), Some("trailers"));
        assert_eq!(te("gzip, trailers;q=1", true).as_deref(), Some("trailers"));
        assert_eq!(te("gzip", true), None);
        assert_eq!(te("trailers", false), None);
    }
}
