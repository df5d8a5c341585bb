//! Request validation and path normalisation, applied at every listener
//! (sidecar outbound and inbound, gateway) before a request is matched or
//! forwarded. A refused request is answered by the proxy with a 4xx and a
//! reason, and nothing of it reaches a backend.
//!
//! What is refused, and why:
//!
//! - two `Host` lines, or a `Host` that is not a valid authority (RFC 9112
//!   §3.2: a server MUST answer 400); an HTTP/1.1 request without `Host`;
//! - `Host` disagreeing with the authority of an absolute-form target
//!   (RFC 9112 §3.2.2 lets an origin ignore Host, but a proxy that routes by
//!   one and forwards the other is the classic confusion attack, so Weft
//!   refuses the ambiguity) or with HTTP/2's `:authority` (RFC 9113 §8.3.1:
//!   "SHOULD treat a request as malformed");
//! - `Content-Length` together with `Transfer-Encoding`, several differing
//!   `Content-Length` values, or one that is not a number (RFC 9112 §6.3:
//!   request smuggling; an intermediary must not forward both);
//! - header sections above the limits (431, RFC 6585 §5) and declared
//!   bodies above the limit (413, RFC 9110 §15.5.14);
//! - targets that are not a path (other than `*` for OPTIONS), paths with a
//!   backslash or a malformed percent escape;
//! - CONNECT (501): Weft routes requests, it does not open tunnels.
//!
//! Paths are normalised before matching, and the normalised path is what
//! the backend receives (Envoy's `normalize_path` plus `merge_slashes`):
//! percent escapes of unreserved characters are decoded and other escapes
//! upper-cased (RFC 3986 §6.2.2.1-2), dot segments are removed (§5.2.4,
//! so `/app/../x` is `/x` and never matches the prefix `/app`), and runs
//! of slashes become one. Escaped slashes (`%2F`) stay escaped: they never
//! become segment separators. The query is left as sent.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

/// Limits a listener enforces on request heads and declared bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest header section, counted as HPACK does (RFC 7541 §4.1: name
    /// and value length plus 32 per field).
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Largest declared (`Content-Length`) or streamed request body; `None`
    /// for no limit.
    pub max_body_bytes: Option<u64>,
    /// Longest an HTTP/1 client may take to send a request's header
    /// section, counted from the connection's start or the end of the
    /// previous response (so it also bounds idle keep-alive connections);
    /// a slow or silent client is disconnected (slowloris).
    pub header_read_timeout: std::time::Duration,
}

/// Default of [`Limits::header_read_timeout`]: hyper's own default.
pub const DEFAULT_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// 64 KiB of headers, as Envoy's default `max_request_headers_kb` allows
/// 60 KiB; gRPC's default is 8 KiB, so gRPC clients stay well inside.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// hyper's own HTTP/1 default, so both protocols refuse at the same count.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Why a request was refused; the text is the response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the request has {0} Host header fields; RFC 9112 §3.2 allows one")]
    SeveralHosts(usize),
    #[error("the Host header {0:?} is not a valid authority")]
    InvalidHost(String),
    #[error("an HTTP/1.1 request must carry a Host header (RFC 9112 §3.2)")]
    MissingHost,
    #[error("the Host header {host:?} disagrees with the request's authority {authority:?}")]
    HostMismatch { host: String, authority: String },
    #[error("Content-Length and Transfer-Encoding together are refused (RFC 9112 §6.3, request smuggling)")]
    LengthAndChunked,
    #[error("invalid or conflicting Content-Length values")]
    InvalidContentLength,
    #[error("the header section has {0} fields; the limit is {1}")]
    TooManyHeaders(usize, usize),
    #[error("the header section is {0} bytes; the limit is {1}")]
    HeadersTooLarge(usize, usize),
    #[error("the request body is {0} bytes; the limit is {1}")]
    BodyTooLarge(u64, u64),
    #[error("the request target {0:?} is not a path")]
    InvalidTarget(String),
    #[error("the path {0:?} holds a malformed percent escape")]
    BadEscape(String),
    #[error("the path {0:?} holds a backslash, which Weft refuses rather than guess its meaning")]
    Backslash(String),
    #[error("Weft does not tunnel CONNECT requests")]
    Connect,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::TooManyHeaders(..) | Rejection::HeadersTooLarge(..) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Rejection::BodyTooLarge(..) => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Connect => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The head of a request as validation sees it.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub headers: &'a HeaderMap,
}

