//! Reading raw HTTP/1.x responses, as received by [`crate::netns::Pod::tcp_exchange`].
//!
//! Requests from inside pods go through bash's `/dev/tcp` so that pods need nothing installed;
//! what comes back is the raw byte stream, which this turns into status, headers and body.

use anyhow::{Context as _, bail};

/// One HTTP/1.x response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when sent chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// Parses the first response in `raw` (any 1xx interim responses are skipped).
    pub fn parse(raw: &[u8]) -> anyhow::Result<Self> {
        let mut rest = raw;
        loop {
            let (response, after) = parse_one(rest)?;
            if !(100..200).contains(&response.status) || response.status == 101 {
                return Ok(response);
            }
            rest = after;
        }
    }

    /// The first value of a header, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// The body as text, for assertions and messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (e.g. [`crate::echo::EchoResponse`]).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not the expected JSON: {}", self.text()))
    }
}

fn parse_one(raw: &[u8]) -> anyhow::Result<(Response, &[u8])> {
    let end = find(raw, b"\r\n\r\n")
        .with_context(|| format!("no complete response head in {:?}", String::from_utf8_lossy(raw)))?;
    let head = std::str::from_utf8(&raw[..end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1 status line: {status_line:?}");
    }
    let status = parts
        .next()
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status code in {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').with_context(|| format!("malformed header line {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = Response { status, headers, body: Vec::new() };
    let body = &raw[end + 4..];
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok((response, body));
    }
    let chunked = response.header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let (decoded, rest) = dechunk(body)?;
        response.body = decoded;
        return Ok((response, rest));
    }
    if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().with_context(|| format!("bad content-length {length:?}"))?;
        if body.len() < length {
            bail!("body truncated: {} of {length} bytes", body.len());
        }
        response.body = body[..length].to_vec();
        return Ok((response, &body[length..]));
    }
    response.body = body.to_vec();
    Ok((response, &[]))
}

fn dechunk(mut body: &[u8]) -> anyhow::Result<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n").context("truncated chunk size line")?;
        let size_text = std::str::from_utf8(&body[..line_end]).context("chunk size is not UTF-8")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).with_context(|| format!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let end =
                find(body, b"\r\n\r\n").map_or_else(|| find(body, b"\r\n").map_or(body.len(), |i| i + 2), |i| i + 4);
            return Ok((out, &body[end.min(body.len())..]));
        }
        if body.len() < size + 2 {
            bail!("truncated chunk of {size} bytes");
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        let response = Response::parse(raw).expect("parses");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.body, b"{}");

        let raw =
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let response = Response::parse(raw).expect("parses");
        assert_eq!(response.status, 503);
        assert_eq!(response.text(), "abcde");
    }

    #[test]
    fn skips_interim_responses_and_reads_to_close() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nuntil close";
        let response = Response::parse(raw).expect("parses");
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "until close");
    }

    #[test]
    fn rejects_garbage() {
        assert!(Response::parse(b"").is_err());
        assert!(Response::parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(Response::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").is_err());
    }
}
