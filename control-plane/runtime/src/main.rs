//! `weft-cp`: Weft's control plane.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v2's option enum.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed pages for reuse: every translation allocates and frees about
/// the same amount, and returning the pages to the OS after 10 ms made each
/// one a fifth slower (see docs/benchmarks.md).
#[allow(unsafe_code)]
fn keep_freed_pages() {
    // SAFETY: sets a global mimalloc option at start, before other threads.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Weft service mesh control plane.
#[derive(Debug, Parser)]
#[command(name = "weft-cp", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Local mode: serve the Gateway API and Weft YAML in this directory,
    /// reloading it when it changes. Without it the control plane runs on
    /// the Kubernetes API.
    #[arg(long, value_name = "DIR")]
    local: Option<PathBuf>,
    /// Local mode: after a restart, how long the workloads connected before
    /// it stay endpoints while they reconnect (seconds).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=600), requires = "local")]
    reconnect_grace: u64,
    /// Kubernetes mode: the kubeconfig to use (default: in-cluster, then
    /// KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "FILE", conflicts_with = "local")]
    kubeconfig: Option<PathBuf>,
    /// Kubernetes mode: the control plane's namespace, where its Lease,
    /// mesh CA Secrets and join-token key live.
    #[arg(long, env = "WEFT_NAMESPACE", default_value = "weft-system")]
    namespace: String,
    /// Kubernetes mode: this replica's name in the leader Lease (the pod
    /// name; default: the host name).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Kubernetes mode: how long the leader Lease lasts without renewal
    /// (seconds); the leader renews every third of it.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    lease_duration: u64,
    /// Kubernetes mode: most writes (applies, deletes, status) per second.
    #[arg(long, default_value_t = 50.0)]
    write_qps: f64,
    /// Kubernetes mode: where the sidecar injection webhook listens (HTTPS).
    /// Empty: no webhook.
    #[arg(long, env = "WEFT_WEBHOOK_ADDR", default_value = "0.0.0.0:15017")]
    webhook_addr: String,
    /// The Service in front of the webhook (its certificate names
    /// `<service>.<namespace>.svc`).
    #[arg(long, default_value = "weft-cp")]
    webhook_service: String,
    /// The MutatingWebhookConfiguration whose caBundle the leader keeps.
    #[arg(long, default_value = "weft-injector")]
    webhook_configuration: String,
    /// Injection: the weft-proxy image.
    #[arg(long, env = "WEFT_PROXY_IMAGE")]
    proxy_image: Option<String>,
    /// Injection: the image pull policy of injected containers.
    #[arg(long)]
    proxy_image_pull_policy: Option<String>,
    /// Injection: the control plane's gRPC address as injected proxies
    /// reach it (default: http://<webhook-service>.<namespace>.svc:15010).
    #[arg(long)]
    proxy_control_plane: Option<String>,
    /// Injection: the proxies' default log level.
    #[arg(long, default_value = "info")]
    proxy_log_level: String,
    /// Injection: proxy resources (Kubernetes quantities); per-pod
    /// annotations override them.
    #[arg(long, default_value = "50m")]
    proxy_cpu_request: String,
    #[arg(long, default_value = "32Mi")]
    proxy_memory_request: String,
    #[arg(long)]
    proxy_cpu_limit: Option<String>,
    #[arg(long, default_value = "256Mi")]
    proxy_memory_limit: String,
    /// Injection: `true`, `false` or `auto` (native sidecars when the API
    /// server is 1.29 or newer).
    #[arg(long, default_value = "auto")]
    native_sidecars: String,
    /// Address proxies connect to (gRPC).
    #[arg(long, default_value = "127.0.0.1:15010", env = "WEFT_GRPC_ADDR")]
    grpc_addr: SocketAddr,
    /// Admin API address (health, metrics, objects, proxies).
    #[arg(long, default_value = "127.0.0.1:15000", env = "WEFT_ADMIN_ADDR")]
    admin_addr: SocketAddr,
    /// Local mode: where the mesh CAs and the join-token key are kept
    /// (created on first start). Default: $XDG_STATE_HOME/weft, else
    /// ~/.local/state/weft. Kubernetes mode keeps them in Secrets.
    #[arg(long, value_name = "DIR", env = "WEFT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn default_state_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("weft"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/weft")),
        None => anyhow::bail!("no --state-dir given and neither XDG_STATE_HOME nor HOME is set"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    keep_freed_pages();
    let cli = Cli::parse();
    let Command::Run(args) = cli.command;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if args.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        // Colour codes only for a person at a terminal, not in `kubectl logs` or files.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).init();
    }
    let source = match args.local {
        Some(dir) => {
            let state_dir = match args.state_dir {
                Some(dir) => dir,
                None => default_state_dir()?,
            };
            weft_cp::Source::Local {
                dir,
                state_dir,
                reconnect_grace: std::time::Duration::from_secs(args.reconnect_grace),
            }
        }
        None => {
            let identity = match args.pod_name.filter(|n| !n.is_empty()) {
                Some(name) => name,
                None => hostname()?,
            };
            let mut options = weft_cp::kubernetes::KubeOptions::new(&args.namespace, &identity);
            options.kubeconfig = args.kubeconfig;
            options.lease_duration = std::time::Duration::from_secs(args.lease_duration);
            anyhow::ensure!(args.write_qps > 0.0, "--write-qps must be positive");
            options.write_qps = args.write_qps;
            if !args.webhook_addr.is_empty() {
                options.webhook_addr =
                    Some(args.webhook_addr.parse().with_context(|| format!("--webhook-addr {}", args.webhook_addr))?);
            }
            options.webhook_service = args.webhook_service.clone();
            options.webhook_configuration = args.webhook_configuration;
            options.native_sidecars = match args.native_sidecars.as_str() {
                "auto" => None,
                "true" => Some(true),
                "false" => Some(false),
                other => anyhow::bail!("--native-sidecars {other}: use true, false or auto"),
            };
            let quantity = |q: &str| k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.to_owned());
            let mut requests = std::collections::BTreeMap::from([
                ("cpu".to_string(), quantity(&args.proxy_cpu_request)),
                ("memory".to_string(), quantity(&args.proxy_memory_request)),
            ]);
            requests.retain(|_, q| !q.0.is_empty());
            let mut limits =
                std::collections::BTreeMap::from([("memory".to_string(), quantity(&args.proxy_memory_limit))]);
            if let Some(cpu) = &args.proxy_cpu_limit {
                limits.insert("cpu".into(), quantity(cpu));
            }
            limits.retain(|_, q| !q.0.is_empty());
            let defaults = weft_inject::Settings::default();
            // Proxies reach the control plane through its Service, on the
            // gRPC port it serves (15010 unless told otherwise).
            let grpc_port = match args.grpc_addr.port() {
                0 => defaults.control_plane_port,
                port => port,
            };
            options.inject = weft_inject::Settings {
                image: args.proxy_image.unwrap_or(defaults.image),
                image_pull_policy: args.proxy_image_pull_policy,
                control_plane: args
                    .proxy_control_plane
                    .unwrap_or_else(|| format!("http://{}.{}.svc:{grpc_port}", args.webhook_service, args.namespace)),
                control_plane_port: grpc_port,
                log_level: args.proxy_log_level,
                resources: k8s_openapi::api::core::v1::ResourceRequirements {
                    requests: Some(requests),
                    limits: Some(limits),
                    ..Default::default()
                },
                ..defaults
            };
            weft_cp::Source::Kubernetes(Box::new(options))
        }
    };
    let mut running =
        weft_cp::start(weft_cp::Config { source, grpc_addr: args.grpc_addr, admin_addr: args.admin_addr }).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        result = running.wait() => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
    };
    if result.is_ok() {
        tracing::info!("shutting down");
    }
    running.stop().await;
    result
}

/// The host name (a pod's name inside Kubernetes).
fn hostname() -> anyhow::Result<String> {
    if let Ok(name) = std::env::var("HOSTNAME")
        && !name.is_empty()
    {
        return Ok(name);
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default();
    anyhow::ensure!(!name.is_empty(), "no --pod-name given and the host name is unknown");
    Ok(name)
}
