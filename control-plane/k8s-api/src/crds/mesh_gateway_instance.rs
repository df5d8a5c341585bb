//! MeshGatewayInstance: one gateway deployment, with its config resolved.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GatewayDeployment;

/// The gateway proxies of one Gateway: generated with the Gateway's namespace
/// and name, owned by it, and turned into a Deployment and a Service (in
/// Kubernetes) or served by gateway-mode proxies (in local mode). Its status
/// is how the translator learns that the data plane is ready.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "weft.io",
    version = "v1alpha1",
    kind = "MeshGatewayInstance",
    plural = "meshgatewayinstances",
    namespaced,
    status = "MeshGatewayInstanceStatus",
    category = "weft",
    printcolumn = r#"{"name":"Mesh","type":"string","jsonPath":".spec.mesh"}"#,
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".spec.meshGateway"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[kube(derive = "Default", derive = "PartialEq")]
#[serde(rename_all = "camelCase")]
pub struct MeshGatewayInstanceSpec {
    /// Name of the cluster-scoped MeshGateway these proxies serve.
    pub mesh_gateway: String,
    /// Mesh of the gateway.
    pub mesh: String,
    /// How the proxies run, from the GatewayClass's MeshGatewayConfig.
    #[serde(flatten)]
    pub deployment: GatewayDeployment,
    /// Serve clients of every mesh.
    #[serde(default)]
    pub cross_mesh: bool,
    /// Distinct listener ports, which the Service exposes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<i32>,
    /// Addresses the Gateway asked for (`spec.addresses`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewayAddress>,
    /// Labels put on the proxies, from the config's tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// An address of a gateway, in Gateway API form.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAddress {
    /// `IPAddress` or `Hostname`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The address; empty in a request means "any address of this type".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// What the runtime observed of the gateway proxies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshGatewayInstanceStatus {
    /// Proxies that are connected and serving the current config.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Addresses clients can reach the gateway on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewayAddress>,
    /// Requested addresses that could not be assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unusable_addresses: Vec<GatewayAddress>,
    /// `Ready`, with the reason when it is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
