//! Routes (HTTPRoute, GRPCRoute, TLSRoute, TCPRoute) → MeshHTTPRoute and
//! MeshTCPRoute, with a status entry for every parent Weft owns.
//!
//! A parent is a Weft Gateway or ListenerSet (north-south) or a Service
//! (GAMMA, east-west). Rules are converted once per route; each accepted
//! parent then gets its own generated route, because who the route applies
//! to (`targetRef`) and where (`to`) depend on the parent.

mod attach;
pub(crate) mod backends;
pub(crate) mod filters;
mod grpc;
mod http;
mod l4;
mod parents;
pub(crate) mod rules;

use std::collections::BTreeMap;

use weft_k8s_api::crds::{
    Destination, MeshHTTPRoute, MeshHTTPRouteSpec, MeshTCPRoute, MeshTCPRouteSpec, TargetKind, TargetRef,
};
use weft_k8s_api::crds::{HttpRouteRule, TcpRouteRule};
use weft_k8s_api::gateway::grpcroutes::{GrpcRouteStatusParents, GrpcRouteStatusParentsParentRef};
use weft_k8s_api::gateway::httproutes::{HttpRouteStatusParents, HttpRouteStatusParentsParentRef};
use weft_k8s_api::gateway::tcproutes::{TcpRouteStatusParents, TcpRouteStatusParentsParentRef};
use weft_k8s_api::gateway::tlsroutes::{TlsRouteStatusParents, TlsRouteStatusParentsParentRef};
use weft_k8s_api::gateway::{
    GROUP, GrpcRoute, GrpcRouteStatus, HttpRoute, HttpRouteStatus, TcpRoute, TcpRouteStatus, TlsRoute, TlsRouteStatus,
};
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use weft_k8s_api::labels::GATEWAY_CONTROLLER_NAME;

use super::context::{AgeKey, Ctx, age_key, core_group};
use super::gateway::GatewayIndex;
use super::kinds::RouteKind;
use super::meta::{ObjectRef, generated_meta};
use super::names;
use crate::snapshot::ObjectKey;
use attach::Attachment;
use backends::{BackendGrants, BackendRefView, backend_view};
use parents::{PreviousParent, RulesSummary, SettledParent};
use rayon::prelude::*;
use rules::RulesOutcome;

/// A route of any kind, as the attachment logic sees it.
#[derive(Clone, Debug)]
pub(crate) struct RouteView<'a> {
    pub kind: RouteKind,
    pub key: &'a ObjectKey,
    pub meta: &'a ObjectMeta,
    pub mesh: &'a str,
    pub hostnames: Vec<String>,
    pub parent_refs: Vec<ParentRefView>,
    /// Whether the rules being converted are for Gateway parents (backends
    /// in other namespaces need ReferenceGrants) or Service parents.
    pub backend_grants: BackendGrants,
}

/// A parentRef with the API server's defaults (group and kind).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParentRefView {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<i32>,
}

impl ParentRefView {
    /// A Service parent (GAMMA); every other parent Weft serves is a
    /// Gateway or ListenerSet.
    pub fn is_service(&self) -> bool {
        core_group(Some(&self.group)) && self.kind == "Service"
    }

    fn namespace_or<'a>(&'a self, route_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(route_namespace)
    }
}

/// Converts a parentRef of any generated type (same field names).
macro_rules! parent_view {
    ($p:expr) => {{
        let p = $p;
        ParentRefView {
            group: p.group.clone().unwrap_or_else(|| GROUP.to_string()),
            kind: p.kind.clone().unwrap_or_else(|| "Gateway".to_string()),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            section_name: p.section_name.clone(),
            port: p.port,
        }
    }};
}

/// Text for a dropped rule, as `PartiallyInvalid` lists them.
pub(crate) fn dropped_rule(index: usize, name: Option<&str>, why: &str) -> String {
    match name {
        Some(n) => format!("rule {index} ({n}): {why}"),
        None => format!("rule {index}: {why}"),
    }
}

/// Outputs of route translation.
#[derive(Debug, Default)]
pub(crate) struct RouteOutputs {
    pub mesh_http_routes: Vec<MeshHTTPRoute>,
    pub mesh_tcp_routes: Vec<MeshTCPRoute>,
    pub http_statuses: BTreeMap<ObjectKey, HttpRouteStatus>,
    pub grpc_statuses: BTreeMap<ObjectKey, GrpcRouteStatus>,
    pub tls_statuses: BTreeMap<ObjectKey, TlsRouteStatus>,
    pub tcp_statuses: BTreeMap<ObjectKey, TcpRouteStatus>,
}

