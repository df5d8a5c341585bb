//! `weft-echo`: the workload that end-to-end tests put behind proxies. See `weft_e2e::echo`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use weft_e2e::echo::{Identity, serve};

/// Answers every request with a JSON description of it, like the Gateway API conformance echo
/// server, so tests can see what reached the backend and which pod answered.
#[derive(Parser, Debug)]
#[command(name = "weft-echo", version)]
struct Args {
    /// Address to serve HTTP/1.1 and h2c on; repeat to serve several (e.g. a pod IP and loopback).
    #[arg(long = "listen", value_name = "ADDR:PORT", required = true)]
    listen: Vec<SocketAddr>,
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
    let identity = Arc::new(Identity { namespace: args.namespace, pod: args.pod });
    let mut servers = tokio::task::JoinSet::new();
    for addr in args.listen {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        tracing::info!(%addr, "listening");
        let identity = identity.clone();
        servers.spawn(async move { serve(listener, identity).await.with_context(|| format!("serving {addr}")) });
    }
    // Each server runs until its listener fails; any failure ends the process so tests notice.
    match servers.join_next().await {
        Some(result) => result.context("server task panicked")?,
        None => Ok(()),
    }
}
