//! The control loop: the one task that owns the control plane's inputs (the
//! last good snapshot, the connected workloads), translates and compiles
//! when they change, and publishes the result for the proxy sessions and
//! the admin API.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use weft_api as api;
use weft_compile::{Change, Compiled, Compiler, EndpointSource, Workloads};
use weft_k8s_api::crds::{GatewayAddress, MeshGatewayInstance, MeshGatewayInstanceSpec, MeshGatewayInstanceStatus};
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use weft_k8s_api::k8s_openapi::jiff::Timestamp;
use weft_translate::{ObjectKey, Output, Snapshot, Statuses};

use crate::identity::{Identities, MeshIdentity};
use crate::metrics::Metrics;
use crate::registry::WorkloadRegistry;

/// How many generations of changes proxies can catch up on incrementally;
/// a proxy further behind compares everything.
const HISTORY: usize = 256;

/// What the control loop publishes after each change.
#[derive(Debug, Default)]
pub struct Published {
    /// Increases with every publication.
    pub generation: u64,
    /// The snapshot in force (the last one that loaded without errors).
    pub snapshot: Arc<Snapshot>,
    /// Its translation.
    pub output: Arc<Output>,
    /// Its compilation for the connected proxies.
    pub compiled: Arc<Compiled>,
    /// Changed resources of recent generations, oldest first.
    pub history: Arc<VecDeque<(u64, Arc<Vec<Change>>)>>,
    /// Why the latest input was not taken, if it was not.
    pub load_errors: Arc<Vec<String>>,
    /// True once a snapshot has been loaded.
    pub loaded: bool,
    /// The snapshot in force was complete: in Kubernetes mode, taken after
    /// every watcher had listed (always true in local mode once loaded).
    /// Only a complete snapshot may lead to deleting generated objects.
    pub complete: bool,
    /// Status of each MeshGatewayInstance as the runtime observes it
    /// (connected gateway proxies).
    pub instances: Arc<BTreeMap<ObjectKey, MeshGatewayInstanceStatus>>,
}

impl Published {
    /// The changes after generation `since`, or `None` when the history no
    /// longer reaches back that far.
    pub fn changes_since(&self, since: u64) -> Option<Vec<Change>> {
        if since >= self.generation {
            return Some(Vec::new());
        }
        let oldest = self.history.front().map(|(g, _)| *g)?;
        if oldest > since + 1 {
            return None;
        }
        let mut out: Vec<Change> =
            self.history.iter().filter(|(g, _)| *g > since).flat_map(|(_, c)| c.iter().cloned()).collect();
        out.sort();
        out.dedup();
        Some(out)
    }
}

/// Inputs of the control loop.
#[derive(Debug)]
pub enum Input {
    /// A new snapshot from the source, with the errors met loading it.
    /// Always taken: a file with errors is in it at its last good version.
    Snapshot { snapshot: Box<Snapshot>, errors: Vec<String> },
    /// A snapshot of the cluster (Kubernetes mode). Always taken: objects
    /// that could not be read (`invalid`) are in it at their last good
    /// version, so one bad object never holds back the others.
    ClusterSnapshot { snapshot: Box<Snapshot>, invalid: Vec<String>, complete: bool },
    /// A proxy connected; `done` gets the generation that includes it.
    WorkloadUp { id: String, workload: Box<api::Workload>, done: oneshot::Sender<u64> },
    /// A proxy disconnected.
    WorkloadDown { id: String },
    /// The reconnect grace of a restarted local-mode control plane ended:
    /// remembered workloads that have not reconnected are dropped.
    ForgetRemembered,
    /// A mesh CA changed in the state directory (rotation).
    IdentitiesChanged,
    /// Certificates and keys of TLS Secrets (only those referenced by
    /// accepted terminating listeners reach proxies).
    TlsMaterials(BTreeMap<ObjectKey, weft_compile::TlsMaterial>),
}

/// Handle to send inputs to the control loop.
#[derive(Clone, Debug)]
pub struct ControlHandle {
    tx: mpsc::Sender<Input>,
}

impl ControlHandle {
    /// Sends an input; fails only when the control loop has stopped.
    pub async fn send(&self, input: Input) -> Result<(), ControlStopped> {
        self.tx.send(input).await.map_err(|_| ControlStopped)
    }
}

/// The control loop is gone (the process is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the control loop has stopped")]
pub struct ControlStopped;

/// Where the control loop's inputs come from; decides what is taken from
/// proxies and what from the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A directory of YAML: connected proxies are the endpoints, and the
    /// statuses last computed stand in for the objects' status.
    Local,
    /// The cluster: endpoints come from EndpointSlices and objects carry
    /// their status as the cluster holds it.
    Kubernetes,
}

