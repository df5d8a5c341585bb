//! Pieces shared by several Weft resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who a route applies to: the workloads whose traffic it shapes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// `Mesh`: every workload of the route's mesh (a producer route).
    /// `Namespace`: only workloads in the namespace `name` (a consumer route).
    /// `MeshGateway`: the gateway proxies of the MeshGateway `name`.
    pub kind: TargetKind,
    /// Namespace or MeshGateway name; empty for `Mesh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Kinds a route's `targetRef` can name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TargetKind {
    /// All workloads of the mesh.
    #[default]
    Mesh,
    /// The workloads of one namespace.
    Namespace,
    /// The proxies of one MeshGateway.
    MeshGateway,
}

/// Where a route's traffic is going: a Service port (sidecar routes) or a
/// gateway listener (gateway routes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// `Service` or `Listener`.
    pub kind: DestinationKind,
    /// Service name, or MeshGateway listener name.
    pub name: String,
    /// Namespace of the Service; empty for listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Service port; empty means every port of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Host names this route serves on a listener, already intersected with
    /// the listener's hostname. Empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
}

/// Kinds a route destination can name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DestinationKind {
    /// A Service port, reached through the sidecar's outbound side.
    #[default]
    Service,
    /// A listener of the route's MeshGateway.
    Listener,
}

/// A backend that receives a share of a route's traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// Kind of the backend; Weft resolves `Service` (core group) only, and
    /// marks any other kind unresolved.
    #[serde(default = "default_backend_kind")]
    pub kind: String,
    /// API group of the backend; empty for the core group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Service name.
    pub name: String,
    /// Service namespace.
    pub namespace: String,
    /// Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Relative share of the traffic; 0 sends nothing.
    #[serde(default = "default_weight")]
    pub weight: i32,
    /// Set when the reference could not be resolved: the backend keeps its
    /// weight and proxies answer its share with 500, as Gateway API requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
}

pub(crate) fn default_backend_kind() -> String {
    "Service".to_string()
}

pub(crate) fn default_weight() -> i32 {
    1
}

/// A reference to a namespaced object, such as a TLS Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedName {
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
}
