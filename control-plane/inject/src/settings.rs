//! What injection adds, and the defaults a cluster operator sets (the
//! chart's proxy values).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Name of the init container that installs the traffic capture.
pub const INIT_CONTAINER: &str = "weft-init";
/// Name of the proxy container.
pub const PROXY_CONTAINER: &str = "weft-proxy";
/// Where the proxy binary is in its image.
pub const PROXY_BINARY: &str = "/usr/bin/weft-proxy";
/// Name of the projected token volume.
pub const TOKEN_VOLUME: &str = "weft-identity-token";
/// Where the proxy finds its ServiceAccount token for the control plane.
pub const TOKEN_DIR: &str = "/var/run/secrets/weft.io/identity";
/// The token file inside [`TOKEN_DIR`].
pub const TOKEN_FILE: &str = "token";
/// Port of the proxy's health endpoint on the pod's address: `/ready`,
/// `/live` and the rewritten application probes. Never captured.
pub const HEALTH_PORT: i32 = 15021;
/// The proxy's admin port, on loopback only.
pub const ADMIN_PORT: i32 = 15020;
/// Port of the proxy's `/metrics` on the pod's address, for Prometheus.
/// Never captured; serves nothing but metrics.
pub const METRICS_PORT: i32 = 15090;
/// Name of the `emptyDir` mounted at `/run` in the init container: the
/// legacy iptables backend takes `/run/xtables.lock`, which the container's
/// read-only root filesystem would refuse.
pub const INIT_RUN_VOLUME: &str = "weft-init-run";
/// uid (and gid) the proxy runs as; its own traffic is not captured.
pub const PROXY_UID: i64 = 2102;
/// Path prefix of rewritten application probes on [`HEALTH_PORT`].
pub const APP_PROBE_PATH: &str = "/app-probe";
/// Environment variable carrying the original application probes.
pub const APP_PROBES_ENV: &str = "WEFT_APP_PROBES";

/// Cluster-wide defaults of injection (the chart's `proxy` values).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The `weft-proxy` image.
    pub image: String,
    /// Its pull policy, if set.
    pub image_pull_policy: Option<String>,
    /// The control plane's gRPC address as proxies reach it.
    pub control_plane: String,
    /// The control plane's port: never captured outbound.
    pub control_plane_port: u16,
    /// Default log level of proxies.
    pub log_level: String,
    /// Default resources of the proxy container.
    pub resources: ResourceRequirements,
    /// Audience of the projected ServiceAccount token.
    pub token_audience: String,
    /// Lifetime asked for the token (the kubelet renews it at 80 %).
    pub token_expiration_seconds: i64,
}

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_string())
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            image: format!("ghcr.io/weft-mesh/weft-proxy:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: None,
            control_plane: "http://weft-cp.weft-system.svc:15010".to_string(),
            control_plane_port: 15010,
            log_level: "info".to_string(),
            resources: ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_string(), quantity("50m")),
                    ("memory".to_string(), quantity("32Mi")),
                ])),
                limits: Some(BTreeMap::from([("memory".to_string(), quantity("256Mi"))])),
                ..Default::default()
            },
            token_audience: "weft.io/identity".to_string(),
            token_expiration_seconds: 3600,
        }
    }
}