/// Starts the control loop; returns its input handle and the publication
/// channel.
/// Where a local-mode control plane keeps the workloads it knows, and how
/// long after a restart it waits for them to reconnect (see
/// [`crate::registry`]).
#[derive(Clone, Debug)]
pub struct Remembered {
    pub registry: WorkloadRegistry,
    pub grace: Duration,
    /// What the registry held at start, by `namespace/name`.
    pub known: Workloads,
}

pub fn spawn(
    mode: Mode,
    metrics: Arc<Metrics>,
    identities: Arc<Identities>,
    remembered: Option<Remembered>,
) -> (ControlHandle, watch::Receiver<Arc<Published>>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (tx, rx) = mpsc::channel(1024);
    let (publish, published) = watch::channel(Arc::new(Published::default()));
    let mut workloads = Workloads::new();
    let mut remembered_ids = BTreeSet::new();
    if let Some(r) = remembered.as_ref().filter(|r| !r.known.is_empty()) {
        tracing::info!(
            workloads = r.known.len(),
            grace_seconds = r.grace.as_secs_f64(),
            "keeping the workloads known before the restart as endpoints until they reconnect or the grace ends"
        );
        remembered_ids = r.known.keys().cloned().collect();
        workloads = r.known.clone();
        let forget = tx.clone();
        let grace = r.grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = forget.send(Input::ForgetRemembered).await;
        });
    }
    let state = ControlLoop {
        snapshot: Arc::new(Snapshot::default()),
        output: Arc::new(Output::default()),
        compiler: Compiler::new(match mode {
            Mode::Local => EndpointSource::ConnectedProxies,
            Mode::Kubernetes => EndpointSource::Cluster,
        }),
        mode,
        complete: false,
        workloads,
        remembered: remembered_ids,
        registry: remembered.map(|r| r.registry),
        generation: 0,
        history: VecDeque::new(),
        load_errors: Vec::new(),
        loaded: false,
        publish,
        metrics,
        identities,
    };
    let task = tokio::spawn(async move {
        state.run(rx).await;
        Ok(())
    });
    (ControlHandle { tx }, published, task)
}

struct ControlLoop {
    mode: Mode,
    complete: bool,
    snapshot: Arc<Snapshot>,
    output: Arc<Output>,
    compiler: Compiler,
    workloads: Workloads,
    /// Workloads known before a restart that have not reconnected yet.
    remembered: BTreeSet<String>,
    /// Where the connected workloads are written (local mode).
    registry: Option<WorkloadRegistry>,
    generation: u64,
    history: VecDeque<(u64, Arc<Vec<Change>>)>,
    load_errors: Vec<String>,
    loaded: bool,
    publish: watch::Sender<Arc<Published>>,
    metrics: Arc<Metrics>,
    identities: Arc<Identities>,
}

