//! MeshGatewayConfig: per-GatewayClass defaults for gateway deployments.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, PodSecurityContext, ResourceRequirements, SecurityContext, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Defaults for every Gateway of a GatewayClass whose `parametersRef` names
/// this object: how the gateway proxies are deployed and exposed, and whether
/// clients of every mesh may reach them.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "weft.io",
    version = "v1alpha1",
    kind = "MeshGatewayConfig",
    plural = "meshgatewayconfigs",
    status = "MeshGatewayConfigStatus",
    category = "weft",
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Service-Type","type":"string","jsonPath":".spec.serviceType"}"#,
    printcolumn = r#"{"name":"Cross-Mesh","type":"boolean","jsonPath":".spec.crossMesh"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[kube(derive = "Default", derive = "PartialEq")]
#[serde(rename_all = "camelCase")]
pub struct MeshGatewayConfigSpec {
    /// How the gateway proxies run.
    #[serde(flatten)]
    pub deployment: GatewayDeployment,
    /// Serve clients of every mesh (HTTP listeners only), not just the
    /// gateway's own mesh.
    #[serde(default)]
    pub cross_mesh: bool,
    /// Labels copied to every gateway instance and its proxies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// Deployment settings shared by MeshGatewayConfig and MeshGatewayInstance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayDeployment {
    /// Number of gateway proxy pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// Type of the Service in front of the gateway proxies.
    #[serde(default)]
    pub service_type: ServiceType,
    /// Metadata and settings merged onto the generated Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_template: Option<ServiceTemplate>,
    /// Metadata and pod settings merged onto the generated pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
    /// Resources of the gateway proxy container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Scale with a HorizontalPodAutoscaler instead of a fixed `replicas`
    /// (the Deployment then leaves its replica count to the autoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<GatewayAutoscaling>,
    /// JSON merge patches (RFC 7386) applied to the rendered objects, for
    /// anything the fields above do not cover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<GatewayPatches>,
}

impl Default for GatewayDeployment {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            service_type: ServiceType::default(),
            service_template: None,
            pod_template: None,
            resources: None,
            autoscaling: None,
            patches: None,
        }
    }
}

/// Autoscaling of the gateway proxies on CPU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAutoscaling {
    /// Fewest replicas (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<i32>,
    /// Most replicas.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilization to aim for, in percent of the request
    /// (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: Option<i32>,
}

/// JSON merge patches of the rendered gateway objects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPatches {
    /// Patch of the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object")]
    pub deployment: Option<serde_json::Value>,
    /// Patch of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object")]
    pub service: Option<serde_json::Value>,
}

/// An object of any shape (kept by the API server as given).
fn free_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn default_replicas() -> i32 {
    1
}

/// Kubernetes Service types a gateway can be exposed with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    /// An external load balancer (the cloud's).
    #[default]
    LoadBalancer,
    /// Reachable inside the cluster only; forced for cross-mesh gateways.
    ClusterIP,
    /// A port on every node.
    NodePort,
}

/// Labels and annotations to merge onto a generated object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Extra labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What users may set on the gateway's Service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTemplate {
    /// Labels and annotations of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// Service settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ServiceTemplateSpec>,
}

/// Service settings users may set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTemplateSpec {
    /// Requested load balancer IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_ip: Option<String>,
    /// `Cluster` or `Local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
    /// The load balancer implementation to use (`spec.loadBalancerClass`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
}

/// What users may set on the gateway's pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Labels and annotations of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// Pod settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodTemplateSpec>,
}

/// Pod settings users may set (the knobs Kuma users asked for in vain).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    /// ServiceAccount of the gateway pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Pod security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Security context of the gateway proxy container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,
    /// Priority class of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// How the pods spread over zones and nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Secrets for pulling the proxy image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

/// Observed state of a MeshGatewayConfig.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshGatewayConfigStatus {
    /// Conditions, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
