//! The mutating admission webhook: AdmissionReview v1 in, JSONPatch out,
//! with `weft-inject` doing the mutation. It answers from the index (the
//! namespace's labels and annotations) and never calls the API server per
//! request: an injector that waits on the API server turns a slow API into
//! blocked pod creation cluster-wide.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use weft_inject::{InjectError, Mode, NamespaceInfo, Outcome, Settings};
use weft_translate::ObjectKey;

use crate::index::{Index, Item};
use crate::kinds::Kind;
use crate::metrics::KindLabels;

/// Metrics of the webhook.
#[derive(Debug, Clone)]
pub struct InjectorMetrics {
    /// Admissions by outcome (`injected`, `skipped`, `refused`, `invalid`,
    /// `other-operation`).
    pub admissions: Family<KindLabels, Counter>,
    /// Time to answer an admission.
    pub seconds: Histogram,
}

impl Default for InjectorMetrics {
    fn default() -> Self {
        InjectorMetrics { admissions: Family::default(), seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)) }
    }
}

impl InjectorMetrics {
    /// Registers into `registry` (under `injector_`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("injector");
        r.register("admissions", "Pod admissions by outcome (label kind)", self.admissions.clone());
        r.register("admission_seconds", "Time to answer a pod admission", self.seconds.clone());
    }
}

/// The webhook's logic.
#[derive(Debug)]
pub struct Injector {
    pub settings: Settings,
    /// Native sidecars (Kubernetes 1.29+) unless a pod says otherwise.
    pub native_sidecars: bool,
    index: Arc<RwLock<Index>>,
    metrics: InjectorMetrics,
}

/// A webhook answer: HTTP status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Injector {
    pub fn new(settings: Settings, native_sidecars: bool, index: Arc<RwLock<Index>>, metrics: InjectorMetrics) -> Self {
        Injector { settings, native_sidecars, index, metrics }
    }

    fn namespace(&self, name: &str) -> NamespaceInfo {
        let index = self.index.read();
        let meta = index.get(Kind::Namespace, &ObjectKey::cluster(name)).and_then(|e| match &e.item {
            Item::Namespace(ns) => Some(ns.metadata.clone()),
            _ => None,
        });
        NamespaceInfo {
            name: name.to_owned(),
            labels: meta.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default(),
            annotations: meta.and_then(|m| m.annotations).unwrap_or_default(),
        }
    }

    fn count(&self, outcome: &str) {
        self.metrics.admissions.get_or_create(&KindLabels { kind: outcome.to_owned() }).inc();
    }

    /// Answers one AdmissionReview.
    pub fn admit(&self, body: &[u8]) -> Answer {
        let started = Instant::now();
        let answer = self.review(body);
        self.metrics.seconds.observe(started.elapsed().as_secs_f64());
        answer
    }

    fn review(&self, body: &[u8]) -> Answer {
        let respond = |response: AdmissionResponse| Answer { status: 200, body: encode(response) };
        let review: AdmissionReview<Pod> = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                self.count("invalid");
                tracing::warn!(error = %e, "an admission request that is not an AdmissionReview of a Pod");
                return respond(AdmissionResponse::invalid(format!("not an AdmissionReview of a Pod: {e}")));
            }
        };
        let request: AdmissionRequest<Pod> = match review.try_into() {
            Ok(r) => r,
            Err(e) => {
                self.count("invalid");
                return respond(AdmissionResponse::invalid(format!("the AdmissionReview has no request: {e}")));
            }
        };
        let response = AdmissionResponse::from(&request);
        if request.operation != Operation::Create {
            self.count("other-operation");
            return respond(response);
        }
        let Some(pod) = request.object.as_ref() else {
            self.count("invalid");
            return respond(response.deny("the AdmissionReview carries no pod"));
        };
        let namespace_name = request.namespace.clone().or_else(|| pod.metadata.namespace.clone()).unwrap_or_default();
        let namespace = self.namespace(&namespace_name);
        let name = pod.metadata.name.clone().or_else(|| pod.metadata.generate_name.clone()).unwrap_or_default();
        match weft_inject::inject(pod, &namespace, &self.settings, self.native_sidecars, Mode::Webhook) {
            Ok(Outcome::Injected(injected)) => {
                let before = serde_json::to_value(pod).unwrap_or_default();
                let after = serde_json::to_value(&*injected).unwrap_or_default();
                let patch = json_patch::diff(&before, &after);
                match response.with_patch(patch) {
                    Ok(r) => {
                        self.count("injected");
                        tracing::info!(namespace = %namespace_name, pod = %name, "injected");
                        respond(r)
                    }
                    Err(e) => {
                        self.count("invalid");
                        respond(AdmissionResponse::from(&request).deny(format!("weft injection failed: {e}")))
                    }
                }
            }
            Ok(Outcome::Skipped(why)) => {
                self.count("skipped");
                tracing::debug!(namespace = %namespace_name, pod = %name, reason = why.reason(), "not injected");
                respond(response)
            }
            Err(e) => {
                self.count("refused");
                tracing::warn!(namespace = %namespace_name, pod = %name, error = %e, "pod refused: it cannot be injected");
                respond(refusal(response, &e))
            }
        }
    }
}