/// Checks a request head; on success returns the normalised request
/// target when it differs from the one received.
pub fn check(head: Head<'_>, limits: &Limits) -> Result<Option<Uri>, Rejection> {
    check_header_size(head.headers, limits)?;
    check_hosts(head)?;
    check_length(head.headers, limits)?;
    normalized_target(head.method, head.uri)
}

fn check_header_size(headers: &HeaderMap, limits: &Limits) -> Result<(), Rejection> {
    let count = headers.len();
    if count > limits.max_headers {
        return Err(Rejection::TooManyHeaders(count, limits.max_headers));
    }
    let bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum();
    if bytes > limits.max_header_bytes {
        return Err(Rejection::HeadersTooLarge(bytes, limits.max_header_bytes));
    }
    Ok(())
}

fn check_hosts(head: Head<'_>) -> Result<(), Rejection> {
    let mut hosts = head.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    let more = hosts.count();
    if more > 0 {
        return Err(Rejection::SeveralHosts(more + 1));
    }
    let host = match host {
        Some(v) => Some(parse_host(v)?),
        None => None,
    };
    let authority = head.uri.authority().map(|a| normal_authority(a.as_str(), head.uri.scheme_str()));
    match (host, authority) {
        (None, None) if head.version == Version::HTTP_11 => Err(Rejection::MissingHost),
        (Some(h), Some(a)) if normal_authority(&h, head.uri.scheme_str()) != a => Err(Rejection::HostMismatch {
            host: h,
            authority: head.uri.authority().map(|a| a.to_string()).unwrap_or_default(),
        }),
        _ => Ok(()),
    }
}

/// A Host value: one authority without user information.
fn parse_host(v: &HeaderValue) -> Result<String, Rejection> {
    let text = v.to_str().map_err(|_| Rejection::InvalidHost(String::from_utf8_lossy(v.as_bytes()).into_owned()))?;
    let valid = !text.is_empty()
        && !text.contains(['@', ',', ' ', '/', '?', '#'])
        && http::uri::Authority::try_from(text).is_ok_and(|a| a.as_str() == text);
    if valid { Ok(text.to_owned()) } else { Err(Rejection::InvalidHost(text.to_owned())) }
}

/// An authority compared as an entity: lower case, without a trailing dot
/// in the host, and without the scheme's default port.
fn normal_authority(authority: &str, scheme: Option<&str>) -> String {
    let lower = authority.to_ascii_lowercase();
    let default = match scheme {
        Some("https") => ":443",
        _ => ":80",
    };
    let trimmed = lower.strip_suffix(default).unwrap_or(&lower);
    let (host, port) = match trimmed.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (trimmed, ""),
        Some((h, p)) => (h, p),
        None => (trimmed, ""),
    };
    let host = host.trim_end_matches('.');
    if port.is_empty() { host.to_owned() } else { format!("{host}:{port}") }
}

fn check_length(headers: &HeaderMap, limits: &Limits) -> Result<(), Rejection> {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter().peekable();
    if lengths.peek().is_none() {
        return Ok(());
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Rejection::LengthAndChunked);
    }
    let mut value: Option<u64> = None;
    for v in lengths {
        // A list of identical values is allowed (RFC 9110 §8.6); anything
        // else is invalid.
        for item in v.to_str().map_err(|_| Rejection::InvalidContentLength)?.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Rejection::InvalidContentLength);
            }
            let n: u64 = item.parse().map_err(|_| Rejection::InvalidContentLength)?;
            if value.is_some_and(|v| v != n) {
                return Err(Rejection::InvalidContentLength);
            }
            value = Some(n);
        }
    }
    if let (Some(n), Some(max)) = (value, limits.max_body_bytes)
        && n > max
    {
        return Err(Rejection::BodyTooLarge(n, max));
    }
    Ok(())
}

