//! Endpoints of a Service: the connected workloads its selector picks (with
//! the identity their proxy must present) and the addresses of its
//! EndpointSlices (workloads without a proxy).

use weft_api as api;
use weft_k8s_api::k8s_openapi::api::core::v1::Service;
use weft_k8s_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use weft_k8s_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weft_translate::ObjectKey;
use weft_translate::ports::service_ports;

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

/// Compiles the endpoints of one Service. `mesh_of_workload` gives each
/// workload's mesh; only workloads of the Service's mesh are endpoints.
pub(crate) fn compile(
    key: &ObjectKey,
    svc: &Service,
    mesh: &str,
    trust_domain: &str,
    workloads: &Workloads,
    mesh_of_workload: &dyn Fn(&weft_api::Workload) -> String,
    slices: &[&EndpointSlice],
) -> SharedResource {
    let ports = service_ports(svc);
    let mut endpoints = Vec::new();
    for w in workloads.values() {
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
            for address in &ep.addresses {
                endpoints.push(api::Endpoint {
                    ip: address.clone(),
                    ports: mapped.clone(),
                    identity: String::new(),
                    workload: format!("{}/{}", key.namespace, slice.metadata.name.as_deref().unwrap_or("")),
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
