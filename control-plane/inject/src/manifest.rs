//! Injection over YAML manifests, as `weftctl inject` does it: every pod
//! template of Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets,
//! Jobs and CronJobs (and of the items of Lists) is injected; other
//! documents pass through unchanged.

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::{InjectError, Mode, NamespaceInfo, Outcome, Settings, inject};

/// What happened to one pod template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// 1-based document number.
    pub document: usize,
    /// `Kind namespace/name`.
    pub object: String,
    /// `injected`, or why not.
    pub outcome: String,
}

/// Why a manifest cannot be injected.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the input is not YAML: {0}")]
    Yaml(String),
    #[error("document {document} ({object}): {source}")]
    Inject { document: usize, object: String, source: InjectError },
    #[error("document {document} ({object}): field {field}: {message}")]
    Field { document: usize, object: String, field: String, message: String },
}

/// Where a kind keeps its pod template (or the pod itself: empty path).
fn template_path(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    match (api_version, kind) {
        ("v1", "Pod") => Some(&[]),
        ("v1", "ReplicationController")
        | ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch/v1", "Job") => Some(&["spec", "template"]),
        ("batch/v1", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

fn describe(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or("?");
    let name = doc["metadata"]["name"].as_str().or(doc["metadata"]["generateName"].as_str()).unwrap_or("?");
    match doc["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

struct Context<'a> {
    settings: &'a Settings,
    native: bool,
    document: usize,
    notes: Vec<Note>,
}

impl Context<'_> {
    fn field_error(&self, doc: &Value, field: &str, message: impl Into<String>) -> ManifestError {
        ManifestError::Field {
            document: self.document,
            object: describe(doc),
            field: field.into(),
            message: message.into(),
        }
    }

    fn visit(&mut self, doc: &mut Value) -> Result<(), ManifestError> {
        let api_version = doc["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = doc["kind"].as_str().unwrap_or("").to_string();
        if kind == "List" || kind.ends_with("List") && doc.get("items").is_some_and(Value::is_array) {
            if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
                for item in items {
                    self.visit(item)?;
                }
            }
            return Ok(());
        }
        let Some(path) = template_path(&api_version, &kind) else { return Ok(()) };
        let object = describe(doc);
        let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let field = if path.is_empty() { "spec".to_string() } else { format!("{}.spec", path.join(".")) };
        let mut target = &mut *doc;
        for step in path {
            target = target.get_mut(*step).ok_or_else(|| ManifestError::Field {
                document: self.document,
                object: object.clone(),
                field: path.join("."),
                message: "missing".into(),
            })?;
        }
        let metadata: ObjectMeta = match target.get("metadata") {
            Some(m) => serde_json::from_value(m.clone()).map_err(|e| ManifestError::Field {
                document: self.document,
                object: object.clone(),
                field: field.replace("spec", "metadata"),
                message: e.to_string(),
            })?,
            None => ObjectMeta::default(),
        };
        let spec: PodSpec = match target.get("spec") {
            Some(s) => serde_json::from_value(s.clone()).map_err(|e| ManifestError::Field {
                document: self.document,
                object: object.clone(),
                field: field.clone(),
                message: e.to_string(),
            })?,
            None => return Err(self.field_error(doc, &field, "missing")),
        };
        let pod = Pod { metadata, spec: Some(spec), status: None };
        let ns = NamespaceInfo { name: namespace, ..Default::default() };
        let outcome = inject(&pod, &ns, self.settings, self.native, Mode::Explicit)
            .map_err(|source| ManifestError::Inject { document: self.document, object: object.clone(), source })?;
        let outcome = match outcome {
            Outcome::Injected(pod) => {
                let obj = target.as_object_mut().ok_or_else(|| ManifestError::Field {
                    document: self.document,
                    object: object.clone(),
                    field: field.clone(),
                    message: "not an object".into(),
                })?;
                obj.insert("metadata".into(), serde_json::to_value(&pod.metadata).unwrap_or(Value::Null));
                obj.insert("spec".into(), serde_json::to_value(&pod.spec).unwrap_or(Value::Null));
                "injected".to_string()
            }
            Outcome::Skipped(why) => format!("skipped: {}", why.reason()),
        };
        self.notes.push(Note { document: self.document, object, outcome });
        Ok(())
    }
}

/// Injects every pod template of a YAML stream; returns the stream (one
/// document per input document, in order) and what happened to each
/// template.
pub fn inject_yaml(
    text: &str,
    settings: &Settings,
    native_sidecars: bool,
) -> Result<(String, Vec<Note>), ManifestError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    let mut cx = Context { settings, native: native_sidecars, document: 0, notes: Vec::new() };
    let mut out = String::new();
    for (i, mut doc) in docs.into_iter().filter(|d| !d.is_null()).enumerate() {
        cx.document = i + 1;
        cx.visit(&mut doc)?;
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(&doc).map_err(|e| ManifestError::Yaml(e.to_string()))?);
    }
    Ok((out, cx.notes))
}
