//! The index: the cluster's objects as the watchers last saw them, one
//! store per [`Kind`], from which the translator's [`Snapshot`] is built
//! and against which the writer compares what Weft wants.
//!
//! Each object is kept with a hash of its "essence" (everything but its
//! status, resourceVersion and managedFields) and of its status, so that a
//! status-only change (most often Weft's own status write coming back) does
//! not cost a translation. An object that fails to convert keeps its last
//! good version here and is listed as invalid; it never stalls the others.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde_json::Value;
use weft_k8s_api::crds::{Mesh, MeshGatewayConfig, MeshHTTPRoute, MeshTCPRoute};
use weft_k8s_api::gateway::{
    Gateway, GatewayClass, GrpcRoute, HttpRoute, ListenerSet, ReferenceGrant, TcpRoute, TlsRoute,
};
use weft_k8s_api::k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use weft_k8s_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use weft_k8s_api::kube::core::DeserializeGuard;
use weft_k8s_api::labels;
use weft_translate::load::secret::summarize;
use weft_translate::{ObjectKey, PodInfo, SecretInfo, Snapshot};

use crate::kinds::{Kind, Resource};

/// A generated object as the cluster holds it: JSON, stripped of
/// `managedFields` and `status`, compared field by field with what Weft
/// wants.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    pub value: Value,
}

/// An object converted to the form Weft uses.
#[derive(Clone, Debug)]
pub enum Item {
    GatewayClass(Box<GatewayClass>),
    Gateway(Box<Gateway>),
    ListenerSet(Box<ListenerSet>),
    HttpRoute(Box<HttpRoute>),
    GrpcRoute(Box<GrpcRoute>),
    TlsRoute(Box<TlsRoute>),
    TcpRoute(Box<TcpRoute>),
    ReferenceGrant(Box<ReferenceGrant>),
    Mesh(Box<Mesh>),
    MeshGatewayConfig(Box<MeshGatewayConfig>),
    MeshHttpRoute(Box<MeshHTTPRoute>),
    MeshTcpRoute(Box<MeshTCPRoute>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Namespace(Box<Namespace>),
    /// Only what translation needs: the key material is dropped as soon as
    /// it has been checked.
    Secret(SecretInfo),
    Pod(PodInfo),
    UnmeshedPod(UnmeshedPod),
    Generated(Box<Generated>),
    /// A provisioned gateway Deployment, with its available replicas
    /// (which the gateway's status depends on).
    GatewayDeployment(Box<Generated>, i32),
}

/// A pod without a proxy, as far as flagging it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmeshedPod {
    pub host_network: bool,
    /// Labelled `weft.io/sidecar-injection: disabled`.
    pub opted_out: bool,
    /// Ended (Succeeded or Failed): nothing to flag.
    pub finished: bool,
}

/// A stored object.
#[derive(Clone, Debug)]
pub struct Entry {
    pub item: Item,
    pub uid: String,
    pub resource_version: String,
    pub generation: Option<i64>,
    /// The object's `status` as JSON (Null when it has none).
    pub status: Value,
    essence: u64,
    status_hash: u64,
}

/// An object that could not be converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub kind: Kind,
    pub key: ObjectKey,
    pub error: String,
}

/// What a watcher tells the index.
#[derive(Debug)]
pub enum Event {
    /// A watcher for the resource is being started (or restarted after
    /// discovery removed it): its kinds are not synced until its first list
    /// ends.
    Started(Resource),
    /// A (re)list began.
    Init(Resource),
    /// An object listed, added or modified.
    Apply { resource: Resource, init: bool, object: Converted },
    /// An object deleted.
    Delete { resource: Resource, object: Converted },
    /// The (re)list ended: objects not listed are gone.
    InitDone(Resource),
    /// The resource is no longer served (its CRD was removed): its objects
    /// are gone.
    Stopped(Resource),
}

/// An object as a watcher converted it.
#[derive(Debug)]
pub enum Converted {
    Ok { kind: Kind, key: ObjectKey, entry: Box<Entry> },
    Invalid(Invalid),
}

/// Counters that move when something the control plane acts on changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Revisions {
    /// Translator inputs changed (other than in status).
    pub inputs: u64,
    /// Only statuses of input objects changed.
    pub statuses: u64,
    /// Observed-only kinds (unmeshed pods) changed.
    pub observed: u64,
    /// Generated objects changed.
    pub generated: u64,
}

