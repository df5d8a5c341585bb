//! Settling a route's parents in order: the HTTPRoute/GRPCRoute host name
//! rule, the Accepted/ResolvedRefs/PartiallyInvalid conditions of each
//! parent, and the listener bookkeeping (`attachedRoutes`) of accepted ones.

use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use weft_k8s_api::labels::GATEWAY_CONTROLLER_NAME;

use super::super::conditions::{Conditions, reasons, types};
use super::super::context::Ctx;
use super::super::gateway::GatewayIndex;
use super::super::kinds::RouteKind;
use super::attach::{Attachment, hostnames_overlap};
use super::backends::Problem;
use super::rules::RulesOutcome;
use super::{ParentRefView, RouteView};

/// A parent with its conditions and what it attached to.
pub(crate) type SettledParent = (ParentRefView, Vec<Condition>, Attachment);

/// A parent entry of the route's previous status, for its conditions.
#[derive(Debug)]
pub(crate) struct PreviousParent<'a> {
    pub controller: &'a str,
    pub parent: ParentRefView,
    pub conditions: &'a [Condition],
}

/// What the rules of a route came to, independent of the rule type.
#[derive(Debug)]
pub(crate) struct RulesSummary<'a> {
    dropped: &'a [String],
    all_dropped: bool,
    dropped_message: String,
    problems: &'a [Problem],
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

/// Drops the listeners whose host names a route of the rival kind already
/// holds (HTTPRoute vs GRPCRoute; routes are settled oldest first, so the
/// holder is the older one).
fn apply_host_claims(index: &GatewayIndex<'_>, route: &RouteView<'_>, attachment: Attachment) -> Attachment {
    let Attachment::Gateway { mesh_gateway, listeners, note } = attachment else {
        return attachment;
    };
    let rival = match route.kind {
        RouteKind::Http => RouteKind::Grpc,
        RouteKind::Grpc => RouteKind::Http,
        RouteKind::Tls | RouteKind::Tcp => return Attachment::Gateway { mesh_gateway, listeners, note },
    };
    let mut kept = Vec::with_capacity(listeners.len());
    let mut claimed = Vec::new();
    for l in listeners {
        let (owner, key, i) = &l.id;
        let model = index.listeners(owner, key).and_then(|ls| ls.get(*i));
        let claims = model.map(|m| if rival == RouteKind::Grpc { &m.grpc_claims } else { &m.http_claims });
        match claims.and_then(|c| c.iter().find(|(_, held)| hostnames_overlap(held, &l.hostnames))) {
            Some((holder, _)) => claimed.push(format!(
                "listener {:?} already serves {} {holder} for these host names",
                l.name,
                rival.kind()
            )),
            None => kept.push(l),
        }
    }
    if kept.is_empty() {
        return Attachment::Rejected(
            reasons::NOT_ALLOWED_BY_LISTENERS,
            format!(
                "{}; an HTTPRoute and a GRPCRoute cannot share host names on one listener, and the older route wins",
                claimed.join("; ")
            ),
        );
    }
    let notes: Vec<String> =
        note.into_iter().chain(kept.iter().filter_map(|l| l.not_served.clone())).chain(claimed).collect();
    Attachment::Gateway { mesh_gateway, listeners: kept, note: (!notes.is_empty()).then(|| notes.join("; ")) }
}

/// Computes each parent's conditions and records accepted routes on their
/// listeners. Parents whose route is not accepted come back as `Rejected`,
/// so nothing is generated for them.
pub(crate) fn settle(
    ctx: &Ctx<'_>,
    index: &mut GatewayIndex<'_>,
    route: &RouteView<'_>,
    previous: &[PreviousParent<'_>],
    summary: &RulesSummary<'_>,
    parents: Vec<(ParentRefView, Attachment)>,
) -> Vec<SettledParent> {
    let ns = route.key.namespace.as_str();
    parents
        .into_iter()
        .map(|(parent, attachment)| {
            let attachment = apply_host_claims(index, route, attachment);
            let prev = previous
                .iter()
                .find(|p| p.controller == GATEWAY_CONTROLLER_NAME && same_parent(&p.parent, &parent, ns))
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
            if accepted && let Attachment::Gateway { listeners, .. } = &attachment {
                for l in listeners {
                    let (owner, key, i) = &l.id;
                    if let Some(model) = index.listeners_mut(owner, key).and_then(|ls| ls.get_mut(*i)) {
                        model.attached.insert((route.kind, route.key.clone()));
                        match route.kind {
                            RouteKind::Http => model.http_claims.push((route.key.clone(), l.hostnames.clone())),
                            RouteKind::Grpc => model.grpc_claims.push((route.key.clone(), l.hostnames.clone())),
                            RouteKind::Tls | RouteKind::Tcp => {}
                        }
                    }
                }
            }
            let attachment = if accepted { attachment } else { Attachment::Rejected(reasons::INVALID, String::new()) };
            (parent, c.build(), attachment)
        })
        .collect()
}
