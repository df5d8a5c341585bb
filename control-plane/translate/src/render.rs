//! Rendering an [`Output`] the way `weftctl translate` prints it: the
//! generated objects, then every input object Weft computed a status for
//! (identified by kind, namespace and name, with that status).

use serde::Serialize;
use serde_json::{Value, json};

use crate::snapshot::{ObjectKey, Snapshot};
use crate::translate::Output;

fn status_doc(
    api_version: &str,
    kind: &str,
    key: &ObjectKey,
    generation: Option<i64>,
    status: &impl Serialize,
) -> Value {
    let mut metadata = json!({"name": key.name});
    if !key.namespace.is_empty() {
        metadata["namespace"] = json!(key.namespace);
    }
    if let Some(g) = generation {
        metadata["generation"] = json!(g);
    }
    json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "status": status})
}

fn object_doc(obj: &impl Serialize) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// Every document, in print order.
pub fn documents(snapshot: &Snapshot, output: &Output) -> Vec<Value> {
    let mut docs = Vec::new();
    docs.extend(output.mesh_gateways.iter().map(object_doc));
    docs.extend(output.mesh_gateway_instances.iter().map(object_doc));
    docs.extend(output.mesh_http_routes.iter().map(object_doc));
    docs.extend(output.mesh_tcp_routes.iter().map(object_doc));
    let s = &output.status;
    const GW: &str = "gateway.networking.k8s.io/v1";
    for (name, st) in &s.gateway_classes {
        let generation = snapshot.gateway_classes.get(name).and_then(|o| o.metadata.generation);
        docs.push(status_doc(GW, "GatewayClass", &ObjectKey::cluster(name.clone()), generation, st));
    }
    for (k, st) in &s.gateways {
        docs.push(status_doc(GW, "Gateway", k, snapshot.gateways.get(k).and_then(|o| o.metadata.generation), st));
    }
    for (k, st) in &s.listener_sets {
        docs.push(status_doc(
            GW,
            "ListenerSet",
            k,
            snapshot.listener_sets.get(k).and_then(|o| o.metadata.generation),
            st,
        ));
    }
    for (k, st) in &s.http_routes {
        docs.push(status_doc(GW, "HTTPRoute", k, snapshot.http_routes.get(k).and_then(|o| o.metadata.generation), st));
    }
    for (k, st) in &s.grpc_routes {
        docs.push(status_doc(GW, "GRPCRoute", k, snapshot.grpc_routes.get(k).and_then(|o| o.metadata.generation), st));
    }
    for (k, st) in &s.tls_routes {
        docs.push(status_doc(GW, "TLSRoute", k, snapshot.tls_routes.get(k).and_then(|o| o.metadata.generation), st));
    }
    for (k, st) in &s.tcp_routes {
        docs.push(status_doc(
            "gateway.networking.k8s.io/v1alpha2",
            "TCPRoute",
            k,
            snapshot.tcp_routes.get(k).and_then(|o| o.metadata.generation),
            st,
        ));
    }
    for (k, st) in &s.mesh_http_routes {
        docs.push(status_doc(
            weft_k8s_api::crds::API_VERSION,
            "MeshHTTPRoute",
            k,
            snapshot.mesh_http_routes.get(k).and_then(|o| o.metadata.generation),
            st,
        ));
    }
    for (k, st) in &s.mesh_tcp_routes {
        docs.push(status_doc(
            weft_k8s_api::crds::API_VERSION,
            "MeshTCPRoute",
            k,
            snapshot.mesh_tcp_routes.get(k).and_then(|o| o.metadata.generation),
            st,
        ));
    }
    docs
}

/// The documents as one YAML stream.
pub fn to_yaml(docs: &[Value]) -> String {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(doc).unwrap_or_default());
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// The documents as a JSON list (`kind: List`).
pub fn to_json(docs: &[Value]) -> String {
    serde_json::to_string_pretty(&json!({"apiVersion": "v1", "kind": "List", "items": docs})).unwrap_or_default()
}
