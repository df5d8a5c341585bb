//! A Service and the routes attached to it → the `svc/<ns>/<name>`
//! resource, in one variant for producer routes and one per namespace that
//! has consumer routes for it (GAMMA: a consumer route wins over producer
//! routes, for clients in its namespace, port by port).

use std::collections::BTreeMap;

use weft_api as api;
use weft_k8s_api::crds::{Destination, DestinationKind, HttpRouteRule, TargetKind, TargetRef, TcpRouteRule};
use weft_k8s_api::k8s_openapi::api::core::v1::Service;
use weft_translate::ObjectKey;
use weft_translate::ports::{PortProtocol, port_protocol, service_ports, uses_h2c};

use crate::routes::{RouteRank, default_http_route, default_tcp_route, http_rule, tcp_backends};
use crate::version::versioned;
use crate::{SharedResource, compiler::ServiceVariants};

/// What a route carries.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RouteBody {
    Http(Vec<HttpRouteRule>),
    Tcp(Vec<TcpRouteRule>),
}

/// A route resource (generated or hand-written, accepted) as compilation
/// needs it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RouteRecord {
    pub source: api::ObjectRef,
    pub rank: RouteRank,
    pub target: TargetRef,
    pub to: Vec<Destination>,
    pub body: RouteBody,
}

impl RouteRecord {
    /// Services this route shapes traffic to.
    pub fn services(&self, route_namespace: &str) -> impl Iterator<Item = ObjectKey> + '_ {
        let ns = route_namespace.to_string();
        self.to
            .iter()
            .filter(|d| d.kind == DestinationKind::Service)
            .map(move |d| ObjectKey::new(d.namespace.clone().unwrap_or_else(|| ns.clone()), d.name.clone()))
    }

    /// The consumer namespace of a workload route, or None for a producer
    /// route (targetRef Mesh).
    fn consumer(&self) -> Option<&str> {
        match self.target.kind {
            TargetKind::Namespace => self.target.name.as_deref(),
            _ => None,
        }
    }

    fn applies_to_port(&self, svc: &ObjectKey, route_namespace: &str, port: i32) -> bool {
        self.to.iter().any(|d| {
            d.kind == DestinationKind::Service
                && d.name == svc.name
                && d.namespace.as_deref().unwrap_or(route_namespace) == svc.namespace
                && d.port.is_none_or(|p| p == port)
        })
    }
}

/// Host names that address a Service.
fn hostnames(key: &ObjectKey) -> Vec<String> {
    let (n, ns) = (&key.name, &key.namespace);
    vec![n.clone(), format!("{n}.{ns}"), format!("{n}.{ns}.svc"), format!("{n}.{ns}.svc.cluster.local")]
}

/// Compiles every variant of one Service. `routes` are the routes attached
/// to it, each with its own namespace.
pub(crate) fn compile(
    key: &ObjectKey,
    svc: &Service,
    mesh: &str,
    vips: Vec<String>,
    routes: &[(&str, &RouteRecord)],
) -> ServiceVariants {
    let mut sorted: Vec<&(&str, &RouteRecord)> = routes.iter().collect();
    sorted.sort_by(|a, b| a.1.rank.cmp(&b.1.rank));
    let mut consumers: Vec<&str> = sorted.iter().filter_map(|(_, r)| r.consumer()).collect();
    consumers.sort_unstable();
    consumers.dedup();
    let producer = build(key, svc, &vips, &sorted, None);
    let consumers: BTreeMap<String, SharedResource> =
        consumers.into_iter().map(|ns| (ns.to_string(), build(key, svc, &vips, &sorted, Some(ns)))).collect();
    ServiceVariants { mesh: mesh.to_string(), producer, consumers }
}

fn build(
    key: &ObjectKey,
    svc: &Service,
    vips: &[String],
    routes: &[&(&str, &RouteRecord)],
    consumer: Option<&str>,
) -> SharedResource {
    let ports = service_ports(svc)
        .iter()
        .map(|p| {
            let protocol = match port_protocol(p) {
                PortProtocol::Http if uses_h2c(p) => api::Protocol::Http2,
                PortProtocol::Http => api::Protocol::Http,
                PortProtocol::Opaque => api::Protocol::Opaque,
                PortProtocol::Detect => api::Protocol::Detect,
            };
            let on_port: Vec<&(&str, &RouteRecord)> =
                routes.iter().copied().filter(|(ns, r)| r.applies_to_port(key, ns, p.port)).collect();
            // Consumer routes of the client's namespace replace producer
            // routes on this port; other namespaces' consumer routes never
            // apply.
            let pick = |is_http: bool| -> Vec<&RouteRecord> {
                let of_kind = |r: &&RouteRecord| matches!(r.body, RouteBody::Http(_)) == is_http;
                let mine: Vec<&RouteRecord> = on_port
                    .iter()
                    .map(|(_, r)| *r)
                    .filter(of_kind)
                    .filter(|r| consumer.is_some() && r.consumer() == consumer)
                    .collect();
                if !mine.is_empty() {
                    return mine;
                }
                on_port.iter().map(|(_, r)| *r).filter(of_kind).filter(|r| r.consumer().is_none()).collect()
            };
            let port_no = p.port.max(0) as u32;
            let mut http_routes: Vec<api::HttpRoute> = pick(true)
                .into_iter()
                .filter_map(|r| match &r.body {
                    RouteBody::Http(rules) => Some(api::HttpRoute {
                        source: Some(r.source.clone()),
                        hostnames: Vec::new(),
                        rules: rules.iter().map(http_rule).collect(),
                    }),
                    RouteBody::Tcp(_) => None,
                })
                .collect();
            let mut tcp_routes: Vec<api::TcpRoute> = pick(false)
                .into_iter()
                .filter_map(|r| match &r.body {
                    RouteBody::Tcp(rules) => Some(api::TcpRoute {
                        source: Some(r.source.clone()),
                        hostnames: r.to.iter().flat_map(|d| d.hostnames.iter().cloned()).collect(),
                        backends: tcp_backends(rules),
                    }),
                    RouteBody::Http(_) => None,
                })
                .collect();
            if http_routes.is_empty() && protocol != api::Protocol::Opaque {
                http_routes.push(default_http_route(&key.namespace, &key.name, port_no));
            }
            if tcp_routes.is_empty() && !matches!(protocol, api::Protocol::Http | api::Protocol::Http2) {
                tcp_routes.push(default_tcp_route(&key.namespace, &key.name, port_no));
            }
            api::ServicePort {
                port: port_no,
                name: p.name.clone().unwrap_or_default(),
                protocol: protocol as i32,
                http_routes,
                tcp_routes,
            }
        })
        .collect();
    versioned(
        api::service_resource(&key.namespace, &key.name),
        api::resource::Kind::Service(api::Service {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            vips: vips.to_vec(),
            hostnames: hostnames(key),
            ports,
        }),
    )
}
