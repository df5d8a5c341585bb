//! The proxy's own view of its configuration: the wire messages of
//! `weft-api`, validated once when they arrive (regexes compiled, header
//! names parsed, ports range-checked) so that the request path never has to
//! handle malformed config. A resource that fails here is NACKed and the
//! previous version stays in use.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;
use serde::Serialize;
use weft_api::config as api;

use crate::metrics::{BackendCounters, LabelValue, RouteLatency};

/// Why a resource could not be applied; the text goes back to the control
/// plane in the NACK.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{field}: invalid regular expression {value:?}: {reason}")]
    Regex { field: &'static str, value: String, reason: String },
    #[error("{field}: invalid header name {value:?}")]
    HeaderName { field: &'static str, value: String },
    #[error("{field}: invalid header value for {name:?}")]
    HeaderValue { field: &'static str, name: String },
    #[error("{field}: invalid HTTP method {value:?}")]
    Method { field: &'static str, value: String },
    #[error("{field}: port {value} is out of range")]
    Port { field: &'static str, value: u32 },
    #[error("{field}: invalid IP address {value:?}")]
    Ip { field: &'static str, value: String },
    #[error("{field}: invalid duration")]
    Duration { field: &'static str },
    #[error("{field}: redirect status {value} is not one of 301, 302, 303, 307, 308")]
    RedirectStatus { field: &'static str, value: u32 },
    #[error("{field}: mirror percentage {numerator}/{denominator} is invalid")]
    Fraction { field: &'static str, numerator: u32, denominator: u32 },
    #[error("resource {0:?} has no content")]
    Empty(String),
    #[error("resource {name:?} holds a {kind}, which its name does not allow")]
    WrongKind { name: String, kind: &'static str },
    #[error("mesh.mtls: unknown mode {0}")]
    MtlsMode(i32),
    #[error("gateway.listeners.protocol: unknown protocol {0}")]
    ListenerProtocol(i32),
    #[error("certificate: {0}")]
    Certificate(String),
}

/// Names an object a route or backend came from (metrics labels, errors).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Source {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Source {
    fn from_api(r: Option<&api::ObjectRef>) -> Self {
        r.map(|r| Source { kind: r.kind.clone(), namespace: r.namespace.clone(), name: r.name.clone() })
            .unwrap_or_default()
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Protocol {
    /// Sniff the first bytes: HTTP/1 or HTTP/2 is routed as HTTP, anything
    /// else is forwarded as TCP.
    Detect,
    Http,
    /// HTTP/2 without TLS (gRPC).
    Http2,
    Opaque,
}

impl Protocol {
    fn from_api(p: i32) -> Self {
        match api::Protocol::try_from(p).unwrap_or(api::Protocol::Detect) {
            api::Protocol::Http => Protocol::Http,
            api::Protocol::Http2 => Protocol::Http2,
            api::Protocol::Opaque => Protocol::Opaque,
            api::Protocol::Detect | api::Protocol::Unspecified => Protocol::Detect,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub vips: Vec<IpAddr>,
    pub hostnames: Vec<String>,
    pub ports: Vec<ServicePort>,
}

impl Service {
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServicePort {
    pub port: u16,
    pub name: String,
    pub protocol: Protocol,
    pub http_routes: Vec<HttpRoute>,
    pub tcp_routes: Vec<TcpRoute>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpRoute {
    pub source: Source,
    /// `namespace/name` of the source, the route's metrics label.
    #[serde(skip)]
    pub label: LabelValue,
    /// The route's latency histogram (shared by clones of the route).
    #[serde(skip)]
    pub latency: Arc<RouteLatency>,
    pub hostnames: Vec<String>,
    pub rules: Vec<HttpRule>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpRule {
    pub name: String,
    pub matches: Vec<HttpMatch>,
    pub filters: Vec<Filter>,
    pub backends: Vec<Backend>,
    pub timeouts: Timeouts,
    pub retry: Option<Retry>,
    /// Requests matching the rule are answered 500 with this text.
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeouts {
    /// The whole request, retries included.
    pub request: Option<Duration>,
    /// Each attempt to a backend.
    pub backend_request: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Retry {
    /// Retries after the first attempt (GEP-1731 `attempts`).
    pub attempts: u32,
    pub backoff: Duration,
    /// Response codes that are retried; connection errors always are.
    pub codes: Vec<u16>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpMatch {
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<QueryMatch>,
    #[serde(serialize_with = "ser_method")]
    pub method: Option<Method>,
}

#[derive(Debug, Clone, Serialize)]
pub enum PathMatch {
    Exact(String),
    /// Stored without a trailing slash (the spec ignores it), except "/".
    Prefix(String),
    Regex(#[serde(serialize_with = "ser_regex")] Regex),
}

#[derive(Debug, Clone, Serialize)]
pub enum ValueMatch {
    Exact(String),
    Regex(#[serde(serialize_with = "ser_regex")] Regex),
}

impl ValueMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(v) => v == value,
            ValueMatch::Regex(r) => r.is_match(value),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HeaderMatch {
    #[serde(serialize_with = "ser_header_name")]
    pub name: HeaderName,
    pub value: ValueMatch,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

#[derive(Debug, Clone, Serialize)]
pub enum Filter {
    RequestHeaders(HeaderModifier),
    ResponseHeaders(HeaderModifier),
    Redirect(Redirect),
    Rewrite(Rewrite),
    Mirror(Mirror),
    Cors(Cors),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderModifier {
    #[serde(serialize_with = "ser_headers")]
    pub set: Vec<(HeaderName, HeaderValue)>,
    #[serde(serialize_with = "ser_headers")]
    pub add: Vec<(HeaderName, HeaderValue)>,
    #[serde(serialize_with = "ser_header_names")]
    pub remove: Vec<HeaderName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PathModifier {
    Full(String),
    Prefix(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<u16>,
    pub status: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mirror {
    pub backend: Backend,
    pub numerator: u32,
    pub denominator: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Backend {
    pub source: Source,
    /// The Service resource (`svc/<ns>/<name>`) whose endpoints serve it.
    pub service: String,
    /// The endpoints resource that serves it (`ep/<ns>/<name>`).
    #[serde(skip)]
    pub endpoints: String,
    /// `<ns>/<name>` of the Service, the backend's metrics label.
    #[serde(skip)]
    pub label: LabelValue,
    /// Its request counters under its route (shared by clones).
    #[serde(skip)]
    pub counters: Arc<BackendCounters>,
    pub port: u16,
    pub weight: u32,
    pub filters: Vec<Filter>,
    /// The backend did not resolve: its share is answered with 500.
    pub unresolved: Option<String>,
}

impl Backend {
    /// A backend on the Service resource `service` (`svc/<ns>/<name>`), with
    /// the names derived from it filled in.
    pub fn new(source: Source, service: String, port: u16, weight: u32) -> Self {
        let (endpoints, label) = match service.strip_prefix("svc/") {
            Some(rest) => (format!("ep/{rest}"), rest.into()),
            None => (service.clone(), service.as_str().into()),
        };
        Backend {
            source,
            service,
            endpoints,
            label,
            counters: Arc::default(),
            port,
            weight,
            filters: Vec::new(),
            unresolved: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TcpRoute {
    pub source: Source,
    pub hostnames: Vec<String>,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Endpoints {
    pub namespace: String,
    pub name: String,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    /// Service port → target port.
    pub ports: HashMap<u16, u16>,
    /// SPIFFE ID the endpoint's proxy must present (empty: no proxy).
    pub identity: String,
    pub workload: String,
}

impl Endpoint {
    /// Where traffic for `service_port` goes on this endpoint, if it serves
    /// that port.
    pub fn addr(&self, service_port: u16) -> Option<SocketAddr> {
        self.ports.get(&service_port).map(|p| SocketAddr::new(self.ip, *p))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MeshSettings {
    pub name: String,
    pub mtls: crate::tls::MtlsMode,
    pub trust_domain: String,
    /// PEM roots of the mesh (not shown in config dumps: the count is).
    #[serde(skip)]
    pub roots_pem: Vec<String>,
    pub roots: usize,
    /// Other meshes' trust bundles: (trust domain, PEM roots); dumps show
    /// the trust domains only.
    #[serde(serialize_with = "trust_domains")]
    pub federated: Vec<(String, Vec<String>)>,
}

fn trust_domains<S: serde::Serializer>(bundles: &[(String, Vec<String>)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(bundles.iter().map(|(domain, _)| domain))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Inbound {
    pub ports: Vec<(u16, Protocol)>,
}

/// One validated resource.
#[derive(Debug, Clone)]
pub enum Resource {
    Mesh(Arc<MeshSettings>),
    Inbound(Arc<Inbound>),
    Service(Arc<Service>),
    Endpoints(Arc<Endpoints>),
    /// Listeners of a MeshGateway, served in gateway mode (a sidecar is
    /// never sent one).
    Gateway(Arc<Gateway>),
    /// A serving certificate of the gateway's TLS-terminating listeners.
    Certificate(Arc<Certificate>),
}

/// A listener certificate, parsed and ready to serve. Only its names and
/// validity are ever shown; the key stays inside `key`.
#[derive(Clone, Serialize)]
pub struct Certificate {
    pub namespace: String,
    pub name: String,
    /// DNS names of the leaf (subjectAltName), for choosing by SNI.
    pub dns_names: Vec<String>,
    /// Unix seconds of the leaf's notAfter.
    pub not_after: i64,
    /// The leaf's serial number in hex, to tell a rotated certificate apart.
    pub serial: String,
    #[serde(skip)]
    pub key: Arc<rustls::sign::CertifiedKey>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("dns_names", &self.dns_names)
            .field("not_after", &self.not_after)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Whether the certificate is for `server_name`: an exact DNS name, or
    /// a `*.` wildcard covering one more label.
    pub fn serves(&self, server_name: &str) -> Option<u8> {
        self.dns_names
            .iter()
            .filter_map(|n| {
                if n.eq_ignore_ascii_case(server_name) {
                    Some(2)
                } else if let Some(suffix) = n.strip_prefix("*.") {
                    let (first, rest) = server_name.split_once('.')?;
                    (!first.is_empty() && rest.eq_ignore_ascii_case(suffix)).then_some(1)
                } else {
                    None
                }
            })
            .max()
    }
}

fn certificate(c: &api::TlsCertificate) -> Result<Certificate, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |m: &str| ConfigError::Certificate(format!("{}/{}: {m}", c.namespace, c.name));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(c.chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| err("the chain is not PEM"))?;
    let leaf = chain.first().ok_or_else(|| err("the chain holds no certificate"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|_| err("the leaf is not X.509"))?;
    let dns_names = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let not_after = parsed.validity().not_after.timestamp();
    let serial = parsed.raw_serial_as_string();
    let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).map_err(|_| err("no PEM private key"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| err("the key is not usable (ECDSA, Ed25519 or RSA)"))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| err("the key is not the leaf's"))?;
    Ok(Certificate {
        namespace: c.namespace.clone(),
        name: c.name.clone(),
        dns_names,
        not_after,
        serial,
        key: Arc::new(certified),
    })
}

/// A MeshGateway's listeners with their routes, as a gateway proxy serves
/// them.
#[derive(Debug, Clone, Serialize)]
pub struct Gateway {
    pub name: String,
    pub cross_mesh: bool,
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    Http,
    Https,
    Tls,
    Tcp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    pub name: String,
    pub port: u16,
    pub protocol: ListenerProtocol,
    /// Lower case; empty: any host.
    pub hostname: String,
    /// Whether a TLS listener passes TLS through (else it terminates).
    pub tls_passthrough: bool,
    /// `namespace/name` of the certificate Secrets of a terminating
    /// listener.
    pub certificates: Vec<String>,
    /// Routes attached to the listener, their host names already
    /// intersected with the listener's.
    pub http_routes: Vec<HttpRoute>,
    pub tcp_routes: Vec<TcpRoute>,
}

impl Gateway {
    /// The listeners on `port`, most specific host name first: an exact
    /// name, then longer wildcards, then the listener for any host (the
    /// order in which the Gateway API lets a request pick one).
    pub fn listeners_on(&self, port: u16) -> Vec<&Listener> {
        let mut on: Vec<&Listener> = self.listeners.iter().filter(|l| l.port == port).collect();
        on.sort_by_key(|l| std::cmp::Reverse(hostname_specificity(&l.hostname)));
        on
    }

    /// The listener of `port` a request for `host` belongs to.
    pub fn listener_for(&self, port: u16, host: &str) -> Option<&Listener> {
        self.listeners_on(port).into_iter().find(|l| hostname_matches(&l.hostname, host))
    }
}

/// Orders listener host names: exact beats wildcard, a longer wildcard
/// beats a shorter one, and any name beats none.
fn hostname_specificity(hostname: &str) -> (u8, usize) {
    match hostname {
        "" => (0, 0),
        h if h.starts_with("*.") => (1, h.len()),
        h => (2, h.len()),
    }
}

/// Whether a listener's host name admits a request's host: empty admits
/// every host; `*.example.com` admits names with at least one more label.
pub fn hostname_matches(listener: &str, host: &str) -> bool {
    match listener.strip_prefix('*') {
        _ if listener.is_empty() => true,
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => listener == host,
    }
}

impl Resource {
    /// Validates a wire resource, checking that its kind fits its name.
    pub fn from_api(r: &api::Resource) -> Result<Self, ConfigError> {
        let kind = r.kind.as_ref().ok_or_else(|| ConfigError::Empty(r.name.clone()))?;
        let (expected_prefix, kind_name) = match kind {
            api::resource::Kind::Mesh(_) => ("mesh", "mesh"),
            api::resource::Kind::Inbound(_) => ("inbound", "inbound"),
            api::resource::Kind::Service(_) => ("svc/", "service"),
            api::resource::Kind::Endpoints(_) => ("ep/", "endpoints"),
            api::resource::Kind::Gateway(_) => ("gw/", "gateway"),
            api::resource::Kind::Certificate(_) => ("cert/", "certificate"),
        };
        if !r.name.starts_with(expected_prefix) {
            return Err(ConfigError::WrongKind { name: r.name.clone(), kind: kind_name });
        }
        Ok(match kind {
            api::resource::Kind::Mesh(m) => Resource::Mesh(Arc::new(MeshSettings {
                name: m.name.clone(),
                mtls: match api::MtlsMode::try_from(m.mtls) {
                    Ok(api::MtlsMode::Strict) => crate::tls::MtlsMode::Strict,
                    Ok(api::MtlsMode::Off) => crate::tls::MtlsMode::Off,
                    // Unspecified is the Mesh resource's default.
                    Ok(api::MtlsMode::Permissive | api::MtlsMode::Unspecified) => crate::tls::MtlsMode::Permissive,
                    Err(_) => return Err(ConfigError::MtlsMode(m.mtls)),
                },
                trust_domain: m.trust_domain.clone(),
                roots_pem: m.roots_pem.clone(),
                roots: m.roots_pem.len(),
                federated: m.federated.iter().map(|b| (b.trust_domain.clone(), b.roots_pem.clone())).collect(),
            })),
            api::resource::Kind::Inbound(i) => Resource::Inbound(Arc::new(Inbound {
                ports: i
                    .ports
                    .iter()
                    .map(|p| Ok((port("inbound.ports.port", p.port)?, Protocol::from_api(p.protocol))))
                    .collect::<Result<_, ConfigError>>()?,
            })),
            api::resource::Kind::Service(s) => Resource::Service(Arc::new(service(s)?)),
            api::resource::Kind::Endpoints(e) => Resource::Endpoints(Arc::new(endpoints(e)?)),
            api::resource::Kind::Gateway(g) => Resource::Gateway(Arc::new(gateway(g)?)),
            api::resource::Kind::Certificate(c) => Resource::Certificate(Arc::new(certificate(c)?)),
        })
    }
}

fn port(field: &'static str, value: u32) -> Result<u16, ConfigError> {
    u16::try_from(value).ok().filter(|p| *p != 0).ok_or(ConfigError::Port { field, value })
}

fn ip(field: &'static str, value: &str) -> Result<IpAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Ip { field, value: value.to_owned() })
}

fn service(s: &api::Service) -> Result<Service, ConfigError> {
    Ok(Service {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        vips: s.vips.iter().map(|v| ip("service.vips", v)).collect::<Result<_, _>>()?,
        hostnames: s.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect(),
        ports: s
            .ports
            .iter()
            .map(|p| {
                Ok(ServicePort {
                    port: port("service.ports.port", p.port)?,
                    name: p.name.clone(),
                    protocol: Protocol::from_api(p.protocol),
                    http_routes: p.http_routes.iter().map(http_route).collect::<Result<_, _>>()?,
                    tcp_routes: p.tcp_routes.iter().map(tcp_route).collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, ConfigError>>()?,
    })
}

fn gateway(g: &api::GatewayListeners) -> Result<Gateway, ConfigError> {
    Ok(Gateway {
        name: g.name.clone(),
        cross_mesh: g.cross_mesh,
        listeners: g
            .listeners
            .iter()
            .map(|l| {
                Ok(Listener {
                    name: l.name.clone(),
                    port: port("gateway.listeners.port", l.port)?,
                    protocol: match api::listener::Protocol::try_from(l.protocol) {
                        Ok(api::listener::Protocol::Http) => ListenerProtocol::Http,
                        Ok(api::listener::Protocol::Https) => ListenerProtocol::Https,
                        Ok(api::listener::Protocol::Tls) => ListenerProtocol::Tls,
                        Ok(api::listener::Protocol::Tcp) => ListenerProtocol::Tcp,
                        Err(_) => return Err(ConfigError::ListenerProtocol(l.protocol)),
                    },
                    hostname: l.hostname.to_ascii_lowercase(),
                    tls_passthrough: l.tls.as_ref().is_some_and(|t| t.passthrough),
                    certificates: l.tls.as_ref().map(|t| t.certificates.clone()).unwrap_or_default(),
                    http_routes: l.http_routes.iter().map(http_route).collect::<Result<_, _>>()?,
                    tcp_routes: l.tcp_routes.iter().map(tcp_route).collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, ConfigError>>()?,
    })
}

pub(crate) fn http_route(r: &api::HttpRoute) -> Result<HttpRoute, ConfigError> {
    let source = Source::from_api(r.source.as_ref());
    Ok(HttpRoute {
        label: source.to_string().into(),
        latency: Arc::default(),
        source,
        hostnames: r.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect(),
        rules: r.rules.iter().map(http_rule).collect::<Result<_, _>>()?,
    })
}

pub(crate) fn tcp_route(r: &api::TcpRoute) -> Result<TcpRoute, ConfigError> {
    Ok(TcpRoute {
        source: Source::from_api(r.source.as_ref()),
        hostnames: r.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect(),
        backends: r.backends.iter().map(backend).collect::<Result<_, _>>()?,
    })
}

fn http_rule(r: &api::HttpRule) -> Result<HttpRule, ConfigError> {
    let mut matches: Vec<HttpMatch> = r.matches.iter().map(http_match).collect::<Result<_, _>>()?;
    if matches.is_empty() {
        matches.push(HttpMatch {
            path: PathMatch::Prefix("/".into()),
            headers: Vec::new(),
            query_params: Vec::new(),
            method: None,
        });
    }
    let timeouts = match &r.timeouts {
        Some(t) => Timeouts {
            // A zero timeout disables it, as the Gateway API says.
            request: duration("timeouts.request", t.request.as_ref())?.filter(|d| !d.is_zero()),
            backend_request: duration("timeouts.backendRequest", t.backend_request.as_ref())?.filter(|d| !d.is_zero()),
        },
        None => Timeouts::default(),
    };
    let retry = match &r.retry {
        Some(rt) => Some(Retry {
            attempts: rt.attempts,
            backoff: duration("retry.backoff", rt.backoff.as_ref())?.unwrap_or(Duration::ZERO),
            codes: rt
                .codes
                .iter()
                .map(|c| u16::try_from(*c).map_err(|_| ConfigError::Port { field: "retry.codes", value: *c }))
                .collect::<Result<_, _>>()?,
        }),
        None => None,
    };
    Ok(HttpRule {
        name: r.name.clone(),
        matches,
        filters: r.filters.iter().filter_map(|f| filter(f).transpose()).collect::<Result<_, _>>()?,
        backends: r.backends.iter().map(backend).collect::<Result<_, _>>()?,
        timeouts,
        retry,
        failure: Some(r.failure.clone()).filter(|f| !f.is_empty()),
    })
}

fn duration(field: &'static str, d: Option<&prost_types::Duration>) -> Result<Option<Duration>, ConfigError> {
    match d {
        None => Ok(None),
        Some(d) => Duration::try_from(*d).map(Some).map_err(|_| ConfigError::Duration { field }),
    }
}

fn regex(field: &'static str, pattern: &str) -> Result<Regex, ConfigError> {
    // Matches are whole-value matches, as the conformance tests expect.
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| ConfigError::Regex {
        field,
        value: pattern.to_owned(),
        reason: e.to_string(),
    })
}

fn http_match(m: &api::HttpMatch) -> Result<HttpMatch, ConfigError> {
    let path = match &m.path {
        None => PathMatch::Prefix("/".into()),
        Some(p) => match api::path_match::Kind::try_from(p.kind).unwrap_or(api::path_match::Kind::Prefix) {
            api::path_match::Kind::Exact => PathMatch::Exact(p.value.clone()),
            api::path_match::Kind::Prefix => PathMatch::Prefix(normalize_prefix(&p.value)),
            api::path_match::Kind::Regex => PathMatch::Regex(regex("matches.path.value", &p.value)?),
        },
    };
    let value = |field: &'static str, s: &api::StringMatch| -> Result<ValueMatch, ConfigError> {
        Ok(match api::string_match::Kind::try_from(s.kind).unwrap_or(api::string_match::Kind::Exact) {
            api::string_match::Kind::Exact => ValueMatch::Exact(s.value.clone()),
            api::string_match::Kind::Regex => ValueMatch::Regex(regex(field, &s.value)?),
        })
    };
    Ok(HttpMatch {
        path,
        headers: m
            .headers
            .iter()
            .map(|h| {
                Ok(HeaderMatch {
                    name: header_name("matches.headers.name", &h.name)?,
                    value: value("matches.headers.value", h)?,
                })
            })
            .collect::<Result<_, ConfigError>>()?,
        query_params: m
            .query_params
            .iter()
            .map(|q| Ok(QueryMatch { name: q.name.clone(), value: value("matches.queryParams.value", q)? }))
            .collect::<Result<_, ConfigError>>()?,
        method: if m.method.is_empty() {
            None
        } else {
            Some(
                Method::from_bytes(m.method.as_bytes())
                    .map_err(|_| ConfigError::Method { field: "matches.method", value: m.method.clone() })?,
            )
        },
    })
}

/// The spec ignores a trailing slash in a prefix: `/foo/` matches `/foo`.
fn normalize_prefix(p: &str) -> String {
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() }
}

fn header_name(field: &'static str, name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConfigError::HeaderName { field, value: name.to_owned() })
}

fn headers(field: &'static str, hs: &[api::Header]) -> Result<Vec<(HeaderName, HeaderValue)>, ConfigError> {
    hs.iter()
        .map(|h| {
            let name = header_name(field, &h.name)?;
            let value = HeaderValue::from_str(&h.value)
                .map_err(|_| ConfigError::HeaderValue { field, name: h.name.clone() })?;
            Ok((name, value))
        })
        .collect()
}

fn header_modifier(field: &'static str, m: &api::HeaderModifier) -> Result<HeaderModifier, ConfigError> {
    Ok(HeaderModifier {
        set: headers(field, &m.set)?,
        add: headers(field, &m.add)?,
        remove: m.remove.iter().map(|n| header_name(field, n)).collect::<Result<_, _>>()?,
    })
}

fn path_modifier(p: Option<&api::PathModifier>) -> Option<PathModifier> {
    p.map(|p| match api::path_modifier::Kind::try_from(p.kind).unwrap_or(api::path_modifier::Kind::Full) {
        api::path_modifier::Kind::Full => PathModifier::Full(p.value.clone()),
        api::path_modifier::Kind::Prefix => PathModifier::Prefix(p.value.clone()),
    })
}

fn non_empty(s: &str) -> Option<String> {
    Some(s.to_owned()).filter(|s| !s.is_empty())
}

fn filter(f: &api::Filter) -> Result<Option<Filter>, ConfigError> {
    let Some(kind) = &f.kind else { return Ok(None) };
    Ok(Some(match kind {
        api::filter::Kind::RequestHeaderModifier(m) => {
            Filter::RequestHeaders(header_modifier("filters.requestHeaderModifier", m)?)
        }
        api::filter::Kind::ResponseHeaderModifier(m) => {
            Filter::ResponseHeaders(header_modifier("filters.responseHeaderModifier", m)?)
        }
        api::filter::Kind::Redirect(r) => {
            let status = match r.status {
                0 => 302,
                s @ (301 | 302 | 303 | 307 | 308) => s as u16,
                value => {
                    return Err(ConfigError::RedirectStatus { field: "filters.requestRedirect.statusCode", value });
                }
            };
            Filter::Redirect(Redirect {
                scheme: non_empty(&r.scheme),
                hostname: non_empty(&r.hostname),
                path: path_modifier(r.path.as_ref()),
                port: if r.port == 0 { None } else { Some(port("filters.requestRedirect.port", r.port)?) },
                status,
            })
        }
        api::filter::Kind::Rewrite(r) => {
            Filter::Rewrite(Rewrite { hostname: non_empty(&r.hostname), path: path_modifier(r.path.as_ref()) })
        }
        api::filter::Kind::Mirror(m) => {
            let (numerator, denominator) = if m.denominator == 0 { (100, 100) } else { (m.numerator, m.denominator) };
            if numerator > denominator {
                return Err(ConfigError::Fraction { field: "filters.requestMirror", numerator, denominator });
            }
            let b = m.backend.as_ref().ok_or(ConfigError::Empty("filters.requestMirror.backendRef".into()))?;
            Filter::Mirror(Mirror { backend: backend(b)?, numerator, denominator })
        }
        api::filter::Kind::Cors(c) => Filter::Cors(Cors {
            allow_origins: c.allow_origins.clone(),
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            allow_credentials: c.allow_credentials,
            max_age: Some(c.max_age).filter(|a| *a > 0),
        }),
    }))
}

fn backend(b: &api::Backend) -> Result<Backend, ConfigError> {
    let unresolved = non_empty(&b.unresolved);
    // An unresolved backend may carry no port; it is never dialled.
    let port = if unresolved.is_some() { u16::try_from(b.port).unwrap_or(0) } else { port("backend.port", b.port)? };
    Ok(Backend {
        filters: b.filters.iter().filter_map(|f| filter(f).transpose()).collect::<Result<_, _>>()?,
        unresolved,
        ..Backend::new(Source::from_api(b.source.as_ref()), b.service.clone(), port, b.weight)
    })
}

fn endpoints(e: &api::Endpoints) -> Result<Endpoints, ConfigError> {
    Ok(Endpoints {
        namespace: e.namespace.clone(),
        name: e.name.clone(),
        endpoints: e
            .endpoints
            .iter()
            .map(|ep| {
                Ok(Endpoint {
                    ip: ip("endpoints.ip", &ep.ip)?,
                    ports: ep
                        .ports
                        .iter()
                        .map(|(s, t)| Ok((port("endpoints.ports", *s)?, port("endpoints.ports", *t)?)))
                        .collect::<Result<_, ConfigError>>()?,
                    identity: ep.identity.clone(),
                    workload: ep.workload.clone(),
                })
            })
            .collect::<Result<_, ConfigError>>()?,
    })
}

fn ser_regex<S: serde::Serializer>(r: &Regex, s: S) -> Result<S::Ok, S::Error> {
    let p = r.as_str();
    s.serialize_str(p.strip_prefix("^(?:").and_then(|p| p.strip_suffix(")$")).unwrap_or(p))
}

fn ser_method<S: serde::Serializer>(m: &Option<Method>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_some(m.as_str()),
        None => s.serialize_none(),
    }
}

fn ser_header_name<S: serde::Serializer>(n: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.as_str())
}

fn ser_header_names<S: serde::Serializer>(ns: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ns.iter().map(|n| n.as_str()))
}

fn ser_headers<S: serde::Serializer>(hs: &[(HeaderName, HeaderValue)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(hs.iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("<binary>"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_with_rule(rule: api::HttpRule) -> api::Resource {
        api::Resource {
            name: "svc/ns/s".into(),
            version: "1".into(),
            kind: Some(api::resource::Kind::Service(api::Service {
                namespace: "ns".into(),
                name: "s".into(),
                vips: vec!["10.96.0.5".into()],
                hostnames: vec!["s.ns".into()],
                ports: vec![api::ServicePort {
                    port: 80,
                    name: "http".into(),
                    protocol: api::Protocol::Http as i32,
                    http_routes: vec![api::HttpRoute { source: None, hostnames: vec![], rules: vec![rule] }],
                    tcp_routes: vec![],
                }],
            })),
        }
    }

    #[test]
    fn a_bad_regex_is_rejected_with_its_field() {
        let rule = api::HttpRule {
            matches: vec![api::HttpMatch {
                path: Some(api::PathMatch { kind: api::path_match::Kind::Regex as i32, value: "/(".into() }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = Resource::from_api(&service_with_rule(rule)).unwrap_err();
        assert!(err.to_string().starts_with("matches.path.value: invalid regular expression \"/(\""), "{err}");
    }

    #[test]
    fn a_rule_without_matches_matches_every_path() {
        let Resource::Service(s) = Resource::from_api(&service_with_rule(api::HttpRule::default())).unwrap() else {
            panic!("not a service")
        };
        let rule = &s.ports[0].http_routes[0].rules[0];
        assert!(matches!(&rule.matches[0].path, PathMatch::Prefix(p) if p == "/"));
    }

    #[test]
    fn a_zero_timeout_disables_it() {
        let rule = api::HttpRule {
            timeouts: Some(api::Timeouts {
                request: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
                backend_request: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
            }),
            ..Default::default()
        };
        let Resource::Service(s) = Resource::from_api(&service_with_rule(rule)).unwrap() else {
            panic!("not a service")
        };
        let t = &s.ports[0].http_routes[0].rules[0].timeouts;
        assert_eq!((t.request, t.backend_request), (None, Some(Duration::from_secs(2))));
    }

    #[test]
    fn listeners_are_chosen_by_the_most_specific_host_name() {
        let listener = |name: &str, hostname: &str| Listener {
            name: name.into(),
            port: 80,
            protocol: ListenerProtocol::Http,
            hostname: hostname.into(),
            tls_passthrough: false,
            certificates: vec![],
            http_routes: vec![],
            tcp_routes: vec![],
        };
        let gw = Gateway {
            name: "edge".into(),
            cross_mesh: false,
            listeners: vec![
                listener("any", ""),
                listener("wild", "*.example.com"),
                listener("deep", "*.a.example.com"),
                listener("exact", "www.example.com"),
            ],
        };
        let pick = |host: &str| gw.listener_for(80, host).map(|l| l.name.as_str());
        assert_eq!(pick("www.example.com"), Some("exact"));
        assert_eq!(pick("x.a.example.com"), Some("deep"));
        assert_eq!(pick("b.example.com"), Some("wild"));
        // A wildcard needs at least one more label.
        assert_eq!(pick("example.com"), Some("any"));
        assert_eq!(pick("other.org"), Some("any"));
        assert_eq!(gw.listener_for(81, "www.example.com").map(|l| l.name.as_str()), None);
    }

    #[test]
    fn kinds_must_fit_names() {
        let mut r = service_with_rule(api::HttpRule::default());
        r.name = "ep/ns/s".into();
        assert_eq!(
            Resource::from_api(&r).unwrap_err(),
            ConfigError::WrongKind { name: "ep/ns/s".into(), kind: "service" }
        );
    }

    #[test]
    fn redirect_status_must_be_a_redirect() {
        let rule = api::HttpRule {
            filters: vec![api::Filter {
                kind: Some(api::filter::Kind::Redirect(api::Redirect { status: 200, ..Default::default() })),
            }],
            ..Default::default()
        };
        assert!(matches!(
            Resource::from_api(&service_with_rule(rule)).unwrap_err(),
            ConfigError::RedirectStatus { value: 200, .. }
        ));
    }

    #[test]
    fn trailing_slashes_of_prefixes_are_ignored() {
        assert_eq!(normalize_prefix("/foo/"), "/foo");
        assert_eq!(normalize_prefix("/"), "/");
        assert_eq!(normalize_prefix(""), "/");
    }
}
