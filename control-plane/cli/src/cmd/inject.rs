//! `weftctl inject`: sidecar injection over YAML, with the same function
//! the admission webhook runs, for manifests applied without the webhook
//! (as `linkerd inject` and `istioctl kube-inject` do).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use weft_inject::Settings;
use weft_inject::manifest::inject_yaml;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manifests (a file, or `-` for standard input).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    /// The weft-proxy image (default: this release's).
    #[arg(long)]
    proxy_image: Option<String>,
    /// The control plane's gRPC address as proxies reach it.
    #[arg(long)]
    control_plane: Option<String>,
    /// Put the proxy in a regular container held by a postStart hook, for
    /// clusters older than Kubernetes 1.29 (no native sidecars).
    #[arg(long)]
    no_native_sidecar: bool,
    /// Say nothing on standard error about each pod template.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (name, text) = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
        ("standard input".to_string(), s)
    } else {
        let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
        (args.file.display().to_string(), text)
    };
    let mut settings = Settings::default();
    if let Some(image) = args.proxy_image {
        settings.image = image;
    }
    if let Some(cp) = args.control_plane {
        settings.control_plane = cp;
    }
    let (yaml, notes) = inject_yaml(&text, &settings, !args.no_native_sidecar).with_context(|| name.clone())?;
    print!("{yaml}");
    if !args.quiet {
        for n in notes {
            eprintln!("{name}: document {} ({}): {}", n.document, n.object, n.outcome);
        }
    }
    Ok(ExitCode::SUCCESS)
}
