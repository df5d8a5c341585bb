//! The leader's writes: generated objects, removal of stale ones, and
//! statuses — each only where the cluster differs from what Weft computed.
//!
//! [`plan`] is a pure function of what Weft wants ([`Desired`]) and what
//! the cluster holds ([`Index`]); [`run`] calls it whenever either changes
//! (and every [`RESYNC`]), and queues the writes. Rules it follows:
//!
//! * Generated objects are server-side applied with field manager
//!   `weft-control-plane`, forced (an edit to a generated object is
//!   reverted), and only when some field Weft sets differs in the cluster.
//! * A generated object Weft no longer wants is deleted with uid and
//!   resourceVersion preconditions, only from a snapshot taken after every
//!   watcher listed. Hand-written Weft routes carry no origin label and are
//!   never touched.
//! * Status is compared without `lastTransitionTime`. Route
//!   `status.parents` is shared with other controllers: their entries are
//!   kept from the object as it is now, and the merge patch carries the
//!   resourceVersion it was computed from.
//! * A write that was sent is not planned again until the object's
//!   resourceVersion moves, so a write the API server treats as a no-op can
//!   never turn into a loop.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kube::api::ApiResource;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use weft_k8s_api::crds::{MeshGatewayInstanceStatus, MeshStatus};
use weft_k8s_api::labels::GATEWAY_CONTROLLER_NAME;
use weft_translate::{ObjectKey, Output};

use crate::compare::{is_subset, same_status, without_nulls};
use crate::index::{Index, Item};
use crate::kinds::{Kind, Resource};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::queue::{self, Limits, Op, Outcome, Part, Queue, Write, WriteKey};
use crate::source::Source;

/// Everything is compared again this often, even when nothing changed.
pub const RESYNC: Duration = Duration::from_secs(600);
/// Changes of what Weft wants arriving within this window cause one pass.
const SETTLE: Duration = Duration::from_millis(50);
/// Changes seen only in the cluster (mostly Weft's own writes coming back
/// through the watch, which need no write) are batched longer: a pass
/// compares every object, and during an initial sync thousands of such
/// echoes arrive.
const CLUSTER_SETTLE: Duration = Duration::from_millis(500);

/// What Weft wants the cluster to hold.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// The translation: generated objects and input statuses.
    pub output: Arc<Output>,
    /// Status of each generated MeshGatewayInstance.
    pub instances: BTreeMap<ObjectKey, MeshGatewayInstanceStatus>,
    /// Status of each Mesh.
    pub meshes: BTreeMap<String, MeshStatus>,
    /// The translation was made from a snapshot taken after every watcher
    /// listed; only then may stale objects be deleted.
    pub complete: bool,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    ObjectKey::new(meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// The body of a server-side apply of a generated object: no status, no
/// server-owned metadata, no nulls.
fn apply_body<T: Serialize>(obj: &T) -> Value {
    let mut v = without_nulls(serde_json::to_value(obj).unwrap_or(Value::Null));
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in ["resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"] {
                meta.remove(field);
            }
        }
    }
    v
}

fn status_body(resource: Resource, key: &ObjectKey, api_version: &str, status: Value) -> Value {
    let mut metadata = json!({"name": key.name});
    if resource.namespaced() {
        metadata["namespace"] = json!(key.namespace);
    }
    json!({"apiVersion": api_version, "kind": resource.kind(), "metadata": metadata, "status": status})
}

/// A planned write with the resourceVersion of the object it was computed
/// from (`""` for an object that does not exist yet).
#[derive(Debug, Clone)]
pub struct Planned {
    pub write: Write,
    pub resource_version: String,
}

/// Counts of a plan, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlanStats {
    pub applies: usize,
    pub deletes: usize,
    pub statuses: usize,
    pub statuses_equal: usize,
}

