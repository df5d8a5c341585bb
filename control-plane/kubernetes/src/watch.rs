//! One watcher per resource: kube-runtime's `watcher` with client-go's
//! backoff, each object converted ([`crate::index::convert`]) before it
//! reaches the index. Objects are read through the dynamic API at the
//! version discovery found served, so one code path serves every kind and
//! an object Weft's types cannot read is reported on its own instead of
//! failing the list (the conversion goes through kube's
//! `DeserializeGuard`).

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use serde_json::Value;
use tokio::sync::mpsc;
use weft_k8s_api::labels;

use crate::index::{self, Event};
use crate::kinds::Resource;
use crate::metrics::Metrics;

/// An event from the watcher of one incarnation of a resource's watch (a
/// resource's watch is restarted when discovery removes and re-adds it;
/// events of an older incarnation are dropped).
#[derive(Debug)]
pub struct Tagged {
    pub incarnation: u64,
    pub event: WatchEvent,
}

/// What a watcher reports.
#[derive(Debug)]
pub enum WatchEvent {
    Index(Event),
    /// The API answered 404 for the resource: discovery should look again.
    NotServed(Resource),
}

/// The watcher configuration Weft uses for a resource: only TLS Secrets
/// (translation needs nothing else) and only meshed pods (those the
/// injector labelled with their mesh).
pub fn config(resource: Resource) -> watcher::Config {
    let config = watcher::Config::default();
    match resource {
        Resource::Secret => config.fields("type=kubernetes.io/tls"),
        Resource::Pod => config.labels(labels::MESH),
        Resource::UnmeshedPod => config.labels(&format!("!{}", labels::MESH)),
        Resource::GatewayDeployment | Resource::GatewayServiceAccount | Resource::GatewayHpa => {
            config.labels(crate::provision::INSTANCE_LABEL)
        }
        _ => config,
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

/// Watches `resource` (served as `api_resource`) until the receiver is
/// gone; never returns an error (failures are retried with backoff).
pub async fn run(
    client: kube::Client,
    resource: Resource,
    api_resource: ApiResource,
    incarnation: u64,
    tx: mpsc::Sender<Tagged>,
    metrics: Metrics,
    tls: std::sync::Arc<crate::tls::TlsCache>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &api_resource);
    let kind_label = Metrics::kind(resource);
    let send = |event: WatchEvent| {
        let tx = tx.clone();
        async move { tx.send(Tagged { incarnation, event }).await.is_ok() }
    };
    let mut stream = watcher(api, config(resource)).default_backoff().boxed();
    let mut reported_not_found = false;
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(watcher::Event::Init) => {
                metrics.relists.get_or_create(&kind_label).inc();
                Event::Init(resource)
            }
            Ok(watcher::Event::InitApply(obj)) => {
                let value = to_value(obj);
                observe_tls(&tls, resource, &value, false);
                Event::Apply { resource, init: true, object: index::convert(resource, value) }
            }
            Ok(watcher::Event::InitDone) => {
                tracing::debug!(%resource, version = %api_resource.version, "listed");
                Event::InitDone(resource)
            }
            Ok(watcher::Event::Apply(obj)) => {
                let value = to_value(obj);
                observe_tls(&tls, resource, &value, false);
                Event::Apply { resource, init: false, object: index::convert(resource, value) }
            }
            Ok(watcher::Event::Delete(obj)) => {
                let value = to_value(obj);
                observe_tls(&tls, resource, &value, true);
                Event::Delete { resource, object: index::convert(resource, value) }
            }
            Err(e) => {
                metrics.watch_errors.get_or_create(&kind_label).inc();
                if is_not_found(&e) {
                    if !reported_not_found {
                        tracing::info!(%resource, "the API server no longer serves this resource");
                        reported_not_found = true;
                        if !send(WatchEvent::NotServed(resource)).await {
                            return;
                        }
                    }
                } else {
                    tracing::warn!(%resource, error = %e, "watch failed; retrying with backoff");
                }
                continue;
            }
        };
        reported_not_found = false;
        if !send(WatchEvent::Index(event)).await {
            return;
        }
    }
}

/// Hands a referenced TLS Secret's material to the certificate cache (the
/// index keeps only a summary).
fn observe_tls(tls: &crate::tls::TlsCache, resource: Resource, value: &Value, deleted: bool) {
    if resource != Resource::Secret {
        return;
    }
    let meta = &value["metadata"];
    let key = weft_translate::ObjectKey::new(
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap_or_default(),
    );
    if !tls.wants(&key) {
        return;
    }
    let material = if deleted {
        None
    } else {
        serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(value.clone())
            .ok()
            .and_then(|s| crate::tls::usable(&s))
    };
    tls.observe(&key, material);
}

fn to_value(obj: DynamicObject) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}
