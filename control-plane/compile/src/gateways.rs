//! A MeshGateway and the routes that target its listeners → the
//! `gw/<name>` resource a gateway proxy serves.

use weft_api as api;
use weft_k8s_api::crds::{DestinationKind, ListenerProtocol, MeshGatewaySpec, TlsMode};

use crate::SharedResource;
use crate::routes::http_rule;
use crate::routes::tcp_backends;
use crate::services::{RouteBody, RouteRecord};
use crate::version::versioned;

/// Compiles one gateway. `routes` target it (already sorted by rank).
pub(crate) fn compile(name: &str, spec: &MeshGatewaySpec, routes: &[&RouteRecord]) -> SharedResource {
    let listeners = spec
        .listeners
        .iter()
        .map(|l| {
            let mut http_routes = Vec::new();
            let mut tcp_routes = Vec::new();
            for r in routes {
                for d in r.to.iter().filter(|d| d.kind == DestinationKind::Listener && d.name == l.name) {
                    match &r.body {
                        RouteBody::Http(rules) => http_routes.push(api::HttpRoute {
                            source: Some(r.source.clone()),
                            hostnames: d.hostnames.clone(),
                            rules: rules.iter().map(http_rule).collect(),
                        }),
                        RouteBody::Tcp(rules) => tcp_routes.push(api::TcpRoute {
                            source: Some(r.source.clone()),
                            hostnames: d.hostnames.clone(),
                            backends: tcp_backends(rules),
                        }),
                    }
                }
            }
            api::Listener {
                name: l.name.clone(),
                port: l.port.max(0) as u32,
                protocol: match l.protocol {
                    ListenerProtocol::Http => api::listener::Protocol::Http,
                    ListenerProtocol::Https => api::listener::Protocol::Https,
                    ListenerProtocol::Tls => api::listener::Protocol::Tls,
                    ListenerProtocol::Tcp => api::listener::Protocol::Tcp,
                } as i32,
                hostname: l.hostname.clone().unwrap_or_default(),
                tls: l.tls.as_ref().map(|t| api::ListenerTls {
                    passthrough: t.mode == TlsMode::Passthrough,
                    certificates: t.certificates.iter().map(|c| format!("{}/{}", c.namespace, c.name)).collect(),
                }),
                http_routes,
                tcp_routes,
            }
        })
        .collect();
    versioned(
        api::gateway_resource(name),
        api::resource::Kind::Gateway(api::GatewayListeners {
            name: name.to_string(),
            cross_mesh: spec.cross_mesh,
            listeners,
        }),
    )
}
