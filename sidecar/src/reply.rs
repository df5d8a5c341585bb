//! The last step of every HTTP request a listener serves: responses the
//! proxy made up itself are turned into gRPC statuses for gRPC clients and,
//! when they are 5xx, logged (one line, rate-limited, naming the route,
//! backend, endpoint and the whole error chain); the access log gets its
//! line when the listener has one.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{Method, Request, Response, StatusCode, Version};

use crate::grpc::{self, Code};
use crate::metrics::LabelValue;
use crate::proxy::Proxy;
use crate::upstream::Body;

/// What kind of failure a proxy-made response reports; it decides the gRPC
/// status a gRPC client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No route, listener or Service serves the request.
    NoRoute,
    /// The request was refused as malformed or too large.
    Invalid,
    /// A timeout of the route or of the call's deadline fired.
    Timeout,
    /// No endpoint could serve it: none exists, a connection failed, or
    /// the backend is invalid (GRPCRoute asks UNAVAILABLE for those).
    Unavailable,
    /// Anything else (a rule that fails closed, an unforwardable target).
    Other,
}

/// Attached to every response the proxy makes up itself.
#[derive(Debug, Clone)]
pub struct LocalReply {
    pub kind: Kind,
    /// Why, with the full error chain.
    pub message: String,
}

impl LocalReply {
    fn grpc_code(&self, status: StatusCode) -> Code {
        match self.kind {
            Kind::NoRoute => Code::Unimplemented,
            Kind::Timeout => Code::DeadlineExceeded,
            Kind::Unavailable => Code::Unavailable,
            Kind::Invalid if matches!(status.as_u16(), 413 | 431) => Code::ResourceExhausted,
            Kind::Invalid | Kind::Other => Code::from_http(status),
        }
    }
}

/// Where a request went, attached to its response for logs.
#[derive(Debug, Clone, Default)]
pub struct Served {
    pub route: Option<LabelValue>,
    pub backend: Option<LabelValue>,
    pub endpoint: Option<SocketAddr>,
}

/// What the access log and the error log need of a request, taken before
/// the request moves on. Shared-buffer copies (the URI and Host are
/// reference-counted), so taking one for every request allocates nothing.
#[derive(Debug, Clone)]
pub struct Summary {
    pub method: Method,
    pub uri: http::Uri,
    pub host: Option<http::HeaderValue>,
    pub version: Version,
    pub grpc: bool,
}

impl Summary {
    pub fn of<B>(req: &Request<B>) -> Self {
        Summary {
            method: req.method().clone(),
            uri: req.uri().clone(),
            host: req.headers().get(http::header::HOST).cloned(),
            version: req.version(),
            grpc: grpc::is_grpc(req.headers()),
        }
    }

    /// The request's authority: its target's, else its Host.
    pub fn authority(&self) -> &str {
        self.uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| self.host.as_ref().and_then(|h| h.to_str().ok()))
            .unwrap_or("")
    }

    pub fn path(&self) -> &str {
        self.uri.path()
    }
}

/// Finishes a response for the client: see the module docs. `listener`
/// names the listener for logs (`outbound`, `inbound`, a gateway
/// listener's name).
pub fn finish(
    proxy: &Proxy,
    listener: &str,
    summary: &Summary,
    started: Instant,
    mut resp: Response<Body>,
) -> Response<Body> {
    // The response carries this proxy's HTTP version, not the backend's
    // (RFC 9110 §6.2): an HTTP/1.0 server's answer goes to an HTTP/1.1
    // client as HTTP/1.1 (hyper frames HTTP/2 responses by the connection).
    *resp.version_mut() = Version::HTTP_11;
    let local = resp.extensions_mut().remove::<LocalReply>();
    let served = resp.extensions_mut().remove::<Served>().unwrap_or_default();
    let status = resp.status();
    if let Some(local) = &local
        && status.is_server_error()
    {
        proxy.error_log.log(listener, summary, status, &served, &local.message);
    }
    let mut grpc_status = None;
    if let Some(local) = &local
        && summary.grpc
    {
        let code = local.grpc_code(status);
        grpc_status = Some(code as u8);
        resp = grpc::trailers_only(code, &local.message);
    }
    if proxy.access_log.enabled(listener) {
        access_line(listener, summary, started, resp.status(), grpc_status, &served, local.as_ref());
    }
    resp
}

