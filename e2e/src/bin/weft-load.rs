//! `weft-load`: a steady-rate HTTP client for e2e tests. Prints one JSON
//! line per request (see `weft_e2e::load::Outcome`).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tokio::sync::mpsc;
use weft_e2e::load::{Target, run};

#[derive(Parser, Debug)]
struct Args {
    /// Address to connect to.
    #[arg(long)]
    connect: SocketAddr,
    /// Host header (and :authority).
    #[arg(long)]
    host: String,
    #[arg(long, default_value = "/")]
    path: String,
    /// Requests per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// HTTPS, trusting the PEM roots in this file (the host is the server
    /// name sent and verified).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tls_roots = match &args.tls_ca {
        Some(path) => Some(std::fs::read_to_string(path)?),
        None => None,
    };
    let target = Target { connect: args.connect, host: args.host, path: args.path, tls_roots };
    let load = tokio::spawn(run(target, args.rate, Duration::from_secs_f64(args.seconds), tx));
    let mut stdout = std::io::stdout().lock();
    while let Some(o) = rx.recv().await {
        writeln!(stdout, "{}", serde_json::to_string(&o)?)?;
    }
    stdout.flush()?;
    load.await?;
    Ok(())
}
