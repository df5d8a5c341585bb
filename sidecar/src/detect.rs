//! Tells HTTP from other protocols by the first bytes a client sends.

use std::time::Duration;

use tokio::net::TcpStream;

/// How long to wait for a client's first bytes; protocols where the server
/// speaks first send nothing, and are forwarded as TCP after this.
const DETECT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http,
    Opaque,
}

/// Peeks (without consuming) at the connection's first bytes.
pub async fn detect(stream: &TcpStream) -> Detected {
    let mut buf = [0u8; 16];
    match tokio::time::timeout(DETECT_TIMEOUT, stream.peek(&mut buf)).await {
        Ok(Ok(n)) if looks_like_http(&buf[..n]) => Detected::Http,
        _ => Detected::Opaque,
    }
}

/// An HTTP/2 preface, or an HTTP/1 request line's method and a space.
pub fn looks_like_http(first: &[u8]) -> bool {
    if first.starts_with(b"PRI * HTTP/2") {
        return true;
    }
    let method_len = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
    (3..=7).contains(&method_len) && first.get(method_len) == Some(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_told_from_other_protocols() {
        assert!(looks_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(looks_like_http(b"OPTIONS * HTTP/1.1"));
        assert!(looks_like_http(b"PRI * HTTP/2.0\r\n"));
        assert!(!looks_like_http(b"\x16\x03\x01\x02\x00"));
        assert!(!looks_like_http(b"SSH-2.0-OpenSSH"));
        assert!(!looks_like_http(b"GE"));
        assert!(!looks_like_http(b""));
    }
}
