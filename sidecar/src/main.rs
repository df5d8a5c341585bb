//! `weft-proxy`: the sidecar (`run`) and the init step (`init`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use weft_api::config as api;
use weft_proxy::proxy::Proxy;

/// mimalloc: hyper's read buffers and rustls's records are a few KiB each
/// and change hands on every request, which glibc's malloc serves from its
/// slow path (docs/benchmarks.md, allocator trial).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "weft-proxy", version, about = "Weft's sidecar proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the sidecar.
    Run(Box<RunArgs>),
    /// Write (or with --remove, delete) the iptables rules that redirect
    /// the pod's TCP traffic through the sidecar, as an init container does.
    Init(weft_proxy::init::InitArgs),
    /// Wait until a proxy's health port reports it ready (the postStart
    /// hook that holds an application's containers when the proxy is not a
    /// native sidecar).
    WaitReady {
        /// The proxy's health port.
        #[arg(long, default_value = "127.0.0.1:15021")]
        health: SocketAddr,
        /// How long to wait, in seconds (`120` or `120s`).
        #[arg(long, default_value = "120s", value_parser = seconds)]
        timeout: std::time::Duration,
    },
}

fn seconds(s: &str) -> Result<std::time::Duration, String> {
    let n = s.strip_suffix('s').unwrap_or(s);
    n.parse::<u64>().map(std::time::Duration::from_secs).map_err(|_| format!("{s:?} is not a number of seconds"))
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The control plane's gRPC address, e.g. http://10.0.0.1:15010.
    #[arg(long, env = "WEFT_CONTROL_PLANE")]
    control_plane: String,
    /// Workload (pod) name.
    #[arg(long, env = "WEFT_WORKLOAD")]
    name: String,
    #[arg(long, env = "WEFT_NAMESPACE", default_value = "default")]
    namespace: String,
    #[arg(long, env = "WEFT_SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// Pod labels, `key=value`; Services select the workload by them.
    #[arg(long = "label", value_parser = key_value)]
    labels: Vec<(String, String)>,
    /// The pod's IPs (its endpoint addresses).
    #[arg(long = "ip", env = "WEFT_POD_IP", value_delimiter = ',')]
    ips: Vec<IpAddr>,
    /// Named container ports, `name=port`.
    #[arg(long = "port", value_parser = key_value)]
    ports: Vec<(String, String)>,
    /// Mesh (default: the namespace's).
    #[arg(long, default_value = "")]
    mesh: String,
    /// Where outbound connections arrive (iptables redirects here; clients
    /// may also use it as an explicit HTTP proxy).
    #[arg(long, default_value = "127.0.0.1:15001")]
    outbound: SocketAddr,
    /// Where inbound connections arrive; default: port 15006 on each --ip.
    #[arg(long)]
    inbound: Vec<SocketAddr>,
    /// The application's address for inbound traffic.
    #[arg(long, default_value = "127.0.0.1")]
    app_ip: IpAddr,
    /// Admin port: /ready, /live, /metrics, /config_dump.
    #[arg(long, default_value = "127.0.0.1:15020")]
    admin: SocketAddr,
    /// Health port for the kubelet (on the pod's address; left out of the
    /// capture): /ready, /live and the application probes moved here by
    /// injection. Shows nothing else.
    #[arg(long, env = "WEFT_HEALTH")]
    health: Option<SocketAddr>,
    /// Metrics port for Prometheus (on the pod's address; left out of the
    /// capture): `/metrics` only.
    #[arg(long, env = "WEFT_METRICS")]
    metrics: Option<SocketAddr>,
    /// For this many seconds after each config stream opens, the control
    /// plane may not empty an endpoint set the proxy holds non-empty (a
    /// control plane that has just restarted may not know every workload
    /// yet); a held change applies when the window ends.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=300))]
    endpoint_hold_down: u64,
    /// The application's probes, as injection recorded them (JSON by
    /// `<container>/<probe>`), performed on the health port.
    #[arg(long, env = "WEFT_APP_PROBES", hide_env_values = true)]
    app_probes: Option<String>,
    /// A file holding the join token that proves the workload's identity
    /// (`weftctl token create`); read again at every renewal.
    #[arg(long, env = "WEFT_TOKEN_FILE", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// The join token itself.
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Serve as a gateway proxy for this MeshGatewayInstance (in
    /// --namespace): its MeshGateway's listeners are bound on the first
    /// --ip, and no traffic is intercepted.
    #[arg(long, env = "WEFT_GATEWAY")]
    gateway: Option<String>,
    /// Scheduler threads; 1 runs a single-threaded scheduler. Default: the
    /// CPUs the pod may use (its CPU limit counts), at most 2, since a
    /// sidecar shares the pod's allowance with the application.
    #[arg(long, env = "WEFT_PROXY_WORKERS", value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: Option<u16>,
    /// Largest request body any listener accepts, in bytes: a larger
    /// declared Content-Length is answered 413 before anything is
    /// forwarded, and a streamed body is cut off at the limit. Default: no
    /// limit (gRPC streams may carry any amount).
    #[arg(long, env = "WEFT_PROXY_MAX_REQUEST_BODY")]
    max_request_body: Option<u64>,
    /// Longest an HTTP/1 client may take to send a request's header
    /// section (from connecting, or from the end of the previous response
    /// on a kept-alive connection), in seconds; slower clients are
    /// disconnected.
    #[arg(long, env = "WEFT_PROXY_HEADER_READ_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout: u64,
    /// Write a JSON access log line per request (to stdout) for this
    /// listener: `outbound`, `inbound`, a gateway listener's name, or `all`.
    /// Repeat for several.
    #[arg(long = "access-log", env = "WEFT_PROXY_ACCESS_LOG", value_delimiter = ',')]
    access_log: Vec<String>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not key=value"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Init(args) => weft_proxy::init::run(&args),
        Command::WaitReady { health, timeout } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(weft_proxy::health::wait_ready(health, timeout)),
        Command::Run(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                // Colour codes only for a person at a terminal, not in `kubectl logs` or files.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .init();
            // With one CPU, a single-threaded scheduler does the same work
            // without cross-thread wake-ups or work-stealing bookkeeping.
            let workers = args
                .workers
                .map(usize::from)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(2)));
            tracing::info!(workers, single_threaded = workers == 1, "scheduler");
            let mut runtime = if workers == 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(workers);
                builder
            };
            runtime.enable_all().build()?.block_on(run(*args))
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let ports = args
        .ports
        .iter()
        .map(|(name, port)| {
            let port: u32 = port.parse().with_context(|| format!("--port {name}={port}: not a port number"))?;
            Ok(api::WorkloadPort { name: name.clone(), port })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let workload = api::Workload {
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
        labels: args.labels.iter().cloned().collect::<HashMap<_, _>>(),
        ips: args.ips.iter().map(|ip| ip.to_string()).collect(),
        ports,
        mesh: args.mesh.clone(),
        role: if args.gateway.is_some() { api::Role::Gateway } else { api::Role::Sidecar } as i32,
        gateway: args.gateway.clone().unwrap_or_default(),
    };
    let proxy = Proxy::new();
    proxy.tls.set_local_ips(args.ips.clone());
    proxy.limits.store(std::sync::Arc::new(weft_proxy::validate::Limits {
        max_body_bytes: args.max_request_body,
        header_read_timeout: std::time::Duration::from_secs(args.header_read_timeout),
        ..Default::default()
    }));
    proxy.access_log.set(args.access_log.clone());
    let admin =
        TcpListener::bind(args.admin).await.with_context(|| format!("--admin {}: cannot listen", args.admin))?;
    let mut tasks = tokio::task::JoinSet::new();
    match &args.gateway {
        Some(gateway) => {
            let ip = *args.ips.first().context("--gateway needs --ip: the address its listeners are bound on")?;
            tracing::info!(
                workload = %format!("{}/{}", args.namespace, args.name),
                %gateway,
                %ip,
                admin = %args.admin,
                control_plane = %args.control_plane,
                "weft-proxy starting in gateway mode"
            );
            tasks.spawn(weft_proxy::gateway::serve(proxy.clone(), ip));
        }
        None => {
            let outbound = TcpListener::bind(args.outbound)
                .await
                .with_context(|| format!("--outbound {}: cannot listen", args.outbound))?;
            let inbound_addrs: Vec<SocketAddr> = if args.inbound.is_empty() {
                args.ips.iter().map(|ip| SocketAddr::new(*ip, 15006)).collect()
            } else {
                args.inbound.clone()
            };
            for addr in inbound_addrs {
                let l = TcpListener::bind(addr).await.with_context(|| format!("--inbound {addr}: cannot listen"))?;
                tasks.spawn(weft_proxy::listen::serve_inbound(l, proxy.clone(), args.app_ip));
            }
            tracing::info!(
                workload = %format!("{}/{}", args.namespace, args.name),
                outbound = %args.outbound,
                admin = %args.admin,
                control_plane = %args.control_plane,
                "weft-proxy starting"
            );
            tasks.spawn(weft_proxy::listen::serve_outbound(outbound, proxy.clone()));
        }
    }
    tasks.spawn(weft_proxy::admin::serve(admin, proxy.clone()));
    if let Some(addr) = args.health {
        let probes = match args.app_probes.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(json) => weft_proxy::health::AppProbes::parse(json).context("--app-probes (WEFT_APP_PROBES)")?,
            None => weft_proxy::health::AppProbes::default(),
        };
        let listener = TcpListener::bind(addr).await.with_context(|| format!("--health {addr}: cannot listen"))?;
        tracing::info!(health = %addr, app_probes = probes.0.len(), "health port");
        tasks.spawn(weft_proxy::health::serve(listener, proxy.clone(), Arc::new(probes), args.app_ip));
    }
    if let Some(addr) = args.metrics {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("--metrics {addr}: cannot listen"))?;
        tracing::info!(metrics = %addr, "metrics port");
        tasks.spawn(weft_proxy::admin::serve_metrics(listener, proxy.clone()));
    }
    tasks.spawn(weft_proxy::proxy::close_idle_connections(proxy.clone()));
    let proof = match (args.token_file, args.token) {
        (Some(path), _) => Some(weft_proxy::identity::Proof::File(path)),
        (None, Some(token)) => Some(weft_proxy::identity::Proof::Inline(token)),
        (None, None) => None,
    };
    tasks.spawn(weft_proxy::client::run(
        proxy.clone(),
        args.control_plane.clone(),
        workload,
        proof.clone(),
        std::time::Duration::from_secs(args.endpoint_hold_down),
    ));
    match proof {
        Some(proof) => {
            proxy.tls.require_certificate();
            let claim = weft_proxy::identity::Claim {
                namespace: args.namespace.clone(),
                service_account: args.service_account.clone(),
                mesh: args.mesh.clone(),
            };
            tasks.spawn(weft_proxy::identity::run(proxy.clone(), args.control_plane.clone(), claim, proof));
        }
        None => tracing::warn!("no --token-file or --token: no workload certificate, so no mTLS to other proxies"),
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = tasks.join_next() => anyhow::bail!("a proxy task ended unexpectedly"),
    }
    tracing::info!("weft-proxy stopping");
    Ok(())
}
