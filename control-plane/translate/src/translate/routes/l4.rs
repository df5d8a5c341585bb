//! TCPRoute and TLSRoute rules → MeshTCPRoute rules.

use weft_k8s_api::crds::{BackendRef, TcpRouteRule};

use super::super::context::Ctx;
use super::RouteView;
use super::backends::{self, BackendRefView};
use super::rules::RulesOutcome;

/// Converts L4 rules: each is a list of weighted backends. Gateway API
/// allows one rule for TCPRoute and TLSRoute; extra rules are dropped and
/// reported.
pub(crate) fn convert(
    ctx: &Ctx<'_>,
    view: &RouteView<'_>,
    rules: Vec<(Option<String>, Vec<BackendRefView>)>,
) -> RulesOutcome<TcpRouteRule> {
    let mut outcome = RulesOutcome { total: rules.len(), ..Default::default() };
    for (i, (name, backends)) in rules.into_iter().enumerate() {
        if i > 0 {
            outcome.dropped.push(super::dropped_rule(
                i,
                name.as_deref(),
                "only one rule is supported for TCP and TLS routes",
            ));
            continue;
        }
        let backend_refs = backends
            .into_iter()
            .map(|b| {
                let weight = b.weight.unwrap_or(1).max(0);
                let r = backends::resolve(ctx, view, b);
                if let Some(p) = &r.problem {
                    outcome.problems.push(p.clone());
                }
                BackendRef {
                    kind: r.kind,
                    group: r.group,
                    name: r.name,
                    namespace: r.namespace,
                    port: r.port,
                    weight,
                    unresolved: r.problem.map(|p| p.message),
                }
            })
            .collect();
        outcome.rules.push(TcpRouteRule { name, backend_refs });
    }
    outcome
}
