//! Which resources one proxy needs: its mesh settings, its inbound ports,
//! every Service of its mesh (in the variant for its namespace) with their
//! endpoints, the Services in front of gateway proxies of every mesh, and
//! for a gateway proxy its gateway's listeners and their certificates.

use weft_api as api;

use crate::SharedResource;
use crate::compiler::{Change, Compiled};

/// A connected proxy as the distributor knows it.
#[derive(Clone, Copy, Debug)]
pub struct ProxyView<'a> {
    /// Proxy id (`namespace/name`).
    pub id: &'a str,
    /// What it announced.
    pub workload: &'a api::Workload,
    /// It proved an identity in its own namespace: a gateway proxy may then
    /// hold its listeners' certificate keys.
    pub may_hold_keys: bool,
}

impl ProxyView<'_> {
    fn mesh<'c>(&self, compiled: &'c Compiled) -> Option<&'c str> {
        compiled.proxy_mesh.get(self.id).map(String::as_str)
    }
}

/// Every resource the proxy should hold, each once (names are unique by
/// construction), in a stable order: mesh, inbound, Services with their
/// endpoints, gateway. A list rather than a map: the initial sync of every
/// proxy walks it, and naming each entry again would cost more than the
/// walk.
pub fn desired_resources(compiled: &Compiled, proxy: ProxyView<'_>) -> Vec<SharedResource> {
    let mut out = Vec::new();
    let Some(mesh) = proxy.mesh(compiled) else { return out };
    out.extend(compiled.meshes.get(mesh).cloned());
    out.extend(compiled.inbound.get(proxy.id).cloned());
    for (key, variants) in &compiled.services {
        if variants.mesh != mesh && !compiled.exported.contains(key) {
            continue;
        }
        out.push(variants.for_namespace(&proxy.workload.namespace).clone());
        out.extend(compiled.endpoints.get(key).map(|(_, ep)| ep.clone()));
    }
    if let Some(name) = compiled.proxy_gateway.get(proxy.id)
        && let Some((gw_mesh, gw)) = compiled.gateways.get(name)
        && gw_mesh == mesh
    {
        out.push(gw.clone());
        if proxy.may_hold_keys {
            out.extend(compiled.gateway_certificates.get(name).into_iter().flatten().map(|(_, r)| r.clone()));
        }
    }
    out
}

/// What a change means for one proxy: `None` when the proxy must redo a
/// full comparison (its own mesh or gateway changed), else the resources it
/// must be sent, each with what it should now hold (`None`: remove it).
pub fn resource_for(
    compiled: &Compiled,
    proxy: ProxyView<'_>,
    change: &Change,
) -> Option<Vec<(String, Option<SharedResource>)>> {
    let mesh = proxy.mesh(compiled)?;
    let namespace = proxy.workload.namespace.as_str();
    match change {
        Change::Placement(id) if id == proxy.id => None,
        Change::Inbound(id) if id == proxy.id => {
            Some(vec![(api::INBOUND_RESOURCE.to_string(), compiled.inbound.get(proxy.id).cloned())])
        }
        Change::Placement(_) | Change::Inbound(_) => Some(Vec::new()),
        Change::Mesh(m) if m == mesh => {
            Some(vec![(api::MESH_RESOURCE.to_string(), compiled.meshes.get(mesh).cloned())])
        }
        Change::Mesh(_) => Some(Vec::new()),
        Change::Exported => None,
        Change::Service { key, namespace: variant, mesh: change_mesh } => {
            let exported = compiled.exported.contains(key);
            if change_mesh != mesh && !exported {
                return Some(Vec::new());
            }
            let current = compiled.services.get(key).filter(|v| v.mesh == mesh || exported);
            // A producer change matters to namespaces without a consumer
            // variant; a consumer change only to its own namespace.
            let affected = match variant {
                Some(ns) => ns == namespace,
                None => current.is_none_or(|v| !v.consumers.contains_key(namespace)),
            };
            if !affected {
                return Some(Vec::new());
            }
            let desired = current.map(|v| v.for_namespace(namespace).clone());
            Some(vec![(api::service_resource(&key.namespace, &key.name), desired)])
        }
        Change::Endpoints { key, mesh: change_mesh } => {
            let exported = compiled.exported.contains(key);
            if change_mesh != mesh && !exported {
                return Some(Vec::new());
            }
            let desired = compiled.endpoints.get(key).filter(|(m, _)| m == mesh || exported).map(|(_, r)| r.clone());
            Some(vec![(api::endpoints_resource(&key.namespace, &key.name), desired)])
        }
        Change::Gateway(name) => {
            if compiled.proxy_gateway.get(proxy.id) != Some(name) {
                return Some(Vec::new());
            }
            // Its listeners or certificates changed: certificates it no
            // longer needs must go too, so compare everything (a gateway
            // proxy holds few resources).
            None
        }
    }
}