macro_rules! previous_parents {
    ($status:expr) => {
        $status
            .iter()
            .flat_map(|s| s.parents.iter())
            .map(|p| PreviousParent {
                controller: &p.controller_name,
                parent: parent_view!(&p.parent_ref),
                conditions: &p.conditions,
            })
            .collect::<Vec<_>>()
    };
}

/// Builds a typed route status: other controllers' entries kept as they
/// were, then Weft's in parentRef order.
macro_rules! route_status {
    ($status_ty:ident, $parent_ty:ident, $ref_ty:ident, $previous:expr, $ours:expr) => {{
        let mut parents: Vec<$parent_ty> = $previous
            .iter()
            .flat_map(|s| s.parents.iter())
            .filter(|p| p.controller_name != GATEWAY_CONTROLLER_NAME)
            .cloned()
            .collect();
        for (p, conditions) in $ours {
            parents.push($parent_ty {
                conditions,
                controller_name: GATEWAY_CONTROLLER_NAME.to_string(),
                parent_ref: $ref_ty {
                    group: Some(p.group),
                    kind: Some(p.kind),
                    name: p.name,
                    namespace: p.namespace,
                    port: p.port,
                    section_name: p.section_name,
                },
            });
        }
        $status_ty { parents }
    }};
}

/// The `targetRef` and `to` of a generated route, if the parent is served.
fn placement(attachment: Attachment) -> Option<(TargetRef, Vec<Destination>)> {
    match attachment {
        Attachment::Gateway { mesh_gateway, listeners, .. } => {
            let to: Vec<Destination> = listeners.into_iter().filter_map(|l| l.destination).collect();
            (!to.is_empty()).then_some((TargetRef { kind: TargetKind::MeshGateway, name: Some(mesh_gateway) }, to))
        }
        Attachment::Service { target, to, .. } => Some((target, to)),
        _ => None,
    }
}

fn generated_name(route: &RouteView<'_>, parent: &ParentRefView) -> String {
    let port = parent.port.map(|p| p.to_string()).unwrap_or_default();
    names::hashed_name(
        &route.key.name,
        &[
            route.kind.kind(),
            &route.key.namespace,
            &route.key.name,
            &parent.group,
            &parent.kind,
            parent.namespace.as_deref().unwrap_or(""),
            &parent.name,
            parent.section_name.as_deref().unwrap_or(""),
            &port,
        ],
    )
}

fn origin<'a>(route: &'a RouteView<'a>) -> ObjectRef<'a> {
    let api_version = match route.kind {
        RouteKind::Tcp => "gateway.networking.k8s.io/v1alpha2",
        _ => "gateway.networking.k8s.io/v1",
    };
    ObjectRef::of(api_version, route.kind.kind(), route.meta, route.key)
}

/// Generates one object per served parent, skipping a parent whose
/// placement repeats an earlier one of the same route (two parentRefs that
/// select the same listeners), and returns the parents' conditions. The
/// rules are cloned only when more than one object needs them.
fn emit<R: Clone, T>(
    route: &RouteView<'_>,
    parents: Vec<SettledParent>,
    rules: Vec<R>,
    make: impl Fn(ObjectMeta, TargetRef, Vec<Destination>, Vec<R>) -> T,
    generated: &mut Vec<T>,
) -> Vec<(ParentRefView, Vec<Condition>)> {
    let mut placed: Vec<(String, TargetRef, Vec<Destination>)> = Vec::new();
    let conditions = parents
        .into_iter()
        .map(|(parent, conditions, attachment)| {
            if let Some((target_ref, to)) = placement(attachment)
                && !placed.iter().any(|(_, t, d)| *t == target_ref && *d == to)
            {
                placed.push((generated_name(route, &parent), target_ref, to));
            }
            (parent, conditions)
        })
        .collect();
    let mut rules = Some(rules);
    let last = placed.len().saturating_sub(1);
    for (i, (name, target_ref, to)) in placed.into_iter().enumerate() {
        let mut metadata = generated_meta(&origin(route), route.mesh, Some(&route.key.namespace));
        metadata.name = Some(name);
        let these = if i == last { rules.take().unwrap_or_default() } else { rules.clone().unwrap_or_default() };
        generated.push(make(metadata, target_ref, to, these));
    }
    conditions
}

