//! `weft-request`: sends HTTP requests read from stdin (one JSON object
//! per line: method, host, path, headers as [[name, value], ...], and
//! optionally `protocol` — absent for HTTP/1.1, `H2C_PRIOR_KNOWLEDGE`, or
//! `WEBSOCKET` with `websocket` exchanges to make after the upgrade, or
//! `H2` for HTTP/2 over TLS; with `tls` (server name, CA file, optional
//! client certificate) the connection is a TLS session first) to
//! one address, each on a fresh connection, without following redirects;
//! prints one JSON line per response (status, headers, body, and for
//! WebSocket `"websocket": "ok"` or what went wrong) or error. The
//! conformance runner uses it inside client pods.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    connect: SocketAddr,
}

#[derive(Deserialize)]
struct Req {
    method: String,
    host: String,
    path: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    protocol: Option<String>,
    /// WebSocket exchanges: `send_text`/`receive_text` or
    /// `send_binary_bytes`/`receive_binary_bytes`.
    #[serde(default)]
    websocket: Option<Vec<serde_json::Value>>,
    /// HTTPS: the TLS session's parameters.
    #[serde(default)]
    tls: Option<Tls>,
}

/// A TLS client: SNI and name to verify, the only roots trusted, and an
/// optional client certificate (PEM files).
#[derive(Deserialize)]
struct Tls {
    server_name: String,
    ca_file: String,
    #[serde(default)]
    client_cert_file: Option<String>,
    #[serde(default)]
    client_key_file: Option<String>,
}

#[derive(Serialize)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    websocket: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let req: Req = serde_json::from_str(&line)?;
        let resp = match tokio::time::timeout(Duration::from_secs(10), send(args.connect, &req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                Resp { status: 0, headers: vec![], body: String::new(), error: Some(format!("{e:#}")), websocket: None }
            }
            Err(_) => Resp {
                status: 0,
                headers: vec![],
                body: String::new(),
                error: Some("timed out".into()),
                websocket: None,
            },
        };
        writeln!(out, "{}", serde_json::to_string(&resp)?)?;
        out.flush()?;
    }
    Ok(())
}

async fn send(addr: SocketAddr, req: &Req) -> anyhow::Result<Resp> {
    if let Some(tls) = &req.tls {
        return send_tls(addr, req, tls).await;
    }
    match req.protocol.as_deref() {
        None | Some("") => send_h1(addr, req).await,
        Some("H2C_PRIOR_KNOWLEDGE") => send_h2c(addr, req).await,
        Some("WEBSOCKET") => websocket(addr, req).await,
        Some(other) => anyhow::bail!("protocol {other} is not spoken by weft-request"),
    }
}

async fn into_resp(resp: http::Response<hyper::body::Incoming>) -> anyhow::Result<Resp> {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned(), error: None, websocket: None })
}

fn build(uri: &str, req: &Req, with_host: bool) -> anyhow::Result<http::Request<Empty<Bytes>>> {
    let mut builder = http::Request::builder().method(req.method.as_str()).uri(uri);
    // A Host among the headers replaces the one naming the target (the
    // upstream mesh client's `-H Host:...`), rather than adding a second.
    let host_given = req.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
    if with_host && !host_given {
        builder = builder.header("host", &req.host);
    }
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    Ok(builder.body(Empty::<Bytes>::new())?)
}

async fn send_h1(addr: SocketAddr, req: &Req) -> anyhow::Result<Resp> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    into_resp(sender.send_request(build(&req.path, req, true)?).await?).await
}

/// HTTPS: HTTP/1.1 (ALPN `http/1.1`), or HTTP/2 (`H2`, ALPN `h2`) in a
/// TLS session that trusts only the given CA. A TLS failure is an error
/// (no HTTP response), as the conformance client reports it.
async fn send_tls(addr: SocketAddr, req: &Req, tls: &Tls) -> anyhow::Result<Resp> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let h2 = req.protocol.as_deref() == Some("H2");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.ca_file).with_context(|| tls.ca_file.clone())? {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key)?)?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![if h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    let name = ServerName::try_from(tls.server_name.clone())?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let uri = format!("https://{}{}", req.host, req.path);
        return into_resp(sender.send_request(build(&uri, req, false)?).await?).await;
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    into_resp(sender.send_request(build(&req.path, req, true)?).await?).await
}

/// HTTP/2 without TLS, with prior knowledge: the host goes in `:authority`.
async fn send_h2c(addr: SocketAddr, req: &Req) -> anyhow::Result<Resp> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let uri = format!("http://{}{}", req.host, req.path);
    into_resp(sender.send_request(build(&uri, req, false)?).await?).await
}

/// A WebSocket upgrade (RFC 6455 §4.1), then each exchange: one masked
/// frame out, the echo's answer read back and compared by payload.
async fn websocket(addr: SocketAddr, req: &Req) -> anyhow::Result<Resp> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn.with_upgrades());
    let mut request = build(&req.path, req, true)?;
    let h = request.headers_mut();
    h.insert("connection", http::HeaderValue::from_static("Upgrade"));
    h.insert("upgrade", http::HeaderValue::from_static("websocket"));
    h.insert("sec-websocket-version", http::HeaderValue::from_static("13"));
    h.insert("sec-websocket-key", http::HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
    let mut resp = sender.send_request(request).await?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let mut r = into_resp(resp).await?;
        r.websocket = Some(format!("the upgrade got {} instead of 101", r.status));
        return Ok(r);
    }
    let status = resp.status().as_u16();
    let upgraded = hyper::upgrade::on(&mut resp).await?;
    let mut io = TokioIo::new(upgraded);
    let mut verdict = "ok".to_owned();
    for exchange in req.websocket.iter().flatten() {
        let (opcode, payload, want) = if let Some(text) = exchange["send_text"].as_str() {
            (1u8, text.as_bytes().to_vec(), exchange["receive_text"].as_str().unwrap_or(text).as_bytes().to_vec())
        } else {
            let bytes = |k: &str| -> Vec<u8> {
                exchange[k].as_array().into_iter().flatten().filter_map(|b| b.as_u64()).map(|b| b as u8).collect()
            };
            (2u8, bytes("send_binary_bytes"), bytes("receive_binary_bytes"))
        };
        let frame = masked_frame(opcode, &payload);
        io.write_all(&frame).await?;
        let mut back = vec![0u8; frame.len()];
        tokio::time::timeout(std::time::Duration::from_secs(5), io.read_exact(&mut back)).await??;
        if unmask(&back) != want {
            verdict = format!("sent {payload:?}, received a frame carrying {:?}", unmask(&back));
            break;
        }
    }
    Ok(Resp { status, headers: vec![], body: String::new(), error: None, websocket: Some(verdict) })
}

/// A final client frame (payload below 126 bytes), masked as clients must.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key: [u8; 4] = fastrand::u32(..).to_be_bytes();
    let mut f = vec![0x80 | opcode, 0x80 | (payload.len() as u8 & 0x7f)];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// The payload of a frame made by [`masked_frame`] (the echo sends the
/// bytes back as they came).
fn unmask(frame: &[u8]) -> Vec<u8> {
    if frame.len() < 6 {
        return Vec::new();
    }
    let key = &frame[2..6];
    frame[6..].iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect()
}
