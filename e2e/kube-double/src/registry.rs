//! Which resources are served: the built-in kinds and the CRDs created so
//! far. Discovery, OpenAPI and routing all read this.

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One served version of a resource.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    /// The structural `openAPIV3Schema` (CRDs only).
    pub schema: Option<Arc<Value>>,
    pub status: bool,
    pub scale: bool,
}

/// A resource type (group + plural), with every version it is served at.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub versions: Vec<VersionInfo>,
    /// Extra subresources with their verbs (e.g. `token` → create).
    pub extra_subresources: Vec<(&'static str, &'static str, Vec<&'static str>)>,
    /// Verbs of the main resource.
    pub verbs: Vec<&'static str>,
    /// True for resources defined by a CustomResourceDefinition.
    pub custom: bool,
}

/// Key of a resource type in the store and the registry.
pub type TypeKey = (String, String);

impl ResourceType {
    pub fn key(&self) -> TypeKey {
        (self.group.clone(), self.plural.clone())
    }

    pub fn version(&self, v: &str) -> Option<&VersionInfo> {
        self.versions.iter().find(|x| x.name == v && x.served)
    }

    pub fn storage_version(&self) -> &str {
        self.versions.iter().find(|v| v.storage).or(self.versions.first()).map(|v| v.name.as_str()).unwrap_or("v1")
    }

    /// Whether the version has a `/status` subresource.
    pub fn has_status(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v.name == version && v.status)
    }

    pub fn gr(&self) -> crate::error::GroupResource<'_> {
        crate::error::GroupResource { group: &self.group, resource: &self.plural }
    }

    pub fn api_version(&self, version: &str) -> String {
        crate::util::group_version(&self.group, version)
    }
}

const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short: &["ns"],
        status: true,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
        short: &["svc"],
        status: true,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short: &["ep"],
        status: false,
    },
    Builtin { group: "", version: "v1", plural: "pods", kind: "Pod", namespaced: true, short: &["po"], status: true },
    Builtin {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        short: &[],
        status: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short: &["cm"],
        status: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        short: &["sa"],
        status: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        status: false,
    },
    Builtin {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        status: false,
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        short: &["deploy"],
        status: true,
    },
    Builtin {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        short: &[],
        status: false,
    },
    Builtin {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "mutatingwebhookconfigurations",
        kind: "MutatingWebhookConfiguration",
        namespaced: false,
        short: &[],
        status: false,
    },
    Builtin {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "validatingwebhookconfigurations",
        kind: "ValidatingWebhookConfiguration",
        namespaced: false,
        short: &[],
        status: false,
    },
    Builtin {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short: &["crd", "crds"],
        status: true,
    },
    Builtin {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
        short: &[],
        status: false,
    },
    Builtin {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "tokenreviews",
        kind: "TokenReview",
        namespaced: false,
        short: &[],
        status: false,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        kind: "Role",
        namespaced: true,
        short: &[],
        status: false,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        kind: "ClusterRole",
        namespaced: false,
        short: &[],
        status: false,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        kind: "RoleBinding",
        namespaced: true,
        short: &[],
        status: false,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short: &[],
        status: false,
    },
    Builtin {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short: &["pdb"],
        status: true,
    },
    Builtin {
        group: "autoscaling",
        version: "v2",
        plural: "horizontalpodautoscalers",
        kind: "HorizontalPodAutoscaler",
        namespaced: true,
        short: &["hpa"],
        status: true,
    },
];