#[derive(Debug, Default)]
struct Store {
    objects: BTreeMap<ObjectKey, Entry>,
    buffer: Option<BTreeMap<ObjectKey, Entry>>,
    /// A watcher feeds this store.
    active: bool,
    /// Its first list ended (or it is inactive: nothing to wait for).
    synced: bool,
}

/// The index; see the module docs.
#[derive(Debug, Default)]
pub struct Index {
    stores: BTreeMap<Kind, Store>,
    invalid: BTreeMap<(Kind, ObjectKey), String>,
    revisions: Revisions,
}

fn hash_value(v: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // serde_json's map keeps keys sorted (no preserve_order), so equal
    // objects serialize equally.
    v.to_string().hash(&mut h);
    h.finish()
}

fn object_key(meta: &Value) -> ObjectKey {
    ObjectKey::new(
        meta.get("namespace").and_then(Value::as_str).unwrap_or(""),
        meta.get("name").and_then(Value::as_str).unwrap_or(""),
    )
}

/// Whether a Weft route object was generated by Weft (it carries its origin).
fn is_generated(meta: &Value) -> bool {
    meta.get("labels").and_then(|l| l.get(labels::ORIGIN_KIND)).is_some()
}

/// The kind of the index an object of `resource` belongs to.
pub fn kind_of(resource: Resource, metadata: &Value) -> Kind {
    let kinds = resource.kinds();
    match resource {
        Resource::MeshHttpRoute | Resource::MeshTcpRoute if is_generated(metadata) => kinds[1],
        _ => kinds[0],
    }
}

fn typed<K>(value: Value) -> Result<K, String>
where
    K: serde::de::DeserializeOwned + weft_k8s_api::kube::Resource,
{
    match serde_json::from_value::<DeserializeGuard<K>>(value) {
        Ok(DeserializeGuard(Ok(k))) => Ok(k),
        Ok(DeserializeGuard(Err(invalid))) => Err(invalid.error),
        Err(e) => Err(e.to_string()),
    }
}