/// Removes repeated entries, keeping the first of each.
fn unique(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// A route of any kind, borrowed from the snapshot.
#[derive(Debug, Clone, Copy)]
enum AnyRoute<'a> {
    Http(&'a ObjectKey, &'a HttpRoute),
    Grpc(&'a ObjectKey, &'a GrpcRoute),
    Tls(&'a ObjectKey, &'a TlsRoute),
    Tcp(&'a ObjectKey, &'a TcpRoute),
}

/// The converted rules of a route.
#[derive(Debug)]
enum Rules {
    Http(RulesOutcome<HttpRouteRule>),
    Tcp(RulesOutcome<TcpRouteRule>),
}

impl Rules {
    fn summary(&self) -> RulesSummary<'_> {
        match self {
            Rules::Http(o) => RulesSummary::from(o),
            Rules::Tcp(o) => RulesSummary::from(o),
        }
    }
}

/// A route after the parallel phase: rules converted, parents attached.
#[derive(Debug)]
struct Prepared<'a> {
    route: AnyRoute<'a>,
    view: RouteView<'a>,
    /// The rules for the route's Gateway parents, or for its Service
    /// parents when it has no others.
    rules: Rules,
    /// The rules for the Service parents of a route that also has Gateway
    /// parents: converted again without ReferenceGrant checks.
    mesh_rules: Option<Rules>,
    parents: Vec<(ParentRefView, Attachment)>,
}

/// The generated objects and status of one route.
#[derive(Debug)]
enum Emitted {
    Http(ObjectKey, HttpRouteStatus, Vec<MeshHTTPRoute>),
    Grpc(ObjectKey, GrpcRouteStatus, Vec<MeshHTTPRoute>),
    Tls(ObjectKey, TlsRouteStatus, Vec<MeshTCPRoute>),
    Tcp(ObjectKey, TcpRouteStatus, Vec<MeshTCPRoute>),
}

fn view_of<'a>(ctx: &Ctx<'a>, route: AnyRoute<'a>) -> RouteView<'a> {
    let (kind, key, meta, hostnames, parent_refs): (_, _, _, Vec<String>, Vec<ParentRefView>) = match route {
        AnyRoute::Http(k, r) => (
            RouteKind::Http,
            k,
            &r.metadata,
            r.spec.hostnames.clone().unwrap_or_default(),
            r.spec.parent_refs.iter().flatten().map(|p| parent_view!(p)).collect(),
        ),
        AnyRoute::Grpc(k, r) => (
            RouteKind::Grpc,
            k,
            &r.metadata,
            r.spec.hostnames.clone().unwrap_or_default(),
            r.spec.parent_refs.iter().flatten().map(|p| parent_view!(p)).collect(),
        ),
        AnyRoute::Tls(k, r) => (
            RouteKind::Tls,
            k,
            &r.metadata,
            r.spec.hostnames.clone(),
            r.spec.parent_refs.iter().flatten().map(|p| parent_view!(p)).collect(),
        ),
        AnyRoute::Tcp(k, r) => (
            RouteKind::Tcp,
            k,
            &r.metadata,
            Vec::new(),
            r.spec.parent_refs.iter().flatten().map(|p| parent_view!(p)).collect(),
        ),
    };
    // Rules are converted for the Gateway parents if there are any; a route
    // with Service parents only is a mesh route throughout.
    let backend_grants = if parent_refs.iter().all(ParentRefView::is_service) {
        BackendGrants::NotRequired
    } else {
        BackendGrants::Required
    };
    RouteView {
        kind,
        key,
        meta,
        mesh: ctx.mesh_of(meta, &key.namespace),
        hostnames: unique(hostnames),
        parent_refs,
        backend_grants,
    }
}

/// Converts the rules of a route for one kind of parent.
fn convert_rules(ctx: &Ctx<'_>, view: &RouteView<'_>, route: AnyRoute<'_>) -> Rules {
    let l4_rules = |rules: &mut dyn Iterator<Item = (Option<String>, Vec<BackendRefView>)>| rules.collect::<Vec<_>>();
    match route {
        AnyRoute::Http(_, r) => Rules::Http(http::convert(ctx, view, r)),
        AnyRoute::Grpc(_, r) => Rules::Http(grpc::convert(ctx, view, r)),
        AnyRoute::Tls(_, r) => Rules::Tcp(l4::convert(
            ctx,
            view,
            l4_rules(
                &mut r
                    .spec
                    .rules
                    .iter()
                    .map(|r| (r.name.clone(), r.backend_refs.iter().map(|b| backend_view!(b, weighted)).collect())),
            ),
        )),
        AnyRoute::Tcp(_, r) => Rules::Tcp(l4::convert(
            ctx,
            view,
            l4_rules(
                &mut r
                    .spec
                    .rules
                    .iter()
                    .map(|r| (r.name.clone(), r.backend_refs.iter().map(|b| backend_view!(b, weighted)).collect())),
            ),
        )),
    }
}

