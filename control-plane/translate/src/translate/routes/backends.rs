//! Resolving a route's backendRefs (and mirror targets) to Services.

use weft_k8s_api::gateway::GROUP;

use super::super::conditions::reasons;
use super::super::context::{Ctx, core_group, is_h2_app_protocol, is_http_app_protocol, service_ports};
use super::RouteView;

/// A backend reference with the API server's defaults applied.
#[derive(Clone, Debug, Default)]
pub(crate) struct BackendRefView {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<i32>,
    pub weight: Option<i32>,
}

/// Converts any generated backendRef type (they share field names).
macro_rules! backend_view {
    ($b:expr) => {{
        let b = $b;
        $crate::translate::routes::backends::BackendRefView {
            group: b.group.clone(),
            kind: b.kind.clone(),
            name: b.name.clone(),
            namespace: b.namespace.clone(),
            port: b.port,
            weight: None,
        }
    }};
    ($b:expr, weighted) => {{
        let b = $b;
        $crate::translate::routes::backends::BackendRefView {
            group: b.group.clone(),
            kind: b.kind.clone(),
            name: b.name.clone(),
            namespace: b.namespace.clone(),
            port: b.port,
            weight: b.weight,
        }
    }};
}
pub(crate) use backend_view;

/// Why a reference did not resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// A resolved (or not) backend.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub kind: String,
    pub group: String,
    pub name: String,
    pub namespace: String,
    pub port: Option<i32>,
    /// Set when unresolved: proxies answer this backend's share with 500.
    pub problem: Option<Problem>,
}

/// Who refers to a backend, for ReferenceGrants, meshes and protocols.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Referrer<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub mesh: &'a str,
    /// The referrer sends HTTP, so the backend port must take HTTP.
    pub http: bool,
    /// A backend in another namespace needs a ReferenceGrant there.
    pub needs_grant: bool,
}

impl<'a> Referrer<'a> {
    pub fn route(route: &'a RouteView<'a>) -> Self {
        Self {
            group: GROUP,
            kind: route.kind.kind(),
            namespace: &route.key.namespace,
            mesh: route.mesh,
            http: route.kind.is_http(),
            needs_grant: route.backend_grants == BackendGrants::Required,
        }
    }
}

/// Whether a route's cross-namespace backends need ReferenceGrants. Rules
/// are converted for Gateway parents with them and for Service parents
/// without: GEP-1426 ("Namespace boundaries") lets mesh routes send
/// traffic to backends in any namespace without a ReferenceGrant, because
/// a mesh route only changes where traffic a client could already send
/// goes; a Gateway route exposes a backend to the Gateway's clients, so
/// the backend's namespace must agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BackendGrants {
    Required,
    NotRequired,
}

/// Resolves a backend of `route`.
pub(crate) fn resolve(ctx: &Ctx<'_>, route: &RouteView<'_>, b: BackendRefView) -> Resolved {
    resolve_for(ctx, Referrer::route(route), b)
}

/// Resolves a backend for any referrer (generated or hand-written routes).
pub(crate) fn resolve_for(ctx: &Ctx<'_>, from: Referrer<'_>, b: BackendRefView) -> Resolved {
    let namespace = match b.namespace {
        Some(ref n) if !n.is_empty() => n.clone(),
        _ => from.namespace.to_string(),
    };
    let problem = check(ctx, from, &b, &namespace).err();
    let group = b.group.unwrap_or_default();
    Resolved {
        kind: b.kind.unwrap_or_else(|| "Service".into()),
        group: if group == "core" { String::new() } else { group },
        name: b.name,
        namespace,
        port: b.port,
        problem,
    }
}

fn check(ctx: &Ctx<'_>, from: Referrer<'_>, b: &BackendRefView, namespace: &str) -> Result<(), Problem> {
    let kind = b.kind.as_deref().unwrap_or("Service");
    let group = b.group.as_deref().unwrap_or("");
    if from.needs_grant
        && namespace != from.namespace
        && !ctx.reference_granted((from.group, from.kind, from.namespace), group, kind, namespace, &b.name)
    {
        return Err(Problem {
            reason: reasons::REF_NOT_PERMITTED,
            message: format!(
                "no ReferenceGrant in namespace {namespace} lets {}s from namespace {} use {kind} {}",
                from.kind, from.namespace, b.name
            ),
        });
    }
    if !core_group(b.group.as_deref()) || kind != "Service" {
        let shown = if core_group(b.group.as_deref()) { kind.to_string() } else { format!("{kind} (group {group})") };
        return Err(Problem {
            reason: reasons::INVALID_KIND,
            message: format!("backend {:?} is a {shown}, and Weft routes only to core Services", b.name),
        });
    }
    let Some(svc) = ctx.service(namespace, &b.name) else {
        return Err(Problem {
            reason: reasons::BACKEND_NOT_FOUND,
            message: format!("Service {namespace}/{} does not exist", b.name),
        });
    };
    let Some(port) = b.port else {
        return Err(Problem {
            reason: reasons::BACKEND_NOT_FOUND,
            message: format!("backend Service {namespace}/{} needs a port", b.name),
        });
    };
    let Some(svc_port) = service_ports(svc).iter().find(|p| p.port == port) else {
        return Err(Problem {
            reason: reasons::BACKEND_NOT_FOUND,
            message: format!("Service {namespace}/{} has no port {port}", b.name),
        });
    };
    let mesh = ctx.mesh_of(&svc.metadata, namespace);
    if mesh != from.mesh {
        return Err(Problem {
            reason: reasons::BACKEND_NOT_FOUND,
            message: format!(
                "Service {namespace}/{} is in mesh {mesh:?}, the {} in mesh {:?}",
                b.name, from.kind, from.mesh
            ),
        });
    }
    if let Some(p) = svc_port.protocol.as_deref().filter(|p| *p != "TCP") {
        return Err(Problem {
            reason: reasons::UNSUPPORTED_PROTOCOL,
            message: format!("port {port} of Service {namespace}/{} is {p}, and Weft forwards only TCP", b.name),
        });
    }
    if from.http
        && let Some(ap) = svc_port.app_protocol.as_deref().filter(|ap| !is_http_app_protocol(ap))
    {
        return Err(Problem {
            reason: reasons::UNSUPPORTED_PROTOCOL,
            message: format!(
                "port {port} of Service {namespace}/{} has appProtocol {ap:?}, which Weft cannot send HTTP to",
                b.name
            ),
        });
    }
    // gRPC exists only over HTTP/2 (grpc/doc/PROTOCOL-HTTP2.md): a port
    // declared HTTP/1.1 (`http`, WebSocket) cannot take a GRPCRoute's calls.
    if from.kind == "GRPCRoute"
        && let Some(ap) = svc_port.app_protocol.as_deref().filter(|ap| !is_h2_app_protocol(ap))
    {
        return Err(Problem {
            reason: reasons::UNSUPPORTED_PROTOCOL,
            message: format!(
                "port {port} of Service {namespace}/{} has appProtocol {ap:?}, and gRPC needs HTTP/2 \
                 (kubernetes.io/h2c or grpc)",
                b.name
            ),
        });
    }
    Ok(())
}
