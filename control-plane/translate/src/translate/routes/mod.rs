//! Routes (HTTPRoute, GRPCRoute, TLSRoute, TCPRoute) → MeshHTTPRoute and
//! MeshTCPRoute, with a status entry for every parent Weft owns.
//!
//! A parent is a Weft Gateway or ListenerSet (north-south) or a Service
//! (GAMMA, east-west). Rules are converted once per route; each accepted
//! parent then gets its own generated route, because who the route applies
//! to (`targetRef`) and where (`to`) depend on the parent.

pub(crate) mod backends;
pub(crate) mod filters;
mod grpc;
mod http;
mod l4;
pub(crate) mod rules;

use std::collections::BTreeMap;

use weft_k8s_api::crds::{
    Destination, DestinationKind, MeshHTTPRoute, MeshHTTPRouteSpec, MeshTCPRoute, MeshTCPRouteSpec, TargetKind,
    TargetRef,
};
use weft_k8s_api::gateway::grpcroutes::{GrpcRouteStatusParents, GrpcRouteStatusParentsParentRef};
use weft_k8s_api::gateway::httproutes::{HttpRouteStatusParents, HttpRouteStatusParentsParentRef};
use weft_k8s_api::gateway::tcproutes::{TcpRouteStatusParents, TcpRouteStatusParentsParentRef};
use weft_k8s_api::gateway::tlsroutes::{TlsRouteStatusParents, TlsRouteStatusParentsParentRef};
use weft_k8s_api::gateway::{GROUP, GrpcRouteStatus, HttpRouteStatus, TcpRouteStatus, TlsRouteStatus};
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use weft_k8s_api::labels::GATEWAY_CONTROLLER_NAME;

use super::conditions::{Conditions, reasons, types};
use super::context::{AgeKey, Ctx, PortProtocol, age_key, core_group, is_headless, port_protocol, service_ports};
use super::gateway::GatewayIndex;
use super::hostnames;
use super::kinds::RouteKind;
use super::meta::{ObjectRef, generated_meta};
use super::names;
use crate::snapshot::ObjectKey;
use backends::{BackendRefView, backend_view};
use rules::RulesOutcome;

/// A route of any kind, as the attachment logic sees it.
#[derive(Debug)]
pub(crate) struct RouteView<'a> {
    pub kind: RouteKind,
    pub key: &'a ObjectKey,
    pub meta: &'a ObjectMeta,
    pub mesh: String,
    pub hostnames: Vec<String>,
    pub parent_refs: Vec<ParentRefView>,
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
    fn namespace_or<'a>(&'a self, route_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(route_namespace)
    }

    /// Identity used for generated names: stable for one parent.
    fn identity(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}/{}",
            self.group,
            self.kind,
            self.namespace.as_deref().unwrap_or(""),
            self.name,
            self.section_name.as_deref().unwrap_or(""),
            self.port.map(|p| p.to_string()).unwrap_or_default()
        )
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