/// The parallel phase: converts the rules and attaches every parent.
fn prepare<'a>(ctx: &Ctx<'a>, index: &GatewayIndex<'_>, route: AnyRoute<'a>) -> Prepared<'a> {
    let view = view_of(ctx, route);
    let rules = convert_rules(ctx, &view, route);
    let mesh_rules = (view.backend_grants == BackendGrants::Required
        && view.parent_refs.iter().any(ParentRefView::is_service))
    .then(|| convert_rules(ctx, &RouteView { backend_grants: BackendGrants::NotRequired, ..view.clone() }, route));
    let mut parents: Vec<(ParentRefView, Attachment)> = Vec::with_capacity(view.parent_refs.len());
    for parent in &view.parent_refs {
        if parents.iter().any(|(p, _)| p == parent) {
            continue;
        }
        let attachment = attach::attach(ctx, index, &view, parent);
        if !matches!(attachment, Attachment::NotOurs) {
            parents.push((parent.clone(), attachment));
        }
    }
    Prepared { route, view, rules, mesh_rules, parents }
}

/// Applies `f` to the items of Gateway parents (`false`), then to those of
/// Service parents (`true`), each in order, and returns the results in the
/// items' order (`f` maps one item to one result).
fn by_parent_kind<T, U>(
    items: Vec<T>,
    is_service: impl Fn(&T) -> bool,
    mut f: impl FnMut(bool, Vec<T>) -> Vec<U>,
) -> Vec<U> {
    let kinds: Vec<bool> = items.iter().map(&is_service).collect();
    let (services, gateways): (Vec<T>, Vec<T>) = items.into_iter().partition(|i| is_service(i));
    let mut from_gateways = f(false, gateways).into_iter();
    let mut from_services = f(true, services).into_iter();
    kinds.into_iter().filter_map(|s| if s { from_services.next() } else { from_gateways.next() }).collect()
}

/// Generated objects for `settled` parents from one conversion of the
/// rules; returns the parents' conditions.
fn emit_rules(
    view: &RouteView<'_>,
    settled: Vec<SettledParent>,
    rules: Rules,
    http_out: &mut Vec<MeshHTTPRoute>,
    tcp_out: &mut Vec<MeshTCPRoute>,
) -> Vec<(ParentRefView, Vec<Condition>)> {
    match rules {
        Rules::Http(o) => emit(
            view,
            settled,
            o.rules,
            |metadata, target_ref, to, rules| MeshHTTPRoute {
                metadata,
                spec: MeshHTTPRouteSpec { target_ref, to, rules },
                status: None,
            },
            http_out,
        ),
        Rules::Tcp(o) => emit(
            view,
            settled,
            o.rules,
            |metadata, target_ref, to, rules| MeshTCPRoute {
                metadata,
                spec: MeshTCPRouteSpec { target_ref, to, rules },
                status: None,
            },
            tcp_out,
        ),
    }
}

/// The parallel output phase: generated objects and the typed status.
fn emit_route(prepared: Prepared<'_>, settled: Vec<SettledParent>) -> Emitted {
    let Prepared { route, view, rules, mesh_rules, .. } = prepared;
    let mut http_out = Vec::new();
    let mut tcp_out = Vec::new();
    let ours = match mesh_rules {
        None => emit_rules(&view, settled, rules, &mut http_out, &mut tcp_out),
        Some(mesh_rules) => {
            let mut by_kind = [Some(rules), Some(mesh_rules)];
            by_parent_kind(
                settled,
                |(p, _, _)| p.is_service(),
                |service, parents| match by_kind[usize::from(service)].take() {
                    Some(rules) => emit_rules(&view, parents, rules, &mut http_out, &mut tcp_out),
                    None => Vec::new(),
                },
            )
        }
    };
    match route {
        AnyRoute::Http(k, r) => Emitted::Http(
            k.clone(),
            route_status!(HttpRouteStatus, HttpRouteStatusParents, HttpRouteStatusParentsParentRef, r.status, ours),
            http_out,
        ),
        AnyRoute::Grpc(k, r) => Emitted::Grpc(
            k.clone(),
            route_status!(GrpcRouteStatus, GrpcRouteStatusParents, GrpcRouteStatusParentsParentRef, r.status, ours),
            http_out,
        ),
        AnyRoute::Tls(k, r) => Emitted::Tls(
            k.clone(),
            route_status!(TlsRouteStatus, TlsRouteStatusParents, TlsRouteStatusParentsParentRef, r.status, ours),
            tcp_out,
        ),
        AnyRoute::Tcp(k, r) => Emitted::Tcp(
            k.clone(),
            route_status!(TcpRouteStatus, TcpRouteStatusParents, TcpRouteStatusParentsParentRef, r.status, ours),
            tcp_out,
        ),
    }
}

