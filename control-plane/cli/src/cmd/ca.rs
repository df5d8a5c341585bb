//! `weftctl ca rotate`: a new CA for a mesh, with the old root still
//! trusted for an overlap period.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use weft_identity::store;
use weft_k8s_api::gateway::GatewayDuration;

/// Replaces a mesh's CA in the control plane's state directory. The control
/// plane notices within seconds: proxies trust both roots, new
/// certificates come from the new CA, and the old root is dropped when the
/// overlap ends.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The control plane's state directory (its --state-dir).
    #[arg(long, value_name = "DIR", env = "WEFT_STATE_DIR")]
    pub state_dir: PathBuf,
    /// The mesh whose CA to rotate.
    #[arg(long, default_value = "default")]
    pub mesh: String,
    /// How long the old root stays trusted: at least the longest workload
    /// certificate lifetime, so every proxy renews from the new CA in time.
    #[arg(long, default_value = "48h")]
    pub overlap: String,
}

pub fn rotate(args: RotateArgs) -> anyhow::Result<ExitCode> {
    let overlap = GatewayDuration::from_str(&args.overlap)
        .map_err(|e| anyhow::anyhow!("--overlap {:?} is not a Gateway API duration: {e}", args.overlap))?;
    if !args.state_dir.join("meshes").join(&args.mesh).join("ca.crt").exists() {
        anyhow::bail!(
            "mesh {:?} has no CA in {} (the control plane makes one when it first serves the mesh)",
            args.mesh,
            args.state_dir.display()
        );
    }
    let now = time::OffsetDateTime::now_utc();
    let overlap = time::Duration::seconds(i64::try_from(overlap.as_secs())?);
    // The trust domain is the Mesh's; the CA's own name only mentions it.
    let rotated =
        store::rotate_mesh_ca(&args.state_dir, &args.mesh, &format!("{}.weft.local", args.mesh), now, overlap)?;
    println!(
        "mesh {}: new CA written; the previous root stays trusted until {} ({} roots trusted now)",
        args.mesh,
        now + overlap,
        1 + rotated.extra_roots_pem.len()
    );
    Ok(ExitCode::SUCCESS)
}
