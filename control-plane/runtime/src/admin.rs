//! The admin HTTP API: health, readiness, metrics, generated objects,
//! statuses, connected proxies and their configuration. `weftctl` reads it.

use std::sync::{Arc, OnceLock};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value, json};
use tokio::sync::watch;
use weft_compile::{ProxyView, desired_resources};
use weft_translate::render;

use crate::control::Published;
use crate::metrics::Metrics;
use crate::proxies::Proxies;

/// A view the admin API shows as JSON.
pub type View = Arc<dyn Fn() -> Value + Send + Sync>;

/// What a mode adds to the admin API.
#[derive(Clone, Default)]
pub struct Extra {
    /// Kubernetes mode: watched resources, sync state, leadership and
    /// invalid objects, at `/api/v1/kubernetes`.
    pub kubernetes: Option<View>,
}

impl std::fmt::Debug for Extra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extra").field("kubernetes", &self.kubernetes.is_some()).finish()
    }
}

/// What the handlers read.
#[derive(Clone, Debug)]
pub struct AdminState {
    pub published: watch::Receiver<Arc<Published>>,
    pub proxies: Arc<Proxies>,
    pub metrics: Arc<Metrics>,
    pub extra: Extra,
}

/// The admin API's routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/errors", get(errors))
        .route("/api/v1/generated/{kind}", get(generated))
        .route("/api/v1/status/{kind}/{name}", get(status_cluster))
        .route("/api/v1/status/{kind}/{namespace}/{name}", get(status_namespaced))
        .route("/api/v1/proxies", get(proxies))
        .route("/api/v1/proxies/{namespace}/{name}/config", get(proxy_config))
        .route("/api/v1/kubernetes", get(kubernetes))
        .with_state(state)
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": what}))).into_response()
}

async fn ready(State(s): State<AdminState>) -> Response {
    if s.published.borrow().loaded {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no configuration loaded yet").into_response()
    }
}

async fn metrics(State(s): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = s.metrics.encode(accept);
    ([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn kubernetes(State(s): State<AdminState>) -> Response {
    match &s.extra.kubernetes {
        Some(view) => Json(view()).into_response(),
        None => not_found("the control plane runs in local mode".into()),
    }
}

async fn errors(State(s): State<AdminState>) -> Json<Value> {
    let p = s.published.borrow().clone();
    Json(json!({"generation": p.generation, "errors": *p.load_errors}))
}

async fn generated(State(s): State<AdminState>, Path(kind): Path<String>) -> Response {
    let p = s.published.borrow().clone();
    let items = match kind.to_ascii_lowercase().as_str() {
        "meshgateways" | "meshgateway" => serde_json::to_value(&p.output.mesh_gateways),
        "meshgatewayinstances" | "meshgatewayinstance" => serde_json::to_value(&p.output.mesh_gateway_instances),
        "meshhttproutes" | "meshhttproute" => serde_json::to_value(&p.output.mesh_http_routes),
        "meshtcproutes" | "meshtcproute" => serde_json::to_value(&p.output.mesh_tcp_routes),
        other => {
            return not_found(format!(
                "unknown kind {other:?}; use meshgateways, meshgatewayinstances, meshhttproutes or meshtcproutes"
            ));
        }
    };
    Json(json!({"generation": p.generation, "items": items.unwrap_or(Value::Null)})).into_response()
}

fn find_status(p: &Published, kind: &str, namespace: Option<&str>, name: &str) -> Response {
    for doc in render::documents(&p.snapshot, &p.output) {
        let doc_kind = doc["kind"].as_str().unwrap_or("");
        let matches_kind = doc_kind.eq_ignore_ascii_case(kind) || format!("{doc_kind}s").eq_ignore_ascii_case(kind);
        if matches_kind && doc["metadata"]["name"] == name && doc["metadata"]["namespace"].as_str() == namespace {
            return Json(doc).into_response();
        }
    }
    not_found(format!("no status for {kind} {}{name}", namespace.map(|n| format!("{n}/")).unwrap_or_default()))
}

async fn status_cluster(State(s): State<AdminState>, Path((kind, name)): Path<(String, String)>) -> Response {
    let p = s.published.borrow().clone();
    find_status(&p, &kind, None, &name)
}

async fn status_namespaced(
    State(s): State<AdminState>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Response {
    let p = s.published.borrow().clone();
    find_status(&p, &kind, Some(&namespace), &name)
}

async fn proxies(State(s): State<AdminState>) -> Json<Value> {
    Json(json!({"items": s.proxies.list()}))
}

fn descriptors() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(weft_api::FILE_DESCRIPTOR_SET).unwrap_or_default())
}

/// A resource as proto3 JSON. A listener certificate's key is never shown:
/// the admin API may be reachable beyond the control plane's own pod.
pub fn resource_json(resource: &weft_api::Resource) -> Value {
    let Some(desc) = descriptors().get_message_by_name("weft.config.v1.Resource") else {
        return Value::Null;
    };
    let mut resource = resource.clone();
    if let Some(weft_api::resource::Kind::Certificate(c)) = resource.kind.as_mut() {
        c.key_pem = "(not shown)".into();
    }
    match DynamicMessage::decode(desc, resource.encode_to_vec().as_slice()) {
        Ok(m) => serde_json::to_value(&m).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn proxy_config(State(s): State<AdminState>, Path((namespace, name)): Path<(String, String)>) -> Response {
    let id = format!("{namespace}/{name}");
    let Some(status) = s.proxies.get(&id) else {
        return not_found(format!("no proxy {id} is connected"));
    };
    let p = s.published.borrow().clone();
    let workload = weft_api::Workload {
        name,
        namespace,
        labels: status.labels.clone().into_iter().collect(),
        ips: status.ips.clone(),
        role: if status.role == "gateway" { weft_api::Role::Gateway as i32 } else { weft_api::Role::Sidecar as i32 },
        ..Default::default()
    };
    let desired = desired_resources(
        &p.compiled,
        ProxyView { id: &id, workload: &workload, may_hold_keys: status.proven.is_some() },
    );
    let resources: Vec<Value> = desired
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "version": r.version,
                "rejected": status.rejected.get(&r.name),
                "content": resource_json(r),
            })
        })
        .collect();
    Json(json!({"proxy": status, "generation": p.generation, "resources": resources})).into_response()
}
