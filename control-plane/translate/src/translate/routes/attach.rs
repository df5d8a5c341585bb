//! Attachment of a route to one parentRef: which listeners of a Gateway or
//! ListenerSet, or which ports of a Service, it applies to. Pure reads of
//! the snapshot and the gateway models, so routes are attached in parallel;
//! the rule that needs ordering (an HTTPRoute and a GRPCRoute may not share
//! a host name on a listener, the older wins) is applied afterwards by
//! [`super::parents`].

use weft_k8s_api::crds::{Destination, DestinationKind, TargetKind, TargetRef};
use weft_k8s_api::gateway::GROUP;

use super::super::conditions::reasons;
use super::super::context::{Ctx, PortProtocol, core_group, is_headless, port_protocol, service_ports};
use super::super::gateway::GatewayIndex;
use super::super::hostnames;
use super::super::kinds::RouteKind;
use super::{ParentRefView, RouteView};
use crate::snapshot::ObjectKey;

/// A listener a route attached to: its owner kind, owner and index in it.
pub(crate) type ListenerId = (&'static str, ObjectKey, usize);

/// One listener a route attaches to.
#[derive(Debug, Clone)]
pub(crate) struct ListenerAttachment {
    pub id: ListenerId,
    pub name: String,
    /// Host names the route serves on the listener (empty: any).
    pub hostnames: Vec<String>,
    /// Where the generated route sends traffic, when the listener is served.
    pub destination: Option<Destination>,
    /// Why the listener is not served, when it is not.
    pub not_served: Option<String>,
}

/// How one parentRef came out.
#[derive(Debug)]
pub(crate) enum Attachment {
    /// Not a parent Weft owns: no status entry.
    NotOurs,
    /// Accepted=False with this reason and message.
    Rejected(&'static str, String),
    /// Attached to these listeners of a MeshGateway.
    Gateway { mesh_gateway: String, listeners: Vec<ListenerAttachment>, note: Option<String> },
    /// Attached to these ports of a Service.
    Service { target: TargetRef, to: Vec<Destination>, note: Option<String> },
}

/// Attaches `route` to `parent`.
pub(crate) fn attach(
    ctx: &Ctx<'_>,
    index: &GatewayIndex<'_>,
    route: &RouteView<'_>,
    parent: &ParentRefView,
) -> Attachment {
    let namespace = parent.namespace_or(&route.key.namespace);
    let key = ObjectKey::new(namespace, parent.name.clone());
    let attachment = if parent.group == GROUP && (parent.kind == "Gateway" || parent.kind == "ListenerSet") {
        attach_gateway(ctx, index, route, parent, &key)
    } else if core_group(Some(&parent.group)) && parent.kind == "Service" {
        attach_service(ctx, route, parent, &key)
    } else {
        Attachment::NotOurs
    };
    // A route in a mesh that does not exist attaches nowhere.
    if !matches!(attachment, Attachment::NotOurs) && !ctx.mesh_exists(route.mesh) {
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
pub(crate) fn hostnames_overlap(a: &[String], b: &[String]) -> bool {
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
    let candidates: Vec<(usize, &super::super::listeners::ListenerModel)> = listeners
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
    let uses_hostnames = matches!(route.kind, RouteKind::Http | RouteKind::Grpc | RouteKind::Tls);
    let mut attached = Vec::new();
    for (i, l) in allowed {
        let effective =
            if uses_hostnames { hostnames::effective(l.hostname.as_deref(), &route.hostnames) } else { Ok(Vec::new()) };
        let Ok(hostnames) = effective else { continue };
        let served = l.is_valid();
        attached.push(ListenerAttachment {
            id: (owner_kind, key.clone(), *i),
            name: l.name.clone(),
            destination: served.then(|| Destination {
                kind: DestinationKind::Listener,
                name: l.mesh_name.clone(),
                namespace: None,
                port: None,
                hostnames: hostnames.clone(),
            }),
            not_served: (!served).then(|| format!("listener {:?} is not served ({})", l.name, l.not_served_reason())),
            hostnames,
        });
    }
    if attached.is_empty() {
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
    Attachment::Gateway { mesh_gateway: gw.mesh_gateway_name.clone(), listeners: attached, note: None }
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