/// A listener a route attached to: its owner and index in the owner.
type ListenerId = (&'static str, ObjectKey, usize);

/// How one parentRef came out.
#[derive(Debug)]
enum Attachment {
    /// Not a parent Weft owns: no status entry.
    NotOurs,
    /// Accepted=False with this reason and message.
    Rejected(&'static str, String),
    /// Attached to these listeners of a MeshGateway (with the host names the
    /// route serves on each).
    Gateway {
        mesh_gateway: String,
        listeners: Vec<(ListenerId, Vec<String>)>,
        to: Vec<Destination>,
        note: Option<String>,
    },
    /// Attached to these ports of a Service.
    Service { target: TargetRef, to: Vec<Destination>, note: Option<String> },
}

fn attach(ctx: &Ctx<'_>, index: &GatewayIndex<'_>, route: &RouteView<'_>, parent: &ParentRefView) -> Attachment {
    let namespace = parent.namespace_or(&route.key.namespace).to_string();
    let key = ObjectKey::new(namespace.clone(), parent.name.clone());
    let attachment = if parent.group == GROUP && (parent.kind == "Gateway" || parent.kind == "ListenerSet") {
        attach_gateway(ctx, index, route, parent, &key)
    } else if core_group(Some(&parent.group)) && parent.kind == "Service" {
        attach_service(ctx, route, parent, &key)
    } else {
        Attachment::NotOurs
    };
    // A route in a mesh that does not exist attaches nowhere.
    if !matches!(attachment, Attachment::NotOurs) && !ctx.mesh_exists(&route.mesh) {
        return Attachment::Rejected(
            reasons::NO_MATCHING_PARENT,
            format!(
                "the route is in mesh {:?}, which does not exist; create a Mesh named {:?} or change the weft.io/mesh annotation of the route or its namespace",
                route.mesh, route.mesh
            ),
        );
    }
    attachment
}

/// Whether two host name lists share a host (an empty list is any host).
fn hostnames_overlap(a: &[String], b: &[String]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|x| b.iter().any(|y| hostnames::intersect(x, y).is_some()))
}

fn attach_gateway(
    ctx: &Ctx<'_>,
    index: &GatewayIndex<'_>,
    route: &RouteView<'_>,
    parent: &ParentRefView,
    key: &ObjectKey,
) -> Attachment {
    let (gw, listeners, owner_kind) = if parent.kind == "Gateway" {
        let Some(gw) = index.gateways.get(key) else {
            return Attachment::NotOurs;
        };
        (gw, &gw.listeners, "Gateway")
    } else {
        let Some(ls) = index.listener_sets.get(key) else {
            return Attachment::NotOurs;
        };
        let Some(gw) = index.gateways.get(&ls.gateway) else {
            return Attachment::NotOurs;
        };
        if let Some((_, msg)) = &ls.rejected {
            return Attachment::Rejected(
                reasons::NO_MATCHING_PARENT,
                format!("ListenerSet {key} is not accepted: {msg}"),
            );
        }
        (gw, &ls.listeners, "ListenerSet")
    };
    if let Some((_, msg)) = &gw.rejected {
        return Attachment::Rejected(reasons::NO_MATCHING_PARENT, format!("Gateway {} is not accepted: {msg}", gw.key));
    }
    if gw.mesh != route.mesh {
        return Attachment::Rejected(
            reasons::NOT_ALLOWED_BY_LISTENERS,
            format!("the route is in mesh {:?}, Gateway {} in mesh {:?}", route.mesh, gw.key, gw.mesh),
        );
    }
    let candidates: Vec<(usize, &super::listeners::ListenerModel)> = listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| parent.section_name.as_ref().is_none_or(|s| *s == l.name))
        .filter(|(_, l)| parent.port.is_none_or(|p| p == l.port))
        .collect();
    if candidates.is_empty() {
        let mut what = Vec::new();
        if let Some(s) = &parent.section_name {
            what.push(format!("named {s:?}"));
        }
        if let Some(p) = parent.port {
            what.push(format!("on port {p}"));
        }
        return Attachment::Rejected(
            reasons::NO_MATCHING_PARENT,
            format!("{owner_kind} {key} has no listener {}", what.join(" ")),
        );
    }
    let subject = match &parent.section_name {
        Some(s) => format!("listener {s:?} of {owner_kind} {key}"),
        None => format!("no listener of {owner_kind} {key}"),
    };
    let kind_ok: Vec<_> = candidates.iter().filter(|(_, l)| l.kinds.contains(&route.kind)).collect();
    if kind_ok.is_empty() {
        let verb = if parent.section_name.is_some() { "does not accept" } else { "accepts" };
        return Attachment::Rejected(
            reasons::NOT_ALLOWED_BY_LISTENERS,
            format!("{subject} {verb} {}s", route.kind.kind()),
        );
    }
    let allowed: Vec<_> = kind_ok.into_iter().filter(|(_, l)| l.allows_namespace(ctx, &route.key.namespace)).collect();
    if allowed.is_empty() {
        let verb = if parent.section_name.is_some() { "does not allow" } else { "allows" };
        return Attachment::Rejected(
            reasons::NOT_ALLOWED_BY_LISTENERS,
            format!("{subject} {verb} routes from namespace {}", route.key.namespace),
        );
    }
    let mut ids = Vec::new();
    let mut to = Vec::new();
    let mut claimed = Vec::new();
    let mut not_served = Vec::new();
    let uses_hostnames = matches!(route.kind, RouteKind::Http | RouteKind::Grpc | RouteKind::Tls);
    for (i, l) in allowed {
        let effective =
            if uses_hostnames { hostnames::effective(l.hostname.as_deref(), &route.hostnames) } else { Ok(Vec::new()) };
        let Ok(hostnames) = effective else { continue };
        // HTTPRoute and GRPCRoute may not share host names on a listener:
        // the older route keeps them (routes are translated oldest first).
        if let Some((kind, other, _)) = l.claims.iter().find(|(kind, _, claimed)| {
            kind.is_http() && *kind != route.kind && route.kind.is_http() && hostnames_overlap(claimed, &hostnames)
        }) {
            claimed.push(format!("listener {:?} already serves {} {other} for these host names", l.name, kind.kind()));
            continue;
        }
        ids.push(((owner_kind, key.clone(), *i), hostnames.clone()));
        if l.is_valid() {
            to.push(Destination {
                kind: DestinationKind::Listener,
                name: l.mesh_name.clone(),
                namespace: None,
                port: None,
                hostnames,
            });
        } else {
            not_served.push(format!("listener {:?} is not served ({})", l.name, l.not_served_reason()));
        }
    }
    if ids.is_empty() && !claimed.is_empty() {
        return Attachment::Rejected(
            reasons::NOT_ALLOWED_BY_LISTENERS,
            format!(
                "{}; an HTTPRoute and a GRPCRoute cannot share host names on one listener, and the older route wins",
                claimed.join("; ")
            ),
        );
    }
    if ids.is_empty() {
        let names: Vec<String> =
            candidates.iter().map(|(_, l)| l.hostname.clone().unwrap_or_else(|| "(any)".into())).collect();
        return Attachment::Rejected(
            reasons::NO_MATCHING_LISTENER_HOSTNAME,
            format!(
                "the route's hostnames [{}] do not intersect the listener hostnames [{}] of {owner_kind} {key}",
                route.hostnames.join(", "),
                names.join(", ")
            ),
        );
    }
    let note = (!not_served.is_empty() || !claimed.is_empty())
        .then(|| not_served.into_iter().chain(claimed).collect::<Vec<_>>().join("; "));
    Attachment::Gateway { mesh_gateway: gw.mesh_gateway_name.clone(), listeners: ids, to, note }
}

