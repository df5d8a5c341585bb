//! OpenAPI v3: an index of group-versions and, per group-version, the
//! paths of each resource with `x-kubernetes-group-version-kind` and the
//! `fieldValidation` parameter. That is what makes `kubectl apply
//! --server-side` (default `--validate=strict`) delegate validation to the
//! server. CRD schemas are included under `components.schemas`; built-in
//! kinds get an open object schema.

use crate::registry::{Registry, ResourceType};
use serde_json::{Map, Value, json};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

pub fn index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (g, versions) in reg.groups() {
        for v in versions {
            let p = gv_path(&g, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={:016X}", hash(&format!("{}{p}", reg.generation)))}),
            );
        }
    }
    json!({"paths": paths})
}

fn hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Reverse-DNS schema name, e.g. `io.weft.v1alpha1.Mesh`.
fn schema_name(t: &ResourceType, version: &str) -> String {
    let g = if t.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else {
        t.group.split('.').rev().collect::<Vec<_>>().join(".")
    };
    format!("{g}.{version}.{}", t.kind)
}

pub fn document(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = reg.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let prefix = format!("/{}", gv_path(group, version));
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let fv = json!({"name": "fieldValidation", "in": "query", "uniqueItems": true,
                    "description": "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.",
                    "schema": {"type": "string", "uniqueItems": true}});
    let dry = json!({"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let fm = json!({"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let force = json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}});
    for t in types {
        let gvk = json!({"group": t.group, "kind": t.kind, "version": version});
        let sname = schema_name(t, version);
        let sref = json!({"$ref": format!("#/components/schemas/{sname}")});
        let mut schema = t
            .versions
            .iter()
            .find(|v| v.name == version)
            .and_then(|v| v.schema.as_deref().cloned())
            .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(sname.clone(), schema);
        let response = json!({"200": {"description": "OK", "content": {"application/json": {"schema": sref}}}});
        let op = |action: &str, id: &str, params: Vec<Value>| {
            json!({"operationId": format!("{id}{}", t.kind), "x-kubernetes-action": action,
                   "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": response,
                   "tags": [gv_path(group, version)]})
        };
        let bases: Vec<String> = if t.namespaced {
            vec![format!("{prefix}/namespaces/{{namespace}}/{}", t.plural)]
        } else {
            vec![format!("{prefix}/{}", t.plural)]
        };
        for base in bases {
            let mut coll = Map::new();
            coll.insert("get".into(), op("list", "list", vec![]));
            if t.verbs.contains(&"create") {
                coll.insert("post".into(), op("post", "create", vec![fv.clone(), dry.clone(), fm.clone()]));
            }
            paths.insert(base.clone(), Value::Object(coll));
            let mut item = Map::new();
            item.insert("get".into(), op("get", "read", vec![]));
            item.insert("put".into(), op("put", "replace", vec![fv.clone(), dry.clone(), fm.clone()]));
            item.insert("patch".into(), op("patch", "patch", vec![fv.clone(), dry.clone(), fm.clone(), force.clone()]));
            item.insert("delete".into(), op("delete", "delete", vec![dry.clone()]));
            paths.insert(format!("{base}/{{name}}"), Value::Object(item.clone()));
            if t.has_status(version) {
                paths.insert(format!("{base}/{{name}}/status"), Value::Object(item));
            }
        }
        if t.namespaced {
            paths.insert(format!("{prefix}/{}", t.plural), json!({"get": op("list", "list", vec![])}));
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.5"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
