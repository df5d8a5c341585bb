//! The echo application that stands in for a workload in end-to-end tests.
//!
//! It answers like the Gateway API conformance echo server so that assertions written for the
//! conformance suite (path, host, headers as seen by the backend, which pod answered) carry over
//! to tests that run real proxies in network namespaces. The `weft-echo` binary is a thin shell
//! around [`serve`]; tests may also run it in-process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// Request header asking the echo server to add response headers: `Name:Value` pairs separated
/// by commas. Lets header-modification tests see what the proxy does to response headers.
pub const SET_HEADER: &str = "x-echo-set-header";

/// Request header asking the echo server to answer with this status (200..=599) instead of 200.
/// Lets retry and outlier-detection tests make a backend fail on demand.
pub const STATUS: &str = "x-echo-status";

/// Which workload answered; reported in every response so tests can tell backends apart.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// Reported as `namespace`.
    pub namespace: String,
    /// Reported as `pod`.
    pub pod: String,
}

/// The JSON body of every echo response, shaped like the conformance echo server's so that the
/// same assertions work against both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoResponse {
    /// Path and query as received.
    pub path: String,
    /// `Host` header for HTTP/1, `:authority` for HTTP/2.
    pub host: String,
    /// Request method.
    pub method: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`, as Go spells it.
    pub proto: String,
    /// Request headers other than `Host`, with Go's canonical names (`User-Agent`).
    pub headers: BTreeMap<String, Vec<String>>,
    /// From [`Identity::namespace`].
    pub namespace: String,
    /// Always empty; present because conformance assertions expect the field.
    pub ingress: String,
    /// Always empty; present because conformance assertions expect the field.
    pub service: String,
    /// From [`Identity::pod`].
    pub pod: String,
}

impl EchoResponse {
    /// All values of a request header as the backend saw them, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&[String]> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, values)| values.as_slice())
    }
}

/// Accepts connections until the listener fails, serving HTTP/1.1 and h2c (prior knowledge) on
/// each. Connection-level errors end only that connection.
pub async fn serve(listener: TcpListener, identity: Arc<Identity>) -> std::io::Result<()> {
    serve_with(listener, identity, None).await
}

/// [`serve`], with each connection a TLS session first when `tls` is given (the HTTPS echo of
/// the conformance backends: HTTP/1.1, or HTTP/2 when the client's ALPN asks for it).
pub async fn serve_with(
    listener: TcpListener,
    identity: Arc<Identity>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let grpc = crate::grpc_echo::routes(identity.clone());
    loop {
        let (stream, peer) = listener.accept().await?;
        let (identity, grpc, tls) = (identity.clone(), grpc.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, peer, identity, grpc).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve_connection(stream, peer, identity, grpc).await,
                    Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                },
            }
        });
    }
}

async fn serve_connection<IO>(io: IO, peer: std::net::SocketAddr, identity: Arc<Identity>, grpc: tonic::service::Routes)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let identity = identity.clone();
        let grpc = grpc.clone();
        async move {
            // gRPC calls go to the gRPC echo services.
            if is_grpc(&req) {
                let authority = req
                    .uri()
                    .authority()
                    .map(|a| a.to_string())
                    .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()).map(str::to_owned))
                    .unwrap_or_default();
                req.extensions_mut().insert(crate::grpc_echo::CallAuthority(authority));
                let resp = tower::ServiceExt::oneshot(grpc, req).await.unwrap_or_else(|never| match never {});
                return Ok(resp.map(|b| b.map_err(|s| Box::new(s) as BoxError).boxed_unsync()));
            }
            // Logged per request, as the conformance echo does: the
            // mirror tests look for these lines.
            println!(
                "Echoing back request made to {} to client ({peer})",
                req.uri().path_and_query().map_or("/", |pq| pq.as_str())
            );
            let resp = match retry_failure(&req) {
                // Closing without a response stands for the TCP
                // reset of a failing backend.
                Some(Failure::Reset) => return Err(ResetConnection),
                Some(Failure::Status(status)) => plain(status, "failing as /retry/ asks".to_owned()),
                None => {
                    if let Some(delay) = requested_delay(&req) {
                        tokio::time::sleep(delay).await;
                    }
                    handle(req, &identity).await
                }
            };
            Ok(resp.map(|b| b.map_err(|never| match never {}).boxed_unsync()))
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(error) = builder.serve_connection_with_upgrades(TokioIo::new(io), service).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether a request is a gRPC call (`application/grpc`, `+proto`...).
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        ct.strip_prefix("application/grpc").is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
    })
}

/// A request the echo answers by dropping the connection.
#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset as /retry/ asks")
    }
}

impl std::error::Error for ResetConnection {}

/// How a `/retry/` request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Status(StatusCode),
    Reset,
}

/// Requests seen per `/retry/` uuid.
static RETRY_ATTEMPTS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, u64>>> =
    std::sync::LazyLock::new(Default::default);

fn query_param<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

/// `/retry/...?uuid=U&succeedAfter=N[&responseCode=C]`: the first N
/// requests of each uuid fail (with status C, or a reset without one).
fn retry_failure<B>(req: &Request<B>) -> Option<Failure> {
    if !req.uri().path().starts_with("/retry/") {
        return None;
    }
    let uuid = query_param(req, "uuid")?;
    let succeed_after: u64 = query_param(req, "succeedAfter")?.parse().ok()?;
    let seen = {
        let mut attempts = RETRY_ATTEMPTS.lock().unwrap_or_else(|e| e.into_inner());
        let n = attempts.entry(uuid.to_owned()).or_default();
        *n += 1;
        *n
    };
    if seen > succeed_after {
        return None;
    }
    Some(match query_param(req, "responseCode").and_then(|c| c.parse::<u16>().ok()) {
        Some(code) => Failure::Status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)),
        None => Failure::Reset,
    })
}

/// `?delay=1s` (a Go duration): how long to wait before answering.
fn requested_delay<B>(req: &Request<B>) -> Option<Duration> {
    go_duration(query_param(req, "delay")?)
}

/// Parses a Go duration such as `1s`, `500ms` or `1m30s`.
pub fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

/// Answers one request; generic over the body so unit tests can drive it without sockets.
pub async fn handle<B>(mut req: Request<B>, identity: &Identity) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: std::fmt::Display,
{
    tracing::debug!(method = %req.method(), uri = %req.uri(), "request");
    if is_websocket_upgrade(&req) {
        return upgrade(&mut req);
    }
    let status = match requested_status(&req) {
        Ok(status) => status,
        Err(message) => return plain(StatusCode::BAD_REQUEST, message),
    };
    // `/status/NNN` answers with that status.
    let status = req
        .uri()
        .path()
        .strip_prefix("/status/")
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(status);
    let extra_headers = match requested_headers(&req) {
        Ok(headers) => headers,
        Err(message) => return plain(StatusCode::BAD_REQUEST, message),
    };
    let echo = describe(&req, identity);
    // The body is read so that clients streaming a request body see it consumed, then ignored.
    let (_, body) = req.into_parts();
    if let Err(error) = body.collect().await {
        return plain(StatusCode::BAD_REQUEST, format!("reading the request body: {error}"));
    }
    let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Bytes::new()
    } else {
        match serde_json::to_vec(&echo) {
            Ok(json) => Bytes::from(json),
            Err(error) => return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the echo: {error}")),
        }
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in extra_headers {
        response.headers_mut().append(name, value);
    }
    response
}

/// Builds the echo body from the request head.
pub fn describe<B>(req: &Request<B>, identity: &Identity) -> EchoResponse {
    let header_host = req.headers().get(HOST).map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let authority = req.uri().authority().map(|authority| authority.to_string());
    let host = if req.version() == Version::HTTP_2 { authority.or(header_host) } else { header_host.or(authority) };
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        if name == HOST {
            continue;
        }
        headers
            .entry(canonical_header_name(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    EchoResponse {
        path: req.uri().path_and_query().map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
        host: host.unwrap_or_default(),
        method: req.method().as_str().to_owned(),
        proto: proto(req.version()).to_owned(),
        headers,
        namespace: identity.namespace.clone(),
        ingress: String::new(),
        service: String::new(),
        pod: identity.pod.clone(),
    }
}

/// Go's `CanonicalMIMEHeaderKey` for valid header names: the first letter and every letter after
/// a hyphen upper case, the rest lower case.
pub fn canonical_header_name(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            out
        })
        .collect()
}

/// The `Sec-WebSocket-Accept` value for a client key (RFC 6455 section 4.2.2), so that real
/// WebSocket clients accept the handshake even though frames are then echoed raw.
pub fn websocket_accept(key: &str) -> String {
    const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    base64(&sha1(format!("{}{GUID}", key.trim()).as_bytes()))
}

fn proto(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().get_all(UPGRADE).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|value| value.split(',').any(|token| token.trim().eq_ignore_ascii_case("websocket")))
        })
}

/// Answers 101 and, once hyper hands over the connection, echoes its bytes back unchanged.
fn upgrade<B>(req: &mut Request<B>) -> Response<Full<Bytes>> {
    let accept = req.headers().get("sec-websocket-key").and_then(|key| key.to_str().ok()).map(websocket_accept);
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
                if let Err(error) = tokio::io::copy(&mut reader, &mut writer).await {
                    tracing::debug!(%error, "upgraded connection ended with an error");
                }
                if let Err(error) = tokio::io::AsyncWriteExt::shutdown(&mut writer).await {
                    tracing::debug!(%error, "shutting down the upgraded connection");
                }
            }
            Err(error) => tracing::debug!(%error, "upgrade failed"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("upgrade"));
    response.headers_mut().insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Some(accept) = accept.and_then(|accept| HeaderValue::from_str(&accept).ok()) {
        response.headers_mut().insert("sec-websocket-accept", accept);
    }
    response
}

fn requested_status<B>(req: &Request<B>) -> Result<StatusCode, String> {
    let Some(value) = req.headers().get(STATUS) else {
        return Ok(StatusCode::OK);
    };
    value
        .to_str()
        .ok()
        .and_then(|value| value.trim().parse::<u16>().ok())
        .filter(|code| (200..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| format!("{STATUS}: {value:?} is not a status code from 200 to 599"))
}

fn requested_headers<B>(req: &Request<B>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut headers = Vec::new();
    for value in req.headers().get_all(SET_HEADER) {
        let value = value.to_str().map_err(|_| format!("{SET_HEADER}: {value:?} is not visible ASCII"))?;
        for pair in value.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
            let (name, value) =
                pair.split_once(':').ok_or_else(|| format!("{SET_HEADER}: {pair:?} is not of the form Name:Value"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("{SET_HEADER}: {name:?} is not a valid header name"))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("{SET_HEADER}: {value:?} is not a valid header value"))?;
            headers.push((name, value));
        }
    }
    Ok(headers)
}

fn plain(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// SHA-1 (FIPS 180-4), needed only for the WebSocket handshake; not used for anything secret.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let temp = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (state, value) in h.iter_mut().zip([a, b, c, d, e]) {
            *state = state.wrapping_add(value);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// Standard base64 with padding (RFC 4648 section 4).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let bytes = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3F) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;

    fn identity() -> Identity {
        Identity { namespace: "ns1".into(), pod: "pod-a".into() }
    }

    async fn echo_of(req: Request<Full<Bytes>>) -> (StatusCode, http::HeaderMap, EchoResponse) {
        let response = handle(req, &identity()).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("full body").to_bytes();
        (parts.status, parts.headers, serde_json::from_slice(&body).expect("echo JSON"))
    }

    #[tokio::test]
    async fn echoes_http1_request() {
        let req = Request::get("/x?y=1")
            .header("host", "example.com")
            .header("user-agent", "test")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .body(Full::new(Bytes::from_static(b"ignored")))
            .expect("request");
        let (status, headers, echo) = echo_of(req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert_eq!(echo.path, "/x?y=1");
        assert_eq!(echo.host, "example.com");
        assert_eq!(echo.method, "GET");
        assert_eq!(echo.proto, "HTTP/1.1");
        assert_eq!(echo.namespace, "ns1");
        assert_eq!(echo.pod, "pod-a");
        assert_eq!(echo.header("User-Agent"), Some(&["test".to_owned()][..]));
        assert_eq!(echo.headers["X-Multi"], vec!["a", "b"]);
        assert!(!echo.headers.contains_key("Host"), "Host is reported in `host`, as Go does");
    }

    #[tokio::test]
    async fn http2_host_comes_from_authority() {
        let req = Request::post("http://svc.example:8080/p")
            .version(Version::HTTP_2)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (_, _, echo) = echo_of(req).await;
        assert_eq!(echo.host, "svc.example:8080");
        assert_eq!(echo.path, "/p");
        assert_eq!(echo.proto, "HTTP/2.0");
        assert_eq!(echo.method, "POST");
    }

    #[tokio::test]
    async fn sets_requested_status_and_headers() {
        let req = Request::get("/")
            .header(STATUS, "503")
            .header(SET_HEADER, "X-One: 1, X-Two:2")
            .header(SET_HEADER, "X-One:again")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (status, headers, _) = echo_of(req).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let ones: Vec<_> = headers.get_all("x-one").iter().collect();
        assert_eq!(ones, ["1", "again"]);
        assert_eq!(headers["x-two"], "2");
    }

    #[tokio::test]
    async fn rejects_bad_control_headers() {
        for (name, value) in [(STATUS, "abc"), (STATUS, "101"), (STATUS, "600"), (SET_HEADER, "no-colon")] {
            let req = Request::get("/").header(name, value).body(Empty::<Bytes>::new()).expect("request");
            let response = handle(req, &identity()).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}: {value}");
            let body = response.into_body().collect().await.expect("body").to_bytes();
            assert!(String::from_utf8_lossy(&body).contains(name), "the error names the header");
        }
    }

    #[test]
    fn canonical_names_follow_go() {
        for (input, expected) in [
            ("user-agent", "User-Agent"),
            ("x-forwarded-for", "X-Forwarded-For"),
            ("accept", "Accept"),
            ("x-b3-traceid", "X-B3-Traceid"),
            ("CONTENT-TYPE", "Content-Type"),
        ] {
            assert_eq!(canonical_header_name(input), expected);
        }
    }

    #[test]
    fn websocket_accept_matches_rfc_6455_example() {
        assert_eq!(websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn sha1_and_base64_match_known_vectors() {
        assert_eq!(base64(&sha1(b"")), "2jmj7l5rSw0yVb/vlWAYkK/YBwk=");
        assert_eq!(base64(&sha1(b"abc")), "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[tokio::test]
    async fn websocket_upgrade_echoes_raw_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener, Arc::new(identity())));
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .await
            .expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.expect("read head");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
        stream.write_all(b"ping bytes").await.expect("write");
        let mut echoed = [0u8; 10];
        stream.read_exact(&mut echoed).await.expect("read echo");
        assert_eq!(&echoed, b"ping bytes");
        server.abort();
    }
}
