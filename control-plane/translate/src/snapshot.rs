//! The translator's input: every object it reads, indexed by kind and name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use weft_k8s_api::crds::{Mesh, MeshGatewayConfig, MeshGatewayInstance, MeshHTTPRoute, MeshTCPRoute};
use weft_k8s_api::gateway::{
    Gateway, GatewayClass, GrpcRoute, HttpRoute, ListenerSet, ReferenceGrant, TcpRoute, TlsRoute,
};
use weft_k8s_api::k8s_openapi::api::core::v1::{Namespace, Service};
use weft_k8s_api::k8s_openapi::api::discovery::v1::EndpointSlice;

/// Namespace and name of an object; the namespace is empty for cluster-scoped
/// objects. Ordered so that every map in a [`Snapshot`] iterates the same way
/// whatever order the objects arrived in.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace, or `""` for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A namespaced key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// A cluster-scoped key.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self { namespace: String::new(), name: name.into() }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() { f.write_str(&self.name) } else { write!(f, "{}/{}", self.namespace, self.name) }
    }
}

/// What the translator knows of a Secret: its type and key names, and whether
/// a `kubernetes.io/tls` Secret holds a usable certificate and key. The data
/// itself never enters the snapshot, so it cannot be logged or printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretInfo {
    /// The Secret's `type`.
    pub type_: String,
    /// Names of the keys in `data` and `stringData`.
    pub keys: BTreeSet<String>,
    /// For TLS Secrets: `Ok` when `tls.crt` and `tls.key` parse as a
    /// certificate chain and a private key, else why not.
    pub tls: Option<Result<(), String>>,
}

/// What Kubernetes mode knows of a meshed pod (one carrying the
/// `weft.io/mesh` label its injection gave it): enough to name the identity
/// its proxy presents when an EndpointSlice lists the pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// `spec.serviceAccountName` (`default` when unset).
    pub service_account: String,
    /// The pod's mesh.
    pub mesh: String,
}

/// Everything the translator reads. Built by the loader in local mode and by
/// the watchers in Kubernetes mode, so everything after the source is tested
/// without a cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// GatewayClasses by name.
    pub gateway_classes: BTreeMap<String, GatewayClass>,
    /// Gateways.
    pub gateways: BTreeMap<ObjectKey, Gateway>,
    /// ListenerSets.
    pub listener_sets: BTreeMap<ObjectKey, ListenerSet>,
    /// HTTPRoutes.
    pub http_routes: BTreeMap<ObjectKey, HttpRoute>,
    /// GRPCRoutes.
    pub grpc_routes: BTreeMap<ObjectKey, GrpcRoute>,
    /// TLSRoutes.
    pub tls_routes: BTreeMap<ObjectKey, TlsRoute>,
    /// TCPRoutes.
    pub tcp_routes: BTreeMap<ObjectKey, TcpRoute>,
    /// ReferenceGrants.
    pub reference_grants: BTreeMap<ObjectKey, ReferenceGrant>,
    /// Services.
    pub services: BTreeMap<ObjectKey, Service>,
    /// EndpointSlices (endpoints of Services without proxies).
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// Namespaces by name. A namespace that objects use but that has no
    /// object here still exists, with only its `kubernetes.io/metadata.name`
    /// label.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Secrets, without their data.
    pub secrets: BTreeMap<ObjectKey, SecretInfo>,
    /// Meshes by name.
    pub meshes: BTreeMap<String, Mesh>,
    /// MeshGatewayConfigs by name.
    pub mesh_gateway_configs: BTreeMap<String, MeshGatewayConfig>,
    /// MeshGatewayInstances as the runtime observed them: their status says
    /// whether the gateway's proxies are ready and which addresses they hold.
    pub mesh_gateway_instances: BTreeMap<ObjectKey, MeshGatewayInstance>,
    /// Hand-written MeshHTTPRoutes (generated ones are output, not input).
    pub mesh_http_routes: BTreeMap<ObjectKey, MeshHTTPRoute>,
    /// Hand-written MeshTCPRoutes.
    pub mesh_tcp_routes: BTreeMap<ObjectKey, MeshTCPRoute>,
    /// Meshed pods (Kubernetes mode), for the identities of endpoints.
    pub pods: BTreeMap<ObjectKey, PodInfo>,
    /// Available replicas of each provisioned gateway Deployment
    /// (Kubernetes mode), by namespace and MeshGatewayInstance name.
    pub gateway_deployments: BTreeMap<ObjectKey, i32>,
}

impl Snapshot {
    /// Number of objects held.
    pub fn len(&self) -> usize {
        self.gateway_classes.len()
            + self.gateways.len()
            + self.listener_sets.len()
            + self.http_routes.len()
            + self.grpc_routes.len()
            + self.tls_routes.len()
            + self.tcp_routes.len()
            + self.reference_grants.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.namespaces.len()
            + self.secrets.len()
            + self.meshes.len()
            + self.mesh_gateway_configs.len()
            + self.mesh_gateway_instances.len()
            + self.mesh_http_routes.len()
            + self.mesh_tcp_routes.len()
            + self.pods.len()
            + self.gateway_deployments.len()
    }

    /// True when no object is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
