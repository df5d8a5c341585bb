//! `weftctl token create`: join tokens for local mode.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context;
use weft_identity::{Claims, store};
use weft_k8s_api::gateway::GatewayDuration;

/// A join token lets one proxy prove it runs as a service account of a
/// namespace in a mesh, so the control plane signs its certificate.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The control plane's state directory (its --state-dir).
    #[arg(long, value_name = "DIR", env = "WEFT_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Namespace of the workload.
    #[arg(long, short = 'n')]
    pub namespace: String,
    /// Service account of the workload.
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// Mesh the token is for.
    #[arg(long, default_value = "default")]
    pub mesh: String,
    /// How long the token can be used to get certificates (Gateway API
    /// duration, e.g. 24h).
    #[arg(long, default_value = "24h")]
    pub valid_for: String,
}

fn dns_label(what: &str, value: &str) -> anyhow::Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    anyhow::ensure!(ok, "--{what} {value:?} is not a DNS label (lower-case letters, digits and '-', at most 63)");
    Ok(())
}

pub fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    dns_label("namespace", &args.namespace)?;
    dns_label("service-account", &args.service_account)?;
    dns_label("mesh", &args.mesh)?;
    let valid_for = GatewayDuration::from_str(&args.valid_for)
        .map_err(|e| anyhow::anyhow!("--valid-for {:?} is not a Gateway API duration: {e}", args.valid_for))?;
    let key = store::existing_token_key(&args.state_dir).with_context(|| {
        format!("reading the token key of {} (start weft-cp with this --state-dir first)", args.state_dir.display())
    })?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let token = key.issue(&Claims {
        mesh: args.mesh,
        namespace: args.namespace,
        service_account: args.service_account,
        expires_unix: i64::try_from(now + valid_for.as_secs())?,
    });
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
