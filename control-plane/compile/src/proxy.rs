//! Which resources one proxy needs: its mesh settings, its inbound ports,
//! every Service of its mesh (in the variant for its namespace) with their
//! endpoints, and for a gateway proxy its gateway's listeners.

use std::collections::BTreeMap;

use weft_api as api;
use weft_translate::ObjectKey;

use crate::SharedResource;
use crate::compiler::{Change, Compiled};

/// A connected proxy as the distributor knows it.
#[derive(Clone, Copy, Debug)]
pub struct ProxyView<'a> {
    /// Proxy id (`namespace/name`).
    pub id: &'a str,
    /// What it announced.
    pub workload: &'a api::Workload,
}

impl ProxyView<'_> {
    fn mesh<'c>(&self, compiled: &'c Compiled) -> Option<&'c str> {
        compiled.proxy_mesh.get(self.id).map(String::as_str)
    }
}

/// Every resource the proxy should hold, by name.
pub fn desired_resources(compiled: &Compiled, proxy: ProxyView<'_>) -> BTreeMap<String, SharedResource> {
    let mut out = BTreeMap::new();
    let Some(mesh) = proxy.mesh(compiled) else { return out };
    if let Some(m) = compiled.meshes.get(mesh) {
        out.insert(api::MESH_RESOURCE.to_string(), m.clone());
    }
    if let Some(i) = compiled.inbound.get(proxy.id) {
        out.insert(api::INBOUND_RESOURCE.to_string(), i.clone());
    }
    for (key, variants) in &compiled.services {
        if variants.mesh != mesh {
            continue;
        }
        let svc = variants.for_namespace(&proxy.workload.namespace);
        out.insert(svc.name.clone(), svc.clone());
        if let Some(ep) = compiled.endpoints.get(key) {
            out.insert(ep.name.clone(), ep.clone());
        }
    }
    if let Some((gw_mesh, gw)) = compiled.proxy_gateway.get(proxy.id).and_then(|g| compiled.gateways.get(g)) {
        if gw_mesh == mesh {
            out.insert(gw.name.clone(), gw.clone());
        }
    }
    out
}

/// What a change means for one proxy: `None` when the proxy must redo a
/// full comparison (its own mesh or gateway changed), else the resources to
/// compare, each with the version it should now hold (`None`: it should
/// not hold it).
pub fn resource_for(
    compiled: &Compiled,
    proxy: ProxyView<'_>,
    change: &Change,
) -> Option<Vec<(String, Option<SharedResource>)>> {
    let mesh = proxy.mesh(compiled)?;
    match change {
        Change::Inbound(id) if id == proxy.id => None,
        Change::Inbound(_) => Some(Vec::new()),
        Change::Mesh(m) if m == mesh => {
            Some(vec![(api::MESH_RESOURCE.to_string(), compiled.meshes.get(mesh).cloned())])
        }
        Change::Mesh(_) => Some(Vec::new()),
        Change::Shared(name) => {
            let (prefix, rest) = name.split_once('/')?;
            let desired = match prefix {
                "svc" | "ep" => {
                    let (ns, n) = rest.split_once('/')?;
                    let key = ObjectKey::new(ns, n);
                    let variants = compiled.services.get(&key).filter(|v| v.mesh == mesh);
                    match (prefix, variants) {
                        ("svc", Some(v)) => Some(v.for_namespace(&proxy.workload.namespace).clone()),
                        ("ep", Some(_)) => compiled.endpoints.get(&key).cloned(),
                        _ => None,
                    }
                }
                "gw" => compiled
                    .proxy_gateway
                    .get(proxy.id)
                    .filter(|g| g.as_str() == rest)
                    .and_then(|g| compiled.gateways.get(g))
                    .filter(|(m, _)| m == mesh)
                    .map(|(_, r)| r.clone()),
                _ => None,
            };
            Some(vec![(name.clone(), desired)])
        }
    }
}