fn access_line(
    listener: &str,
    summary: &Summary,
    started: Instant,
    status: StatusCode,
    grpc_status: Option<u8>,
    served: &Served,
    local: Option<&LocalReply>,
) {
    let line = serde_json::json!({
        "time": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        "listener": listener,
        "method": summary.method.as_str(),
        "authority": summary.authority(),
        "path": summary.path(),
        "protocol": format!("{:?}", summary.version),
        "status": status.as_u16(),
        "grpc_status": grpc_status,
        "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
        "route": served.route.as_deref(),
        "backend": served.backend.as_deref(),
        "endpoint": served.endpoint.map(|e| e.to_string()),
        "proxy_error": local.map(|l| l.message.as_str()),
    });
    let mut out = std::io::stdout().lock();
    // A full or closed stdout must not fail the request.
    let _ = writeln!(out, "{line}");
}

/// Which listeners write access logs (`--access-log`).
#[derive(Debug, Default)]
pub struct AccessLog {
    listeners: arc_swap::ArcSwap<Vec<String>>,
}

impl AccessLog {
    /// Listener names, or `all`.
    pub fn set(&self, listeners: Vec<String>) {
        self.listeners.store(std::sync::Arc::new(listeners));
    }

    pub fn enabled(&self, listener: &str) -> bool {
        let l = self.listeners.load();
        !l.is_empty() && l.iter().any(|n| n == "all" || n == listener)
    }
}

/// Logs proxy-made 5xx responses at most [`ErrorLog::PER_SECOND`] times a
/// second, counting the lines left out and reporting them on the next one:
/// a failing backend under load must not flood the log, but its first
/// failures must be seen at the default level.
#[derive(Debug)]
pub struct ErrorLog {
    epoch: Instant,
    /// The current one-second window (seconds since `epoch`) in the high
    /// 32 bits, lines logged in it in the low 32.
    window: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for ErrorLog {
    fn default() -> Self {
        ErrorLog { epoch: Instant::now(), window: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }
}

impl ErrorLog {
    pub const PER_SECOND: u64 = 5;

    /// Whether a line may be written now.
    fn admit(&self) -> bool {
        let second = self.epoch.elapsed().as_secs() & 0xffff_ffff;
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (window, count) = (current >> 32, current & 0xffff_ffff);
            let next = if window == second {
                if count >= Self::PER_SECOND {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                current + 1
            } else {
                (second << 32) | 1
            };
            match self.window.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    pub fn log(&self, listener: &str, summary: &Summary, status: StatusCode, served: &Served, error: &str) {
        if !self.admit() {
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            listener,
            status = status.as_u16(),
            method = %summary.method,
            authority = %summary.authority(),
            path = %summary.path(),
            route = served.route.as_deref().unwrap_or("-"),
            backend = served.backend.as_deref().unwrap_or("-"),
            endpoint = %served.endpoint.map_or_else(|| "-".to_owned(), |e| e.to_string()),
            error = %error.trim_end(),
            suppressed_since_last = suppressed,
            "proxy answered with an error"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_log_admits_a_few_lines_a_second() {
        let log = ErrorLog::default();
        let admitted = (0..100).filter(|_| log.admit()).count() as u64;
        assert_eq!(admitted, ErrorLog::PER_SECOND);
        assert_eq!(log.suppressed.load(Ordering::Relaxed), 100 - ErrorLog::PER_SECOND);
    }

    #[test]
    fn access_logs_are_chosen_per_listener() {
        let a = AccessLog::default();
        assert!(!a.enabled("outbound"));
        a.set(vec!["web".into()]);
        assert!(a.enabled("web") && !a.enabled("outbound"));
        a.set(vec!["all".into()]);
        assert!(a.enabled("inbound"));
    }

    #[test]
    fn local_replies_map_to_grpc_codes() {
        let r = |kind| LocalReply { kind, message: String::new() };
        assert_eq!(r(Kind::NoRoute).grpc_code(StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(r(Kind::Timeout).grpc_code(StatusCode::GATEWAY_TIMEOUT), Code::DeadlineExceeded);
        assert_eq!(r(Kind::Unavailable).grpc_code(StatusCode::INTERNAL_SERVER_ERROR), Code::Unavailable);
        assert_eq!(r(Kind::Invalid).grpc_code(StatusCode::BAD_REQUEST), Code::Internal);
        assert_eq!(r(Kind::Invalid).grpc_code(StatusCode::PAYLOAD_TOO_LARGE), Code::ResourceExhausted);
    }
}