impl ControlLoop {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        while let Some(first) = rx.recv().await {
            // Take everything that is already queued, so a burst of
            // connections or file events costs one recompilation.
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 4096 {
                    break;
                }
            }
            let mut retranslate = false;
            let mut resync_identities = false;
            let mut workloads_changed = false;
            let mut waiting = Vec::new();
            for input in batch {
                match input {
                    Input::ClusterSnapshot { snapshot, invalid, complete } => {
                        for e in invalid.iter().filter(|e| !self.load_errors.contains(e)) {
                            tracing::warn!(error = %e, "object not readable; its last good version is used");
                        }
                        self.snapshot = Arc::new(*snapshot);
                        self.load_errors = invalid;
                        self.loaded = true;
                        self.complete = complete;
                        retranslate = true;
                    }
                    Input::Snapshot { snapshot, errors } => {
                        // A file with errors is in the snapshot at its last
                        // version that had none (the loader keeps it), so the
                        // rest of the directory moves on without it.
                        for e in errors.iter().filter(|e| !self.load_errors.contains(e)) {
                            tracing::warn!(error = %e, "not loaded; the file's last good version is used");
                        }
                        self.snapshot = Arc::new(*snapshot);
                        self.load_errors = errors;
                        self.loaded = true;
                        self.complete = true;
                        retranslate = true;
                    }
                    Input::WorkloadUp { id, workload, done } => {
                        retranslate |= workload.role == api::Role::Gateway as i32;
                        self.remembered.remove(&id);
                        self.workloads.insert(id, *workload);
                        workloads_changed = true;
                        waiting.push(done);
                    }
                    Input::ForgetRemembered => {
                        let stale = std::mem::take(&mut self.remembered);
                        if !stale.is_empty() {
                            tracing::info!(
                                workloads = stale.len(),
                                "workloads known before the restart did not reconnect; dropping them"
                            );
                        }
                        for id in stale {
                            if let Some(w) = self.workloads.remove(&id) {
                                retranslate |= w.role == api::Role::Gateway as i32;
                                workloads_changed = true;
                            }
                        }
                    }
                    Input::IdentitiesChanged => resync_identities = true,
                    Input::TlsMaterials(materials) => self.compiler.set_tls_materials(materials),
                    Input::WorkloadDown { id } => {
                        if let Some(w) = self.workloads.remove(&id) {
                            retranslate |= w.role == api::Role::Gateway as i32;
                            workloads_changed = true;
                        }
                    }
                }
            }
            if workloads_changed && let Some(registry) = &self.registry {
                // A few hundred bytes per workload, once per batch of
                // connections; a failure costs only the restart behaviour.
                if let Err(e) = registry.store(self.workloads.values()) {
                    tracing::warn!(error = %e, "cannot write the workload list to the state directory");
                }
            }
            if retranslate {
                let started = Instant::now();
                let previous = (self.mode == Mode::Local).then_some(&self.output.status);
                let input = with_observed_state(&self.snapshot, previous, &self.workloads, self.mode);
                let now = Time(Timestamp::now());
                self.output = Arc::new(weft_translate::translate(&input, &now));
                self.metrics.translate_seconds.observe(started.elapsed().as_secs_f64());
            }
            if retranslate || resync_identities {
                self.compiler.set_mesh_roots(self.identities.sync(&mesh_identities(&self.snapshot)));
            }
            let started = Instant::now();
            let changes = self.compiler.update(&self.snapshot, &self.output, &self.workloads);
            self.metrics.compile_seconds.observe(started.elapsed().as_secs_f64());
            self.generation += 1;
            if !changes.is_empty() {
                tracing::debug!(
                    generation = self.generation,
                    changed = changes.len(),
                    retranslated = retranslate,
                    "configuration changed"
                );
            }
            self.history.push_back((self.generation, Arc::new(changes)));
            while self.history.len() > HISTORY {
                self.history.pop_front();
            }
            self.metrics.generation.set(self.generation as i64);
            self.metrics.load_errors.set(self.load_errors.len() as i64);
            self.publish.send_replace(Arc::new(Published {
                generation: self.generation,
                snapshot: self.snapshot.clone(),
                output: self.output.clone(),
                compiled: Arc::new(self.compiler.compiled().clone()),
                history: Arc::new(self.history.clone()),
                load_errors: Arc::new(self.load_errors.clone()),
                loaded: self.loaded,
                complete: self.complete,
                instances: Arc::new(observed_instances(&self.snapshot, &self.workloads, self.mode)),
            }));
            for done in waiting {
                let _ = done.send(self.generation);
            }
        }
    }
}

/// Every mesh of the snapshot (and `default`, which always exists) with
/// what signing for it needs.
pub fn mesh_identities(snapshot: &Snapshot) -> Vec<MeshIdentity> {
    let default = weft_k8s_api::labels::DEFAULT_MESH;
    let mut out: Vec<MeshIdentity> = snapshot
        .meshes
        .iter()
        .map(|(name, mesh)| MeshIdentity {
            name: name.clone(),
            trust_domain: mesh
                .spec
                .mtls
                .trust_domain
                .clone()
                .unwrap_or_else(|| weft_compile::default_trust_domain(name)),
            certificate_lifetime: mesh.spec.mtls.certificate_lifetime.clone(),
        })
        .collect();
    if !snapshot.meshes.contains_key(default) {
        out.push(MeshIdentity {
            name: default.into(),
            trust_domain: weft_compile::default_trust_domain(default),
            certificate_lifetime: None,
        });
    }
    out
}

/// The snapshot as the translator should see it: in local mode objects
/// carry the status last computed for them (`previous`, so condition
/// transition times stay put while nothing changes; in Kubernetes mode they
/// carry the cluster's), and each gateway's MeshGatewayInstance reports the
/// connected gateway proxies as its ready replicas.
fn with_observed_state(
    snapshot: &Snapshot,
    previous: Option<&Statuses>,
    workloads: &Workloads,
    mode: Mode,
) -> Snapshot {
    let mut s = snapshot.clone();
    if let Some(previous) = previous {
        for (name, class) in s.gateway_classes.iter_mut() {
            if let Some(st) = previous.gateway_classes.get(name) {
                class.status = Some(st.clone());
            }
        }
        macro_rules! restore {
            ($field:ident) => {
                for (key, obj) in s.$field.iter_mut() {
                    if let Some(st) = previous.$field.get(key) {
                        obj.status = Some(st.clone());
                    }
                }
            };
        }
        restore!(gateways);
        restore!(listener_sets);
        restore!(http_routes);
        restore!(grpc_routes);
        restore!(tls_routes);
        restore!(tcp_routes);
        restore!(mesh_http_routes);
        restore!(mesh_tcp_routes);
    }
    for (key, status) in observed_instances(snapshot, workloads, mode) {
        s.mesh_gateway_instances.insert(
            key.clone(),
            MeshGatewayInstance {
                metadata: ObjectMeta { name: Some(key.name), namespace: Some(key.namespace), ..Default::default() },
                spec: MeshGatewayInstanceSpec::default(),
                status: Some(status),
            },
        );
    }
    s
}

