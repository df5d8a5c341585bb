//! Endpoints of a Service. In local mode: the connected workloads its
//! selector picks (with the identity their proxy must present) and the
//! addresses of its EndpointSlices (workloads without a proxy). In
//! Kubernetes mode: the addresses of its EndpointSlices only, the cluster
//! being the authority on which pods back a Service; an address whose pod is
//! meshed carries that pod's identity.

use weft_api as api;
use weft_k8s_api::k8s_openapi::api::core::v1::Service;
use weft_k8s_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use weft_k8s_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weft_translate::ports::service_ports;
use weft_translate::{ObjectKey, PodInfo};

use crate::version::versioned;
use crate::{SharedResource, Workloads, spiffe_id};

/// Label naming the Service of an EndpointSlice.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Whether `labels` satisfy the Service's selector (an empty or missing
/// selector selects nothing, as in Kubernetes).
pub(crate) fn selects(svc: &Service, labels: &std::collections::HashMap<String, String>) -> bool {
    match svc.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(sel) if !sel.is_empty() => sel.iter().all(|(k, v)| labels.get(k) == Some(v)),
        _ => false,
    }
}

/// Where a Service's endpoints come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EndpointSource {
    /// Local mode: connected proxies stand in for pods (their announced
    /// labels select them), plus EndpointSlices for workloads without one.
    #[default]
    ConnectedProxies,
    /// Kubernetes mode: EndpointSlices only; what a proxy announces never
    /// makes it an endpoint.
    Cluster,
}

/// What endpoint compilation reads besides the Service.
pub(crate) struct EndpointInputs<'a> {
    pub source: EndpointSource,
    pub workloads: &'a Workloads,
    /// Each workload's mesh; only workloads of the Service's mesh count.
    pub mesh_of_workload: &'a dyn Fn(&weft_api::Workload) -> String,
    pub slices: &'a [&'a EndpointSlice],
    pub pods: &'a std::collections::BTreeMap<ObjectKey, PodInfo>,
}

/// Compiles the endpoints of one Service.
pub(crate) fn compile(
    key: &ObjectKey,
    svc: &Service,
    mesh: &str,
    trust_domain: &str,
    inputs: &EndpointInputs<'_>,
) -> SharedResource {
    let ports = service_ports(svc);
    let mut endpoints = Vec::new();
    let (workloads, mesh_of_workload, slices) = (inputs.workloads, inputs.mesh_of_workload, inputs.slices);
    let from_proxies = inputs.source == EndpointSource::ConnectedProxies;
    for w in workloads.values().filter(|_| from_proxies) {
        if w.namespace != key.namespace || !selects(svc, &w.labels) || mesh_of_workload(w) != mesh {
            continue;
        }
        let Some(ip) = w.ips.first() else { continue };
        let mut mapped = std::collections::HashMap::new();
        for p in ports {
            let target = match &p.target_port {
                None => Some(p.port),
                Some(IntOrString::Int(n)) => Some(*n),
                Some(IntOrString::String(name)) => w.ports.iter().find(|wp| wp.name == *name).map(|wp| wp.port as i32),
            };
            if let Some(t) = target.filter(|t| *t > 0) {
                mapped.insert(p.port.max(0) as u32, t as u32);
            }
        }
        let sa = if w.service_account.is_empty() { "default" } else { w.service_account.as_str() };
        endpoints.push(api::Endpoint {
            ip: ip.clone(),
            ports: mapped,
            identity: spiffe_id(trust_domain, &w.namespace, sa),
            workload: format!("{}/{}", w.namespace, w.name),
        });
    }
    for slice in slices {
        let slice_ports = slice.ports.as_deref().unwrap_or(&[]);
        for ep in &slice.endpoints {
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let mut mapped = std::collections::HashMap::new();
            for p in ports {
                let found =
                    slice_ports.iter().find(|sp| sp.name.as_deref().unwrap_or("") == p.name.as_deref().unwrap_or(""));
                if let Some(port) = found.and_then(|sp| sp.port) {
                    mapped.insert(p.port.max(0) as u32, port.max(0) as u32);
                }
            }
            // A meshed pod is reached over mTLS and must present its
            // ServiceAccount's identity; a pod of another mesh cannot be
            // reached at all (the meshes do not trust each other).
            let pod =
                ep.target_ref.as_ref().filter(|t| t.kind.as_deref() == Some("Pod")).and_then(|t| {
                    Some((t.namespace.clone().unwrap_or_else(|| key.namespace.clone()), t.name.clone()?))
                });
            let (identity, workload) = match pod
                .as_ref()
                .and_then(|(ns, name)| Some((ns, name, inputs.pods.get(&ObjectKey::new(ns.clone(), name.clone()))?)))
            {
                Some((_, _, info)) if info.mesh != mesh => continue,
                Some((ns, name, info)) => (spiffe_id(trust_domain, ns, &info.service_account), format!("{ns}/{name}")),
                None => match &pod {
                    Some((ns, name)) => (String::new(), format!("{ns}/{name}")),
                    None => {
                        (String::new(), format!("{}/{}", key.namespace, slice.metadata.name.as_deref().unwrap_or("")))
                    }
                },
            };
            for address in &ep.addresses {
                endpoints.push(api::Endpoint {
                    ip: address.clone(),
                    ports: mapped.clone(),
                    identity: identity.clone(),
                    workload: workload.clone(),
                });
            }
        }
    }
    endpoints.sort_by(|a, b| (&a.ip, &a.workload).cmp(&(&b.ip, &b.workload)));
    versioned(
        api::endpoints_resource(&key.namespace, &key.name),
        api::resource::Kind::Endpoints(api::Endpoints {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            endpoints,
        }),
    )
}
