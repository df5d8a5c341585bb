//! Label and annotation keys under `weft.io/`, and the fixed names Weft uses.

/// The mesh an object belongs to (annotation, also accepted as a label).
pub const MESH: &str = "weft.io/mesh";
/// The mesh used when neither the object nor its namespace names one.
pub const DEFAULT_MESH: &str = "default";
/// Kind of the Gateway API object a generated object was made from.
pub const ORIGIN_KIND: &str = "weft.io/origin-kind";
/// Name of the source object (hashed when longer than a label value allows).
pub const ORIGIN_NAME: &str = "weft.io/origin-name";
/// Namespace of the source object.
pub const ORIGIN_NAMESPACE: &str = "weft.io/origin-namespace";
/// Creation time of the source object: generated routes rank by their source's
/// age, not by when Weft wrote them (Gateway API tie-breaking).
pub const ORIGIN_CREATION_TIMESTAMP: &str = "weft.io/origin-creation-timestamp";
/// Full `namespace/name` of the source object, kept as an annotation because a
/// label value is limited to 63 characters.
pub const ORIGIN_FULL_NAME: &str = "weft.io/origin";
/// Namespace or pod label that turns sidecar injection on (`enabled`) or off.
pub const SIDECAR_INJECTION: &str = "weft.io/sidecar-injection";
/// Label put on gateway proxy pods and used by MeshGateway selectors.
pub const GATEWAY_INSTANCE: &str = "weft.io/gateway";
/// GatewayClass `controllerName` that Weft owns.
pub const GATEWAY_CONTROLLER_NAME: &str = "weft.io/gateway-controller";
/// Namespace of the control plane.
pub const SYSTEM_NAMESPACE: &str = "weft-system";
/// API group of Weft's resources.
pub const GROUP: &str = "weft.io";
