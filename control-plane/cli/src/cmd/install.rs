//! `weftctl install`: the chart's default manifests for clusters installed
//! without Helm (`weftctl install --crds | kubectl apply --server-side -f -`,
//! then `weftctl install | kubectl apply --server-side -f -`).
//!
//! Nothing here is a second copy of the chart: `manifests/` is what the
//! real Helm renders from `charts/weft` with its default values
//! (`scripts/render-install` writes it; e2e/tests/chart.rs fails when it is
//! stale).

use std::process::ExitCode;

/// `helm template weft charts/weft -n weft-system` (as on a cluster that
/// serves the Gateway API).
pub const MANIFESTS: &str = include_str!("../../manifests/install.yaml");
/// The chart's CRDs (`charts/weft/crds`).
pub const CRDS: &str = include_str!("../../manifests/crds.yaml");

/// The namespace the rendering is for (`helm install --create-namespace`
/// makes it; `kubectl apply` needs it in the stream).
const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: weft-system\n";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print Weft's CRDs only (apply them first: the manifests create a
    /// Mesh and a MeshGatewayConfig, which need them).
    #[arg(long)]
    crds: bool,
    /// Leave out the GatewayClass, for a cluster without the Gateway API
    /// CRDs (the chart leaves it out there by itself).
    #[arg(long, conflicts_with = "crds")]
    no_gateway_class: bool,
}

/// What `weftctl install` prints for `args`.
pub fn render(crds: bool, no_gateway_class: bool) -> String {
    if crds {
        return CRDS.to_string();
    }
    let mut out = format!("---\n{NAMESPACE}");
    for doc in MANIFESTS.split("\n---\n").skip(1) {
        if no_gateway_class && doc.lines().any(|l| l == "kind: GatewayClass") {
            continue;
        }
        out.push_str("---\n");
        out.push_str(doc.trim_end_matches('\n'));
        out.push('\n');
    }
    out
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    print!("{}", render(args.crds, args.no_gateway_class));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(yaml: &str) -> Vec<String> {
        yaml.lines().filter_map(|l| l.strip_prefix("kind: ")).map(str::to_owned).collect()
    }

    #[test]
    fn prints_the_namespace_then_every_rendered_object() {
        let all = render(false, false);
        let rendered = kinds(MANIFESTS);
        assert!(rendered.len() > 8, "{rendered:?}");
        let mut expected = vec!["Namespace".to_string()];
        expected.extend(rendered);
        assert_eq!(kinds(&all), expected);
        assert!(kinds(&all).contains(&"GatewayClass".to_string()));
        assert!(!kinds(&render(false, true)).contains(&"GatewayClass".to_string()));
        assert_eq!(kinds(&render(true, false)), vec!["CustomResourceDefinition"; 6]);
    }
}
