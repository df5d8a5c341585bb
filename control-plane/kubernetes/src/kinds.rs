//! The kinds Weft reads from the cluster, and how each is found.
//!
//! Kinds backed by a CustomResourceDefinition (the Gateway API and Weft's
//! own) may be installed or removed while the control plane runs, and an
//! older Gateway API release serves some of them at older versions; they
//! are discovered at run time ([`crate::gate`]) and read through the
//! dynamic API, then converted to the version Weft's types describe. Core
//! kinds are always there.

use std::fmt;

use weft_k8s_api::crds::API_VERSION as WEFT_API_VERSION;
use weft_k8s_api::gateway::GROUP as GATEWAY_GROUP;
use weft_k8s_api::labels;

/// A kind of object held in the index. MeshHTTPRoute and MeshTCPRoute
/// appear twice: hand-written ones are translator input, generated ones
/// (labelled with their origin) are output the writer keeps in line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    GatewayClass,
    Gateway,
    ListenerSet,
    HttpRoute,
    GrpcRoute,
    TlsRoute,
    TcpRoute,
    ReferenceGrant,
    Mesh,
    MeshGatewayConfig,
    MeshHttpRoute,
    MeshTcpRoute,
    GeneratedMeshGateway,
    GeneratedMeshGatewayInstance,
    GeneratedMeshHttpRoute,
    GeneratedMeshTcpRoute,
    Service,
    EndpointSlice,
    Namespace,
    Secret,
    Pod,
    /// Pods without a proxy (`weft.io/mesh` unset): not translator input,
    /// only watched to flag pods of injection-enabled namespaces that run
    /// unmeshed.
    UnmeshedPod,
    /// Provisioned gateway objects (label `weft.io/gateway-instance`).
    GatewayDeployment,
    GatewayServiceAccount,
    GatewayHpa,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 25] = [
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::ListenerSet,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TlsRoute,
        Kind::TcpRoute,
        Kind::ReferenceGrant,
        Kind::Mesh,
        Kind::MeshGatewayConfig,
        Kind::MeshHttpRoute,
        Kind::MeshTcpRoute,
        Kind::GeneratedMeshGateway,
        Kind::GeneratedMeshGatewayInstance,
        Kind::GeneratedMeshHttpRoute,
        Kind::GeneratedMeshTcpRoute,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Namespace,
        Kind::Secret,
        Kind::Pod,
        Kind::UnmeshedPod,
        Kind::GatewayDeployment,
        Kind::GatewayServiceAccount,
        Kind::GatewayHpa,
    ];

    /// Whether the kind is only observed (its changes never cause a
    /// translation).
    pub fn is_observed(self) -> bool {
        self == Kind::UnmeshedPod
    }

    /// Whether objects of this kind are Weft's output (not translator input).
    pub fn is_generated(self) -> bool {
        matches!(
            self,
            Kind::GeneratedMeshGateway
                | Kind::GeneratedMeshGatewayInstance
                | Kind::GeneratedMeshHttpRoute
                | Kind::GeneratedMeshTcpRoute
                | Kind::GatewayServiceAccount
                | Kind::GatewayHpa
        )
    }

    /// Whether Weft provisions objects of this kind for gateways (the
    /// gateway Services are among the Services).
    pub fn is_provisioned(self) -> bool {
        matches!(self, Kind::GatewayDeployment | Kind::GatewayServiceAccount | Kind::GatewayHpa)
    }

    /// The resource this kind is read from.
    pub fn resource(self) -> Resource {
        match self {
            Kind::GatewayClass => Resource::GatewayClass,
            Kind::Gateway => Resource::Gateway,
            Kind::ListenerSet => Resource::ListenerSet,
            Kind::HttpRoute => Resource::HttpRoute,
            Kind::GrpcRoute => Resource::GrpcRoute,
            Kind::TlsRoute => Resource::TlsRoute,
            Kind::TcpRoute => Resource::TcpRoute,
            Kind::ReferenceGrant => Resource::ReferenceGrant,
            Kind::Mesh => Resource::Mesh,
            Kind::MeshGatewayConfig => Resource::MeshGatewayConfig,
            Kind::MeshHttpRoute | Kind::GeneratedMeshHttpRoute => Resource::MeshHttpRoute,
            Kind::MeshTcpRoute | Kind::GeneratedMeshTcpRoute => Resource::MeshTcpRoute,
            Kind::GeneratedMeshGateway => Resource::MeshGateway,
            Kind::GeneratedMeshGatewayInstance => Resource::MeshGatewayInstance,
            Kind::Service => Resource::Service,
            Kind::EndpointSlice => Resource::EndpointSlice,
            Kind::Namespace => Resource::Namespace,
            Kind::Secret => Resource::Secret,
            Kind::Pod => Resource::Pod,
            Kind::UnmeshedPod => Resource::UnmeshedPod,
            Kind::GatewayDeployment => Resource::GatewayDeployment,
            Kind::GatewayServiceAccount => Resource::GatewayServiceAccount,
            Kind::GatewayHpa => Resource::GatewayHpa,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Kind::GeneratedMeshGateway => "MeshGateway (generated)",
            Kind::GeneratedMeshGatewayInstance => "MeshGatewayInstance (generated)",
            Kind::GeneratedMeshHttpRoute => "MeshHTTPRoute (generated)",
            Kind::GeneratedMeshTcpRoute => "MeshTCPRoute (generated)",
            Kind::MeshHttpRoute => "MeshHTTPRoute",
            Kind::MeshTcpRoute => "MeshTCPRoute",
            Kind::UnmeshedPod => "Pod (without a proxy)",
            Kind::GatewayDeployment => "Deployment (gateway)",
            Kind::GatewayServiceAccount => "ServiceAccount (gateway)",
            Kind::GatewayHpa => "HorizontalPodAutoscaler (gateway)",
            other => other.resource().kind(),
        };
        f.write_str(name)
    }
}