/// The request target with its path normalised, when that changes it.
fn normalized_target(method: &Method, uri: &Uri) -> Result<Option<Uri>, Rejection> {
    // CONNECT asks for a tunnel (RFC 9110 §9.3.6), which no route
    // describes: 501, for every form of it (HTTP/2's extended CONNECT
    // included).
    if method == Method::CONNECT {
        return Err(Rejection::Connect);
    }
    let Some(pq) = uri.path_and_query() else {
        return Err(Rejection::InvalidTarget(uri.to_string()));
    };
    let path = pq.path();
    if path == "*" {
        return if method == Method::OPTIONS { Ok(None) } else { Err(Rejection::InvalidTarget(path.to_owned())) };
    }
    if !path.starts_with('/') {
        return Err(Rejection::InvalidTarget(path.to_owned()));
    }
    let normal = normalize_path(path)?;
    let Cow::Owned(normal) = normal else { return Ok(None) };
    let new_pq = match pq.query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(http::uri::PathAndQuery::try_from(new_pq).map_err(|_| Rejection::InvalidTarget(path.to_owned()))?);
    Uri::from_parts(parts).map(Some).map_err(|_| Rejection::InvalidTarget(path.to_owned()))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Normalises an absolute path (see the module docs); borrowed when it is
/// already normal, which is the common case.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, Rejection> {
    let bytes = path.as_bytes();
    if bytes.contains(&b'\\') {
        return Err(Rejection::Backslash(path.to_owned()));
    }
    let needs_work = bytes.contains(&b'%') || path.contains("//") || has_dot_segment(path);
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    // 1. Percent escapes: decode unreserved, upper-case the rest.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(h), Some(l)) = (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
            else {
                return Err(Rejection::BadEscape(path.to_owned()));
            };
            let b = h * 16 + l;
            if is_unreserved(b) {
                decoded.push(b as char);
            } else {
                decoded.push('%');
                decoded.push(bytes[i + 1].to_ascii_uppercase() as char);
                decoded.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            decoded.push(bytes[i] as char);
            i += 1;
        }
    }
    // 2. Dot segments removed and empty segments merged, segment by segment
    // (RFC 3986 §5.2.4 on a path whose empty segments are dropped).
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = n == last,
            ".." => {
                out.pop();
                trailing_slash = n == last;
            }
            "" => trailing_slash = n == last,
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in &out {
        normal.push('/');
        normal.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        normal.push('/');
    }
    if normal == path { Ok(Cow::Borrowed(path)) } else { Ok(Cow::Owned(normal)) }
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(method: &'a Method, uri: &'a Uri, version: Version, headers: &'a HeaderMap) -> Head<'a> {
        Head { method, uri, version, headers }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn run(uri: &str, version: Version, pairs: &[(&'static str, &str)]) -> Result<Option<Uri>, Rejection> {
        let uri: Uri = uri.parse().unwrap();
        let h = headers(pairs);
        check(head(&Method::GET, &uri, version, &h), &Limits { max_body_bytes: Some(1000), ..Limits::default() })
    }

    #[test]
    fn paths_are_normalised() {
        for (input, want) in [
            ("/", "/"),
            ("/app/../x", "/x"),
            ("/app/./x", "/app/x"),
            ("/a//b///c", "/a/b/c"),
            ("//", "/"),
            ("/..", "/"),
            ("/../../etc", "/etc"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/%2e%2E/b", "/b"),
            ("/%61pp", "/app"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
            ("/x/", "/x/"),
            ("/pkg.Service/Method", "/pkg.Service/Method"),
        ] {
            assert_eq!(normalize_path(input).unwrap(), want, "{input}");
        }
        assert!(matches!(normalize_path("/a/b"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize_path("/a%zz"), Err(Rejection::BadEscape(_))));
        assert!(matches!(normalize_path("/a%2"), Err(Rejection::BadEscape(_))));
        assert!(matches!(normalize_path("/a\\..\\b"), Err(Rejection::Backslash(_))));
    }

    #[test]
    fn normalising_is_idempotent() {
        for p in ["/a/../b/./c//d", "/%2e%2e/%7euser", "/a/b/../../..", "/x%41/"] {
            let once = normalize_path(p).unwrap().into_owned();
            assert_eq!(normalize_path(&once).unwrap(), once, "{p}");
        }
    }

    #[test]
    fn host_rules() {
        let v11 = Version::HTTP_11;
        assert_eq!(run("/", v11, &[("host", "a.example")]), Ok(None));
        assert_eq!(run("/", v11, &[("host", "a.example"), ("host", "b.example")]), Err(Rejection::SeveralHosts(2)));
        assert_eq!(run("/", v11, &[]), Err(Rejection::MissingHost));
        assert_eq!(run("/", Version::HTTP_10, &[]), Ok(None));
        assert!(matches!(run("/", v11, &[("host", "a b")]), Err(Rejection::InvalidHost(_))));
        assert!(matches!(run("/", v11, &[("host", "user@a.example")]), Err(Rejection::InvalidHost(_))));
        assert!(matches!(run("/", v11, &[("host", "a.example,b.example")]), Err(Rejection::InvalidHost(_))));
        // Absolute form: Host must name the same entity.
        assert_eq!(run("http://a.example/x", v11, &[("host", "A.example:80")]), Ok(None));
        assert!(matches!(
            run("http://a.example/x", v11, &[("host", "b.example")]),
            Err(Rejection::HostMismatch { .. })
        ));
        assert!(matches!(
            run("http://a.example:8080/x", v11, &[("host", "a.example")]),
            Err(Rejection::HostMismatch { .. })
        ));
        // HTTP/2: :authority and Host.
        assert_eq!(run("http://a.example/x", Version::HTTP_2, &[]), Ok(None));
        assert!(matches!(
            run("http://a.example/x", Version::HTTP_2, &[("host", "evil.example")]),
            Err(Rejection::HostMismatch { .. })
        ));
    }

    #[test]
    fn framing_rules() {
        let v = Version::HTTP_11;
        let h = ("host", "a");
        assert_eq!(run("/", v, &[h, ("content-length", "5"), ("content-length", "5")]), Ok(None));
        assert_eq!(run("/", v, &[h, ("content-length", "5, 5")]), Ok(None));
        assert_eq!(
            run("/", v, &[h, ("content-length", "5"), ("content-length", "6")]),
            Err(Rejection::InvalidContentLength)
        );
        assert_eq!(run("/", v, &[h, ("content-length", "+5")]), Err(Rejection::InvalidContentLength));
        assert_eq!(
            run("/", v, &[h, ("content-length", "5"), ("transfer-encoding", "chunked")]),
            Err(Rejection::LengthAndChunked)
        );
        assert_eq!(run("/", v, &[h, ("content-length", "1001")]), Err(Rejection::BodyTooLarge(1001, 1000)));
    }

    #[test]
    fn header_limits() {
        let uri: Uri = "/".parse().unwrap();
        let mut h = headers(&[("host", "a")]);
        for i in 0..100 {
            h.append(http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(), HeaderValue::from_static("1"));
        }
        let limits = Limits::default();
        let err = check(head(&Method::GET, &uri, Version::HTTP_11, &h), &limits).unwrap_err();
        assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let big = headers(&[("host", "a"), ("x-big", &"v".repeat(70_000))]);
        let err = check(head(&Method::GET, &uri, Version::HTTP_11, &big), &limits).unwrap_err();
        assert!(matches!(err, Rejection::HeadersTooLarge(..)));
    }

    #[test]
    fn targets() {
        let v = Version::HTTP_11;
        let h = ("host", "a");
        assert_eq!(run("/a/../b?x=/../y", v, &[h]).unwrap().unwrap().to_string(), "/b?x=/../y");
        let uri: Uri = "*".parse().unwrap();
        let hs = headers(&[h]);
        assert_eq!(check(head(&Method::OPTIONS, &uri, v, &hs), &Limits::default()), Ok(None));
        assert!(check(head(&Method::GET, &uri, v, &hs), &Limits::default()).is_err());
        let uri: Uri = "web.ns:80".parse().unwrap();
        let hs = headers(&[("host", "web.ns:80")]);
        assert_eq!(check(head(&Method::CONNECT, &uri, v, &hs), &Limits::default()), Err(Rejection::Connect));
        assert!(matches!(
            check(head(&Method::GET, &uri, v, &hs), &Limits::default()),
            Err(Rejection::InvalidTarget(_))
        ));
    }
}