fn attach_service(ctx: &Ctx<'_>, route: &RouteView<'_>, parent: &ParentRefView, key: &ObjectKey) -> Attachment {
    let Some(svc) = ctx.service(&key.namespace, &key.name) else {
        return Attachment::Rejected(reasons::NO_MATCHING_PARENT, format!("Service {key} does not exist"));
    };
    if is_headless(svc) {
        return Attachment::Rejected(
            reasons::NO_MATCHING_PARENT,
            format!("Service {key} is headless; mesh routes need a Service with a cluster IP"),
        );
    }
    if svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return Attachment::Rejected(
            reasons::NO_MATCHING_PARENT,
            format!("Service {key} is of type ExternalName; mesh routes need a Service with a cluster IP"),
        );
    }
    let mesh = ctx.mesh_of(&svc.metadata, &key.namespace);
    if mesh != route.mesh {
        return Attachment::Rejected(
            reasons::NO_MATCHING_PARENT,
            format!("Service {key} is in mesh {mesh:?}, the route in mesh {:?}", route.mesh),
        );
    }
    let selected: Vec<_> = service_ports(svc)
        .iter()
        .filter(|p| parent.port.is_none_or(|want| want == p.port))
        .filter(|p| parent.section_name.as_ref().is_none_or(|s| p.name.as_deref() == Some(s.as_str())))
        .collect();
    if selected.is_empty() {
        let what = match (&parent.section_name, parent.port) {
            (Some(s), Some(p)) => format!("port named {s:?} with number {p}"),
            (Some(s), None) => format!("port named {s:?}"),
            (None, Some(p)) => format!("port {p}"),
            (None, None) => "port".to_string(),
        };
        return Attachment::Rejected(reasons::NO_MATCHING_PARENT, format!("Service {key} has no {what}"));
    }
    let (eligible, skipped): (Vec<_>, Vec<_>) =
        selected.into_iter().partition(|p| !route.kind.is_http() || port_protocol(p) != PortProtocol::Opaque);
    let describe = |p: &&weft_k8s_api::k8s_openapi::api::core::v1::ServicePort| match (&p.app_protocol, &p.name) {
        (Some(ap), _) => format!("{} (appProtocol {ap})", p.port),
        (None, Some(n)) => format!("{} (name {n})", p.port),
        (None, None) => p.port.to_string(),
    };
    let skipped_text: Vec<String> = skipped.iter().map(describe).collect();
    if eligible.is_empty() {
        return Attachment::Rejected(
            reasons::UNSUPPORTED_VALUE,
            format!(
                "Service {key} {} {} not HTTP, so an {} cannot route {}; declare appProtocol http (or h2c, grpc) or use a TCPRoute",
                if skipped_text.len() == 1 { "port" } else { "ports" },
                skipped_text.join(", ") + if skipped_text.len() == 1 { " is" } else { " are" },
                route.kind.kind(),
                if skipped_text.len() == 1 { "it" } else { "them" },
            ),
        );
    }
    let target = if key.namespace == route.key.namespace {
        TargetRef { kind: TargetKind::Mesh, name: None }
    } else {
        TargetRef { kind: TargetKind::Namespace, name: Some(route.key.namespace.clone()) }
    };
    let hostnames = if route.kind == RouteKind::Tls { route.hostnames.clone() } else { Vec::new() };
    let to = eligible
        .iter()
        .map(|p| Destination {
            kind: DestinationKind::Service,
            name: key.name.clone(),
            namespace: Some(key.namespace.clone()),
            port: Some(p.port),
            hostnames: hostnames.clone(),
        })
        .collect();
    let note = (!skipped.is_empty()).then(|| format!("not applied to non-HTTP port {}", skipped_text.join(", ")));
    Attachment::Service { target, to, note }
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