/// The served resource types.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: BTreeMap<TypeKey, Arc<ResourceType>>,
    /// Bumped on every change, so OpenAPI URLs change and kubectl refetches.
    pub generation: u64,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut r = Registry::default();
        for b in BUILTINS {
            let mut extra = Vec::new();
            let mut verbs: Vec<&'static str> = ALL_VERBS.to_vec();
            if b.plural == "serviceaccounts" {
                extra.push(("token", "TokenRequest", vec!["create"]));
            }
            if b.plural == "tokenreviews" {
                verbs = vec!["create"];
            }
            let rt = ResourceType {
                group: b.group.to_string(),
                plural: b.plural.to_string(),
                singular: b.kind.to_lowercase(),
                kind: b.kind.to_string(),
                list_kind: format!("{}List", b.kind),
                namespaced: b.namespaced,
                short_names: b.short.iter().map(|s| s.to_string()).collect(),
                categories: if b.group.is_empty() || b.group == "apps" { vec!["all".to_string()] } else { vec![] },
                versions: vec![VersionInfo {
                    name: b.version.to_string(),
                    served: true,
                    storage: true,
                    schema: None,
                    status: b.status,
                    scale: false,
                }],
                extra_subresources: extra,
                verbs,
                custom: false,
            };
            r.types.insert(rt.key(), Arc::new(rt));
        }
        r
    }

    pub fn get(&self, group: &str, plural: &str) -> Option<&Arc<ResourceType>> {
        self.types.get(&(group.to_string(), plural.to_string()))
    }

    /// Finds a resource type by group, version and kind (for apiVersion/kind
    /// in owner references and request bodies).
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<&Arc<ResourceType>> {
        self.types.values().find(|t| t.group == group && t.kind == kind)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    pub fn insert(&mut self, rt: ResourceType) {
        self.types.insert(rt.key(), Arc::new(rt));
        self.generation += 1;
    }

    pub fn remove(&mut self, key: &TypeKey) -> Option<Arc<ResourceType>> {
        self.generation += 1;
        self.types.remove(key)
    }

    /// Groups with their served versions, preferred version first.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values() {
            let entry = out.entry(t.group.clone()).or_default();
            for v in t.versions.iter().filter(|v| v.served) {
                if !entry.contains(&v.name) {
                    entry.push(v.name.clone());
                }
            }
        }
        for versions in out.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    /// Resource types served at `group/version`.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<&Arc<ResourceType>> {
        self.types.values().filter(|t| t.group == group && t.version(version).is_some()).collect()
    }
}

/// Kubernetes version priority: GA > beta > alpha, then by number (as
/// `version.CompareKubeAwareVersionStrings`).
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else { return (0, 0, 0) };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (level, n) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    (level, major, n.parse().unwrap_or(0))
}

/// Builds the resource type a CRD defines. Errors are field errors of the CRD.
pub fn from_crd(crd: &Value) -> Result<ResourceType, Vec<crate::error::FieldError>> {
    use crate::error::FieldError;
    let mut errs = Vec::new();
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let s = |p: &str| crate::util::path_str(&spec, p).unwrap_or("").to_string();
    let group = s("group");
    let plural = s("names.plural");
    let kind = s("names.kind");
    let scope = s("scope");
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    }
    if kind.is_empty() {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    if scope != "Namespaced" && scope != "Cluster" {
        errs.push(FieldError::not_supported(
            "spec.scope",
            &Value::String(scope.clone()),
            &[Value::from("Cluster"), Value::from("Namespaced")],
        ));
    }
    let name = crate::util::name_of(crd);
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            "metadata.name",
            &Value::String(name.to_string()),
            "must be spec.names.plural+\".\"+spec.group".to_string(),
        ));
    }
    let mut versions = Vec::new();
    for (i, v) in spec.get("versions").and_then(Value::as_array).cloned().unwrap_or_default().iter().enumerate() {
        let vname = v.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        if vname.is_empty() {
            errs.push(FieldError::required(&format!("spec.versions[{i}].name"), ""));
        }
        versions.push(VersionInfo {
            name: vname,
            served: v.get("served").and_then(Value::as_bool).unwrap_or(false),
            storage: v.get("storage").and_then(Value::as_bool).unwrap_or(false),
            schema: v.pointer("/schema/openAPIV3Schema").cloned().map(Arc::new),
            status: v.pointer("/subresources/status").is_some(),
            scale: v.pointer("/subresources/scale").is_some(),
        });
    }
    if versions.is_empty() {
        errs.push(FieldError::required("spec.versions", "must have exactly one version marked as storage version"));
    } else if versions.iter().filter(|v| v.storage).count() != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            &Value::Null,
            "must have exactly one version marked as storage version",
        ));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let strs = |p: &str| -> Vec<String> {
        crate::util::path(&spec, p)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let singular = match s("names.singular") {
        x if x.is_empty() => kind.to_lowercase(),
        x => x,
    };
    let list_kind = match s("names.listKind") {
        x if x.is_empty() => format!("{kind}List"),
        x => x,
    };
    Ok(ResourceType {
        group,
        plural,
        singular,
        kind,
        list_kind,
        namespaced: scope == "Namespaced",
        short_names: strs("names.shortNames"),
        categories: strs("names.categories"),
        versions,
        extra_subresources: vec![],
        verbs: ALL_VERBS.to_vec(),
        custom: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order() {
        let mut v = vec!["v1alpha1", "v1beta1", "v1", "v2beta2", "v2"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, vec!["v2", "v1", "v2beta2", "v1beta1", "v1alpha1"]);
    }
}
