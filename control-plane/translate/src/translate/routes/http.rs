//! HTTPRoute rules → MeshHTTPRoute rules.

use weft_k8s_api::crds::{
    HttpRouteMatch, HttpRouteRule, PathMatch, PathMatchType, PathModifierType, StringMatch, StringMatchType,
};
use weft_k8s_api::gateway::HttpRoute;
use weft_k8s_api::gateway::httproutes::{HttpRouteRules, HttpRouteRulesMatches};

use super::super::context::Ctx;
use super::RouteView;
use super::backends::{Problem, backend_view};
use super::filters::{FilterView, enum_str, http_filter_view};
use super::rules::{self, Drop, RulesOutcome, check_regex};

/// Converts every rule of an HTTPRoute; invalid rules are dropped and
/// explained, the others are served.
pub(crate) fn convert(ctx: &Ctx<'_>, view: &RouteView<'_>, route: &HttpRoute) -> RulesOutcome<HttpRouteRule> {
    let mut outcome = RulesOutcome::default();
    let rules = route.spec.rules.as_deref().unwrap_or(&[]);
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
    rule: &HttpRouteRules,
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
    let filter_views: Vec<FilterView> = rule.filters.iter().flatten().map(|f| http_filter_view!(f)).collect();
    let (filters, failure) = rules::convert_filters(ctx, view, filter_views, problems)?;
    let backend_views = rule
        .backend_refs
        .iter()
        .flatten()
        .map(|b| (backend_view!(b, weighted), b.filters.iter().flatten().map(|f| http_filter_view!(f)).collect()))
        .collect();
    let backend_refs = rules::convert_backends(ctx, view, backend_views, problems)?;

    // ReplacePrefixMatch needs exactly one PathPrefix match to know what
    // prefix it replaces.
    let replaces_prefix = filters.iter().chain(backend_refs.iter().flat_map(|b| b.filters.iter())).any(|f| {
        let p = f
            .request_redirect
            .as_ref()
            .and_then(|r| r.path.as_ref())
            .or(f.url_rewrite.as_ref().and_then(|u| u.path.as_ref()));
        p.is_some_and(|p| p.type_ == PathModifierType::ReplacePrefixMatch)
    });
    if replaces_prefix
        && !(matches.len() == 1 && matches[0].path.as_ref().is_some_and(|p| p.type_ == PathMatchType::PathPrefix))
    {
        return Err(Drop("ReplacePrefixMatch needs exactly one PathPrefix match".into()));
    }

    let timeouts = rule.timeouts.as_ref();
    let retry = rule.retry.as_ref();
    Ok(HttpRouteRule {
        name: rule.name.clone(),
        matches,
        filters,
        backend_refs,
        timeouts: rules::timeouts(
            timeouts.and_then(|t| t.request.as_deref()),
            timeouts.and_then(|t| t.backend_request.as_deref()),
        )?,
        retry: rules::retry(
            retry.and_then(|r| r.attempts),
            retry.and_then(|r| r.backoff.as_deref()),
            retry.and_then(|r| r.codes.as_deref()),
        )?,
        failure,
    })
}

fn convert_match(m: &HttpRouteRulesMatches) -> Result<HttpRouteMatch, Drop> {
    let path = match &m.path {
        Some(p) => {
            let type_ = match p.r#type.as_ref().map(enum_str) {
                Some("Exact") => PathMatchType::Exact,
                Some("RegularExpression") => PathMatchType::RegularExpression,
                _ => PathMatchType::PathPrefix,
            };
            let value = p.value.clone().unwrap_or_else(|| "/".into());
            if type_ == PathMatchType::RegularExpression {
                check_regex("path", &value)?;
            } else if !value.starts_with('/') {
                return Err(Drop(format!("path {value:?} must start with /")));
            }
            Some(PathMatch { type_, value })
        }
        None => Some(PathMatch { type_: PathMatchType::PathPrefix, value: "/".into() }),
    };
    let mut headers: Vec<StringMatch> = Vec::new();
    for h in m.headers.iter().flatten() {
        // Only the first of several entries for one header counts.
        if headers.iter().any(|x| x.name.eq_ignore_ascii_case(&h.name)) {
            continue;
        }
        let type_ = string_match_type(h.r#type.as_ref().map(enum_str));
        if type_ == StringMatchType::RegularExpression {
            check_regex(&format!("header {}", h.name), &h.value)?;
        }
        headers.push(StringMatch { type_, name: h.name.clone(), value: h.value.clone() });
    }
    let mut query_params: Vec<StringMatch> = Vec::new();
    for q in m.query_params.iter().flatten() {
        if query_params.iter().any(|x| x.name == q.name) {
            continue;
        }
        let type_ = string_match_type(q.r#type.as_ref().map(enum_str));
        if type_ == StringMatchType::RegularExpression {
            check_regex(&format!("query parameter {}", q.name), &q.value)?;
        }
        query_params.push(StringMatch { type_, name: q.name.clone(), value: q.value.clone() });
    }
    Ok(HttpRouteMatch { path, headers, query_params, method: m.method.as_ref().map(|x| enum_str(x).to_string()) })
}

pub(crate) fn string_match_type(t: Option<&str>) -> StringMatchType {
    match t {
        Some("RegularExpression") => StringMatchType::RegularExpression,
        _ => StringMatchType::Exact,
    }
}