/// A resource Weft watches: one watcher each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    GatewayClass,
    Gateway,
    ListenerSet,
    HttpRoute,
    GrpcRoute,
    TlsRoute,
    TcpRoute,
    ReferenceGrant,
    Mesh,
    MeshGatewayConfig,
    MeshGateway,
    MeshGatewayInstance,
    MeshHttpRoute,
    MeshTcpRoute,
    Service,
    EndpointSlice,
    Namespace,
    Secret,
    Pod,
    UnmeshedPod,
    GatewayDeployment,
    GatewayServiceAccount,
    GatewayHpa,
}

impl Resource {
    /// Every resource, in a fixed order.
    pub const ALL: [Resource; 23] = [
        Resource::GatewayClass,
        Resource::Gateway,
        Resource::ListenerSet,
        Resource::HttpRoute,
        Resource::GrpcRoute,
        Resource::TlsRoute,
        Resource::TcpRoute,
        Resource::ReferenceGrant,
        Resource::Mesh,
        Resource::MeshGatewayConfig,
        Resource::MeshGateway,
        Resource::MeshGatewayInstance,
        Resource::MeshHttpRoute,
        Resource::MeshTcpRoute,
        Resource::Service,
        Resource::EndpointSlice,
        Resource::Namespace,
        Resource::Secret,
        Resource::Pod,
        Resource::UnmeshedPod,
        Resource::GatewayDeployment,
        Resource::GatewayServiceAccount,
        Resource::GatewayHpa,
    ];