/// The review as the API server reads it: kube serializes the patch as an
/// array of numbers, while the API's `[]byte` is conventionally a base64
/// string (what every Go webhook sends), so that is what Weft sends.
fn encode(response: AdmissionResponse) -> Vec<u8> {
    use base64::Engine as _;
    let mut review = serde_json::to_value(response.into_review()).unwrap_or_default();
    if let Some(patch) = review.pointer_mut("/response/patch")
        && let Some(bytes) =
            patch.as_array().map(|a| a.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect::<Vec<u8>>())
    {
        *patch = serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    serde_json::to_vec(&review).unwrap_or_default()
}

/// A pod whose injection settings are wrong is refused with a 400 naming
/// the setting, rather than admitted without its proxy.
fn refusal(response: AdmissionResponse, e: &InjectError) -> AdmissionResponse {
    let mut r = response.deny(format!("weft injection: {e}"));
    r.result.code = 400;
    r.result.reason = "BadRequest".into();
    r
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::index::{Event, convert};
    use crate::kinds::Resource;

    fn injector() -> Injector {
        let mut index = Index::new();
        index.apply(Event::Started(Resource::Namespace));
        index.apply(Event::Init(Resource::Namespace));
        for (name, labels) in [("shop", json!({"weft.io/sidecar-injection": "enabled"})), ("plain", json!({}))] {
            let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}});
            index.apply(Event::Apply {
                resource: Resource::Namespace,
                init: true,
                object: convert(Resource::Namespace, ns),
            });
        }
        index.apply(Event::InitDone(Resource::Namespace));
        Injector::new(Settings::default(), true, Arc::new(RwLock::new(index)), InjectorMetrics::default())
    }

    fn review(namespace: &str, pod: Value, operation: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace, "operation": operation,
                "userInfo": {"username": "admin"},
                "object": pod, "dryRun": false,
            }
        }))
        .unwrap()
    }

    fn pod(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "web-", "annotations": annotations},
               "spec": {"containers": [{"name": "app", "image": "example/app"}]}})
    }

    fn answer(i: &Injector, body: &[u8]) -> Value {
        let a = i.admit(body);
        assert_eq!(a.status, 200);
        serde_json::from_slice::<Value>(&a.body).unwrap()["response"].clone()
    }

    #[test]
    fn pods_of_enabled_namespaces_get_a_patch_that_applies() {
        let i = injector();
        let r = answer(&i, &review("shop", pod(json!({})), "CREATE"));
        assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        use base64::Engine as _;
        let patch: json_patch::Patch = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD.decode(r["patch"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        let mut patched = pod(json!({}));
        json_patch::patch(&mut patched, &patch).unwrap();
        let inits: Vec<&str> =
            patched["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(inits, vec!["weft-init", "weft-proxy"]);
        assert_eq!(patched["metadata"]["labels"]["weft.io/mesh"], "default");
    }

    #[test]
    fn other_pods_pass_unchanged_and_bad_settings_are_refused() {
        let i = injector();
        let r = answer(&i, &review("plain", pod(json!({})), "CREATE"));
        assert_eq!((r["allowed"].as_bool(), r.get("patch")), (Some(true), None));
        let r = answer(&i, &review("shop", pod(json!({})), "UPDATE"));
        assert_eq!((r["allowed"].as_bool(), r.get("patch")), (Some(true), None));
        let r = answer(&i, &review("shop", pod(json!({"weft.io/proxy-memory-limit": "lots"})), "CREATE"));
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["code"], 400);
        assert!(r["status"]["message"].as_str().unwrap().contains("weft.io/proxy-memory-limit"), "{r}");
        let r = answer(&i, b"{\"kind\": \"Nonsense\"}");
        assert_eq!(r["allowed"], false);
        assert!(r["status"]["message"].as_str().unwrap().contains("AdmissionReview"), "{r}");
    }
}
