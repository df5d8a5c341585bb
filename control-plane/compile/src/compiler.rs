//! The incremental compiler: remembers the inputs of the last compilation
//! and, on each update, recomputes only the resources whose inputs changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use weft_api as api;
use weft_k8s_api::crds::{Destination, MeshGatewaySpec, MeshSpec, MtlsMode, TargetKind, TargetRef};
use weft_k8s_api::k8s_openapi::api::core::v1::Service;
use weft_k8s_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weft_k8s_api::labels;
use weft_translate::ports::service_ports;
use weft_translate::{ObjectKey, Output, PodInfo, Snapshot};

use crate::endpoints::{self, EndpointInputs, EndpointSource, SERVICE_NAME_LABEL};
use crate::routes::source;
use crate::services::{self, RouteBody, RouteRecord};
use crate::version::versioned;
use crate::{SharedResource, Workloads, default_trust_domain, gateways, vips};

/// The variants of one Service's resource.
#[derive(Clone, Debug)]
pub struct ServiceVariants {
    /// Mesh of the Service: only its proxies receive it.
    pub mesh: String,
    /// What clients get when their namespace has no consumer route for it.
    pub producer: SharedResource,
    /// What clients in each namespace with consumer routes get.
    pub consumers: BTreeMap<String, SharedResource>,
}

impl ServiceVariants {
    /// The variant for a client in `namespace`.
    pub fn for_namespace(&self, namespace: &str) -> &SharedResource {
        self.consumers.get(namespace).unwrap_or(&self.producer)
    }
}

/// Everything compiled: shared by all proxies, read by the distributor.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    /// `mesh` resource of each mesh.
    pub meshes: BTreeMap<String, SharedResource>,
    /// `svc/...` resources.
    pub services: BTreeMap<ObjectKey, ServiceVariants>,
    /// `ep/...` resources, by Service, with the Service's mesh.
    pub endpoints: BTreeMap<ObjectKey, (String, SharedResource)>,
    /// `gw/...` resources, by MeshGateway name, with the gateway's mesh.
    pub gateways: BTreeMap<String, (String, SharedResource)>,
    /// `cert/...` resources each gateway's terminating listeners need.
    pub gateway_certificates: BTreeMap<String, BTreeMap<ObjectKey, SharedResource>>,
    /// `inbound` resource of each connected proxy.
    pub inbound: BTreeMap<String, SharedResource>,
    /// Mesh of each connected proxy.
    pub proxy_mesh: BTreeMap<String, String>,
    /// MeshGateway served by each connected gateway proxy.
    pub proxy_gateway: BTreeMap<String, String>,
    /// Services whose endpoints include gateway proxies: every mesh's
    /// proxies get them (a client of another mesh reaches the gateway over
    /// mTLS with its own mesh's certificate; a cross-mesh gateway accepts
    /// it, any other refuses it at the handshake).
    pub exported: BTreeSet<ObjectKey>,
}

/// A resource that changed in an update, as proxies see it: precise
/// enough that a proxy whose view did not change is sent nothing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// The `mesh` resource of this mesh.
    Mesh(String),
    /// The `inbound` resource of this proxy.
    Inbound(String),
    /// This proxy's mesh or gateway changed: everything it holds may.
    Placement(String),
    /// The producer variant (`namespace: None`) or one namespace's consumer
    /// variant of a Service, for the proxies of `mesh`.
    Service { key: ObjectKey, namespace: Option<String>, mesh: String },
    /// A Service's endpoints, for the proxies of `mesh`.
    Endpoints { key: ObjectKey, mesh: String },
    /// A gateway's listeners (only its proxies hold them).
    Gateway(String),
    /// The set of Services exported to every mesh changed: every proxy
    /// compares all it holds.
    Exported,
}

/// Identifies a route resource among both kinds.
type RouteId = (bool, ObjectKey);