/// Each MeshGatewayInstance's status. In local mode: its connected
/// gateway proxies are its replicas and their addresses its addresses. In
/// Kubernetes mode: its Service gives the addresses (the load balancer's
/// ingress, else the external IPs Weft asked for, else the cluster IPs), and
/// a replica is ready when its Deployment reports it available and its
/// proxy is connected; requested hostnames cannot be assigned and are
/// reported unusable.
fn observed_instances(
    snapshot: &Snapshot,
    workloads: &Workloads,
    mode: Mode,
) -> BTreeMap<ObjectKey, MeshGatewayInstanceStatus> {
    let mut connected: BTreeMap<ObjectKey, (i32, Vec<GatewayAddress>)> = BTreeMap::new();
    for w in workloads.values().filter(|w| w.role == api::Role::Gateway as i32 && !w.gateway.is_empty()) {
        let entry = connected.entry(ObjectKey::new(w.namespace.clone(), w.gateway.clone())).or_default();
        entry.0 += 1;
        for ip in &w.ips {
            let a = GatewayAddress { type_: "IPAddress".into(), value: ip.clone() };
            if !entry.1.contains(&a) {
                entry.1.push(a);
            }
        }
    }
    if mode == Mode::Local {
        return connected
            .into_iter()
            .map(|(key, (ready, mut addresses))| {
                addresses.sort();
                (key, MeshGatewayInstanceStatus { ready_replicas: ready, addresses, ..Default::default() })
            })
            .collect();
    }
    let mut out = BTreeMap::new();
    for (key, available) in &snapshot.gateway_deployments {
        let proxies = connected.get(key).map(|c| c.0).unwrap_or(0);
        let service_key =
            ObjectKey::new(key.namespace.clone(), weft_translate::translate::names::label_value(&key.name));
        let mut addresses = Vec::new();
        if let Some(svc) = snapshot.services.get(&service_key) {
            let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.clone());
            for i in ingress.iter().flatten() {
                if let Some(ip) = i.ip.clone().filter(|ip| !ip.is_empty()) {
                    addresses.push(GatewayAddress { type_: "IPAddress".into(), value: ip });
                } else if let Some(host) = i.hostname.clone().filter(|h| !h.is_empty()) {
                    addresses.push(GatewayAddress { type_: "Hostname".into(), value: host });
                }
            }
            let spec = svc.spec.as_ref();
            if addresses.is_empty() {
                for ip in spec.and_then(|s| s.external_ips.clone()).into_iter().flatten() {
                    addresses.push(GatewayAddress { type_: "IPAddress".into(), value: ip });
                }
            }
            let load_balancer = spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
            if addresses.is_empty() && !load_balancer {
                let ips = spec.and_then(|s| s.cluster_ips.clone().or_else(|| s.cluster_ip.clone().map(|ip| vec![ip])));
                for ip in ips.into_iter().flatten().filter(|ip| ip != "None" && !ip.is_empty()) {
                    addresses.push(GatewayAddress { type_: "IPAddress".into(), value: ip });
                }
            }
        }
        let unusable: Vec<GatewayAddress> = snapshot
            .gateways
            .get(key)
            .and_then(|g| g.spec.addresses.clone())
            .into_iter()
            .flatten()
            .filter(|a| a.r#type.as_deref() == Some("Hostname"))
            .map(|a| GatewayAddress { type_: "Hostname".into(), value: a.value.clone().unwrap_or_default() })
            .collect();
        let ready = (*available).min(proxies);
        let (status, reason, message) = if addresses.is_empty() {
            ("False", "AddressNotAssigned", "the gateway's Service has no address yet".to_string())
        } else if ready == 0 {
            (
                "False",
                "NoReadyReplicas",
                format!("{available} available replicas, {proxies} gateway proxies connected to the control plane"),
            )
        } else {
            ("True", "Ready", format!("{ready} replicas ready"))
        };
        let condition = weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: None,
            last_transition_time: Time(Timestamp::now()),
        };
        out.insert(
            key.clone(),
            MeshGatewayInstanceStatus {
                ready_replicas: ready,
                addresses,
                unusable_addresses: unusable,
                conditions: vec![condition],
            },
        );
    }
    out
}
