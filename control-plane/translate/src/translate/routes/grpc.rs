//! GRPCRoute rules → MeshHTTPRoute rules. gRPC is HTTP/2 with the method in
//! the path (`/package.Service/Method`), so a gRPC method match becomes a
//! path match and the proxies need only one matcher.

use weft_k8s_api::crds::{HttpRouteMatch, HttpRouteRule, PathMatch, PathMatchType, StringMatch, StringMatchType};
use weft_k8s_api::gateway::GrpcRoute;
use weft_k8s_api::gateway::grpcroutes::{GrpcRouteRules, GrpcRouteRulesMatches};

use super::super::context::Ctx;
use super::RouteView;
use super::backends::{Problem, backend_view};
use super::filters::{FilterView, enum_str, grpc_filter_view};
use super::http::string_match_type;
use super::rules::{self, Drop, RulesOutcome, check_regex};

/// Converts every rule of a GRPCRoute.
pub(crate) fn convert(ctx: &Ctx<'_>, view: &RouteView<'_>, route: &GrpcRoute) -> RulesOutcome<HttpRouteRule> {
    let mut outcome = RulesOutcome::default();
    let default_rule = [GrpcRouteRules::default()];
    let rules = match route.spec.rules.as_deref() {
        Some(r) if !r.is_empty() => r,
        _ => &default_rule[..],
    };
    outcome.total = rules.len();
    for (i, rule) in rules.iter().enumerate() {
        let mut problems = Vec::new();
        match convert_rule(ctx, view, rule, &mut problems) {
            Ok(r) => {
                outcome.problems.extend(problems);
                outcome.rules.push(r);
            }
            Err(Drop(why)) => outcome.dropped.push(super::dropped_rule(i, rule.name.as_deref(), &why)),
        }
    }
    outcome
}

fn convert_rule(
    ctx: &Ctx<'_>,
    view: &RouteView<'_>,
    rule: &GrpcRouteRules,
    problems: &mut Vec<Problem>,
) -> Result<HttpRouteRule, Drop> {
    if rule.session_persistence.is_some() {
        return Err(Drop("sessionPersistence is not supported by Weft".into()));
    }
    let matches = match rule.matches.as_deref() {
        Some(ms) if !ms.is_empty() => ms.iter().map(convert_match).collect::<Result<Vec<_>, _>>()?,
        _ => vec![HttpRouteMatch {
            path: Some(PathMatch { type_: PathMatchType::PathPrefix, value: "/".into() }),
            ..Default::default()
        }],
    };
    let filter_views: Vec<FilterView> = rule.filters.iter().flatten().map(|f| grpc_filter_view!(f)).collect();
    let (filters, failure) = rules::convert_filters(ctx, view, filter_views, problems)?;
    let backend_views = rule
        .backend_refs
        .iter()
        .flatten()
        .map(|b| (backend_view!(b, weighted), b.filters.iter().flatten().map(|f| grpc_filter_view!(f)).collect()))
        .collect();
    let backend_refs = rules::convert_backends(ctx, view, backend_views, problems)?;
    Ok(HttpRouteRule { name: rule.name.clone(), matches, filters, backend_refs, timeouts: None, retry: None, failure })
}

fn convert_match(m: &GrpcRouteRulesMatches) -> Result<HttpRouteMatch, Drop> {
    let path = match &m.method {
        None => PathMatch { type_: PathMatchType::PathPrefix, value: "/".into() },
        Some(method) => {
            let service = method.service.as_deref().filter(|s| !s.is_empty());
            let name = method.method.as_deref().filter(|s| !s.is_empty());
            let regex = method.r#type.as_ref().map(enum_str) == Some("RegularExpression");
            match (regex, service, name) {
                (_, None, None) => {
                    return Err(Drop("a gRPC method match needs a service or a method".into()));
                }
                (false, Some(s), Some(n)) => PathMatch { type_: PathMatchType::Exact, value: format!("/{s}/{n}") },
                (false, Some(s), None) => PathMatch { type_: PathMatchType::PathPrefix, value: format!("/{s}") },
                (false, None, Some(n)) => {
                    PathMatch { type_: PathMatchType::RegularExpression, value: format!("/[^/]+/{}", regex::escape(n)) }
                }
                (true, s, n) => {
                    let s = s.unwrap_or("[^/]+");
                    let n = n.unwrap_or("[^/]+");
                    check_regex("gRPC service", s)?;
                    check_regex("gRPC method", n)?;
                    PathMatch { type_: PathMatchType::RegularExpression, value: format!("/(?:{s})/(?:{n})") }
                }
            }
        }
    };
    let mut headers: Vec<StringMatch> = Vec::new();
    for h in m.headers.iter().flatten() {
        if headers.iter().any(|x| x.name.eq_ignore_ascii_case(&h.name)) {
            continue;
        }
        let type_ = string_match_type(h.r#type.as_ref().map(enum_str));
        if type_ == StringMatchType::RegularExpression {
            check_regex(&format!("header {}", h.name), &h.value)?;
        }
        headers.push(StringMatch { type_, name: h.name.clone(), value: h.value.clone() });
    }
    Ok(HttpRouteMatch { path: Some(path), headers, query_params: Vec::new(), method: None })
}
