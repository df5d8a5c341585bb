//! The defaults the Kubernetes API server would apply on write (CRD
//! `default:` values and built-in defaulting). Local mode reads raw YAML, so
//! the loader applies them itself before the translator sees an object.

use serde_json::{Map, Value, json};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

fn object(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

/// Inserts `value` under `key` when the key is absent or null.
fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        None | Some(Value::Null) => {
            map.insert(key.to_string(), value);
        }
        Some(_) => {}
    }
}

/// Calls `f` on each object element of the array at `key`.
fn each(map: &mut Map<String, Value>, key: &str, mut f: impl FnMut(&mut Map<String, Value>)) {
    if let Some(Value::Array(items)) = map.get_mut(key) {
        for item in items.iter_mut().filter_map(object) {
            f(item);
        }
    }
}

/// Calls `f` on the object at `key`, if there is one.
fn with(map: &mut Map<String, Value>, key: &str, f: impl FnOnce(&mut Map<String, Value>)) {
    if let Some(Value::Object(inner)) = map.get_mut(key) {
        f(inner);
    }
}

/// Metadata defaults every object gets: the namespace of a namespaced object
/// and `generation` (1 for a freshly created object).
pub(crate) fn metadata(doc: &mut Value, namespaced: bool) {
    let Some(root) = object(doc) else { return };
    default(root, "metadata", json!({}));
    with(root, "metadata", |meta| {
        if namespaced {
            // Only an absent or empty namespace is defaulted; a value of the
            // wrong type is left for deserialization to report.
            match meta.get("namespace") {
                None | Some(Value::Null) => {
                    meta.insert("namespace".into(), json!("default"));
                }
                Some(Value::String(ns)) if ns.is_empty() => {
                    meta.insert("namespace".into(), json!("default"));
                }
                Some(_) => {}
            }
        } else {
            meta.remove("namespace");
        }
        default(meta, "generation", json!(1));
    });
}

fn parent_ref(r: &mut Map<String, Value>) {
    default(r, "group", json!(GATEWAY_GROUP));
    default(r, "kind", json!("Gateway"));
}

fn backend_ref(r: &mut Map<String, Value>, with_weight: bool) {
    default(r, "group", json!(""));
    default(r, "kind", json!("Service"));
    if with_weight {
        default(r, "weight", json!(1));
    }
}

fn route_spec_common(spec: &mut Map<String, Value>) {
    each(spec, "parentRefs", parent_ref);
}

fn http_filter(f: &mut Map<String, Value>) {
    with(f, "requestMirror", |m| with(m, "backendRef", |r| backend_ref(r, false)));
    with(f, "requestRedirect", |r| default(r, "statusCode", json!(302)));
}

fn http_match(m: &mut Map<String, Value>) {
    default(m, "path", json!({"type": "PathPrefix", "value": "/"}));
    with(m, "path", |p| {
        default(p, "type", json!("PathPrefix"));
        default(p, "value", json!("/"));
    });
    each(m, "headers", |h| default(h, "type", json!("Exact")));
    each(m, "queryParams", |q| default(q, "type", json!("Exact")));
}

/// HTTPRoute: parentRef group/kind, the `PathPrefix /` match of a rule
/// without matches, match types, backendRef group/kind/weight.
pub(crate) fn http_route(doc: &mut Value) {
    let Some(spec) = object(doc).and_then(|r| r.get_mut("spec")).and_then(object) else {
        return;
    };
    route_spec_common(spec);
    default(spec, "rules", json!([{}]));
    each(spec, "rules", |rule| {
        match rule.get("matches") {
            Some(Value::Array(items)) if !items.is_empty() => {}
            _ => {
                rule.insert("matches".into(), json!([{}]));
            }
        }
        each(rule, "matches", http_match);
        each(rule, "filters", http_filter);
        each(rule, "backendRefs", |b| {
            backend_ref(b, true);
            each(b, "filters", http_filter);
        });
    });
}

/// GRPCRoute: parentRef group/kind, method and header match types,
/// backendRef group/kind/weight.
pub(crate) fn grpc_route(doc: &mut Value) {
    let Some(spec) = object(doc).and_then(|r| r.get_mut("spec")).and_then(object) else {
        return;
    };
    route_spec_common(spec);
    each(spec, "rules", |rule| {
        each(rule, "matches", |m| {
            with(m, "method", |method| default(method, "type", json!("Exact")));
            each(m, "headers", |h| default(h, "type", json!("Exact")));
        });
        each(rule, "filters", http_filter);
        each(rule, "backendRefs", |b| {
            backend_ref(b, true);
            each(b, "filters", http_filter);
        });
    });
}