    /// The kinds of the index this resource's watcher fills.
    pub fn kinds(self) -> &'static [Kind] {
        match self {
            Resource::GatewayClass => &[Kind::GatewayClass],
            Resource::Gateway => &[Kind::Gateway],
            Resource::ListenerSet => &[Kind::ListenerSet],
            Resource::HttpRoute => &[Kind::HttpRoute],
            Resource::GrpcRoute => &[Kind::GrpcRoute],
            Resource::TlsRoute => &[Kind::TlsRoute],
            Resource::TcpRoute => &[Kind::TcpRoute],
            Resource::ReferenceGrant => &[Kind::ReferenceGrant],
            Resource::Mesh => &[Kind::Mesh],
            Resource::MeshGatewayConfig => &[Kind::MeshGatewayConfig],
            Resource::MeshGateway => &[Kind::GeneratedMeshGateway],
            Resource::MeshGatewayInstance => &[Kind::GeneratedMeshGatewayInstance],
            Resource::MeshHttpRoute => &[Kind::MeshHttpRoute, Kind::GeneratedMeshHttpRoute],
            Resource::MeshTcpRoute => &[Kind::MeshTcpRoute, Kind::GeneratedMeshTcpRoute],
            Resource::Service => &[Kind::Service],
            Resource::EndpointSlice => &[Kind::EndpointSlice],
            Resource::Namespace => &[Kind::Namespace],
            Resource::Secret => &[Kind::Secret],
            Resource::Pod => &[Kind::Pod],
            Resource::UnmeshedPod => &[Kind::UnmeshedPod],
            Resource::GatewayDeployment => &[Kind::GatewayDeployment],
            Resource::GatewayServiceAccount => &[Kind::GatewayServiceAccount],
            Resource::GatewayHpa => &[Kind::GatewayHpa],
        }
    }

    /// API group (`""` for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Resource::GatewayClass
            | Resource::Gateway
            | Resource::ListenerSet
            | Resource::HttpRoute
            | Resource::GrpcRoute
            | Resource::TlsRoute
            | Resource::TcpRoute
            | Resource::ReferenceGrant => GATEWAY_GROUP,
            Resource::Mesh
            | Resource::MeshGatewayConfig
            | Resource::MeshGateway
            | Resource::MeshGatewayInstance
            | Resource::MeshHttpRoute
            | Resource::MeshTcpRoute => labels::GROUP,
            Resource::EndpointSlice => "discovery.k8s.io",
            Resource::Service
            | Resource::Namespace
            | Resource::Secret
            | Resource::Pod
            | Resource::UnmeshedPod
            | Resource::GatewayServiceAccount => "",
            Resource::GatewayDeployment => "apps",
            Resource::GatewayHpa => "autoscaling",
        }
    }

    /// The kind's name in the API.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::GatewayClass => "GatewayClass",
            Resource::Gateway => "Gateway",
            Resource::ListenerSet => "ListenerSet",
            Resource::HttpRoute => "HTTPRoute",
            Resource::GrpcRoute => "GRPCRoute",
            Resource::TlsRoute => "TLSRoute",
            Resource::TcpRoute => "TCPRoute",
            Resource::ReferenceGrant => "ReferenceGrant",
            Resource::Mesh => "Mesh",
            Resource::MeshGatewayConfig => "MeshGatewayConfig",
            Resource::MeshGateway => "MeshGateway",
            Resource::MeshGatewayInstance => "MeshGatewayInstance",
            Resource::MeshHttpRoute => "MeshHTTPRoute",
            Resource::MeshTcpRoute => "MeshTCPRoute",
            Resource::Service => "Service",
            Resource::EndpointSlice => "EndpointSlice",
            Resource::Namespace => "Namespace",
            Resource::Secret => "Secret",
            Resource::Pod | Resource::UnmeshedPod => "Pod",
            Resource::GatewayDeployment => "Deployment",
            Resource::GatewayServiceAccount => "ServiceAccount",
            Resource::GatewayHpa => "HorizontalPodAutoscaler",
        }
    }

    /// Plural (the resource name in URLs).
    pub fn plural(self) -> &'static str {
        match self {
            Resource::GatewayClass => "gatewayclasses",
            Resource::Gateway => "gateways",
            Resource::ListenerSet => "listenersets",
            Resource::HttpRoute => "httproutes",
            Resource::GrpcRoute => "grpcroutes",
            Resource::TlsRoute => "tlsroutes",
            Resource::TcpRoute => "tcproutes",
            Resource::ReferenceGrant => "referencegrants",
            Resource::Mesh => "meshes",
            Resource::MeshGatewayConfig => "meshgatewayconfigs",
            Resource::MeshGateway => "meshgateways",
            Resource::MeshGatewayInstance => "meshgatewayinstances",
            Resource::MeshHttpRoute => "meshhttproutes",
            Resource::MeshTcpRoute => "meshtcproutes",
            Resource::Service => "services",
            Resource::EndpointSlice => "endpointslices",
            Resource::Namespace => "namespaces",
            Resource::Secret => "secrets",
            Resource::Pod | Resource::UnmeshedPod => "pods",
            Resource::GatewayDeployment => "deployments",
            Resource::GatewayServiceAccount => "serviceaccounts",
            Resource::GatewayHpa => "horizontalpodautoscalers",
        }
    }

    /// Whether the resource comes from a CRD, and so is discovered at run
    /// time.
    pub fn is_custom(self) -> bool {
        !matches!(
            self,
            Resource::Service
                | Resource::EndpointSlice
                | Resource::Namespace
                | Resource::Secret
                | Resource::Pod
                | Resource::UnmeshedPod
                | Resource::GatewayDeployment
                | Resource::GatewayServiceAccount
                | Resource::GatewayHpa
        )
    }

    /// Whether objects are namespaced.
    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Resource::GatewayClass
                | Resource::Mesh
                | Resource::MeshGatewayConfig
                | Resource::MeshGateway
                | Resource::Namespace
        )
    }

    /// Served versions to use, most preferred first. The first is the one
    /// Weft's types describe; objects read at another version are
    /// converted to it (the Gateway API keeps these versions
    /// schema-compatible: an older cluster serves TLSRoute only as
    /// v1alpha2/v1alpha3 and ReferenceGrant only as v1beta1).
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Resource::TlsRoute => &["v1", "v1alpha3", "v1alpha2"],
            Resource::TcpRoute => &["v1alpha2", "v1"],
            Resource::GatewayHpa => &["v2"],
            Resource::GatewayDeployment | Resource::GatewayServiceAccount => &["v1"],
            Resource::ReferenceGrant => &["v1", "v1beta1"],
            Resource::GatewayClass
            | Resource::Gateway
            | Resource::ListenerSet
            | Resource::HttpRoute
            | Resource::GrpcRoute => &["v1"],
            Resource::Mesh
            | Resource::MeshGatewayConfig
            | Resource::MeshGateway
            | Resource::MeshGatewayInstance
            | Resource::MeshHttpRoute
            | Resource::MeshTcpRoute => &["v1alpha1"],
            Resource::EndpointSlice
            | Resource::Service
            | Resource::Namespace
            | Resource::Secret
            | Resource::Pod
            | Resource::UnmeshedPod => &["v1"],
        }
    }

    /// `apiVersion` of Weft's types for this resource.
    pub fn api_version(self) -> String {
        match self.group() {
            "" => "v1".to_string(),
            "apps" => "apps/v1".to_string(),
            "autoscaling" => "autoscaling/v2".to_string(),
            g if g == labels::GROUP => WEFT_API_VERSION.to_string(),
            g => format!("{g}/{}", self.versions()[0]),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}
