//! Status of hand-written MeshHTTPRoutes and MeshTCPRoutes: whether their
//! `targetRef` and `to` make sense, and whether their backends resolve. They
//! follow the rules Gateway API routes follow (listener allowedRoutes,
//! ReferenceGrants, meshes), so writing a Weft route by hand is never a way
//! around them. They are then ranked with generated routes by the same
//! precedence rules.

use std::collections::BTreeMap;

use weft_k8s_api::crds::{
    Destination, DestinationKind, MeshRouteStatus, PathMatchType, StringMatchType, TargetKind, TargetRef,
};
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weft_k8s_api::labels;

use super::conditions::{Conditions, reasons, types};
use super::context::{Ctx, service_ports};
use super::gateway::GatewayIndex;
use super::kinds::RouteKind;
use super::routes::backends::{self, BackendRefView, Referrer};
use super::routes::rules::check_regex;
use crate::snapshot::ObjectKey;

/// Which kind of hand-written route is checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Http,
    Tcp,
}

impl Flavor {
    fn kind(self) -> &'static str {
        match self {
            Flavor::Http => "MeshHTTPRoute",
            Flavor::Tcp => "MeshTCPRoute",
        }
    }

    /// The Gateway API route kinds a listener must accept for this route.
    fn accepted_by(self, kinds: &[RouteKind]) -> bool {
        match self {
            Flavor::Http => kinds.contains(&RouteKind::Http),
            Flavor::Tcp => kinds.contains(&RouteKind::Tcp) || kinds.contains(&RouteKind::Tls),
        }
    }
}

fn check_gateway_target(
    ctx: &Ctx<'_>,
    index: &GatewayIndex<'_>,
    key: &ObjectKey,
    mesh: &str,
    flavor: Flavor,
    name: &str,
    to: &[Destination],
) -> Result<(), (&'static str, String)> {
    let Some(gw) = index.gateways.values().find(|g| g.mesh_gateway_name == name && g.rejected.is_none()) else {
        return Err((reasons::NO_MATCHING_PARENT, format!("MeshGateway {name:?} does not exist")));
    };
    if gw.mesh != mesh {
        return Err((
            reasons::NOT_ALLOWED_BY_LISTENERS,
            format!("MeshGateway {name} is in mesh {:?}, the route in mesh {mesh:?}", gw.mesh),
        ));
    }
    let listener_sets =
        gw.listener_sets.iter().filter_map(|k| index.listener_sets.get(k)).filter(|l| l.rejected.is_none());
    let all: Vec<_> = gw.listeners.iter().chain(listener_sets.flat_map(|ls| ls.listeners.iter())).collect();
    for d in to {
        let found = (d.kind == DestinationKind::Listener).then(|| all.iter().find(|l| l.mesh_name == d.name)).flatten();
        let Some(l) = found.filter(|l| l.is_valid()) else {
            return Err((reasons::NO_MATCHING_PARENT, format!("MeshGateway {name} has no listener {:?}", d.name)));
        };
        if !flavor.accepted_by(&l.kinds) {
            return Err((
                reasons::NOT_ALLOWED_BY_LISTENERS,
                format!("listener {:?} is {} and does not take a {}", d.name, l.protocol, flavor.kind()),
            ));
        }
        if !l.allows_namespace(ctx, &key.namespace) {
            return Err((
                reasons::NOT_ALLOWED_BY_LISTENERS,
                format!("listener {:?} does not allow routes from namespace {}", d.name, key.namespace),
            ));
        }
    }
    Ok(())
}

fn check_placement(
    ctx: &Ctx<'_>,
    index: &GatewayIndex<'_>,
    key: &ObjectKey,
    mesh: &str,
    flavor: Flavor,
    target: &TargetRef,
    to: &[Destination],
) -> Result<(), (&'static str, String)> {
    if !ctx.mesh_exists(mesh) {
        return Err((
            reasons::NO_MATCHING_PARENT,
            format!(
                "the route is in mesh {mesh:?}, which does not exist; create a Mesh named {mesh:?} or change the {} annotation",
                labels::MESH
            ),
        ));
    }
    if to.is_empty() {
        return Err((reasons::UNSUPPORTED_VALUE, "`to` names no destination".into()));
    }
    match target.kind {
        TargetKind::MeshGateway => {
            check_gateway_target(ctx, index, key, mesh, flavor, target.name.as_deref().unwrap_or(""), to)
        }
        TargetKind::Mesh | TargetKind::Namespace => {
            if target.kind == TargetKind::Namespace && target.name.as_deref().is_some_and(|n| n != key.namespace) {
                return Err((
                    reasons::UNSUPPORTED_VALUE,
                    format!("a route in namespace {} can only target its own namespace's workloads", key.namespace),
                ));
            }
            for d in to {
                if d.kind != DestinationKind::Service {
                    return Err((
                        reasons::UNSUPPORTED_VALUE,
                        "workload routes send to Services; Listener destinations need a MeshGateway targetRef".into(),
                    ));
                }
                let ns = d.namespace.as_deref().unwrap_or(&key.namespace);
                if target.kind == TargetKind::Mesh && ns != key.namespace {
                    return Err((
                        reasons::UNSUPPORTED_VALUE,
                        format!(
                            "a route in namespace {} that targets the whole mesh may only shape traffic to its own namespace's Services (a producer route); use targetRef kind Namespace for Service {ns}/{}",
                            key.namespace, d.name
                        ),
                    ));
                }
                let Some(svc) = ctx.service(ns, &d.name) else {
                    return Err((reasons::NO_MATCHING_PARENT, format!("Service {ns}/{} does not exist", d.name)));
                };
                let svc_mesh = ctx.mesh_of(&svc.metadata, ns);
                if svc_mesh != mesh {
                    return Err((
                        reasons::NO_MATCHING_PARENT,
                        format!("Service {ns}/{} is in mesh {svc_mesh:?}, the route in mesh {mesh:?}", d.name),
                    ));
                }
                if let Some(p) = d.port
                    && !service_ports(svc).iter().any(|sp| sp.port == p)
                {
                    return Err((reasons::NO_MATCHING_PARENT, format!("Service {ns}/{} has no port {p}", d.name)));
                }
            }
            Ok(())
        }
    }
}

