//! `weft-echo`: the workload that end-to-end tests put behind proxies. See `weft_e2e::echo`
//! (HTTP, h2c, gRPC, WebSocket) and `weft_e2e::tcp_echo` (the TCP echo line protocol).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use weft_e2e::echo::{Identity, serve_with};
use weft_e2e::tcp_echo;

/// Answers every request with a JSON description of it, like the Gateway API conformance echo
/// server, so tests can see what reached the backend and which pod answered.
#[derive(Parser, Debug)]
#[command(name = "weft-echo", version)]
struct Args {
    /// Address to serve HTTP/1.1 and h2c on; repeat to serve several (e.g. a pod IP and loopback).
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Address to serve over TLS (HTTPS, or the TCP echo over TLS with `--tcp-echo`) with
    /// `--tls-cert` and `--tls-key`; repeatable.
    #[arg(long = "tls-listen", value_name = "ADDR:PORT", requires_all = ["tls_cert", "tls_key"])]
    tls_listen: Vec<SocketAddr>,
    /// Certificate chain (PEM) of the TLS listeners.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the TLS listeners.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Speak the conformance TCP echo's line protocol instead of HTTP on every listener.
    #[arg(long)]
    tcp_echo: bool,
    /// Reported as `namespace` so tests can tell which workload answered.
    #[arg(long, env = "NAMESPACE", default_value = "")]
    namespace: String,
    /// Reported as `pod` so tests can tell which replica answered.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pod: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    anyhow::ensure!(!args.listen.is_empty() || !args.tls_listen.is_empty(), "nothing to listen on");
    let identity = Arc::new(Identity { namespace: args.namespace, pod: args.pod });
    let acceptor = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let alpn: &[&[u8]] = if args.tcp_echo { &[] } else { &[b"h2", b"http/1.1"] };
            Some(tcp_echo::acceptor(cert, key, alpn)?)
        }
        _ => None,
    };
    let ports = tcp_echo::Ports {
        tcp: args.listen.first().map_or(3000, SocketAddr::port),
        tls: args.tls_listen.first().map_or(8443, SocketAddr::port),
    };
    let mut servers = tokio::task::JoinSet::new();
    let listeners =
        args.listen.iter().map(|a| (*a, None)).chain(args.tls_listen.iter().map(|a| (*a, acceptor.clone())));
    for (addr, tls) in listeners {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        tracing::info!(%addr, tls = tls.is_some(), tcp_echo = args.tcp_echo, "listening");
        let identity = identity.clone();
        let tcp = args.tcp_echo.then(|| ports.clone());
        servers.spawn(async move {
            let served = match tcp {
                Some(ports) => tcp_echo::serve(listener, identity, ports, tls).await,
                None => serve_with(listener, identity, tls).await,
            };
            served.with_context(|| format!("serving {addr}"))
        });
    }
    // Each server runs until its listener fails; any failure ends the process so tests notice.
    match servers.join_next().await {
        Some(result) => result.context("server task panicked")?,
        None => Ok(()),
    }
}
