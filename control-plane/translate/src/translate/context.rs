//! Lookups shared by every part of the translation: meshes, namespaces,
//! ReferenceGrants and Services.

use std::collections::BTreeMap;

use weft_k8s_api::gateway::ReferenceGrant;
use weft_k8s_api::k8s_openapi::api::core::v1::{Service, ServicePort};
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use weft_k8s_api::labels;

use crate::snapshot::{ObjectKey, Snapshot};

/// Read-only view of the snapshot with the indexes translation needs.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub snapshot: &'a Snapshot,
    pub now: &'a Time,
    grants_by_namespace: BTreeMap<&'a str, Vec<&'a ReferenceGrant>>,
    services: rustc_hash::FxHashMap<(&'a str, &'a str), &'a Service>,
    /// Namespaces that name a mesh.
    namespace_meshes: rustc_hash::FxHashMap<&'a str, &'a str>,
}

/// The group of core kinds, normalised: Gateway API writes it as `""`, some
/// users as `core`.
pub(crate) fn core_group(group: Option<&str>) -> bool {
    matches!(group, None | Some("") | Some("core"))
}

impl<'a> Ctx<'a> {
    pub fn new(snapshot: &'a Snapshot, now: &'a Time) -> Self {
        let mut grants_by_namespace: BTreeMap<&str, Vec<&ReferenceGrant>> = BTreeMap::new();
        for (key, grant) in &snapshot.reference_grants {
            grants_by_namespace.entry(key.namespace.as_str()).or_default().push(grant);
        }
        let services = snapshot.services.iter().map(|(k, s)| ((k.namespace.as_str(), k.name.as_str()), s)).collect();
        let namespace_meshes =
            snapshot.namespaces.iter().filter_map(|(name, ns)| Some((name.as_str(), mesh_in(&ns.metadata)?))).collect();
        Self { snapshot, now, grants_by_namespace, services, namespace_meshes }
    }

    /// Labels of a namespace; a namespace without an object has only the
    /// `kubernetes.io/metadata.name` label the API server would give it.
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        match self.snapshot.namespaces.get(namespace) {
            Some(ns) => ns.metadata.labels.clone().unwrap_or_default(),
            None => BTreeMap::from([("kubernetes.io/metadata.name".to_string(), namespace.to_string())]),
        }
    }

    /// The mesh an object belongs to: its `weft.io/mesh` annotation (or
    /// label), else its namespace's, else `default`.
    pub fn mesh_of(&self, meta: &'a ObjectMeta, namespace: &str) -> &'a str {
        mesh_in(meta).or_else(|| self.namespace_meshes.get(namespace).copied()).unwrap_or(labels::DEFAULT_MESH)
    }

    /// Whether a mesh exists: `default` always does, others need a Mesh.
    pub fn mesh_exists(&self, mesh: &str) -> bool {
        mesh == labels::DEFAULT_MESH || self.snapshot.meshes.contains_key(mesh)
    }

    /// Whether a ReferenceGrant in `to_namespace` lets objects of
    /// `from_group/from_kind` in `from_namespace` refer to `to_group/to_kind`
    /// named `to_name`.
    pub fn reference_granted(
        &self,
        from: (&str, &str, &str),
        to_group: &str,
        to_kind: &str,
        to_namespace: &str,
        to_name: &str,
    ) -> bool {
        let (from_group, from_kind, from_namespace) = from;
        let same_group = |a: &str, b: &str| a == b || (core_group(Some(a)) && core_group(Some(b)));
        self.grants_by_namespace.get(to_namespace).is_some_and(|grants| {
            grants.iter().any(|g| {
                g.spec
                    .from
                    .iter()
                    .any(|f| same_group(&f.group, from_group) && f.kind == from_kind && f.namespace == from_namespace)
                    && g.spec.to.iter().any(|t| {
                        same_group(&t.group, to_group)
                            && t.kind == to_kind
                            && t.name.as_deref().is_none_or(|n| n.is_empty() || n == to_name)
                    })
            })
        })
    }

    /// A Service by namespace and name, without allocating a key.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&'a Service> {
        self.services.get(&(namespace, name)).copied()
    }
}

fn mesh_in(meta: &ObjectMeta) -> Option<&str> {
    fn from(m: &Option<BTreeMap<String, String>>) -> Option<&str> {
        m.as_ref().and_then(|m| m.get(labels::MESH)).filter(|v| !v.is_empty()).map(String::as_str)
    }
    from(&meta.annotations).or_else(|| from(&meta.labels))
}

/// The ports of a Service.
pub(crate) fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or(&[])
}

/// True for a headless Service (`clusterIP: None`).
pub(crate) fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// How a Service port's traffic can be handled, from `appProtocol` or the
/// port name (Weft's documented rule, see docs/translation.md, "Service ports").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PortProtocol {
    /// HTTP/1.1, h2c, gRPC or WebSocket: routed by HTTP rules.
    Http,
    /// Declared as something else: forwarded as opaque TCP.
    Opaque,
    /// Nothing declared: the sidecar detects HTTP, and forwards anything else
    /// as TCP.
    Detect,
}

/// The protocol class of a port. `appProtocol` wins; without it, an
/// Istio-style name prefix (`http`, `http-web`, `grpc`, `tcp-db`...) decides.
pub(crate) fn port_protocol(port: &ServicePort) -> PortProtocol {
    if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
        return PortProtocol::Opaque;
    }
    if let Some(ap) = port.app_protocol.as_deref() {
        return if is_http_app_protocol(ap) { PortProtocol::Http } else { PortProtocol::Opaque };
    }
    let name = port.name.as_deref().unwrap_or("").to_ascii_lowercase();
    let prefix = name.split(['-', '_']).next().unwrap_or("");
    match prefix {
        "http" | "http2" | "h2c" | "grpc" | "grpc-web" | "ws" => PortProtocol::Http,
        "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" | "postgres" | "postgresql" | "kafka" | "amqp" => {
            PortProtocol::Opaque
        }
        _ => PortProtocol::Detect,
    }
}

/// appProtocol values that carry HTTP the sidecar can route.
pub(crate) fn is_http_app_protocol(ap: &str) -> bool {
    matches!(
        ap.to_ascii_lowercase().as_str(),
        "http" | "http2" | "h2c" | "grpc" | "grpc-web" | "ws" | "kubernetes.io/h2c" | "kubernetes.io/ws"
    )
}

/// Ordering key of an object for Gateway API tie-breaking: oldest first,
/// then `namespace/name`.
pub(crate) fn age_key<'k>(meta: &ObjectMeta, key: &'k ObjectKey) -> AgeKey<'k> {
    let created = meta.creation_timestamp.as_ref().map(|t| t.0);
    // Objects without a creation time (local mode) sort after dated ones.
    (created.is_none(), created, key)
}

/// See [`age_key`].
pub(crate) type AgeKey<'k> = (bool, Option<weft_k8s_api::k8s_openapi::jiff::Timestamp>, &'k ObjectKey);