fn status(
    ctx: &Ctx<'_>,
    meta: &ObjectMeta,
    previous: Option<&MeshRouteStatus>,
    placement: Result<(), (&'static str, String)>,
    problems: Vec<backends::Problem>,
    invalid: Option<String>,
) -> MeshRouteStatus {
    let mut c = Conditions::new(previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]), ctx.now, meta.generation);
    match (placement, invalid) {
        (Err((reason, msg)), _) => c.set(types::ACCEPTED, false, reason, msg),
        (Ok(()), Some(msg)) => c.set(types::ACCEPTED, false, reasons::UNSUPPORTED_VALUE, msg),
        (Ok(()), None) => c.set(types::ACCEPTED, true, reasons::ACCEPTED, "route is accepted"),
    };
    match problems.first() {
        None => c.set(types::RESOLVED_REFS, true, reasons::RESOLVED_REFS, "all references resolved"),
        Some(first) => {
            let mut messages: Vec<&str> = Vec::new();
            for p in &problems {
                if !messages.contains(&p.message.as_str()) {
                    messages.push(&p.message);
                }
            }
            c.set(types::RESOLVED_REFS, false, first.reason, messages.join("\n"))
        }
    };
    MeshRouteStatus { conditions: c.build() }
}

fn backend_problem(
    ctx: &Ctx<'_>,
    from: Referrer<'_>,
    kind: &str,
    group: &str,
    name: &str,
    namespace: &str,
    port: Option<i32>,
) -> Option<backends::Problem> {
    let view = BackendRefView {
        group: Some(group.to_string()),
        kind: Some(kind.to_string()),
        name: name.to_string(),
        namespace: Some(namespace.to_string()),
        port,
        weight: None,
    };
    backends::resolve_for(ctx, from, view).problem
}

/// Status of every hand-written route.
pub(crate) fn translate(
    ctx: &Ctx<'_>,
    index: &GatewayIndex<'_>,
    http: &mut BTreeMap<ObjectKey, MeshRouteStatus>,
    tcp: &mut BTreeMap<ObjectKey, MeshRouteStatus>,
) {
    for (key, route) in &ctx.snapshot.mesh_http_routes {
        let mesh = ctx.mesh_of(&route.metadata, &key.namespace);
        let placement = check_placement(ctx, index, key, mesh, Flavor::Http, &route.spec.target_ref, &route.spec.to);
        let from = Referrer {
            group: labels::GROUP,
            kind: "MeshHTTPRoute",
            namespace: &key.namespace,
            mesh,
            http: true,
            needs_grant: true,
        };
        let mut problems = Vec::new();
        let mut invalid = None;
        for rule in &route.spec.rules {
            for m in &rule.matches {
                let mut regexes: Vec<(String, &str)> = Vec::new();
                if let Some(p) = m.path.as_ref().filter(|p| p.type_ == PathMatchType::RegularExpression) {
                    regexes.push(("path".into(), &p.value));
                }
                for h in m
                    .headers
                    .iter()
                    .chain(m.query_params.iter())
                    .filter(|h| h.type_ == StringMatchType::RegularExpression)
                {
                    regexes.push((h.name.clone(), &h.value));
                }
                for (field, re) in regexes {
                    if let Err(e) = check_regex(&field, re) {
                        invalid = Some(e.0);
                    }
                }
            }
            for b in &rule.backend_refs {
                problems.extend(backend_problem(ctx, from, &b.kind, &b.group, &b.name, &b.namespace, b.port));
            }
        }
        http.insert(key.clone(), status(ctx, &route.metadata, route.status.as_ref(), placement, problems, invalid));
    }
    for (key, route) in &ctx.snapshot.mesh_tcp_routes {
        let mesh = ctx.mesh_of(&route.metadata, &key.namespace);
        let placement = check_placement(ctx, index, key, mesh, Flavor::Tcp, &route.spec.target_ref, &route.spec.to);
        let from = Referrer {
            group: labels::GROUP,
            kind: "MeshTCPRoute",
            namespace: &key.namespace,
            mesh,
            http: false,
            needs_grant: true,
        };
        let problems = route
            .spec
            .rules
            .iter()
            .flat_map(|r| r.backend_refs.iter())
            .filter_map(|b| backend_problem(ctx, from, &b.kind, &b.group, &b.name, &b.namespace, b.port))
            .collect();
        tcp.insert(key.clone(), status(ctx, &route.metadata, route.status.as_ref(), placement, problems, None));
    }
}