/// Translates every route of every kind, in three phases: rules and
/// attachments in parallel; then, in order, the rules that depend on other
/// routes (HTTPRoutes and GRPCRoutes oldest first, so the older keeps a
/// contested host name) and the listener counts; then generated objects and
/// statuses in parallel again. Output order does not depend on scheduling.
pub(crate) fn translate<'a>(ctx: &Ctx<'a>, index: &mut GatewayIndex<'_>, out: &mut RouteOutputs) {
    let snap = ctx.snapshot;
    let mut http_like: Vec<(AgeKey<'_>, AnyRoute<'_>)> = snap
        .http_routes
        .iter()
        .map(|(k, r)| (age_key(&r.metadata, k), AnyRoute::Http(k, r)))
        .chain(snap.grpc_routes.iter().map(|(k, r)| (age_key(&r.metadata, k), AnyRoute::Grpc(k, r))))
        .collect();
    http_like.sort_by(|a, b| a.0.cmp(&b.0));
    let routes: Vec<AnyRoute<'_>> = http_like
        .into_iter()
        .map(|(_, r)| r)
        .chain(snap.tls_routes.iter().map(|(k, r)| AnyRoute::Tls(k, r)))
        .chain(snap.tcp_routes.iter().map(|(k, r)| AnyRoute::Tcp(k, r)))
        .collect();

    let shared: &GatewayIndex<'_> = index;
    let prepared: Vec<Prepared<'_>> = routes.par_iter().map(|r| prepare(ctx, shared, *r)).collect();

    let settled: Vec<(Prepared<'_>, Vec<SettledParent>)> = prepared
        .into_iter()
        .map(|mut p| {
            let previous = match p.route {
                AnyRoute::Http(_, r) => previous_parents!(r.status),
                AnyRoute::Grpc(_, r) => previous_parents!(r.status),
                AnyRoute::Tls(_, r) => previous_parents!(r.status),
                AnyRoute::Tcp(_, r) => previous_parents!(r.status),
            };
            let parents = std::mem::take(&mut p.parents);
            let settled = match &p.mesh_rules {
                None => parents::settle(ctx, index, &p.view, &previous, &p.rules.summary(), parents),
                Some(mesh_rules) => by_parent_kind(
                    parents,
                    |(parent, _)| parent.is_service(),
                    |service, these| {
                        let summary = if service { mesh_rules.summary() } else { p.rules.summary() };
                        parents::settle(ctx, index, &p.view, &previous, &summary, these)
                    },
                ),
            };
            (p, settled)
        })
        .collect();

    let emitted: Vec<Emitted> = settled.into_par_iter().map(|(p, s)| emit_route(p, s)).collect();
    let (mut http, mut grpc, mut tls, mut tcp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for e in emitted {
        match e {
            Emitted::Http(k, s, g) => {
                http.push((k, s));
                out.mesh_http_routes.extend(g);
            }
            Emitted::Grpc(k, s, g) => {
                grpc.push((k, s));
                out.mesh_http_routes.extend(g);
            }
            Emitted::Tls(k, s, g) => {
                tls.push((k, s));
                out.mesh_tcp_routes.extend(g);
            }
            Emitted::Tcp(k, s, g) => {
                tcp.push((k, s));
                out.mesh_tcp_routes.extend(g);
            }
        }
    }
    out.http_statuses = http.into_iter().collect();
    out.grpc_statuses = grpc.into_iter().collect();
    out.tls_statuses = tls.into_iter().collect();
    out.tcp_statuses = tcp.into_iter().collect();
}
