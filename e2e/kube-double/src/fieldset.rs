//! Field sets in the `FieldsV1` encoding of `managedFields`: `f:<field>` for
//! struct and map fields, `k:{...}` for items of associative lists, `.` for
//! an item (or field) that is itself owned while having owned children.
//! Which lists are associative comes from the CRD schema
//! (`x-kubernetes-list-type: map`) or, for built-in kinds, from a table of
//! the merge keys Kubernetes declares (see [`Types`]).

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How a list is merged and tracked.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    /// Replaced as a whole; owned as one leaf.
    Atomic,
    /// Items keyed by these fields.
    Map(Vec<String>),
    /// Scalars merged as a set by strategic merge patch (tracked atomically by SSA).
    Set,
}

/// Type information for one resource version.
#[derive(Debug, Clone)]
pub struct Types {
    pub schema: Option<Arc<Value>>,
    pub group: String,
    pub kind: String,
}

impl Types {
    pub fn list_type(&self, fpath: &[String]) -> ListType {
        if fpath.first().map(String::as_str) != Some("metadata")
            && let Some(schema) = &self.schema
        {
            let parts: Vec<&str> = fpath.iter().map(String::as_str).collect();
            return match crate::schema::node_at(schema, &parts) {
                Some(node) => match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("map") => ListType::Map(crate::schema::list_map_keys(node)),
                    Some("set") => ListType::Set,
                    _ => ListType::Atomic,
                },
                None => ListType::Atomic,
            };
        }
        builtin_list_type(&self.group, &self.kind, fpath)
    }
}

/// The merge keys of built-in kinds' lists (`patchMergeKey` /
/// `listMapKeys` in the Kubernetes API types).
fn builtin_list_type(group: &str, kind: &str, fpath: &[String]) -> ListType {
    let last = fpath.last().map(String::as_str).unwrap_or("");
    let parent = if fpath.len() >= 2 { fpath[fpath.len() - 2].as_str() } else { "" };
    let keys = |k: &[&str]| ListType::Map(k.iter().map(|s| s.to_string()).collect());
    match last {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => {
            keys(&["name"])
        }
        "volumeMounts" => keys(&["mountPath"]),
        "volumeDevices" => keys(&["devicePath"]),
        "ports" if matches!(parent, "containers" | "initContainers" | "ephemeralContainers") => {
            keys(&["containerPort", "protocol"])
        }
        "ports" if group.is_empty() && kind == "Service" && fpath.len() == 2 => keys(&["port", "protocol"]),
        "conditions" => keys(&["type"]),
        "webhooks" if group == "admissionregistration.k8s.io" => keys(&["name"]),
        "ownerReferences" if parent == "metadata" => keys(&["uid"]),
        "hostAliases" => keys(&["ip"]),
        "topologySpreadConstraints" => keys(&["topologyKey", "whenUnsatisfiable"]),
        "finalizers" => ListType::Set,
        _ => ListType::Atomic,
    }
}

/// Default values of key fields that the API server defaults before
/// computing item keys.
fn key_default(field: &str) -> Option<Value> {
    (field == "protocol").then(|| Value::String("TCP".to_string()))
}

/// The `k:{...}` key of an item of an associative list (keys sorted, as
/// JSON).
pub fn item_key(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    for k in sorted {
        if let Some(v) = item.get(k).cloned().or_else(|| key_default(k)) {
            m.insert(k.clone(), v);
        }
    }
    format!("k:{}", Value::Object(m))
}

/// A set of field paths (a tree; `member` marks a path that is in the set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSet {
    pub member: bool,
    pub children: BTreeMap<String, FieldSet>,
}

pub type Path = Vec<String>;

impl FieldSet {
    pub fn from_v1(v: &Value) -> FieldSet {
        let mut fs = FieldSet::default();
        if let Some(m) = v.as_object() {
            for (k, child) in m {
                if k == "." {
                    fs.member = true;
                } else {
                    let mut c = FieldSet::from_v1(child);
                    if c.children.is_empty() {
                        c.member = true;
                    }
                    fs.children.insert(k.clone(), c);
                }
            }
        }
        fs
    }

    pub fn to_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".to_string(), Value::Object(Map::new()));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.to_v1());
        }
        Value::Object(m)
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    pub fn insert(&mut self, path: &[String]) {
        let mut cur = self;
        for p in path {
            cur = cur.children.entry(p.clone()).or_default();
        }
        cur.member = true;
    }

    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        let mut cur = self;
        for p in path {
            cur = cur.children.get(p)?;
        }
        Some(cur)
    }

    pub fn contains(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// Whether the path or anything below it is in the set.
    pub fn contains_at_or_below(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    /// Whether the path has members below it.
    pub fn has_children(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.children.values().any(|c| !c.is_empty()))
    }

    pub fn remove(&mut self, path: &[String]) {
        fn rec(n: &mut FieldSet, path: &[String]) {
            match path.split_first() {
                None => n.member = false,
                Some((first, rest)) => {
                    if let Some(c) = n.children.get_mut(first) {
                        rec(c, rest);
                        if c.is_empty() {
                            n.children.remove(first);
                        }
                    }
                }
            }
        }
        rec(self, path);
    }

    pub fn paths(&self) -> Vec<Path> {
        fn rec(n: &FieldSet, cur: &mut Path, out: &mut Vec<Path>) {
            if n.member {
                out.push(cur.clone());
            }
            for (k, c) in &n.children {
                cur.push(k.clone());
                rec(c, cur, out);
                cur.pop();
            }
        }
        let mut out = Vec::new();
        rec(self, &mut Vec::new(), &mut out);
        out
    }

    pub fn union(&mut self, other: &FieldSet) {
        for p in other.paths() {
            self.insert(&p);
        }
    }
}