/// The parentRef of a previous status entry, for finding its conditions.
struct PreviousParent<'a> {
    controller: &'a str,
    parent: ParentRefView,
    conditions: &'a [Condition],
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
                    group: Some(p.group.clone()),
                    kind: Some(p.kind.clone()),
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    port: p.port,
                    section_name: p.section_name.clone(),
                },
            });
        }
        $status_ty { parents }
    }};
}

/// What the rules of a route came to, independent of the rule type.
struct RulesSummary<'a> {
    dropped: &'a [String],
    all_dropped: bool,
    dropped_message: String,
    problems: &'a [backends::Problem],
}

impl<'a, R> From<&'a RulesOutcome<R>> for RulesSummary<'a> {
    fn from(o: &'a RulesOutcome<R>) -> Self {
        Self {
            dropped: &o.dropped,
            all_dropped: o.all_dropped(),
            dropped_message: if o.dropped.is_empty() { String::new() } else { o.dropped_message() },
            problems: &o.problems,
        }
    }
}

/// Two parentRefs name the same parent when they agree once the route's
/// namespace fills in an omitted one.
fn same_parent(a: &ParentRefView, b: &ParentRefView, route_namespace: &str) -> bool {
    a.group == b.group
        && a.kind == b.kind
        && a.name == b.name
        && a.section_name == b.section_name
        && a.port == b.port
        && a.namespace_or(route_namespace) == b.namespace_or(route_namespace)
}

