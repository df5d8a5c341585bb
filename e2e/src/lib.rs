//! End-to-end harness.
//!
//! Tests here run the real binaries (control plane, proxy, the `weft-echo` workload) as
//! processes in network namespaces, because transparent capture, uid-based exclusion and
//! cross-pod traffic can only be checked against a real kernel. [`netns`] builds the pods,
//! [`process`] keeps every process and command bounded in time and cleaned up, [`echo`] is the
//! workload, [`http1`] reads responses fetched with [`netns::Pod::tcp_exchange`].

pub mod bench;
pub mod echo;
pub mod grpc_echo;
pub mod http1;
pub mod kube;
pub mod load;
pub mod mesh;
pub mod netns;
pub mod process;
pub mod tcp_echo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;

/// Locates a binary of the workspace for a test to run.
///
/// Looks next to the test executable (`target/<profile>/deps/..`), or in `WEFT_E2E_BIN_DIR`
/// when set (e.g. to test release binaries). `cargo test` builds only the binaries of the
/// package under test, so binaries of other packages must have been built with
/// `cargo build --workspace` first; a missing one is an error saying so.
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    if let Some(dir) = std::env::var_os("WEFT_E2E_BIN_DIR") {
        let path = PathBuf::from(dir).join(&file);
        if !path.is_file() {
            bail!("{name} not found at {} (WEFT_E2E_BIN_DIR is set)", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe()?;
    let Some(mut dir) = exe.parent().map(PathBuf::from) else {
        bail!("the test executable {} has no parent directory", exe.display());
    };
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.pop();
    }
    let path = dir.join(&file);
    if !path.is_file() {
        bail!("{name} not found at {}; run `cargo build --workspace` before the e2e tests", path.display());
    }
    Ok(path)
}

/// Arguments of `weft-cp run` in local mode on `config`, keeping its CAs and
/// token key in `state`.
pub fn control_plane_args(config: &Path, grpc: SocketAddr, admin: SocketAddr, state: &Path) -> Vec<String> {
    vec![
        "run".into(),
        "--local".into(),
        config.to_string_lossy().into_owned(),
        "--grpc-addr".into(),
        grpc.to_string(),
        "--admin-addr".into(),
        admin.to_string(),
        "--state-dir".into(),
        state.to_string_lossy().into_owned(),
    ]
}

/// A join token for `namespace`'s `service_account` in `mesh`, made with
/// `weftctl token create` on the control plane's state directory (which
/// must already hold the token key the control plane made).
pub fn join_token(state: &Path, namespace: &str, service_account: &str, mesh: &str) -> anyhow::Result<String> {
    let mut command = std::process::Command::new(workspace_bin("weftctl")?);
    command.args(["token", "create", "--state-dir"]).arg(state).args([
        "--namespace",
        namespace,
        "--service-account",
        service_account,
        "--mesh",
        mesh,
        "--valid-for",
        "24h",
    ]);
    let out = process::run_ok(command, Duration::from_secs(10))
        .map_err(|e| anyhow::anyhow!("weftctl token create: {e:#}"))?;
    Ok(out.trim().to_owned())
}
