//! Status of hand-written MeshHTTPRoutes and MeshTCPRoutes: whether their
//! `targetRef` and `to` make sense, and whether their backends exist. They
//! are then ranked with generated routes by the same precedence rules.

use std::collections::BTreeMap;

use weft_k8s_api::crds::{
    Destination, DestinationKind, MeshGateway, MeshRouteStatus, PathMatchType, StringMatchType,
    TargetKind, TargetRef,
};
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::conditions::{Conditions, reasons, types};
use super::context::{Ctx, service_ports};
use super::routes::rules::check_regex;
use crate::snapshot::ObjectKey;

fn check_placement(
    ctx: &Ctx<'_>,
    key: &ObjectKey,
    mesh: &str,
    target: &TargetRef,
    to: &[Destination],
    gateways: &[MeshGateway],
) -> Result<(), (&'static str, String)> {
    if !ctx.mesh_exists(mesh) {
        return Err((reasons::INVALID, format!("mesh {mesh:?} does not exist")));
    }
    if to.is_empty() {
        return Err((
            reasons::UNSUPPORTED_VALUE,
            "`to` names no destination".into(),
        ));
    }
    match target.kind {
        TargetKind::MeshGateway => {
            let name = target.name.as_deref().unwrap_or("");
            let Some(gw) = gateways
                .iter()
                .find(|g| g.metadata.name.as_deref() == Some(name))
            else {
                return Err((
                    reasons::NO_MATCHING_PARENT,
                    format!("MeshGateway {name:?} does not exist"),
                ));
            };
            if gw.spec.mesh != mesh {
                return Err((
                    reasons::NOT_ALLOWED_BY_LISTENERS,
                    format!(
                        "MeshGateway {name} is in mesh {:?}, the route in {mesh:?}",
                        gw.spec.mesh
                    ),
                ));
            }
            for d in to {
                if d.kind != DestinationKind::Listener
                    || !gw.spec.listeners.iter().any(|l| l.name == d.name)
                {
                    return Err((
                        reasons::NO_MATCHING_PARENT,
                        format!("MeshGateway {name} has no listener {:?}", d.name),
                    ));
                }
            }
        }
        TargetKind::Mesh | TargetKind::Namespace => {
            if target.kind == TargetKind::Namespace
                && target.name.as_deref().is_some_and(|n| n != key.namespace)
            {
                return Err((
                    reasons::UNSUPPORTED_VALUE,
                    format!(
                        "a route in namespace {} can only target its own namespace's workloads",
                        key.namespace
                    ),
                ));
            }
            for d in to {
                if d.kind != DestinationKind::Service {
                    return Err((reasons::UNSUPPORTED_VALUE, "workload routes send to Services; Listener destinations need a MeshGateway targetRef".into()));
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
                    return Err((
                        reasons::NO_MATCHING_PARENT,
                        format!("Service {ns}/{} does not exist", d.name),
                    ));
                };
                if let Some(p) = d.port {
                    if !service_ports(svc).iter().any(|sp| sp.port == p) {
                        return Err((
                            reasons::NO_MATCHING_PARENT,
                            format!("Service {ns}/{} has no port {p}", d.name),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn backend_problem(
    ctx: &Ctx<'_>,
    name: &str,
    namespace: &str,
    port: Option<i32>,
) -> Option<String> {
    let Some(svc) = ctx.service(namespace, name) else {
        return Some(format!("Service {namespace}/{name} does not exist"));
    };
    match port {
        Some(p) if !service_ports(svc).iter().any(|sp| sp.port == p) => {
            Some(format!("Service {namespace}/{name} has no port {p}"))
        }
        None => Some(format!("backend Service {namespace}/{name} needs a port")),
        _ => None,
    }
}

fn status(
    ctx: &Ctx<'_>,
    meta: &ObjectMeta,
    previous: Option<&MeshRouteStatus>,
    placement: Result<(), (&'static str, String)>,
    problems: Vec<String>,
    invalid: Option<String>,
) -> MeshRouteStatus {
    let mut c = Conditions::new(
        previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]),
        ctx.now,
        meta.generation,
    );
    match (placement, invalid) {
        (Err((reason, msg)), _) => c.set(types::ACCEPTED, false, reason, msg),
        (Ok(()), Some(msg)) => c.set(types::ACCEPTED, false, reasons::UNSUPPORTED_VALUE, msg),
        (Ok(()), None) => c.set(
            types::ACCEPTED,
            true,
            reasons::ACCEPTED,
            "route is accepted",
        ),
    };
    if problems.is_empty() {
        c.set(
            types::RESOLVED_REFS,
            true,
            reasons::RESOLVED_REFS,
            "all references resolved",
        );
    } else {
        c.set(
            types::RESOLVED_REFS,
            false,
            reasons::BACKEND_NOT_FOUND,
            problems.join("; "),
        );
    }
    MeshRouteStatus {
        conditions: c.build(),
    }
}

/// Status of every hand-written route.
pub(crate) fn translate(
    ctx: &Ctx<'_>,
    gateways: &[MeshGateway],
    http: &mut BTreeMap<ObjectKey, MeshRouteStatus>,
    tcp: &mut BTreeMap<ObjectKey, MeshRouteStatus>,
) {
    for (key, route) in &ctx.snapshot.mesh_http_routes {
        let mesh = ctx.mesh_of(&route.metadata, &key.namespace);
        let placement = check_placement(
            ctx,
            key,
            &mesh,
            &route.spec.target_ref,
            &route.spec.to,
            gateways,
        );
        let mut problems = Vec::new();
        let mut invalid = None;
        for rule in &route.spec.rules {
            for m in &rule.matches {
                let mut regexes: Vec<(String, &str)> = Vec::new();
                if let Some(p) = m
                    .path
                    .as_ref()
                    .filter(|p| p.type_ == PathMatchType::RegularExpression)
                {
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
                problems.extend(backend_problem(ctx, &b.name, &b.namespace, b.port));
            }
        }
        http.insert(
            key.clone(),
            status(
                ctx,
                &route.metadata,
                route.status.as_ref(),
                placement,
                problems,
                invalid,
            ),
        );
    }
    for (key, route) in &ctx.snapshot.mesh_tcp_routes {
        let mesh = ctx.mesh_of(&route.metadata, &key.namespace);
        let placement = check_placement(
            ctx,
            key,
            &mesh,
            &route.spec.target_ref,
            &route.spec.to,
            gateways,
        );
        let problems = route
            .spec
            .rules
            .iter()
            .flat_map(|r| r.backend_refs.iter())
            .filter_map(|b| backend_problem(ctx, &b.name, &b.namespace, b.port))
            .collect();
        tcp.insert(
            key.clone(),
            status(
                ctx,
                &route.metadata,
                route.status.as_ref(),
                placement,
                problems,
                None,
            ),
        );
    }
}