/// Evaluates every parentRef of a route: attaches accepted ones to their
/// listeners and returns each owned parent with its conditions and
/// attachment.
fn evaluate_parents(
    ctx: &Ctx<'_>,
    index: &mut GatewayIndex<'_>,
    route: &RouteView<'_>,
    previous: &[PreviousParent<'_>],
    summary: &RulesSummary<'_>,
) -> Vec<(ParentRefView, Vec<Condition>, Attachment)> {
    let mut out: Vec<(ParentRefView, Vec<Condition>, Attachment)> = Vec::new();
    let ns = route.key.namespace.as_str();
    for parent in &route.parent_refs {
        if out.iter().any(|(p, _, _)| p == parent) {
            continue;
        }
        let attachment = attach(ctx, index, route, parent);
        if matches!(attachment, Attachment::NotOurs) {
            continue;
        }
        let prev = previous
            .iter()
            .find(|p| p.controller == GATEWAY_CONTROLLER_NAME && same_parent(&p.parent, parent, ns))
            .map(|p| p.conditions)
            .unwrap_or(&[]);
        let mut c = Conditions::new(prev, ctx.now, route.meta.generation);
        let accepted = match &attachment {
            Attachment::Rejected(reason, msg) => {
                c.set(types::ACCEPTED, false, reason, msg.clone());
                false
            }
            _ if summary.all_dropped => {
                c.set(types::ACCEPTED, false, reasons::UNSUPPORTED_VALUE, summary.dropped_message.clone());
                false
            }
            Attachment::Service { note: Some(note), .. } | Attachment::Gateway { note: Some(note), .. } => {
                c.set(types::ACCEPTED, true, reasons::ACCEPTED, format!("route is accepted; {note}"));
                true
            }
            _ => {
                c.set(types::ACCEPTED, true, reasons::ACCEPTED, "route is accepted");
                true
            }
        };
        match summary.problems.first() {
            Some(first) => {
                let mut messages: Vec<&str> = Vec::new();
                for p in summary.problems {
                    if !messages.contains(&p.message.as_str()) {
                        messages.push(&p.message);
                    }
                }
                c.set(types::RESOLVED_REFS, false, first.reason, messages.join("\n"))
            }
            None => c.set(types::RESOLVED_REFS, true, reasons::RESOLVED_REFS, "all references resolved"),
        };
        if !summary.dropped.is_empty() && !summary.all_dropped {
            c.set(types::PARTIALLY_INVALID, true, reasons::UNSUPPORTED_VALUE, summary.dropped_message.clone());
        }
        if accepted {
            if let Attachment::Gateway { listeners, .. } = &attachment {
                for ((owner, key, i), hostnames) in listeners {
                    if let Some(l) = index.listeners_mut(owner, key).and_then(|ls| ls.get_mut(*i)) {
                        l.attached.insert((route.kind, route.key.clone()));
                        l.claims.push((route.kind, route.key.clone(), hostnames.clone()));
                    }
                }
            }
        }
        let attachment = if accepted { attachment } else { Attachment::Rejected(reasons::INVALID, String::new()) };
        out.push((parent.clone(), c.build(), attachment));
    }
    out
}

/// The `targetRef` and `to` of a generated route, if the parent is served.
fn placement(attachment: Attachment) -> Option<(TargetRef, Vec<Destination>)> {
    match attachment {
        Attachment::Gateway { mesh_gateway, to, .. } if !to.is_empty() => {
            Some((TargetRef { kind: TargetKind::MeshGateway, name: Some(mesh_gateway) }, to))
        }
        Attachment::Service { target, to, .. } => Some((target, to)),
        _ => None,
    }
}

fn generated_name(route: &RouteView<'_>, parent: &ParentRefView) -> String {
    names::object_name(
        &route.key.name,
        &format!("{}/{}/{}/{}", route.kind.kind(), route.key.namespace, route.key.name, parent.identity()),
        true,
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
/// select the same listeners), and returns the parents' conditions.
fn emit<T>(
    route: &RouteView<'_>,
    parents: Vec<(ParentRefView, Vec<Condition>, Attachment)>,
    mut make: impl FnMut(ObjectMeta, TargetRef, Vec<Destination>) -> T,
    generated: &mut Vec<T>,
) -> Vec<(ParentRefView, Vec<Condition>)> {
    let mut placed: Vec<(TargetRef, Vec<Destination>)> = Vec::new();
    parents
        .into_iter()
        .map(|(parent, conditions, attachment)| {
            if let Some((target_ref, to)) = placement(attachment) {
                if !placed.iter().any(|(t, d)| *t == target_ref && *d == to) {
                    let mut metadata = generated_meta(&origin(route), &route.mesh, Some(&route.key.namespace));
                    metadata.name = Some(generated_name(route, &parent));
                    placed.push((target_ref.clone(), to.clone()));
                    generated.push(make(metadata, target_ref, to));
                }
            }
            (parent, conditions)
        })
        .collect()
}

fn http_route_view<'a>(
    ctx: &Ctx<'_>,
    key: &'a ObjectKey,
    route: &'a weft_k8s_api::gateway::HttpRoute,
) -> RouteView<'a> {
    RouteView {
        kind: RouteKind::Http,
        key,
        meta: &route.metadata,
        mesh: ctx.mesh_of(&route.metadata, &key.namespace),
        hostnames: unique(route.spec.hostnames.clone().unwrap_or_default()),
        parent_refs: route.spec.parent_refs.iter().flatten().map(|p| parent_view!(p)).collect(),
    }
}

fn grpc_route_view<'a>(
    ctx: &Ctx<'_>,
    key: &'a ObjectKey,
    route: &'a weft_k8s_api::gateway::GrpcRoute,
) -> RouteView<'a> {
    RouteView {
        kind: RouteKind::Grpc,
        key,
        meta: &route.metadata,
        mesh: ctx.mesh_of(&route.metadata, &key.namespace),
        hostnames: unique(route.spec.hostnames.clone().unwrap_or_default()),
        parent_refs: route.spec.parent_refs.iter().flatten().map(|p| parent_view!(p)).collect(),
    }
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

