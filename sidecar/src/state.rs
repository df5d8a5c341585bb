//! The configuration a proxy holds: every resource by name, with the
//! indexes the request path needs (a Service by cluster IP and port, by
//! host name). Updates build a new value from the old one; the old one
//! stays valid for requests already using it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use weft_api::config as api;

use crate::model::{Certificate, Endpoints, Gateway, Inbound, MeshSettings, Resource, Service, ServicePort};

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub mesh: Option<Arc<MeshSettings>>,
    pub inbound: Option<Arc<Inbound>>,
    /// By resource name (`svc/<ns>/<name>`).
    pub services: FxHashMap<String, Arc<Service>>,
    /// By resource name (`ep/<ns>/<name>`).
    pub endpoints: FxHashMap<String, Arc<Endpoints>>,
    /// By resource name (`gw/<name>`); a gateway proxy holds its one.
    pub gateways: HashMap<String, Arc<Gateway>>,
    /// Listener certificates by `namespace/name` (a gateway proxy's).
    pub certificates: HashMap<String, Arc<Certificate>>,
    /// Cluster IP and port → Service resource name.
    by_vip: FxHashMap<SocketAddr, String>,
    /// Host name → Service resource name.
    by_host: FxHashMap<String, String>,
    /// Versions of the resources held, as reported on reconnect.
    pub versions: BTreeMap<String, String>,
    /// Nonce of the last update applied.
    pub nonce: u64,
}

/// A resource the proxy could not apply, for the NACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub resource: String,
    pub error: String,
}

impl Config {
    /// Applies an update: every valid resource replaces its previous
    /// version; an invalid one is rejected and its previous version stays.
    pub fn apply(&self, update: &api::ConfigUpdate) -> (Config, Vec<Rejected>) {
        let mut next = self.clone();
        let mut rejected = Vec::new();
        for name in &update.removed {
            next.remove(name);
        }
        for r in &update.resources {
            match Resource::from_api(r) {
                Ok(resource) => {
                    next.insert(&r.name, resource);
                    next.versions.insert(r.name.clone(), r.version.clone());
                }
                Err(e) => {
                    tracing::warn!(resource = %r.name, version = %r.version, error = %e, "rejected resource");
                    rejected.push(Rejected { resource: r.name.clone(), error: e.to_string() });
                }
            }
        }
        next.nonce = update.nonce;
        (next, rejected)
    }

    fn remove(&mut self, name: &str) {
        self.versions.remove(name);
        if name == "mesh" {
            self.mesh = None;
        } else if name == "inbound" {
            self.inbound = None;
        } else if let Some(old) = self.services.remove(name) {
            self.unindex(name, &old);
        } else if let Some(key) = name.strip_prefix("cert/") {
            self.certificates.remove(key);
        } else if self.endpoints.remove(name).is_none() {
            self.gateways.remove(name);
        }
    }

    fn insert(&mut self, name: &str, resource: Resource) {
        match resource {
            Resource::Mesh(m) => self.mesh = Some(m),
            Resource::Inbound(i) => self.inbound = Some(i),
            Resource::Service(s) => {
                if let Some(old) = self.services.remove(name) {
                    self.unindex(name, &old);
                }
                for vip in &s.vips {
                    for p in &s.ports {
                        self.by_vip.insert(SocketAddr::new(*vip, p.port), name.to_owned());
                    }
                }
                for h in &s.hostnames {
                    self.by_host.insert(h.clone(), name.to_owned());
                }
                self.services.insert(name.to_owned(), s);
            }
            Resource::Endpoints(e) => {
                self.endpoints.insert(name.to_owned(), e);
            }
            Resource::Gateway(g) => {
                self.gateways.insert(name.to_owned(), g);
            }
            Resource::Certificate(c) => {
                self.certificates.insert(format!("{}/{}", c.namespace, c.name), c);
            }
        }
    }

    fn unindex(&mut self, name: &str, old: &Service) {
        for vip in &old.vips {
            for p in &old.ports {
                let addr = SocketAddr::new(*vip, p.port);
                if self.by_vip.get(&addr).is_some_and(|n| n == name) {
                    self.by_vip.remove(&addr);
                }
            }
        }
        for h in &old.hostnames {
            if self.by_host.get(h).is_some_and(|n| n == name) {
                self.by_host.remove(h);
            }
        }
    }

    /// The Service port a connection to `addr` (a cluster IP) is for.
    pub fn service_by_addr(&self, addr: SocketAddr) -> Option<(&Arc<Service>, &ServicePort)> {
        let name = self.by_vip.get(&addr)?;
        let s = self.services.get(name)?;
        Some((s, s.port(addr.port())?))
    }