/// Which top-level parts of an object a field set covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scope {
    /// Everything but server-managed metadata (and `status` when
    /// `exclude_status`, for kinds with a status subresource).
    Main { exclude_status: bool },
    /// Only `status` (writes to the `/status` subresource).
    Status,
}

const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// The field set of an object (every leaf, every associative-list item).
pub fn of_object(obj: &Value, types: &Types, scope: Scope) -> FieldSet {
    let mut out = FieldSet::default();
    let Some(map) = obj.as_object() else { return out };
    for (k, v) in map {
        let take = match (scope, k.as_str()) {
            (_, "apiVersion" | "kind") => false,
            (Scope::Status, "status") => true,
            (Scope::Status, _) => false,
            (Scope::Main { exclude_status }, "status") => !exclude_status,
            _ => true,
        };
        if !take {
            continue;
        }
        let mut epath = vec![format!("f:{k}")];
        let mut fpath = vec![k.clone()];
        if k == "metadata" {
            if let Some(m) = v.as_object() {
                for (mk, mv) in m {
                    if SERVER_METADATA.contains(&mk.as_str()) {
                        continue;
                    }
                    epath.push(format!("f:{mk}"));
                    fpath.push(mk.clone());
                    walk(mv, types, &mut fpath, &mut epath, &mut out);
                    epath.pop();
                    fpath.pop();
                }
            }
            continue;
        }
        walk(v, types, &mut fpath, &mut epath, &mut out);
    }
    out
}

fn walk(v: &Value, types: &Types, fpath: &mut Vec<String>, epath: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                epath.push(format!("f:{k}"));
                fpath.push(k.clone());
                walk(c, types, fpath, epath, out);
                epath.pop();
                fpath.pop();
            }
        }
        Value::Array(items) => match types.list_type(fpath) {
            ListType::Map(keys) if items.iter().all(Value::is_object) => {
                for item in items {
                    epath.push(item_key(item, &keys));
                    out.insert(epath);
                    walk(item, types, fpath, epath, out);
                    epath.pop();
                }
            }
            _ => out.insert(epath),
        },
        _ => out.insert(epath),
    }
}

fn key_matches(item: &Value, encoded: &str) -> bool {
    let Some(json) = encoded.strip_prefix("k:") else { return false };
    let Ok(Value::Object(want)) = serde_json::from_str::<Value>(json) else { return false };
    want.iter().all(|(k, v)| item.get(k).cloned().or_else(|| key_default(k)).as_ref() == Some(v))
}

/// The value at an encoded path.
pub fn get_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for p in path {
        cur = if let Some(f) = p.strip_prefix("f:") {
            cur.as_object()?.get(f)?
        } else {
            cur.as_array()?.iter().find(|i| key_matches(i, p))?
        };
    }
    Some(cur)
}

fn get_at_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for p in path {
        cur = if let Some(f) = p.strip_prefix("f:") {
            cur.as_object_mut()?.get_mut(f)?
        } else {
            cur.as_array_mut()?.iter_mut().find(|i| key_matches(i, p))?
        };
    }
    Some(cur)
}

/// Removes the field or item at an encoded path; returns whether it existed.
pub fn remove_at(obj: &mut Value, path: &[String]) -> bool {
    let Some((last, parent)) = path.split_last() else { return false };
    let Some(p) = get_at_mut(obj, parent) else { return false };
    if let Some(f) = last.strip_prefix("f:") {
        p.as_object_mut().is_some_and(|m| m.remove(f).is_some())
    } else if let Some(a) = p.as_array_mut() {
        let before = a.len();
        a.retain(|i| !key_matches(i, last));
        a.len() != before
    } else {
        false
    }
}

/// Renders a path as the API server does in conflict messages:
/// `.spec.containers[name="x"].image`.
pub fn display(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if let Some(f) = p.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = p.strip_prefix("k:")
            && let Ok(Value::Object(m)) = serde_json::from_str::<Value>(k)
        {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_like_the_api_server() {
        let types = Types { schema: None, group: "apps".into(), kind: "Deployment".into() };
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"app": "x"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}}}});
        let fs = of_object(&obj, &types, Scope::Main { exclude_status: true });
        let v1 = fs.to_v1();
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}}}})
        );
        assert_eq!(FieldSet::from_v1(&v1), fs);
        let p = vec![
            "f:spec".into(),
            "f:template".into(),
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"c\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(get_at(&obj, &p), Some(&json!("i")));
        assert_eq!(display(&p), ".spec.template.spec.containers[name=\"c\"].image");
    }
}
