//! `weft-tcp-probe`: the raw TCP and TLS client of the conformance runner's
//! `tcp_request` cases, run inside a client pod. Each attempt is a new
//! connection and prints one JSON line:
//!
//! - `connect`: `{"connected": true}` once the TCP connection opens.
//! - `echo_check`: (TLS handshake first with `--tls`) the TCP echo's
//!   welcome line, then the answers to `PING`, `IS_TLS` and `TEST`:
//!   `{"welcome", "pong", "is_tls", "record"}`.
//! - `echo_test_only`: the welcome line and the `TEST` record.
//! - `tls_handshake`: `{"handshake": "completed"}`, or the failure with
//!   `"rejected": true` when the peer ended the connection (EOF, reset)
//!   rather than the client refusing a certificate.
//!
//! Failures print `{"error": "..."}`. With no `--ca-file` nothing is trusted
//! (the conformance data's "system roots" trust none of its certificates).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    connect: SocketAddr,
    /// connect | echo_check | echo_test_only | tls_handshake
    #[arg(long)]
    exchange: String,
    /// Speak TLS first, with this SNI (and name to verify).
    #[arg(long)]
    tls: Option<String>,
    /// The only roots trusted (PEM).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Attempts to make, one connection each.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Deadline of one attempt.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let connector = match &args.tls {
        Some(_) => Some(connector(args.ca_file.as_ref())?),
        None => None,
    };
    for _ in 0..args.count {
        let attempt = attempt(&args, connector.clone());
        let line = match tokio::time::timeout(Duration::from_millis(args.timeout_ms), attempt).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => json!({"error": format!("{e:#}")}),
            Err(_) => json!({"error": "timed out"}),
        };
        println!("{line}");
    }
    Ok(())
}

fn connector(ca: Option<&PathBuf>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        for cert in CertificateDer::pem_file_iter(ca).with_context(|| ca.display().to_string())? {
            roots.add(cert?)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn attempt(args: &Args, connector: Option<tokio_rustls::TlsConnector>) -> anyhow::Result<Value> {
    let tcp = tokio::net::TcpStream::connect(args.connect).await.context("connect")?;
    if args.exchange == "connect" {
        return Ok(json!({"connected": true}));
    }
    match (connector, &args.tls) {
        (Some(connector), Some(sni)) => {
            let name = ServerName::try_from(sni.clone())?;
            match connector.connect(name, tcp).await {
                Ok(stream) if args.exchange == "tls_handshake" => {
                    drop(stream);
                    Ok(json!({"handshake": "completed"}))
                }
                Ok(stream) => exchange(stream, &args.exchange).await,
                Err(e) => {
                    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, UnexpectedEof};
                    let rejected = matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted);
                    Ok(json!({"error": format!("TLS handshake: {e}"), "rejected": rejected}))
                }
            }
        }
        _ => exchange(tcp, &args.exchange).await,
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: S, exchange: &str) -> anyhow::Result<Value> {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read).lines();
    let mut next = async || -> anyhow::Result<String> { lines.next_line().await?.context("the connection ended") };
    let welcome = next().await.context("the welcome line")?;
    let mut ask = async |line: &str| -> anyhow::Result<String> {
        write.write_all(format!("{line}\n").as_bytes()).await?;
        write.flush().await?;
        next().await.with_context(|| format!("the answer to {line}"))
    };
    let (pong, is_tls) =
        if exchange == "echo_check" { (Some(ask("PING").await?), Some(ask("IS_TLS").await?)) } else { (None, None) };
    let record = ask("TEST").await?;
    let record: Value = serde_json::from_str(&record).with_context(|| format!("the TEST record {record:?}"))?;
    Ok(json!({"welcome": welcome, "pong": pong, "is_tls": is_tls, "record": record}))
}