/// Translates every route of every kind. HTTPRoutes and GRPCRoutes go
/// oldest first, so that when both claim a host name on one listener the
/// older one keeps it.
pub(crate) fn translate(ctx: &Ctx<'_>, index: &mut GatewayIndex<'_>, out: &mut RouteOutputs) {
    let snap = ctx.snapshot;
    let mut http_order: Vec<(AgeKey, RouteKind)> = snap
        .http_routes
        .iter()
        .map(|(k, r)| (age_key(&r.metadata, k), RouteKind::Http))
        .chain(snap.grpc_routes.iter().map(|(k, r)| (age_key(&r.metadata, k), RouteKind::Grpc)))
        .collect();
    http_order.sort();
    for ((_, _, key), kind) in &http_order {
        if *kind == RouteKind::Http {
            let route = &snap.http_routes[key];
            let view = http_route_view(ctx, key, route);
            let outcome = http::convert(ctx, &view, route);
            let previous = previous_parents!(route.status);
            let parents = evaluate_parents(ctx, index, &view, &previous, &RulesSummary::from(&outcome));
            let ours = emit(
                &view,
                parents,
                |metadata, target_ref, to| MeshHTTPRoute {
                    metadata,
                    spec: MeshHTTPRouteSpec { target_ref, to, rules: outcome.rules.clone() },
                    status: None,
                },
                &mut out.mesh_http_routes,
            );
            out.http_statuses.insert(
                key.clone(),
                route_status!(
                    HttpRouteStatus,
                    HttpRouteStatusParents,
                    HttpRouteStatusParentsParentRef,
                    route.status,
                    ours
                ),
            );
        } else {
            let route = &snap.grpc_routes[key];
            let view = grpc_route_view(ctx, key, route);
            let outcome = grpc::convert(ctx, &view, route);
            let previous = previous_parents!(route.status);
            let parents = evaluate_parents(ctx, index, &view, &previous, &RulesSummary::from(&outcome));
            let ours = emit(
                &view,
                parents,
                |metadata, target_ref, to| MeshHTTPRoute {
                    metadata,
                    spec: MeshHTTPRouteSpec { target_ref, to, rules: outcome.rules.clone() },
                    status: None,
                },
                &mut out.mesh_http_routes,
            );
            out.grpc_statuses.insert(
                key.clone(),
                route_status!(
                    GrpcRouteStatus,
                    GrpcRouteStatusParents,
                    GrpcRouteStatusParentsParentRef,
                    route.status,
                    ours
                ),
            );
        }
    }
    for (key, route) in &snap.tls_routes {
        let view = RouteView {
            kind: RouteKind::Tls,
            key,
            meta: &route.metadata,
            mesh: ctx.mesh_of(&route.metadata, &key.namespace),
            hostnames: unique(route.spec.hostnames.clone()),
            parent_refs: route.spec.parent_refs.iter().flatten().map(|p| parent_view!(p)).collect(),
        };
        let rules: Vec<(Option<String>, Vec<BackendRefView>)> = route
            .spec
            .rules
            .iter()
            .map(|r| (r.name.clone(), r.backend_refs.iter().map(|b| backend_view!(b, weighted)).collect()))
            .collect();
        let outcome = l4::convert(ctx, &view, rules);
        let previous = previous_parents!(route.status);
        let parents = evaluate_parents(ctx, index, &view, &previous, &RulesSummary::from(&outcome));
        let ours = emit(
            &view,
            parents,
            |metadata, target_ref, to| MeshTCPRoute {
                metadata,
                spec: MeshTCPRouteSpec { target_ref, to, rules: outcome.rules.clone() },
                status: None,
            },
            &mut out.mesh_tcp_routes,
        );
        out.tls_statuses.insert(
            key.clone(),
            route_status!(TlsRouteStatus, TlsRouteStatusParents, TlsRouteStatusParentsParentRef, route.status, ours),
        );
    }
    for (key, route) in &snap.tcp_routes {
        let view = RouteView {
            kind: RouteKind::Tcp,
            key,
            meta: &route.metadata,
            mesh: ctx.mesh_of(&route.metadata, &key.namespace),
            hostnames: Vec::new(),
            parent_refs: route.spec.parent_refs.iter().flatten().map(|p| parent_view!(p)).collect(),
        };
        let rules: Vec<(Option<String>, Vec<BackendRefView>)> = route
            .spec
            .rules
            .iter()
            .map(|r| (r.name.clone(), r.backend_refs.iter().map(|b| backend_view!(b, weighted)).collect()))
            .collect();
        let outcome = l4::convert(ctx, &view, rules);
        let previous = previous_parents!(route.status);
        let parents = evaluate_parents(ctx, index, &view, &previous, &RulesSummary::from(&outcome));
        let ours = emit(
            &view,
            parents,
            |metadata, target_ref, to| MeshTCPRoute {
                metadata,
                spec: MeshTCPRouteSpec { target_ref, to, rules: outcome.rules.clone() },
                status: None,
            },
            &mut out.mesh_tcp_routes,
        );
        out.tcp_statuses.insert(
            key.clone(),
            route_status!(TcpRouteStatus, TcpRouteStatusParents, TcpRouteStatusParentsParentRef, route.status, ours),
        );
    }
}