/// Compiles incrementally; see the crate docs.
#[derive(Debug, Default)]
pub struct Compiler {
    compiled: Compiled,
    services: BTreeMap<ObjectKey, Service>,
    routes: BTreeMap<RouteId, RouteRecord>,
    gateways: BTreeMap<String, MeshGatewaySpec>,
    meshes: BTreeMap<String, MeshSpec>,
    namespace_meshes: BTreeMap<String, String>,
    slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// Slices of each Service.
    slices_by_service: BTreeMap<ObjectKey, BTreeSet<ObjectKey>>,
    pods: BTreeMap<ObjectKey, PodInfo>,
    endpoint_source: EndpointSource,
    workloads: Workloads,
    vips: BTreeMap<ObjectKey, Ipv4Addr>,
    /// PEM roots each mesh's proxies trust, from the control plane's CAs.
    mesh_roots: BTreeMap<String, Vec<String>>,
    /// Certificates and keys of TLS Secrets, by Secret.
    tls: BTreeMap<ObjectKey, crate::TlsMaterial>,
    tls_changed: bool,
    initialized: bool,
}

fn mesh_annotation(meta: &ObjectMeta) -> Option<&str> {
    fn get(m: &Option<BTreeMap<String, String>>) -> Option<&str> {
        m.as_ref().and_then(|m| m.get(labels::MESH)).map(String::as_str).filter(|v| !v.is_empty())
    }
    get(&meta.annotations).or_else(|| get(&meta.labels))
}

