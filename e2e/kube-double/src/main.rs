//! `weft-kube-double`: serves the Kubernetes API double until killed.

use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "weft-kube-double",
    about = "An HTTP Kubernetes API-server double for tests (admin API under /_double/)"
)]
struct Args {
    /// Write a kubeconfig here once listening.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The user the kubeconfig authenticates as.
    #[arg(long, default_value = "admin")]
    user: String,
    /// CRD YAML files to preload (repeatable; multi-document files allowed).
    #[arg(long = "crd")]
    crds: Vec<PathBuf>,
    /// Listen address (default 127.0.0.1:0).
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    /// Bookmark period in milliseconds.
    #[arg(long, default_value_t = 1000)]
    bookmark_interval_ms: u64,
    /// Watch history kept per resource type.
    #[arg(long, default_value_t = 10_000)]
    history_limit: usize,
    /// Disable the EndpointSlice controller.
    #[arg(long)]
    no_endpointslice_controller: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let opts = kube_double::Options {
        addr: args.addr,
        bookmark_interval: std::time::Duration::from_millis(args.bookmark_interval_ms),
        history_limit: args.history_limit,
        endpointslice_controller: !args.no_endpointslice_controller,
        ..Default::default()
    }
    .with_crd_files(&args.crds)?;
    let server = kube_double::ApiServer::start(opts)?;
    if let Some(path) = &args.kubeconfig {
        let tmp = path.with_extension("tmp");
        server.write_kubeconfig(&tmp, &args.user)?;
        std::fs::rename(&tmp, path)?;
    }
    println!("{}", server.url());
    loop {
        std::thread::park();
    }
}
