//! MeshGateway: the listeners a gateway proxy serves.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::NamespacedName;

/// The listeners of one Gateway (and the ListenerSets attached to it), as the
/// gateway proxies serve them. Only listeners that passed validation appear
/// here; the rejected ones are explained in the Gateway's status.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "weft.io",
    version = "v1alpha1",
    kind = "MeshGateway",
    plural = "meshgateways",
    status = "MeshGatewayStatus",
    category = "weft",
    printcolumn = r#"{"name":"Mesh","type":"string","jsonPath":".spec.mesh"}"#,
    printcolumn = r#"{"name":"Cross-Mesh","type":"boolean","jsonPath":".spec.crossMesh"}"#,
    printcolumn = r#"{"name":"Instance","type":"string","jsonPath":".spec.instance.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[kube(derive = "Default", derive = "PartialEq")]
#[serde(rename_all = "camelCase")]
pub struct MeshGatewaySpec {
    /// Mesh of the gateway (its backends and identity).
    pub mesh: String,
    /// Clients of every mesh may reach the gateway's listeners.
    #[serde(default)]
    pub cross_mesh: bool,
    /// The MeshGatewayInstance whose proxies serve these listeners.
    pub instance: NamespacedName,
    /// Listeners, ordered by port then name.
    #[serde(default)]
    pub listeners: Vec<MeshGatewayListener>,
}

/// One listener of a gateway proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshGatewayListener {
    /// Unique within the MeshGateway: the Gateway listener's name, or
    /// `<namespace>/<listenerset>/<name>` for a ListenerSet's listener.
    pub name: String,
    /// Port the proxy binds.
    pub port: i32,
    /// Protocol spoken on the port.
    pub protocol: ListenerProtocol,
    /// Host name (or `*.suffix`) the listener serves; empty for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// TLS settings for HTTPS and TLS listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

/// Protocols a gateway listener can serve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    /// Plain HTTP/1.1 and h2c.
    #[default]
    Http,
    /// HTTP over TLS terminated by the gateway.
    Https,
    /// TLS, terminated or passed through by SNI.
    Tls,
    /// Opaque TCP.
    Tcp,
}

/// TLS of a listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    /// `Terminate` or `Passthrough`.
    pub mode: TlsMode,
    /// `kubernetes.io/tls` Secrets holding the serving certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<NamespacedName>,
}

/// TLS modes of a listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsMode {
    /// The gateway terminates TLS.
    #[default]
    Terminate,
    /// The gateway routes by SNI and forwards the TLS stream untouched.
    Passthrough,
}

/// Observed state of a MeshGateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshGatewayStatus {
    /// Conditions, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