/// TLSRoute and TCPRoute: parentRef and backendRef defaults.
pub(crate) fn l4_route(doc: &mut Value) {
    let Some(spec) = object(doc).and_then(|r| r.get_mut("spec")).and_then(object) else {
        return;
    };
    route_spec_common(spec);
    each(spec, "rules", |rule| each(rule, "backendRefs", |b| backend_ref(b, true)));
}

fn listener(l: &mut Map<String, Value>) {
    default(l, "allowedRoutes", json!({"namespaces": {"from": "Same"}}));
    with(l, "allowedRoutes", |ar| {
        default(ar, "namespaces", json!({"from": "Same"}));
        with(ar, "namespaces", |ns| default(ns, "from", json!("Same")));
        each(ar, "kinds", |k| default(k, "group", json!(GATEWAY_GROUP)));
    });
    with(l, "tls", |tls| {
        default(tls, "mode", json!("Terminate"));
        each(tls, "certificateRefs", |r| {
            default(r, "group", json!(""));
            default(r, "kind", json!("Secret"));
        });
    });
}

/// Gateway: listener allowedRoutes, TLS mode, certificateRef group/kind,
/// address type.
pub(crate) fn gateway(doc: &mut Value) {
    let Some(spec) = object(doc).and_then(|r| r.get_mut("spec")).and_then(object) else {
        return;
    };
    each(spec, "listeners", listener);
    each(spec, "addresses", |a| default(a, "type", json!("IPAddress")));
}

/// ListenerSet: parentRef group/kind and listener defaults.
pub(crate) fn listener_set(doc: &mut Value) {
    let Some(spec) = object(doc).and_then(|r| r.get_mut("spec")).and_then(object) else {
        return;
    };
    with(spec, "parentRef", parent_ref);
    each(spec, "listeners", listener);
}

/// Service: port protocol TCP, targetPort = port, type ClusterIP.
pub(crate) fn service(doc: &mut Value) {
    let Some(spec) = object(doc).and_then(|r| r.get_mut("spec")).and_then(object) else {
        return;
    };
    default(spec, "type", json!("ClusterIP"));
    each(spec, "ports", |p| {
        default(p, "protocol", json!("TCP"));
        if let Some(port) = p.get("port").cloned() {
            default(p, "targetPort", port);
        }
    });
}

/// Namespace: the `kubernetes.io/metadata.name` label the API server adds,
/// which allowedRoutes selectors commonly use.
pub(crate) fn namespace(doc: &mut Value) {
    let Some(meta) = object(doc).and_then(|r| r.get_mut("metadata")).and_then(object) else {
        return;
    };
    let name = meta.get("name").cloned().unwrap_or(Value::Null);
    default(meta, "labels", json!({}));
    with(meta, "labels", |labels| {
        labels.insert("kubernetes.io/metadata.name".into(), name);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_route_defaults_match_the_api_server() {
        let mut doc = json!({"spec": {
            "parentRefs": [{"name": "gw"}, {"kind": "Service", "group": "", "name": "svc"}],
            "rules": [{"backendRefs": [{"name": "b", "port": 80}],
                        "filters": [{"type": "RequestRedirect", "requestRedirect": {}}]},
                      {"matches": [{"headers": [{"name": "x", "value": "y"}]}]}]
        }});
        http_route(&mut doc);
        assert_eq!(doc["spec"]["parentRefs"][0], json!({"group": GATEWAY_GROUP, "kind": "Gateway", "name": "gw"}));
        assert_eq!(doc["spec"]["parentRefs"][1]["group"], json!(""));
        let rule0 = &doc["spec"]["rules"][0];
        assert_eq!(rule0["matches"], json!([{"path": {"type": "PathPrefix", "value": "/"}}]));
        assert_eq!(
            rule0["backendRefs"][0],
            json!({"group": "", "kind": "Service", "name": "b", "port": 80, "weight": 1})
        );
        assert_eq!(rule0["filters"][0]["requestRedirect"]["statusCode"], json!(302));
        let m = &doc["spec"]["rules"][1]["matches"][0];
        assert_eq!(m["headers"][0]["type"], json!("Exact"));
        assert_eq!(m["path"], json!({"type": "PathPrefix", "value": "/"}));
    }

    #[test]
    fn a_route_without_rules_gets_the_default_rule() {
        let mut doc = json!({"spec": {"parentRefs": [{"name": "gw"}]}});
        http_route(&mut doc);
        assert_eq!(doc["spec"]["rules"], json!([{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]));
    }

    #[test]
    fn metadata_defaults() {
        let mut doc = json!({"metadata": {"name": "a"}});
        metadata(&mut doc, true);
        assert_eq!(doc["metadata"], json!({"name": "a", "namespace": "default", "generation": 1}));
        let mut doc = json!({"metadata": {"name": "a", "namespace": "x", "generation": 4}});
        metadata(&mut doc, false);
        assert_eq!(doc["metadata"], json!({"name": "a", "generation": 4}));
    }
}