/// Route records of the generated routes and the accepted hand-written ones.
fn route_records(snapshot: &Snapshot, output: &Output) -> BTreeMap<RouteId, RouteRecord> {
    let mut out = BTreeMap::new();
    let key_of = |meta: &ObjectMeta| {
        ObjectKey::new(meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
    };
    let accepted = |conditions: Option<&weft_k8s_api::crds::MeshRouteStatus>| {
        conditions.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Accepted" && c.status == "True"))
    };
    let record = |kind: &str, key: &ObjectKey, meta: &ObjectMeta, target: &TargetRef, to: &[Destination], body| {
        let (source, rank) = source(kind, key, meta);
        RouteRecord { source, rank, target: target.clone(), to: to.to_vec(), body }
    };
    // Generated routes, then the accepted hand-written ones.
    let http = output.mesh_http_routes.iter().map(|r| (key_of(&r.metadata), r)).chain(
        snapshot
            .mesh_http_routes
            .iter()
            .filter(|(key, _)| accepted(output.status.mesh_http_routes.get(*key)))
            .map(|(key, r)| (key.clone(), r)),
    );
    for (key, r) in http {
        let rec = record(
            "MeshHTTPRoute",
            &key,
            &r.metadata,
            &r.spec.target_ref,
            &r.spec.to,
            RouteBody::Http(r.spec.rules.clone()),
        );
        out.insert((true, key), rec);
    }
    let tcp = output.mesh_tcp_routes.iter().map(|r| (key_of(&r.metadata), r)).chain(
        snapshot
            .mesh_tcp_routes
            .iter()
            .filter(|(key, _)| accepted(output.status.mesh_tcp_routes.get(*key)))
            .map(|(key, r)| (key.clone(), r)),
    );
    for (key, r) in tcp {
        let rec = record(
            "MeshTCPRoute",
            &key,
            &r.metadata,
            &r.spec.target_ref,
            &r.spec.to,
            RouteBody::Tcp(r.spec.rules.clone()),
        );
        out.insert((false, key), rec);
    }
    out
}

/// Keys whose value differs between two maps (added, removed or changed).
fn changed_keys<K: Ord + Clone, V: PartialEq>(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> Vec<K> {
    let mut out: Vec<K> = new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).map(|(k, _)| k.clone()).collect();
    out.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
    out
}

/// The Service an EndpointSlice belongs to.
fn slice_service(key: &ObjectKey, slice: &EndpointSlice) -> Option<ObjectKey> {
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(ObjectKey::new(key.namespace.clone(), svc.clone()))
}

/// The pods an EndpointSlice lists.
fn slice_pods<'a>(key: &'a ObjectKey, slice: &'a EndpointSlice) -> impl Iterator<Item = ObjectKey> + 'a {
    slice.endpoints.iter().filter_map(move |ep| {
        let t = ep.target_ref.as_ref().filter(|t| t.kind.as_deref() == Some("Pod"))?;
        Some(ObjectKey::new(t.namespace.clone().unwrap_or_else(|| key.namespace.clone()), t.name.clone()?))
    })
}

impl Compiler {
    /// A compiler whose endpoints come from `source`.
    pub fn new(source: EndpointSource) -> Self {
        Compiler { endpoint_source: source, ..Default::default() }
    }

    /// Sets the roots every mesh's proxies trust (its CA's root, and the
    /// previous one during a rotation); they reach proxies with the mesh's
    /// settings on the next [`Compiler::update`].
    pub fn set_mesh_roots(&mut self, roots: BTreeMap<String, Vec<String>>) {
        self.mesh_roots = roots;
    }

    /// Sets the key material of TLS Secrets (only those referenced by
    /// accepted terminating listeners are ever compiled and sent, to the
    /// proxies of those gateways only); takes effect on the next
    /// [`Compiler::update`].
    pub fn set_tls_materials(&mut self, tls: BTreeMap<ObjectKey, crate::TlsMaterial>) {
        if tls != self.tls {
            self.tls = tls;
            self.tls_changed = true;
        }
    }

    /// What was compiled last.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// The mesh of a namespace (its annotation or label, else `default`).
    fn namespace_mesh(&self, namespace: &str) -> String {
        self.namespace_meshes.get(namespace).cloned().unwrap_or_else(|| labels::DEFAULT_MESH.to_string())
    }

    fn service_mesh(&self, key: &ObjectKey, svc: &Service) -> String {
        mesh_annotation(&svc.metadata).map(str::to_string).unwrap_or_else(|| self.namespace_mesh(&key.namespace))
    }

    /// The mesh of a workload: as it announced, else its namespace's.
    pub fn workload_mesh(&self, w: &weft_api::Workload) -> String {
        if w.mesh.is_empty() { self.namespace_mesh(&w.namespace) } else { w.mesh.clone() }
    }

    fn trust_domain(&self, mesh: &str) -> String {
        self.meshes.get(mesh).and_then(|m| m.mtls.trust_domain.clone()).unwrap_or_else(|| default_trust_domain(mesh))
    }

    /// Recompiles what changed since the last call and returns the changed
    /// resources (sorted, without duplicates).
    pub fn update(&mut self, snapshot: &Snapshot, output: &Output, workloads: &Workloads) -> Vec<Change> {
        let mut changes: BTreeSet<Change> = BTreeSet::new();

        // Namespace meshes and Mesh objects: rare, and they touch everything.
        let namespace_meshes: BTreeMap<String, String> = snapshot
            .namespaces
            .iter()
            .filter_map(|(n, ns)| Some((n.clone(), mesh_annotation(&ns.metadata)?.to_string())))
            .collect();
        let meshes: BTreeMap<String, MeshSpec> =
            snapshot.meshes.iter().map(|(n, m)| (n.clone(), m.spec.clone())).collect();
        let everything = !self.initialized || namespace_meshes != self.namespace_meshes || meshes != self.meshes;
        self.namespace_meshes = namespace_meshes;
        self.meshes = meshes;

        // Inputs of this round.
        let services: BTreeMap<ObjectKey, Service> = snapshot.services.clone();
        let routes = route_records(snapshot, output);
        let gateway_specs: BTreeMap<String, MeshGatewaySpec> = output
            .mesh_gateways
            .iter()
            .map(|g| (g.metadata.name.clone().unwrap_or_default(), g.spec.clone()))
            .collect();
        let slices = snapshot.endpoint_slices.clone();

        // What changed.
        let mut dirty_services: BTreeSet<ObjectKey> = changed_keys(&self.services, &services).into_iter().collect();
        let mut dirty_endpoints: BTreeSet<ObjectKey> = dirty_services.clone();
        let mut dirty_gateways: BTreeSet<String> = changed_keys(&self.gateways, &gateway_specs).into_iter().collect();
        for id in changed_keys(&self.routes, &routes) {
            for rec in [self.routes.get(&id), routes.get(&id)].into_iter().flatten() {
                dirty_services.extend(rec.services(&id.1.namespace));
                if rec.target.kind == TargetKind::MeshGateway {
                    dirty_gateways.extend(rec.target.name.clone());
                }
            }
        }
        for key in changed_keys(&self.slices, &slices) {
            for s in [self.slices.get(&key), slices.get(&key)].into_iter().flatten() {
                dirty_endpoints.extend(slice_service(&key, s));
            }
        }
        let changed_pods: BTreeSet<ObjectKey> = changed_keys(&self.pods, &snapshot.pods).into_iter().collect();
        if !changed_pods.is_empty() {
            for (key, s) in &slices {
                if slice_pods(key, s).any(|p| changed_pods.contains(&p)) {
                    dirty_endpoints.extend(slice_service(key, s));
                }
            }
        }
        let changed_workloads = changed_keys(&self.workloads, workloads);
        for id in &changed_workloads {
            for w in [self.workloads.get(id), workloads.get(id)].into_iter().flatten() {
                for (key, svc) in services.range(ObjectKey::new(w.namespace.clone(), "")..) {
                    if key.namespace != w.namespace {
                        break;
                    }
                    if endpoints::selects(svc, &w.labels) {
                        dirty_endpoints.insert(key.clone());
                    }
                }
            }
        }

        // Virtual IPs for Services without a cluster IP.
        let mut taken = BTreeSet::new();
        let mut needing = BTreeSet::new();
        for (key, svc) in &services {
            match svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) {
                Some(ip) if ip != "None" && !ip.is_empty() => {
                    if let Ok(ip) = ip.parse::<Ipv4Addr>() {
                        taken.insert(ip);
                    }
                }
                _ => {
                    needing.insert(key.clone());
                }
            }
        }
        let vips = vips::allocate(&needing, &taken);
        dirty_services.extend(changed_keys(&self.vips, &vips));
        self.vips = vips;

        if everything {
            dirty_services.extend(services.keys().cloned());
            dirty_services.extend(self.services.keys().cloned());
            dirty_endpoints.extend(services.keys().cloned());
            dirty_endpoints.extend(self.services.keys().cloned());
            dirty_gateways.extend(gateway_specs.keys().cloned());
        }

        self.services = services;
        self.routes = routes;
        self.gateways = gateway_specs;
        self.slices_by_service.clear();
        for (key, s) in &slices {
            if let Some(svc) = slice_service(key, s) {
                self.slices_by_service.entry(svc).or_default().insert(key.clone());
            }
        }
        self.slices = slices;
        if !changed_pods.is_empty() {
            self.pods = snapshot.pods.clone();
        }
        self.workloads = workloads.clone();

        // Meshes: a handful, recomputed every time.
        let mut mesh_names: BTreeSet<String> = self.meshes.keys().cloned().collect();
        mesh_names.insert(labels::DEFAULT_MESH.to_string());
        let mut meshes = BTreeMap::new();
        for name in mesh_names {
            let spec = self.meshes.get(&name).cloned().unwrap_or_default();
            let mtls = match spec.mtls.mode {
                MtlsMode::Strict => api::MtlsMode::Strict,
                MtlsMode::Permissive => api::MtlsMode::Permissive,
                MtlsMode::Off => api::MtlsMode::Off,
            };
            let res = versioned(
                api::MESH_RESOURCE.to_string(),
                api::resource::Kind::Mesh(api::MeshSettings {
                    name: name.clone(),
                    mtls: mtls as i32,
                    trust_domain: self.trust_domain(&name),
                    roots_pem: self.mesh_roots.get(&name).cloned().unwrap_or_default(),
                    federated: self
                        .mesh_roots
                        .iter()
                        .filter(|(other, roots)| **other != name && !roots.is_empty())
                        .map(|(other, roots)| api::TrustBundle {
                            mesh: other.clone(),
                            trust_domain: self.trust_domain(other),
                            roots_pem: roots.clone(),
                        })
                        .collect(),
                }),
            );
            if self.compiled.meshes.get(&name).map(|r| &r.version) != Some(&res.version) {
                changes.insert(Change::Mesh(name.clone()));
            }
            meshes.insert(name, res);
        }
        for gone in self.compiled.meshes.keys().filter(|m| !meshes.contains_key(*m)) {
            changes.insert(Change::Mesh(gone.clone()));
        }
        self.compiled.meshes = meshes;

        // Routes by the Services they shape.
        let mut routes_by_service: BTreeMap<ObjectKey, Vec<(&str, &RouteRecord)>> = BTreeMap::new();
        for ((_, key), rec) in &self.routes {
            if rec.target.kind == TargetKind::MeshGateway {
                continue;
            }
            for svc in rec.services(&key.namespace) {
                if dirty_services.contains(&svc) {
                    routes_by_service.entry(svc).or_default().push((key.namespace.as_str(), rec));
                }
            }
        }
        for key in &dirty_services {
            match self.services.get(key) {
                Some(svc) => {
                    let mesh = self.service_mesh(key, svc);
                    let vips: Vec<String> = match svc.spec.as_ref().and_then(|s| s.cluster_ip.clone()) {
                        Some(ip) if ip != "None" && !ip.is_empty() => vec![ip],
                        _ => self.vips.get(key).map(|ip| vec![ip.to_string()]).unwrap_or_default(),
                    };
                    let attached = routes_by_service.get(key).map(Vec::as_slice).unwrap_or(&[]);
                    let variants = services::compile(key, svc, &mesh, vips, attached);
                    let all = |v: &ServiceVariants, changes: &mut BTreeSet<Change>| {
                        changes.insert(Change::Service { key: key.clone(), namespace: None, mesh: v.mesh.clone() });
                        for ns in v.consumers.keys() {
                            changes.insert(Change::Service {
                                key: key.clone(),
                                namespace: Some(ns.clone()),
                                mesh: v.mesh.clone(),
                            });
                        }
                    };
                    match self.compiled.services.get(key) {
                        Some(old) if old.mesh == variants.mesh => {
                            if old.producer.version != variants.producer.version {
                                changes.insert(Change::Service {
                                    key: key.clone(),
                                    namespace: None,
                                    mesh: mesh.clone(),
                                });
                            }
                            let namespaces: BTreeSet<&String> =
                                old.consumers.keys().chain(variants.consumers.keys()).collect();
                            for ns in namespaces {
                                let before = old.consumers.get(ns).map(|r| &r.version);
                                let after = variants.consumers.get(ns).map(|r| &r.version);
                                if before != after {
                                    changes.insert(Change::Service {
                                        key: key.clone(),
                                        namespace: Some(ns.clone()),
                                        mesh: mesh.clone(),
                                    });
                                }
                            }
                        }
                        Some(old) => {
                            // Moved to another mesh: gone from the old one.
                            all(old, &mut changes);
                            all(&variants, &mut changes);
                        }
                        None => all(&variants, &mut changes),
                    }
                    self.compiled.services.insert(key.clone(), variants);
                }
                None => {
                    if let Some(old) = self.compiled.services.remove(key) {
                        changes.insert(Change::Service { key: key.clone(), namespace: None, mesh: old.mesh.clone() });
                        for ns in old.consumers.keys() {
                            changes.insert(Change::Service {
                                key: key.clone(),
                                namespace: Some(ns.clone()),
                                mesh: old.mesh.clone(),
                            });
                        }
                    }
                }
            }
        }

        // Endpoints.
        for key in &dirty_endpoints {
            match self.services.get(key) {
                Some(svc) => {
                    let mesh = self.service_mesh(key, svc);
                    let trust_domain = self.trust_domain(&mesh);
                    let slices: Vec<&EndpointSlice> = self
                        .slices_by_service
                        .get(key)
                        .into_iter()
                        .flatten()
                        .filter_map(|k| self.slices.get(k))
                        .collect();
                    let mesh_of = |w: &weft_api::Workload| self.workload_mesh(w);
                    let inputs = EndpointInputs {
                        source: self.endpoint_source,
                        workloads: &self.workloads,
                        mesh_of_workload: &mesh_of,
                        slices: &slices,
                        pods: &self.pods,
                    };
                    let res = endpoints::compile(key, svc, &mesh, &trust_domain, &inputs);
                    match self.compiled.endpoints.get(key) {
                        Some((old_mesh, old)) if *old_mesh == mesh => {
                            if old.version != res.version {
                                changes.insert(Change::Endpoints { key: key.clone(), mesh: mesh.clone() });
                            }
                        }
                        Some((old_mesh, _)) => {
                            changes.insert(Change::Endpoints { key: key.clone(), mesh: old_mesh.clone() });
                            changes.insert(Change::Endpoints { key: key.clone(), mesh: mesh.clone() });
                        }
                        None => {
                            changes.insert(Change::Endpoints { key: key.clone(), mesh: mesh.clone() });
                        }
                    }
                    self.compiled.endpoints.insert(key.clone(), (mesh, res));
                }
                None => {
                    if let Some((old_mesh, _)) = self.compiled.endpoints.remove(key) {
                        changes.insert(Change::Endpoints { key: key.clone(), mesh: old_mesh });
                    }
                }
            }
        }

        // Gateways.
        for name in &dirty_gateways {
            match self.gateways.get(name) {
                Some(spec) => {
                    let mut targeting: Vec<&RouteRecord> = self
                        .routes
                        .values()
                        .filter(|r| r.target.kind == TargetKind::MeshGateway && r.target.name.as_deref() == Some(name))
                        .collect();
                    targeting.sort_by(|a, b| a.rank.cmp(&b.rank));
                    let res = gateways::compile(name, spec, &targeting);
                    if self.compiled.gateways.get(name).map(|(_, r)| &r.version) != Some(&res.version) {
                        changes.insert(Change::Gateway(name.clone()));
                    }
                    self.compiled.gateways.insert(name.clone(), (spec.mesh.clone(), res));
                }
                None => {
                    if self.compiled.gateways.remove(name).is_some() {
                        changes.insert(Change::Gateway(name.clone()));
                    }
                }
            }
        }

        // Listener certificates of every gateway: few, and a change of one
        // means a full comparison for that gateway's proxies.
        let mut shared = BTreeMap::new();
        let mut gateway_certificates = BTreeMap::new();
        for (name, spec) in &self.gateways {
            let certs = crate::certificates::compile(spec, &self.tls, &mut shared);
            if !certs.is_empty() {
                gateway_certificates.insert(name.clone(), certs);
            }
        }
        if self.tls_changed || everything || !dirty_gateways.is_empty() {
            let names: BTreeSet<&String> =
                gateway_certificates.keys().chain(self.compiled.gateway_certificates.keys()).collect();
            for name in names {
                let versions = |m: Option<&BTreeMap<ObjectKey, SharedResource>>| {
                    m.map(|m| m.iter().map(|(k, r)| (k.clone(), r.version.clone())).collect::<Vec<_>>())
                };
                if versions(gateway_certificates.get(name)) != versions(self.compiled.gateway_certificates.get(name)) {
                    changes.insert(Change::Gateway(name.clone()));
                }
            }
        }
        self.tls_changed = false;
        self.compiled.gateway_certificates = gateway_certificates;

        // Per-proxy inbound ports, meshes and gateways.
        let mut inbound_dirty: BTreeSet<String> = changed_workloads.into_iter().collect();
        if everything || !dirty_services.is_empty() {
            for (id, w) in &self.workloads {
                let touched = dirty_services.iter().any(|k| {
                    k.namespace == w.namespace && self.services.get(k).is_some_and(|s| endpoints::selects(s, &w.labels))
                });
                if touched || everything {
                    inbound_dirty.insert(id.clone());
                }
            }
        }
        let instance_gateways: BTreeMap<ObjectKey, String> = output
            .mesh_gateway_instances
            .iter()
            .map(|i| {
                (
                    ObjectKey::new(
                        i.metadata.namespace.clone().unwrap_or_default(),
                        i.metadata.name.clone().unwrap_or_default(),
                    ),
                    i.spec.mesh_gateway.clone(),
                )
            })
            .collect();
        for id in inbound_dirty {
            match self.workloads.get(&id) {
                Some(w) => {
                    let res = self.inbound(w);
                    if self.compiled.inbound.get(&id).map(|r| &r.version) != Some(&res.version) {
                        changes.insert(Change::Inbound(id.clone()));
                    }
                    self.compiled.inbound.insert(id.clone(), res);
                    let mesh = self.workload_mesh(w);
                    if self.compiled.proxy_mesh.get(&id) != Some(&mesh) {
                        changes.insert(Change::Placement(id.clone()));
                    }
                    self.compiled.proxy_mesh.insert(id.clone(), mesh);
                }
                None => {
                    self.compiled.inbound.remove(&id);
                    self.compiled.proxy_mesh.remove(&id);
                    self.compiled.proxy_gateway.remove(&id);
                }
            }
        }
        // Which MeshGateway each gateway proxy serves follows the instances.
        for (id, w) in &self.workloads {
            if w.role != api::Role::Gateway as i32 {
                continue;
            }
            let served = instance_gateways.get(&ObjectKey::new(w.namespace.clone(), w.gateway.clone())).cloned();
            if self.compiled.proxy_gateway.get(id) != served.as_ref() {
                changes.insert(Change::Placement(id.clone()));
                match served {
                    Some(g) => self.compiled.proxy_gateway.insert(id.clone(), g),
                    None => self.compiled.proxy_gateway.remove(id),
                };
            }
        }
        // Services in front of gateway proxies are reachable from every mesh.
        let exported: BTreeSet<ObjectKey> = self
            .compiled
            .endpoints
            .iter()
            .filter(|(_, (_, res))| match &res.kind {
                Some(api::resource::Kind::Endpoints(e)) => {
                    e.endpoints.iter().any(|ep| self.compiled.proxy_gateway.contains_key(&ep.workload))
                }
                _ => false,
            })
            .map(|(key, _)| key.clone())
            .collect();
        if exported != self.compiled.exported {
            changes.insert(Change::Exported);
            self.compiled.exported = exported;
        }
        self.initialized = true;
        changes.into_iter().collect()
    }

    /// The inbound ports of a workload: its declared ports, with the
    /// protocol of the Service ports that target them (detection when none
    /// declares one).
    fn inbound(&self, w: &weft_api::Workload) -> SharedResource {
        use weft_k8s_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        use weft_translate::ports::{PortProtocol, port_protocol, uses_h2c};
        let mut ports: BTreeMap<u32, api::Protocol> = w.ports.iter().map(|p| (p.port, api::Protocol::Detect)).collect();
        for (key, svc) in self.services.range(ObjectKey::new(w.namespace.clone(), "")..) {
            if key.namespace != w.namespace {
                break;
            }
            if !endpoints::selects(svc, &w.labels) {
                continue;
            }
            for p in service_ports(svc) {
                let target = match &p.target_port {
                    None => Some(p.port.max(0) as u32),
                    Some(IntOrString::Int(n)) => Some((*n).max(0) as u32),
                    Some(IntOrString::String(name)) => w.ports.iter().find(|wp| wp.name == *name).map(|wp| wp.port),
                };
                let Some(target) = target else { continue };
                let protocol = match port_protocol(p) {
                    PortProtocol::Http if uses_h2c(p) => api::Protocol::Http2,
                    PortProtocol::Http => api::Protocol::Http,
                    PortProtocol::Opaque => api::Protocol::Opaque,
                    PortProtocol::Detect => api::Protocol::Detect,
                };
                let entry = ports.entry(target).or_insert(protocol);
                if *entry == api::Protocol::Detect {
                    *entry = protocol;
                }
            }
        }
        versioned(
            api::INBOUND_RESOURCE.to_string(),
            api::resource::Kind::Inbound(api::Inbound {
                ports: ports.into_iter().map(|(port, p)| api::InboundPort { port, protocol: p as i32 }).collect(),
            }),
        )
    }
}
