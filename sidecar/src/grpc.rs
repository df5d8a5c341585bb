//! What the proxy must know of gRPC (gRPC over HTTP/2,
//! grpc/doc/PROTOCOL-HTTP2.md): how to tell a gRPC request, its deadline
//! (`grpc-timeout`), and how to answer one itself. A gRPC client reads
//! the call's outcome from `grpc-status`, so an error the proxy makes up
//! is sent as a Trailers-Only response (HTTP 200, `content-type:
//! application/grpc`, `grpc-status` and `grpc-message` in the one header
//! block that ends the stream) instead of an HTTP error page.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::upstream::Body;

/// gRPC status codes the proxy produces (grpc/doc/statuscodes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Unknown = 2,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl Code {
    /// The code a gRPC client derives from an HTTP status that carries no
    /// `grpc-status` (grpc/doc/http-grpc-status-mapping.md).
    pub fn from_http(status: StatusCode) -> Code {
        match status.as_u16() {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// Whether a request is a gRPC call: its content type is
/// `application/grpc` or `application/grpc+<format>` (not grpc-web, which
/// is a different protocol that HTTP/1.1 clients speak).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        let ct = ct.as_bytes();
        let prefix = b"application/grpc";
        ct.len() >= prefix.len()
            && ct[..prefix.len()].eq_ignore_ascii_case(prefix)
            && matches!(ct.get(prefix.len()), None | Some(b'+') | Some(b';'))
    })
}

/// The call's deadline from `grpc-timeout`: at most 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`). A malformed value is ignored, as gRPC
/// servers do.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A Trailers-Only response ending the call with `code` and `message`
/// (percent-encoded as the protocol requires for `grpc-message`).
pub fn trailers_only(code: Code, message: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(u16::from(code as u8)));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    r
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as
/// `%XX` of their UTF-8 bytes.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.trim_end().bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_requests_are_told_by_content_type() {
        let mut h = HeaderMap::new();
        for (ct, want) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC", true),
            ("application/grpc-web", false),
            ("application/grpc-web+proto", false),
            ("application/json", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), want, "{ct}");
        }
    }

    #[test]
    fn timeouts_parse_per_the_protocol() {
        let mut h = HeaderMap::new();
        for (v, want) in [
            ("100m", Some(Duration::from_millis(100))),
            ("2S", Some(Duration::from_secs(2))),
            ("1H", Some(Duration::from_secs(3600))),
            ("5u", Some(Duration::from_micros(5))),
            ("123456789S", None),
            ("10", None),
            ("m", None),
            ("-1S", None),
            ("1x", None),
        ] {
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            assert_eq!(timeout(&h), want, "{v}");
        }
    }

    #[test]
    fn http_statuses_map_as_grpc_clients_map_them() {
        assert_eq!(Code::from_http(StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(Code::from_http(StatusCode::BAD_GATEWAY), Code::Unavailable);
        assert_eq!(Code::from_http(StatusCode::BAD_REQUEST), Code::Internal);
        assert_eq!(Code::from_http(StatusCode::INTERNAL_SERVER_ERROR), Code::Unknown);
    }

    #[test]
    fn trailers_only_carries_the_status_in_headers() {
        let r = trailers_only(Code::Unavailable, "endpoint 10.0.0.1:80 failed: 100% broken\n");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "endpoint 10.0.0.1:80 failed: 100%25 broken");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/grpc");
    }
}
