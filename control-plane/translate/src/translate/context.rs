//! Lookups shared by every part of the translation: meshes, namespaces,
//! ReferenceGrants and Services.

use std::collections::BTreeMap;

use weft_k8s_api::gateway::ReferenceGrant;
use weft_k8s_api::k8s_openapi::api::core::v1::Service;
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

pub(crate) use crate::ports::{
    PortProtocol, is_h2_app_protocol, is_headless, is_http_app_protocol, port_protocol, service_ports,
};

/// Ordering key of an object for Gateway API tie-breaking: oldest first,
/// then `namespace/name`.
pub(crate) fn age_key<'k>(meta: &ObjectMeta, key: &'k ObjectKey) -> AgeKey<'k> {
    let created = meta.creation_timestamp.as_ref().map(|t| t.0);
    // Objects without a creation time (local mode) sort after dated ones.
    (created.is_none(), created, key)
}

/// See [`age_key`].
pub(crate) type AgeKey<'k> = (bool, Option<weft_k8s_api::k8s_openapi::jiff::Timestamp>, &'k ObjectKey);
