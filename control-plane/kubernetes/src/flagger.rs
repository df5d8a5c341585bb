//! Pods that should be meshed but are not.
//!
//! With `failurePolicy: Fail` a pod of an injection-enabled namespace is
//! never created without its proxy; but an administrator may switch the
//! webhook to `Ignore`, pods may predate the namespace's label, or the
//! webhook configuration may be missing. Such pods run in plaintext beside
//! a mesh that believes them meshed (kuma#3293, dapr#4171). Weft counts
//! them (`weft_cp_uninjected_pods`), lists them in the admin API, and the
//! leader records a Warning Event on each, once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use parking_lot::RwLock;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use weft_k8s_api::labels;
use weft_translate::ObjectKey;

use crate::index::{Index, Item};
use crate::kinds::Kind;
use crate::leader::Leadership;

/// How often the pods are looked at.
pub const EVERY: Duration = Duration::from_secs(5);

/// Pods of injection-enabled namespaces running without a proxy, with
/// their uid. Opted-out, host-network and finished pods do not count.
pub fn uninjected(index: &Index) -> Vec<(ObjectKey, String)> {
    let enabled: BTreeSet<String> = index
        .objects(Kind::Namespace)
        .filter_map(|(key, e)| match &e.item {
            Item::Namespace(ns) => ns
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::SIDECAR_INJECTION))
                .filter(|v| *v == "enabled")
                .map(|_| key.name.clone()),
            _ => None,
        })
        .collect();
    index
        .objects(Kind::UnmeshedPod)
        .filter(|(key, _)| enabled.contains(&key.namespace))
        .filter_map(|(key, e)| match &e.item {
            Item::UnmeshedPod(p) if !p.host_network && !p.opted_out && !p.finished => {
                Some((key.clone(), e.uid.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Keeps the gauge current and, while leading, records one Event per
/// newly flagged pod. Runs forever.
pub async fn run(
    client: kube::Client,
    index: Arc<RwLock<Index>>,
    leadership: watch::Receiver<Leadership>,
    identity: String,
    gauge: Gauge,
    flagged: Arc<RwLock<Vec<String>>>,
) {
    let recorder =
        Recorder::new(client, Reporter { controller: "weft-control-plane".into(), instance: Some(identity) });
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let pods = uninjected(&index.read());
        gauge.set(pods.len() as i64);
        *flagged.write() = pods.iter().map(|(k, _)| k.to_string()).collect();
        let current: BTreeSet<String> = pods.iter().map(|(_, uid)| uid.clone()).collect();
        reported.retain(|uid| current.contains(uid));
        if !leadership.borrow().is_leader() {
            continue;
        }
        for (key, uid) in pods {
            if reported.contains(&uid) {
                continue;
            }
            tracing::warn!(pod = %key, "pod runs without a proxy in a namespace with injection enabled");
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(key.name.clone()),
                namespace: Some(key.namespace.clone()),
                uid: Some(uid.clone()),
                ..Default::default()
            };
            let event = Event {
                type_: EventType::Warning,
                reason: "NotMeshed".into(),
                note: Some(
                    "runs without a Weft proxy although its namespace has weft.io/sidecar-injection=enabled: \
                     it was created before the label, or while the injection webhook was unavailable with \
                     failurePolicy Ignore; delete it (or roll out its workload) to mesh it"
                        .into(),
                ),
                action: "Flag".into(),
                secondary: None,
            };
            match recorder.publish(&event, &reference).await {
                Ok(()) => {
                    reported.insert(uid);
                }
                Err(e) => tracing::warn!(pod = %key, error = %e, "could not record the NotMeshed event"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::index::{Event as IndexEvent, convert};
    use crate::kinds::Resource;

    #[test]
    fn only_unmeshed_running_pods_of_enabled_namespaces_are_flagged() {
        let mut index = Index::new();
        for r in [Resource::Namespace, Resource::UnmeshedPod] {
            index.apply(IndexEvent::Started(r));
            index.apply(IndexEvent::Init(r));
        }
        let mut add = |r: Resource, v: serde_json::Value| {
            index.apply(IndexEvent::Apply { resource: r, init: true, object: convert(r, v) });
        };
        add(
            Resource::Namespace,
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "shop", "labels": {"weft.io/sidecar-injection": "enabled"}}}),
        );
        add(Resource::Namespace, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "legacy"}}));
        let pod = |ns: &str, name: &str, labels: serde_json::Value, host: bool, phase: &str| {
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": labels},
                "spec": {"hostNetwork": host, "containers": []}, "status": {"phase": phase}})
        };
        add(Resource::UnmeshedPod, pod("shop", "missed", json!({}), false, "Running"));
        add(
            Resource::UnmeshedPod,
            pod("shop", "opted-out", json!({"weft.io/sidecar-injection": "disabled"}), false, "Running"),
        );
        add(Resource::UnmeshedPod, pod("shop", "node-agent", json!({}), true, "Running"));
        add(Resource::UnmeshedPod, pod("shop", "done", json!({}), false, "Succeeded"));
        add(Resource::UnmeshedPod, pod("legacy", "plain", json!({}), false, "Running"));
        for r in [Resource::Namespace, Resource::UnmeshedPod] {
            index.apply(IndexEvent::InitDone(r));
        }
        assert_eq!(uninjected(&index), vec![(ObjectKey::new("shop", "missed"), "uid-missed".to_string())]);
        assert!(index.snapshot().pods.is_empty(), "unmeshed pods are not translator input");
    }
}