/// What to write so that the cluster holds `desired`; see the module docs.
/// With `gateways` (the proxy settings), the objects that run each
/// MeshGatewayInstance are provisioned too, once the instance exists (its
/// uid makes it their owner).
pub fn plan(
    desired: &Desired,
    index: &Index,
    served: &BTreeMap<Resource, ApiResource>,
    gateways: Option<&weft_inject::Settings>,
) -> (Vec<Planned>, PlanStats) {
    let mut out = Vec::new();
    let mut stats = PlanStats::default();
    let mut push = |resource: Resource, key: ObjectKey, part: Part, op: Op, rv: &str| {
        let Some(ar) = served.get(&resource) else { return };
        out.push(Planned {
            write: Write { key: WriteKey { resource, key, part }, api_resource: ar.clone(), op },
            resource_version: rv.to_owned(),
        });
    };
    let api_version = |resource: Resource| {
        served.get(&resource).map(|ar| ar.api_version.clone()).unwrap_or_else(|| resource.api_version())
    };

    // Generated objects.
    let o = &desired.output;
    let mut wanted: BTreeMap<Kind, Vec<(ObjectKey, Value)>> = BTreeMap::new();
    wanted.insert(
        Kind::GeneratedMeshGateway,
        o.mesh_gateways.iter().map(|g| (key_of(&g.metadata), apply_body(g))).collect(),
    );
    wanted.insert(
        Kind::GeneratedMeshGatewayInstance,
        o.mesh_gateway_instances.iter().map(|g| (key_of(&g.metadata), apply_body(g))).collect(),
    );
    wanted.insert(
        Kind::GeneratedMeshHttpRoute,
        o.mesh_http_routes.iter().map(|r| (key_of(&r.metadata), apply_body(r))).collect(),
    );
    wanted.insert(
        Kind::GeneratedMeshTcpRoute,
        o.mesh_tcp_routes.iter().map(|r| (key_of(&r.metadata), apply_body(r))).collect(),
    );
    for (kind, objects) in &wanted {
        let resource = kind.resource();
        for (key, body) in objects {
            let current = index.get(*kind, key);
            let up_to_date = current.is_some_and(|e| match &e.item {
                Item::Generated(g) => is_subset(body, &g.value),
                _ => false,
            });
            if !up_to_date {
                stats.applies += 1;
                let rv = current.map(|e| e.resource_version.as_str()).unwrap_or("");
                push(resource, key.clone(), Part::Object, Op::Apply { body: body.clone() }, rv);
            }
        }
        if desired.complete && index.synced() {
            let keep: std::collections::BTreeSet<&ObjectKey> = objects.iter().map(|(k, _)| k).collect();
            for (key, entry) in index.objects(*kind) {
                if !keep.contains(key) {
                    stats.deletes += 1;
                    let op = Op::Delete { uid: entry.uid.clone(), resource_version: entry.resource_version.clone() };
                    push(resource, key.clone(), Part::Object, op, &entry.resource_version);
                }
            }
        }
    }

    // Objects that run the gateways.
    if let Some(settings) = gateways {
        let mut wanted: std::collections::BTreeSet<(Resource, ObjectKey)> = std::collections::BTreeSet::new();
        for mgi in &o.mesh_gateway_instances {
            let key = key_of(&mgi.metadata);
            let Some(instance) = index.get(Kind::GeneratedMeshGatewayInstance, &key) else { continue };
            let mut owned = mgi.clone();
            owned.metadata.uid = Some(instance.uid.clone());
            for p in crate::provision::render(&owned, settings) {
                let resource = match p.kind {
                    "Deployment" => Resource::GatewayDeployment,
                    "ServiceAccount" => Resource::GatewayServiceAccount,
                    "HorizontalPodAutoscaler" => Resource::GatewayHpa,
                    _ => Resource::Service,
                };
                let key = ObjectKey::new(p.namespace.clone(), p.name.clone());
                wanted.insert((resource, key.clone()));
                let current = index.get(resource.kinds()[0], &key);
                let current_json = current.and_then(|e| match &e.item {
                    Item::Generated(g) | Item::GatewayDeployment(g, _) => Some(g.value.clone()),
                    Item::Service(svc) => Some(to_value(svc)),
                    _ => None,
                });
                if !current_json.is_some_and(|c| is_subset(&p.body, &c)) {
                    stats.applies += 1;
                    let rv = current.map(|e| e.resource_version.as_str()).unwrap_or("");
                    push(resource, key, Part::Object, Op::Apply { body: p.body }, rv);
                }
            }
        }
        if desired.complete && index.synced() {
            let provisioned_services = index.objects(Kind::Service).filter(|(_, e)| match &e.item {
                Item::Service(svc) => {
                    svc.metadata.labels.as_ref().is_some_and(|l| l.contains_key(crate::provision::INSTANCE_LABEL))
                }
                _ => false,
            });
            let stale: Vec<(Resource, ObjectKey, String, String)> =
                [Kind::GatewayDeployment, Kind::GatewayServiceAccount, Kind::GatewayHpa]
                    .into_iter()
                    .flat_map(|k| index.objects(k).map(move |(key, e)| (k.resource(), key, e)))
                    .chain(provisioned_services.map(|(key, e)| (Resource::Service, key, e)))
                    .filter(|(r, key, _)| !wanted.contains(&(*r, (*key).clone())))
                    .map(|(r, key, e)| (r, key.clone(), e.uid.clone(), e.resource_version.clone()))
                    .collect();
            for (resource, key, uid, resource_version) in stale {
                stats.deletes += 1;
                let rv = resource_version.clone();
                push(resource, key, Part::Object, Op::Delete { uid, resource_version }, &rv);
            }
        }
    }

    // Statuses Weft owns whole: server-side apply.
    let mut owned = |kind: Kind, key: &ObjectKey, status: Value, stats: &mut PlanStats| {
        let Some(entry) = index.get(kind, key) else { return };
        if same_status(&status, &entry.status) {
            stats.statuses_equal += 1;
            return;
        }
        stats.statuses += 1;
        let resource = kind.resource();
        let body = status_body(resource, key, &api_version(resource), without_nulls(status));
        push(resource, key.clone(), Part::Status, Op::ApplyStatus { body }, &entry.resource_version);
    };
    let s = &o.status;
    for (name, st) in &s.gateway_classes {
        owned(Kind::GatewayClass, &ObjectKey::cluster(name.clone()), to_value(st), &mut stats);
    }
    for (key, st) in &s.gateways {
        owned(Kind::Gateway, key, to_value(st), &mut stats);
    }
    for (key, st) in &s.listener_sets {
        owned(Kind::ListenerSet, key, to_value(st), &mut stats);
    }
    for (key, st) in &s.mesh_http_routes {
        owned(Kind::MeshHttpRoute, key, to_value(st), &mut stats);
    }
    for (key, st) in &s.mesh_tcp_routes {
        owned(Kind::MeshTcpRoute, key, to_value(st), &mut stats);
    }
    for (key, st) in &desired.instances {
        owned(Kind::GeneratedMeshGatewayInstance, key, to_value(st), &mut stats);
    }
    for (name, st) in &desired.meshes {
        owned(Kind::Mesh, &ObjectKey::cluster(name.clone()), to_value(st), &mut stats);
    }

    // Route parents: shared with other controllers.
    let route_statuses: [(Kind, BTreeMap<&ObjectKey, Value>); 4] = [
        (Kind::HttpRoute, s.http_routes.iter().map(|(k, v)| (k, to_value(v))).collect()),
        (Kind::GrpcRoute, s.grpc_routes.iter().map(|(k, v)| (k, to_value(v))).collect()),
        (Kind::TlsRoute, s.tls_routes.iter().map(|(k, v)| (k, to_value(v))).collect()),
        (Kind::TcpRoute, s.tcp_routes.iter().map(|(k, v)| (k, to_value(v))).collect()),
    ];
    for (kind, statuses) in route_statuses {
        for (key, entry) in index.objects(kind) {
            let ours: Vec<Value> = statuses.get(key).map(ours_of).unwrap_or_default();
            let current: Vec<Value> =
                entry.status.get("parents").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut merged: Vec<Value> = current.iter().filter(|p| !is_ours(p)).cloned().collect();
            merged.extend(ours);
            if same_status(&json!({"parents": merged}), &json!({"parents": current})) {
                stats.statuses_equal += 1;
                continue;
            }
            stats.statuses += 1;
            let body = json!({
                "metadata": {"resourceVersion": entry.resource_version},
                "status": {"parents": without_nulls(Value::Array(merged))},
            });
            push(kind.resource(), key.clone(), Part::Status, Op::MergeStatus { body }, &entry.resource_version);
        }
    }
    (out, stats)
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn is_ours(parent: &Value) -> bool {
    parent.get("controllerName").and_then(Value::as_str) == Some(GATEWAY_CONTROLLER_NAME)
}

fn ours_of(status: &Value) -> Vec<Value> {
    status.get("parents").and_then(Value::as_array).into_iter().flatten().filter(|p| is_ours(p)).cloned().collect()
}

/// Writes sent and not yet seen back, by the resourceVersion they were
/// computed from.
#[derive(Debug, Default)]
struct Awaiting {
    by_key: HashMap<WriteKey, String>,
    /// A write failed: try again after a pause.
    retry: bool,
}

/// Writer settings.
#[derive(Debug, Clone, Default)]
pub struct WriterConfig {
    pub limits: Limits,
    /// Provision gateway Deployments and Services with these proxy
    /// settings (`None`: do not provision).
    pub gateways: Option<weft_inject::Settings>,
}

/// Runs the writer forever: plans while this replica leads, drops
/// everything queued when it stops leading, and plans everything again on
/// becoming leader (changes made while nobody led are written then).
pub async fn run(
    client: kube::Client,
    source: Source,
    mut desired: watch::Receiver<Option<Arc<Desired>>>,
    mut leadership: watch::Receiver<Leadership>,
    metrics: Metrics,
    config: WriterConfig,
) {
    let queue = Queue::default();
    let awaiting = Arc::new(Mutex::new(Awaiting::default()));
    let wake = Arc::new(Notify::new());
    let drain = {
        let (awaiting, wake, queue) = (awaiting.clone(), wake.clone(), queue.clone());
        tokio::spawn(queue::drain(
            client,
            queue,
            config.limits,
            leadership.clone(),
            metrics.clone(),
            move |key, outcome| {
                let mut a = awaiting.lock();
                match outcome {
                    Outcome::Done => {}
                    Outcome::NotFound => {
                        a.by_key.remove(key);
                    }
                    Outcome::Conflict => {
                        // The newer object arrives through the watch and
                        // triggers the next pass.
                        a.by_key.remove(key);
                    }
                    Outcome::Failed(_) => {
                        a.by_key.remove(key);
                        a.retry = true;
                        wake.notify_one();
                    }
                    Outcome::NotLeader => a.by_key.clear(),
                }
            },
        ))
    };
    let _stop_drain = AbortOnDrop(drain);
    let mut state = source.state.clone();
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_leader = false;
    let mut retry_backoff = Duration::from_secs(1);
    loop {
        let retry = awaiting.lock().retry;
        let settle = tokio::select! {
            r = desired.changed() => if r.is_err() { return } else { SETTLE },
            r = state.changed() => if r.is_err() { return } else { CLUSTER_SETTLE },
            r = leadership.changed() => if r.is_err() { return } else { SETTLE },
            _ = resync.tick() => SETTLE,
            _ = wake.notified() => SETTLE,
            _ = tokio::time::sleep(retry_backoff), if retry => {
                retry_backoff = (retry_backoff * 2).min(Duration::from_secs(30));
                SETTLE
            }
        };
        if settle == CLUSTER_SETTLE {
            // A change of what Weft wants cuts the wait short.
            tokio::select! {
                _ = tokio::time::sleep(CLUSTER_SETTLE) => {}
                r = desired.changed() => {
                    if r.is_err() {
                        return;
                    }
                    tokio::time::sleep(SETTLE).await;
                }
            }
        } else {
            tokio::time::sleep(settle).await;
        }
        let leader = leadership.borrow().is_leader();
        if !leader {
            if was_leader {
                tracing::info!("not the leader any more: queued writes dropped");
            }
            queue.clear();
            awaiting.lock().by_key.clear();
            was_leader = false;
            continue;
        }
        if !was_leader {
            tracing::info!("leading: comparing everything with the cluster");
            awaiting.lock().by_key.clear();
            was_leader = true;
        }
        let Some(d) = desired.borrow().clone() else { continue };
        let served = state.borrow().served.clone();
        let (planned, stats) = {
            let index = source.index.read();
            let (planned, stats) = plan(&d, &index, &served, config.gateways.as_ref());
            // Forget sent writes whose object has moved since.
            let mut a = awaiting.lock();
            a.by_key.retain(|key, rv| {
                let kind = kind_for(key);
                let current = index.get(kind, &key.key).map(|e| e.resource_version.as_str()).unwrap_or("");
                current == rv
            });
            if a.retry {
                a.retry = false;
            } else {
                retry_backoff = Duration::from_secs(1);
            }
            (planned, stats)
        };
        metrics.status_skipped_equal.inc_by(stats.statuses_equal as u64);
        let mut queued = 0;
        {
            let mut a = awaiting.lock();
            for p in planned {
                if a.by_key.get(&p.write.key) == Some(&p.resource_version) {
                    continue;
                }
                a.by_key.insert(p.write.key.clone(), p.resource_version);
                queue.push(p.write);
                queued += 1;
            }
        }
        if queued > 0 {
            tracing::debug!(queued, ?stats, "writes queued");
        }
        metrics.queue_depth.set(queue.len() as i64);
    }
}

/// The index kind a write's object is stored under.
fn kind_for(key: &WriteKey) -> Kind {
    let kinds = key.resource.kinds();
    // Generated Weft routes are the second kind of their resource; the
    // writer only writes objects (not statuses) of generated routes.
    match (key.resource, key.part) {
        (Resource::MeshHttpRoute | Resource::MeshTcpRoute, Part::Object) => kinds[1],
        _ => kinds[0],
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weft_k8s_api::crds::MeshHTTPRoute;
    use weft_k8s_api::gateway::{GatewayStatus, HttpRouteStatus};

    use super::*;
    use crate::index::{Event, convert};

    fn served() -> BTreeMap<Resource, ApiResource> {
        Resource::ALL
            .into_iter()
            .map(|r| {
                let ar = ApiResource {
                    group: r.group().into(),
                    version: r.versions()[0].into(),
                    api_version: r.api_version(),
                    kind: r.kind().into(),
                    plural: r.plural().into(),
                };
                (r, ar)
            })
            .collect()
    }

    fn index_with(objects: &[(Resource, Value)]) -> Index {
        let mut index = Index::new();
        let mut resources: Vec<Resource> = objects.iter().map(|(r, _)| *r).collect();
        resources.sort();
        resources.dedup();
        for r in &resources {
            index.apply(Event::Started(*r));
            index.apply(Event::Init(*r));
        }
        for (r, v) in objects {
            index.apply(Event::Apply { resource: *r, init: true, object: convert(*r, v.clone()) });
        }
        for r in resources {
            index.apply(Event::InitDone(r));
        }
        index
    }

    fn generated_route(name: &str, weight: i64) -> Value {
        json!({"apiVersion": "weft.io/v1alpha1", "kind": "MeshHTTPRoute",
            "metadata": {"name": name, "namespace": "shop",
                         "labels": {"weft.io/origin-kind": "HTTPRoute", "weft.io/origin-name": "r"}},
            "spec": {"targetRef": {"kind": "Mesh"},
                     "rules": [{"backendRefs": [{"kind": "Service", "name": "v1", "namespace": "shop", "port": 80, "weight": weight}]}]}})
    }

    fn in_cluster(mut v: Value, rv: &str) -> Value {
        v["metadata"]["resourceVersion"] = json!(rv);
        v["metadata"]["uid"] = json!(format!("uid-{rv}"));
        // Fields other managers or API-server defaults add must not look
        // like drift.
        v["metadata"]["annotations"] = json!({"example.com/note": "added by someone else"});
        v["spec"]["rules"][0]["backendRefs"][0]["example"] = json!("a default");
        v
    }

    fn desired_routes(routes: &[Value], complete: bool) -> Desired {
        let output = Output {
            mesh_http_routes: routes
                .iter()
                .map(|r| serde_json::from_value::<MeshHTTPRoute>(r.clone()).unwrap())
                .collect(),
            ..Default::default()
        };
        Desired { output: Arc::new(output), complete, ..Default::default() }
    }

    fn ops(planned: &[Planned]) -> Vec<(String, String)> {
        planned
            .iter()
            .map(|p| {
                let op = match &p.write.op {
                    Op::Apply { .. } => "apply",
                    Op::Delete { .. } => "delete",
                    Op::ApplyStatus { .. } => "apply-status",
                    Op::MergeStatus { .. } => "merge-status",
                };
                (op.to_string(), p.write.key.key.to_string())
            })
            .collect()
    }

    #[test]
    fn generated_objects_are_applied_only_when_they_differ() {
        let want = generated_route("a", 90);
        let index = index_with(&[]);
        let (planned, _) = plan(&desired_routes(std::slice::from_ref(&want), true), &index, &served(), None);
        assert_eq!(ops(&planned), vec![("apply".to_string(), "shop/a".to_string())]);
        let Op::Apply { body } = &planned[0].write.op else { panic!("an apply") };
        assert!(body.get("status").is_none() && body["metadata"].get("resourceVersion").is_none());
        assert_eq!(planned[0].resource_version, "");

        let index = index_with(&[(Resource::MeshHttpRoute, in_cluster(want.clone(), "7"))]);
        let (planned, _) = plan(&desired_routes(std::slice::from_ref(&want), true), &index, &served(), None);
        assert!(planned.is_empty(), "{:?}", ops(&planned));

        // Someone changed a weight Weft sets: applied again.
        let index = index_with(&[(Resource::MeshHttpRoute, in_cluster(generated_route("a", 100), "8"))]);
        let (planned, _) = plan(&desired_routes(&[want], true), &index, &served(), None);
        assert_eq!(ops(&planned), vec![("apply".to_string(), "shop/a".to_string())]);
        assert_eq!(planned[0].resource_version, "8");
    }

    #[test]
    fn stale_generated_objects_are_deleted_only_from_a_complete_snapshot_and_handwritten_never() {
        let handwritten = json!({"apiVersion": "weft.io/v1alpha1", "kind": "MeshHTTPRoute",
            "metadata": {"name": "by-hand", "namespace": "shop", "resourceVersion": "3"},
            "spec": {"targetRef": {"kind": "Mesh"}}});
        let index = index_with(&[
            (Resource::MeshHttpRoute, in_cluster(generated_route("stale", 1), "5")),
            (Resource::MeshHttpRoute, handwritten),
        ]);
        let (planned, _) = plan(&desired_routes(&[], true), &index, &served(), None);
        assert_eq!(ops(&planned), vec![("delete".to_string(), "shop/stale".to_string())]);
        let Op::Delete { uid, resource_version } = &planned[0].write.op else { panic!("a delete") };
        assert_eq!((uid.as_str(), resource_version.as_str()), ("uid-5", "5"));
        let (planned, _) = plan(&desired_routes(&[], false), &index, &served(), None);
        assert!(planned.is_empty(), "deleted from an incomplete snapshot: {:?}", ops(&planned));
    }

    fn route_with_parents(parents: Value) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "shop", "resourceVersion": "11", "generation": 2},
            "spec": {"parentRefs": [{"name": "gw"}]},
            "status": {"parents": parents}})
    }

    fn parent(controller: &str, status: &str, time: &str) -> Value {
        json!({"controllerName": controller, "parentRef": {"name": "gw"},
               "conditions": [{"type": "Accepted", "status": status, "reason": "Accepted", "message": "",
                               "observedGeneration": 2, "lastTransitionTime": time}]})
    }

    #[test]
    fn route_parents_of_other_controllers_are_kept_and_times_alone_are_no_change() {
        let theirs = parent("example.com/other", "True", "2026-01-01T00:00:00Z");
        let index = index_with(&[(
            Resource::HttpRoute,
            route_with_parents(json!([
                theirs.clone(),
                parent(GATEWAY_CONTROLLER_NAME, "False", "2026-01-01T00:00:00Z")
            ])),
        )]);
        let ours_now = parent(GATEWAY_CONTROLLER_NAME, "True", "2026-06-01T00:00:00Z");
        let status: HttpRouteStatus = serde_json::from_value(json!({"parents": [ours_now.clone()]})).unwrap();
        let mut output = Output::default();
        output.status.http_routes.insert(ObjectKey::new("shop", "r"), status);
        let desired = Desired { output: Arc::new(output), complete: true, ..Default::default() };
        let (planned, _) = plan(&desired, &index, &served(), None);
        assert_eq!(ops(&planned), vec![("merge-status".to_string(), "shop/r".to_string())]);
        let Op::MergeStatus { body } = &planned[0].write.op else { panic!("a merge") };
        assert_eq!(body["metadata"]["resourceVersion"], "11");
        let parents = body["status"]["parents"].as_array().unwrap();
        assert_eq!(parents[0]["controllerName"], "example.com/other");
        assert_eq!(parents[1]["conditions"][0]["status"], "True");

        // The cluster already says so (with another transition time).
        let index = index_with(&[(
            Resource::HttpRoute,
            route_with_parents(json!([theirs, parent(GATEWAY_CONTROLLER_NAME, "True", "2025-01-01T00:00:00Z")])),
        )]);
        let (planned, stats) = plan(&desired, &index, &served(), None);
        assert!(planned.is_empty(), "{:?}", ops(&planned));
        assert_eq!(stats.statuses_equal, 1);
    }

    #[test]
    fn owned_statuses_are_applied_when_they_differ() {
        let gateway = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "shop", "resourceVersion": "4"},
            "spec": {"gatewayClassName": "weft", "listeners": []},
            "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}});
        let index = index_with(&[(Resource::Gateway, gateway)]);
        let status = |s: &str| -> GatewayStatus {
            serde_json::from_value(json!({"conditions": [{"type": "Accepted", "status": s, "reason": "Accepted",
                "message": "", "lastTransitionTime": "2026-06-01T00:00:00Z", "observedGeneration": 1}]}))
            .unwrap()
        };
        let mut output = Output::default();
        output.status.gateways.insert(ObjectKey::new("shop", "gw"), status("True"));
        let (planned, _) =
            plan(&Desired { output: Arc::new(output.clone()), ..Default::default() }, &index, &served(), None);
        assert!(planned.is_empty(), "{:?}", ops(&planned));
        output.status.gateways.insert(ObjectKey::new("shop", "gw"), status("False"));
        let (planned, _) = plan(&Desired { output: Arc::new(output), ..Default::default() }, &index, &served(), None);
        assert_eq!(ops(&planned), vec![("apply-status".to_string(), "shop/gw".to_string())]);
        let Op::ApplyStatus { body } = &planned[0].write.op else { panic!("an apply") };
        assert_eq!(body["kind"], "Gateway");
        assert_eq!(body["metadata"], json!({"name": "gw", "namespace": "shop"}));
    }
}
