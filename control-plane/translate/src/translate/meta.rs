//! Metadata of generated objects: origin labels, mesh label, owner
//! references. Labels let the runtime find (and garbage-collect) everything
//! generated from one source even where owner references cannot reach.

use std::collections::BTreeMap;

use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use weft_k8s_api::labels;

use super::names::label_value;
use crate::snapshot::ObjectKey;

/// The source object of a generated object.
#[derive(Debug, Clone)]
pub(crate) struct ObjectRef<'a> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub key: &'a ObjectKey,
    pub meta: &'a ObjectMeta,
}

impl<'a> ObjectRef<'a> {
    pub fn of(api_version: &'static str, kind: &'static str, meta: &'a ObjectMeta, key: &'a ObjectKey) -> Self {
        Self { api_version, kind, key, meta }
    }
}

/// Metadata for an object generated from `origin` in `mesh`, placed in
/// `namespace` (None for cluster-scoped objects). The name is set by the
/// caller.
pub(crate) fn generated_meta(origin: &ObjectRef<'_>, mesh: &str, namespace: Option<&str>) -> ObjectMeta {
    let labels = BTreeMap::from([
        (labels::ORIGIN_KIND.to_string(), origin.kind.to_string()),
        (labels::ORIGIN_NAME.to_string(), label_value(&origin.key.name)),
        (labels::ORIGIN_NAMESPACE.to_string(), origin.key.namespace.clone()),
        (labels::MESH.to_string(), label_value(mesh)),
    ]);
    let mut annotations = BTreeMap::from([(labels::ORIGIN_FULL_NAME.to_string(), origin.key.to_string())]);
    if let Some(t) = &origin.meta.creation_timestamp {
        annotations.insert(labels::ORIGIN_CREATION_TIMESTAMP.to_string(), t.0.to_string());
    }
    // Owner references need the source's UID (Kubernetes mode) and the same
    // namespace; objects without one are collected by their origin labels.
    let owner_references =
        origin.meta.uid.as_ref().filter(|uid| !uid.is_empty() && namespace == Some(origin.key.namespace.as_str())).map(
            |uid| {
                vec![OwnerReference {
                    api_version: origin.api_version.to_string(),
                    kind: origin.kind.to_string(),
                    name: origin.key.name.clone(),
                    uid: uid.clone(),
                    controller: Some(true),
                    // Weft never needs foreground deletion, and setting it
                    // would need delete (or finalizers) permission on the owner.
                    block_owner_deletion: None,
                }]
            },
        );
    ObjectMeta {
        namespace: namespace.map(str::to_string),
        labels: Some(labels),
        annotations: Some(annotations),
        owner_references,
        ..Default::default()
    }
}
