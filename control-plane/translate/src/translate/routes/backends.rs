//! Resolving a route's backendRefs (and mirror targets) to Services.

use weft_k8s_api::gateway::GROUP;

use super::super::conditions::reasons;
use super::super::context::{Ctx, core_group, is_http_app_protocol, service_ports};
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

/// A resolved (or not) Service backend.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub name: String,
    pub namespace: String,
    pub port: Option<i32>,
    /// Set when unresolved: proxies answer this backend's share with 500.
    pub problem: Option<Problem>,
}

/// Resolves a backend of `route`. HTTP routes also need the backend port to
/// speak a protocol the proxy can forward HTTP on.
pub(crate) fn resolve(ctx: &Ctx<'_>, route: &RouteView<'_>, b: &BackendRefView) -> Resolved {
    let namespace = b
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| route.key.namespace.clone());
    let problem = check(ctx, route, b, &namespace).err();
    Resolved {
        name: b.name.clone(),
        namespace,
        port: b.port,
        problem,
    }
}

fn check(
    ctx: &Ctx<'_>,
    route: &RouteView<'_>,
    b: &BackendRefView,
    namespace: &str,
) -> Result<(), Problem> {
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !core_group(b.group.as_deref()) || kind != "Service" {
        return Err(Problem {
            reason: reasons::INVALID_KIND,
            message: format!(
                "backend {:?} has kind {}/{kind}; Weft routes to Services only",
                b.name,
                b.group.as_deref().unwrap_or("")
            ),
        });
    }
    if namespace != route.key.namespace
        && !ctx.reference_granted(
            (GROUP, route.kind.kind(), &route.key.namespace),
            "",
            "Service",
            namespace,
            &b.name,
        )
    {
        return Err(Problem {
            reason: reasons::REF_NOT_PERMITTED,
            message: format!(
                "no ReferenceGrant in namespace {namespace} lets {}s from {} use Service {}",
                route.kind.kind(),
                route.key.namespace,
                b.name
            ),
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
    if mesh != route.mesh {
        return Err(Problem {
            reason: reasons::BACKEND_NOT_FOUND,
            message: format!(
                "Service {namespace}/{} is in mesh {mesh:?}, the route in mesh {:?}",
                b.name, route.mesh
            ),
        });
    }
    if route.kind.is_http() {
        if let Some(ap) = svc_port
            .app_protocol
            .as_deref()
            .filter(|ap| !is_http_app_protocol(ap))
        {
            return Err(Problem {
                reason: reasons::UNSUPPORTED_PROTOCOL,
                message: format!(
                    "port {port} of Service {namespace}/{} has appProtocol {ap:?}, which Weft cannot send HTTP to",
                    b.name
                ),
            });
        }
    }
    Ok(())
}
