//! MeshTCPRoute: TCP and TLS-passthrough routing.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BackendRef, Destination, MeshRouteStatus, TargetRef};

/// Weighted forwarding of whole connections from `targetRef`'s workloads to
/// the `to` destinations. Generated from TCPRoutes and TLSRoutes, or written
/// by hand.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "weft.io",
    version = "v1alpha1",
    kind = "MeshTCPRoute",
    plural = "meshtcproutes",
    namespaced,
    status = "MeshRouteStatus",
    category = "weft",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"Target-Name","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[kube(derive = "Default", derive = "PartialEq")]
#[serde(rename_all = "camelCase")]
pub struct MeshTCPRouteSpec {
    /// Whose traffic this route shapes.
    pub target_ref: TargetRef,
    /// Which destinations the rules apply to. For TLS listeners the
    /// destination's hostnames select connections by SNI.
    #[serde(default)]
    pub to: Vec<Destination>,
    /// Rules; the first one is used (TCP has nothing to match on).
    #[serde(default)]
    pub rules: Vec<TcpRouteRule>,
}

/// A TCP rule: where connections go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpRouteRule {
    /// Name of the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Weighted backends; connections to an unresolved share are closed.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}