    /// The Service a host name (without port) addresses, and the port.
    pub fn service_by_host(&self, host: &str, port: u16) -> Option<(&Arc<Service>, &ServicePort)> {
        let name = self.by_host.get(normal_host(host).as_ref())?;
        let s = self.services.get(name)?;
        Some((s, s.port(port)?))
    }

    /// The Service a host name addresses, whatever the port.
    pub fn service_named(&self, host: &str) -> Option<&Arc<Service>> {
        self.services.get(self.by_host.get(normal_host(host).as_ref())?)
    }

    /// The declared protocol of a backend's Service port, when the proxy
    /// holds that Service (it holds every Service of its mesh).
    pub fn backend_protocol(&self, backend: &crate::model::Backend) -> Option<crate::model::Protocol> {
        Some(self.services.get(&backend.service)?.port(backend.port)?.protocol)
    }

    /// Whether `host` names any Service (to tell "unknown host" from
    /// "unknown port" in errors).
    pub fn knows_host(&self, host: &str) -> bool {
        self.by_host.contains_key(normal_host(host).as_ref())
    }

    /// Every endpoint address of every endpoint set, to keep their
    /// connections and statistics.
    pub fn endpoint_addrs(&self) -> std::collections::HashSet<SocketAddr> {
        self.endpoints
            .values()
            .flat_map(|e| e.endpoints.iter())
            .flat_map(|ep| ep.ports.values().map(move |p| SocketAddr::new(ep.ip, *p)))
            .collect()
    }
}

/// A host name as the index holds it: lower case, without a trailing dot
/// (copied only when it has upper-case letters).
fn normal_host(host: &str) -> Cow<'_, str> {
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, vip: &str, version: &str, regex: &str) -> api::Resource {
        api::Resource {
            name: format!("svc/ns/{name}"),
            version: version.into(),
            kind: Some(api::resource::Kind::Service(api::Service {
                namespace: "ns".into(),
                name: name.into(),
                vips: vec![vip.into()],
                hostnames: vec![format!("{name}.ns")],
                ports: vec![api::ServicePort {
                    port: 80,
                    name: "http".into(),
                    protocol: api::Protocol::Http as i32,
                    http_routes: vec![api::HttpRoute {
                        source: None,
                        hostnames: vec![],
                        rules: vec![api::HttpRule {
                            matches: vec![api::HttpMatch {
                                path: Some(api::PathMatch {
                                    kind: api::path_match::Kind::Regex as i32,
                                    value: regex.into(),
                                }),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                    }],
                    tcp_routes: vec![],
                }],
            })),
        }
    }

    #[test]
    fn an_invalid_resource_keeps_the_previous_version_and_the_rest_apply() {
        let (c1, rejected) = Config::default().apply(&api::ConfigUpdate {
            nonce: 1,
            resources: vec![svc("a", "10.96.0.1", "v1", "/a")],
            removed: vec![],
        });
        assert!(rejected.is_empty());
        let update = api::ConfigUpdate {
            nonce: 2,
            resources: vec![svc("a", "10.96.0.1", "v2", "/("), svc("b", "10.96.0.2", "v1", "/b")],
            removed: vec![],
        };
        let (c2, rejected) = c1.apply(&update);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].resource, "svc/ns/a");
        assert_eq!(c2.versions["svc/ns/a"], "v1");
        assert_eq!(c2.versions["svc/ns/b"], "v1");
        assert!(c2.service_by_addr("10.96.0.1:80".parse().unwrap()).is_some());
        assert!(c2.service_by_host("B.ns.", 80).is_some());
        assert_eq!(c2.nonce, 2);
    }

    #[test]
    fn a_changed_address_moves_the_index_and_removal_clears_it() {
        let (c1, _) = Config::default().apply(&api::ConfigUpdate {
            nonce: 1,
            resources: vec![svc("a", "10.96.0.1", "v1", "/a")],
            removed: vec![],
        });
        let (c2, _) = c1.apply(&api::ConfigUpdate {
            nonce: 2,
            resources: vec![svc("a", "10.96.0.9", "v2", "/a")],
            removed: vec![],
        });
        assert!(c2.service_by_addr("10.96.0.1:80".parse().unwrap()).is_none());
        assert!(c2.service_by_addr("10.96.0.9:80".parse().unwrap()).is_some());
        assert!(c2.service_by_addr("10.96.0.9:81".parse().unwrap()).is_none());
        let (c3, _) = c2.apply(&api::ConfigUpdate { nonce: 3, resources: vec![], removed: vec!["svc/ns/a".into()] });
        assert!(c3.service_by_addr("10.96.0.9:80".parse().unwrap()).is_none());
        assert!(!c3.knows_host("a.ns"));
        assert!(c3.versions.is_empty());
        // The old value is untouched: requests holding it keep working.
        assert!(c2.knows_host("a.ns"));
    }
}