/// Converts an object read from the cluster (as JSON, at whatever version
/// it was served) into an index entry. `managedFields` are dropped first.
pub fn convert(resource: Resource, mut value: Value) -> Converted {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    let metadata = value.get("metadata").cloned().unwrap_or(Value::Null);
    let key = object_key(&metadata);
    let kind = kind_of(resource, &metadata);
    let uid = metadata.get("uid").and_then(Value::as_str).unwrap_or("").to_owned();
    let resource_version = metadata.get("resourceVersion").and_then(Value::as_str).unwrap_or("").to_owned();
    let generation = metadata.get("generation").and_then(Value::as_i64);
    // Read at another served version: Weft's types describe the first.
    if let Some(obj) = value.as_object_mut() {
        obj.insert("apiVersion".into(), Value::String(resource.api_version()));
    }
    let status = value.get("status").cloned().unwrap_or(Value::Null);
    let status_hash = hash_value(&status);
    let essence = {
        let mut e = value.clone();
        if let Some(obj) = e.as_object_mut() {
            obj.remove("status");
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
                meta.remove("generation");
            }
            // A Secret's essence is what translation reads of it (added
            // below), so its key material is neither hashed nor kept.
            obj.remove("data");
            obj.remove("stringData");
        }
        hash_value(&e)
    };
    let item = match kind {
        Kind::GatewayClass => typed(value).map(|o| Item::GatewayClass(Box::new(o))),
        Kind::Gateway => typed(value).map(|o| Item::Gateway(Box::new(o))),
        Kind::ListenerSet => typed(value).map(|o| Item::ListenerSet(Box::new(o))),
        Kind::HttpRoute => typed(value).map(|o| Item::HttpRoute(Box::new(o))),
        Kind::GrpcRoute => typed(value).map(|o| Item::GrpcRoute(Box::new(o))),
        Kind::TlsRoute => typed(value).map(|o| Item::TlsRoute(Box::new(o))),
        Kind::TcpRoute => typed(value).map(|o| Item::TcpRoute(Box::new(o))),
        Kind::ReferenceGrant => typed(value).map(|o| Item::ReferenceGrant(Box::new(o))),
        Kind::Mesh => typed(value).map(|o| Item::Mesh(Box::new(o))),
        Kind::MeshGatewayConfig => typed(value).map(|o| Item::MeshGatewayConfig(Box::new(o))),
        Kind::MeshHttpRoute => typed(value).map(|o| Item::MeshHttpRoute(Box::new(o))),
        Kind::MeshTcpRoute => typed(value).map(|o| Item::MeshTcpRoute(Box::new(o))),
        Kind::Service => typed(value).map(|o| Item::Service(Box::new(o))),
        Kind::EndpointSlice => typed(value).map(|o| Item::EndpointSlice(Box::new(o))),
        Kind::Namespace => typed(value).map(|o| Item::Namespace(Box::new(o))),
        Kind::Secret => typed::<Secret>(value).map(|s| Item::Secret(summarize(&s))),
        Kind::Pod => typed::<Pod>(value).map(|p| {
            let mesh = p.metadata.labels.as_ref().and_then(|l| l.get(labels::MESH)).cloned().unwrap_or_default();
            let service_account = p
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone().or_else(|| s.service_account.clone()))
                .filter(|sa| !sa.is_empty())
                .unwrap_or_else(|| "default".to_string());
            Item::Pod(PodInfo { service_account, mesh })
        }),
        Kind::UnmeshedPod => typed::<Pod>(value).map(|p| {
            let opted_out =
                p.metadata.labels.as_ref().and_then(|l| l.get(labels::SIDECAR_INJECTION)).map(String::as_str)
                    == Some("disabled");
            let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            Item::UnmeshedPod(UnmeshedPod {
                host_network: p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false),
                opted_out,
                finished: phase == "Succeeded" || phase == "Failed",
            })
        }),
        Kind::GatewayDeployment => {
            let available = value.pointer("/status/availableReplicas").and_then(Value::as_i64).unwrap_or(0) as i32;
            let mut value = value;
            if let Some(obj) = value.as_object_mut() {
                obj.remove("status");
            }
            Ok(Item::GatewayDeployment(Box::new(Generated { value }), available))
        }
        Kind::GatewayServiceAccount
        | Kind::GatewayHpa
        | Kind::GeneratedMeshGateway
        | Kind::GeneratedMeshGatewayInstance
        | Kind::GeneratedMeshHttpRoute
        | Kind::GeneratedMeshTcpRoute => {
            let mut value = value;
            if let Some(obj) = value.as_object_mut() {
                obj.remove("status");
            }
            Ok(Item::Generated(Box::new(Generated { value })))
        }
    };
    let essence = match &item {
        // What status says of these decides a Gateway's addresses and
        // Programmed condition: part of the essence.
        Ok(Item::Service(_) | Item::GatewayDeployment(..)) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (essence, status_hash).hash(&mut h);
            h.finish()
        }
        Ok(Item::Secret(info)) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (essence, format!("{info:?}")).hash(&mut h);
            h.finish()
        }
        _ => essence,
    };
    match item {
        Ok(item) => Converted::Ok {
            kind,
            key,
            entry: Box::new(Entry { item, uid, resource_version, generation, status, essence, status_hash }),
        },
        Err(error) => Converted::Invalid(Invalid { kind, key, error }),
    }
}

/// How an object changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    None,
    Status,
    Essence,
}

fn change(old: Option<&Entry>, new: Option<&Entry>) -> Change {
    match (old, new) {
        (None, None) => Change::None,
        (Some(a), Some(b)) if a.essence == b.essence => {
            if a.status_hash == b.status_hash {
                Change::None
            } else {
                Change::Status
            }
        }
        _ => Change::Essence,
    }
}

impl Index {
    /// An empty index; every kind starts inactive (its watcher says when it
    /// starts).
    pub fn new() -> Self {
        let mut stores = BTreeMap::new();
        for kind in Kind::ALL {
            stores.insert(kind, Store { synced: true, ..Default::default() });
        }
        Index { stores, invalid: BTreeMap::new(), revisions: Revisions::default() }
    }

    fn store(&mut self, kind: Kind) -> &mut Store {
        self.stores.entry(kind).or_default()
    }

    fn note(&mut self, kind: Kind, change: Change) {
        match change {
            Change::None => {}
            _ if kind.is_observed() => self.revisions.observed += 1,
            Change::Status if !kind.is_generated() => self.revisions.statuses += 1,
            _ if kind.is_generated() => self.revisions.generated += 1,
            _ => self.revisions.inputs += 1,
        }
    }

