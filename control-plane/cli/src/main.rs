//! `weftctl`: Weft's command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Weft service mesh command-line tool.
#[derive(Debug, Parser)]
#[command(name = "weftctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Translate Gateway API and Weft YAML (files or directories) and print
    /// the generated Weft objects and the status of every input object: a dry
    /// run of what the control plane would do.
    Translate(cmd::translate::Args),
    /// List generated objects (meshgateways, meshgatewayinstances,
    /// meshhttproutes, meshtcproutes), connected proxies (proxies) or
    /// input it could not load (errors) of a running control plane.
    Get {
        /// What to list.
        kind: String,
        #[command(flatten)]
        target: cmd::admin::Target,
    },
    /// Show the status of an object: KIND/NAME or KIND/NAMESPACE/NAME
    /// (e.g. gateway/shop/edge, httproute/bookinfo/reviews, gatewayclass/weft).
    Status {
        object: String,
        #[command(flatten)]
        target: cmd::admin::Target,
    },
    /// Show the configuration a connected proxy (NAMESPACE/NAME) should hold,
    /// and what it acknowledged or rejected.
    ConfigDump {
        proxy: String,
        #[command(flatten)]
        target: cmd::admin::Target,
    },
    /// Join tokens: a proxy presents one to get its mesh certificate.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Mesh certificate authorities (local mode's state directory).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Add the Weft proxy to every pod template of YAML manifests (Pods,
    /// Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs,
    /// Lists) and print them, as the admission webhook would.
    Inject(cmd::inject::Args),
    /// Print the manifests of the Helm chart's default installation (rendered
    /// from charts/weft by the real Helm), for clusters installed without
    /// Helm: `weftctl install --crds | kubectl apply --server-side -f -`, then
    /// `weftctl install | kubectl apply --server-side -f -`.
    Install(cmd::install::Args),
    /// Report what a cluster lacks for Weft: the Gateway API CRDs and their
    /// bundle version, Weft's CRDs, the control plane's readiness and leader,
    /// the injection webhook's certificate and caBundle. Exits 1 when a check
    /// fails.
    Check(cmd::check::Args),
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Replace a mesh's CA, trusting the old root for an overlap period.
    Rotate(cmd::ca::RotateArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a new join token for a namespace's service account.
    Create(cmd::token::CreateArgs),
}

/// Runs an inspection command on a small runtime.
fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(f).map(|()| ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Translate(args) => cmd::translate::run(args),
        Command::Get { kind, target } => block_on(cmd::admin::get(&target, &kind)),
        Command::Status { object, target } => block_on(cmd::admin::status(&target, &object)),
        Command::ConfigDump { proxy, target } => block_on(cmd::admin::config_dump(&target, &proxy)),
        Command::Token(TokenCommand::Create(args)) => cmd::token::create(args),
        Command::Ca(CaCommand::Rotate(args)) => cmd::ca::rotate(args),
        Command::Inject(args) => cmd::inject::run(args),
        Command::Install(args) => cmd::install::run(args),
        Command::Check(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            runtime.map_err(anyhow::Error::from).and_then(|r| r.block_on(cmd::check::run(args)))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