    /// Applies a watcher's event.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Started(resource) => {
                for &kind in resource.kinds() {
                    let store = self.store(kind);
                    store.active = true;
                    store.synced = false;
                    store.buffer = None;
                }
            }
            Event::Init(resource) => {
                for &kind in resource.kinds() {
                    self.store(kind).buffer = Some(BTreeMap::new());
                }
            }
            Event::Apply { init, object, .. } => match object {
                Converted::Ok { kind, key, entry } => {
                    self.invalid.remove(&(kind, key.clone()));
                    let store = self.store(kind);
                    if init && let Some(buffer) = store.buffer.as_mut() {
                        buffer.insert(key, *entry);
                        return;
                    }
                    let old = store.objects.insert(key.clone(), *entry);
                    let c = change(old.as_ref(), store.objects.get(&key));
                    self.note(kind, c);
                }
                Converted::Invalid(invalid) => {
                    // The last good version stays; a relist keeps it too.
                    let store = self.store(invalid.kind);
                    if init
                        && let Some(good) = store.objects.get(&invalid.key).cloned()
                        && let Some(buffer) = store.buffer.as_mut()
                    {
                        buffer.insert(invalid.key.clone(), good);
                    }
                    self.invalid.insert((invalid.kind, invalid.key), invalid.error);
                }
            },
            Event::Delete { object, .. } => {
                let (kind, key) = match object {
                    Converted::Ok { kind, key, .. } => (kind, key),
                    Converted::Invalid(i) => (i.kind, i.key),
                };
                self.invalid.remove(&(kind, key.clone()));
                let old = self.store(kind).objects.remove(&key);
                let c = change(old.as_ref(), None);
                self.note(kind, c);
            }
            Event::InitDone(resource) => {
                for &kind in resource.kinds() {
                    let store = self.store(kind);
                    let new = store.buffer.take().unwrap_or_default();
                    let old = std::mem::replace(&mut store.objects, new);
                    store.synced = true;
                    let mut worst = Change::None;
                    let objects = &self.stores[&kind].objects;
                    for (key, entry) in objects {
                        match change(old.get(key), Some(entry)) {
                            Change::Essence => worst = Change::Essence,
                            Change::Status if worst == Change::None => worst = Change::Status,
                            _ => {}
                        }
                    }
                    if old.keys().any(|k| !objects.contains_key(k)) {
                        worst = Change::Essence;
                    }
                    let gone: Vec<ObjectKey> = self
                        .invalid
                        .keys()
                        .filter(|(k, key)| *k == kind && !self.stores[&kind].objects.contains_key(key))
                        .map(|(_, key)| key.clone())
                        .collect();
                    for key in gone {
                        self.invalid.remove(&(kind, key));
                    }
                    self.note(kind, worst);
                }
            }
            Event::Stopped(resource) => {
                for &kind in resource.kinds() {
                    let store = self.store(kind);
                    let had = !store.objects.is_empty();
                    *store = Store { synced: true, ..Default::default() };
                    self.invalid.retain(|(k, _), _| *k != kind);
                    if had {
                        self.note(kind, Change::Essence);
                    }
                }
            }
        }
    }

    /// Whether every active store has listed once.
    pub fn synced(&self) -> bool {
        self.stores.values().all(|s| s.synced)
    }

    /// Kinds whose watcher has not finished its first list.
    pub fn unsynced(&self) -> Vec<Kind> {
        self.stores.iter().filter(|(_, s)| !s.synced).map(|(k, _)| *k).collect()
    }

    /// Whether a watcher feeds the kind.
    pub fn active(&self, kind: Kind) -> bool {
        self.stores.get(&kind).is_some_and(|s| s.active)
    }

    pub fn revisions(&self) -> Revisions {
        self.revisions
    }

    /// Objects that could not be converted, with why.
    pub fn invalid(&self) -> Vec<Invalid> {
        self.invalid
            .iter()
            .map(|((kind, key), error)| Invalid { kind: *kind, key: key.clone(), error: error.clone() })
            .collect()
    }

    /// Number of invalid objects per kind.
    pub fn invalid_counts(&self) -> BTreeMap<Kind, usize> {
        let mut out = BTreeMap::new();
        for (kind, _) in self.invalid.keys() {
            *out.entry(*kind).or_insert(0) += 1;
        }
        out
    }

    /// One stored object.
    pub fn get(&self, kind: Kind, key: &ObjectKey) -> Option<&Entry> {
        self.stores.get(&kind)?.objects.get(key)
    }

    /// Every stored object of a kind.
    pub fn objects(&self, kind: Kind) -> impl Iterator<Item = (&ObjectKey, &Entry)> {
        self.stores.get(&kind).into_iter().flat_map(|s| s.objects.iter())
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.stores.values().map(|s| s.objects.len()).sum()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The translator's input: every input object, with its status.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for kind in Kind::ALL.into_iter().filter(|k| !k.is_generated()) {
            for (key, entry) in self.objects(kind) {
                let k = key.clone();
                match &entry.item {
                    Item::GatewayClass(o) => {
                        s.gateway_classes.insert(k.name, (**o).clone());
                    }
                    Item::Gateway(o) => {
                        s.gateways.insert(k, (**o).clone());
                    }
                    Item::ListenerSet(o) => {
                        s.listener_sets.insert(k, (**o).clone());
                    }
                    Item::HttpRoute(o) => {
                        s.http_routes.insert(k, (**o).clone());
                    }
                    Item::GrpcRoute(o) => {
                        s.grpc_routes.insert(k, (**o).clone());
                    }
                    Item::TlsRoute(o) => {
                        s.tls_routes.insert(k, (**o).clone());
                    }
                    Item::TcpRoute(o) => {
                        s.tcp_routes.insert(k, (**o).clone());
                    }
                    Item::ReferenceGrant(o) => {
                        s.reference_grants.insert(k, (**o).clone());
                    }
                    Item::Mesh(o) => {
                        s.meshes.insert(k.name, (**o).clone());
                    }
                    Item::MeshGatewayConfig(o) => {
                        s.mesh_gateway_configs.insert(k.name, (**o).clone());
                    }
                    Item::MeshHttpRoute(o) => {
                        s.mesh_http_routes.insert(k, (**o).clone());
                    }
                    Item::MeshTcpRoute(o) => {
                        s.mesh_tcp_routes.insert(k, (**o).clone());
                    }
                    Item::Service(o) => {
                        s.services.insert(k, (**o).clone());
                    }
                    Item::EndpointSlice(o) => {
                        s.endpoint_slices.insert(k, (**o).clone());
                    }
                    Item::Namespace(o) => {
                        s.namespaces.insert(k.name, (**o).clone());
                    }
                    Item::Secret(info) => {
                        s.secrets.insert(k, info.clone());
                    }
                    Item::Pod(info) => {
                        s.pods.insert(k, info.clone());
                    }
                    Item::GatewayDeployment(_, available) => {
                        s.gateway_deployments.insert(k, *available);
                    }
                    Item::Generated(_) | Item::UnmeshedPod(_) => {}
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn route(name: &str, rv: &str, backend: &str, status: Value) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": rv, "uid": format!("uid-{name}"),
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "reviews"}],
                     "rules": [{"backendRefs": [{"name": backend, "port": 9080}]}]},
            "status": status,
        })
    }

    fn apply(index: &mut Index, init: bool, v: Value) {
        index.apply(Event::Apply { resource: Resource::HttpRoute, init, object: convert(Resource::HttpRoute, v) });
    }

    #[test]
    fn status_only_changes_do_not_count_as_input_changes() {
        let mut index = Index::new();
        index.apply(Event::Started(Resource::HttpRoute));
        assert!(!index.synced());
        index.apply(Event::Init(Resource::HttpRoute));
        apply(&mut index, true, route("a", "1", "v1", Value::Null));
        index.apply(Event::InitDone(Resource::HttpRoute));
        assert!(index.synced());
        let r0 = index.revisions();
        apply(&mut index, false, route("a", "2", "v1", json!({"parents": []})));
        let r1 = index.revisions();
        assert_eq!((r1.inputs, r1.statuses), (r0.inputs, r0.statuses + 1));
        apply(&mut index, false, route("a", "3", "v2", json!({"parents": []})));
        assert_eq!(index.revisions().inputs, r1.inputs + 1);
        // managedFields never reach the store.
        let entry = index.get(Kind::HttpRoute, &ObjectKey::new("shop", "a")).unwrap();
        let Item::HttpRoute(r) = &entry.item else { panic!("an HTTPRoute") };
        assert!(r.metadata.managed_fields.is_none());
        assert_eq!(entry.resource_version, "3");
    }

    #[test]
    fn an_invalid_update_keeps_the_last_good_version_and_is_listed() {
        let mut index = Index::new();
        index.apply(Event::Started(Resource::HttpRoute));
        index.apply(Event::Init(Resource::HttpRoute));
        apply(&mut index, true, route("a", "1", "v1", Value::Null));
        apply(&mut index, true, route("b", "1", "v1", Value::Null));
        index.apply(Event::InitDone(Resource::HttpRoute));
        let mut bad = route("a", "2", "v2", Value::Null);
        bad["spec"]["rules"][0]["filters"] = json!([{"type": "FutureFilter"}]);
        apply(&mut index, false, bad.clone());
        assert_eq!(index.invalid().len(), 1);
        assert!(index.invalid()[0].error.contains("FutureFilter"), "{:?}", index.invalid());
        assert_eq!(index.snapshot().http_routes.len(), 2);
        let kept = &index.snapshot().http_routes[&ObjectKey::new("shop", "a")];
        assert_eq!(kept.spec.rules.as_ref().unwrap()[0].backend_refs.as_ref().unwrap()[0].name, "v1");
        // A relist that still holds the bad version keeps the good one.
        index.apply(Event::Init(Resource::HttpRoute));
        apply(&mut index, true, bad);
        apply(&mut index, true, route("b", "1", "v1", Value::Null));
        index.apply(Event::InitDone(Resource::HttpRoute));
        assert_eq!(index.snapshot().http_routes.len(), 2);
        // Fixed: no longer listed.
        apply(&mut index, false, route("a", "3", "v3", Value::Null));
        assert!(index.invalid().is_empty());
    }

    #[test]
    fn a_relist_removes_what_it_no_longer_lists_and_generated_routes_are_kept_apart() {
        let mut index = Index::new();
        index.apply(Event::Started(Resource::MeshHttpRoute));
        index.apply(Event::Init(Resource::MeshHttpRoute));
        let handwritten = json!({"apiVersion": "weft.io/v1alpha1", "kind": "MeshHTTPRoute",
            "metadata": {"name": "h", "namespace": "shop", "resourceVersion": "5"},
            "spec": {"targetRef": {"kind": "Mesh"}}});
        let generated = json!({"apiVersion": "weft.io/v1alpha1", "kind": "MeshHTTPRoute",
            "metadata": {"name": "g", "namespace": "shop", "resourceVersion": "6",
                         "labels": {"weft.io/origin-kind": "HTTPRoute"}},
            "spec": {"targetRef": {"kind": "Mesh"}}, "status": {"conditions": []}});
        for v in [handwritten, generated] {
            index.apply(Event::Apply {
                resource: Resource::MeshHttpRoute,
                init: true,
                object: convert(Resource::MeshHttpRoute, v),
            });
        }
        index.apply(Event::InitDone(Resource::MeshHttpRoute));
        assert_eq!(index.snapshot().mesh_http_routes.len(), 1);
        let g = index.get(Kind::GeneratedMeshHttpRoute, &ObjectKey::new("shop", "g")).unwrap();
        let Item::Generated(g) = &g.item else { panic!("generated") };
        assert!(g.value.get("status").is_none());
        index.apply(Event::Init(Resource::MeshHttpRoute));
        index.apply(Event::InitDone(Resource::MeshHttpRoute));
        assert!(index.is_empty());
    }

    #[test]
    fn secrets_keep_no_key_material_and_pods_name_their_identity() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "cert", "namespace": "shop"},
            "data": {"tls.crt": "bm90IGEgY2VydA==", "tls.key": "bm90IGEga2V5"}});
        let Converted::Ok { entry, .. } = convert(Resource::Secret, secret) else { panic!("converted") };
        let Item::Secret(info) = &entry.item else { panic!("a secret") };
        assert!(matches!(info.tls, Some(Err(_))));
        assert!(!format!("{entry:?}").contains("bm90"));
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop", "labels": {"weft.io/mesh": "default"}},
            "spec": {"serviceAccountName": "reviews", "containers": []}});
        let Converted::Ok { entry, .. } = convert(Resource::Pod, pod) else { panic!("converted") };
        let Item::Pod(info) = &entry.item else { panic!("a pod") };
        assert_eq!((info.service_account.as_str(), info.mesh.as_str()), ("reviews", "default"));
    }
}
