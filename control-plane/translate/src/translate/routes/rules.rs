//! Pieces of rule conversion shared by HTTPRoute and GRPCRoute: backends
//! with their filters, timeouts, retries, and the bookkeeping of dropped
//! rules and unresolved references.

use std::str::FromStr;

use weft_k8s_api::crds::{HttpBackendRef, HttpRouteFilter, HttpRouteFilterType, HttpRouteRetry, HttpRouteTimeouts};
use weft_k8s_api::gateway::GatewayDuration;

use super::super::conditions::reasons;
use super::super::context::Ctx;
use super::RouteView;
use super::backends::{self, BackendRefView, Problem};
use super::filters::{self, FilterIssue, FilterView};

/// What converting a route's rules produced.
#[derive(Debug, Default)]
pub(crate) struct RulesOutcome<R> {
    /// The rules that are served.
    pub rules: Vec<R>,
    /// Rules left out, each with why (`PartiallyInvalid`).
    pub dropped: Vec<String>,
    /// Number of rules in the source.
    pub total: usize,
    /// References that did not resolve (`ResolvedRefs=False`).
    pub problems: Vec<Problem>,
}

impl<R> RulesOutcome<R> {
    /// True when every rule was dropped.
    pub fn all_dropped(&self) -> bool {
        self.total > 0 && self.rules.is_empty()
    }

    /// The message of `PartiallyInvalid` / `Accepted=False UnsupportedValue`.
    pub fn dropped_message(&self) -> String {
        format!("Dropped Rule(s): {}", self.dropped.join("; "))
    }
}

/// A rule that cannot be served, and why.
pub(crate) struct Drop(pub String);

/// Converts the filters of a rule or backend. A filter that must fail
/// closed yields the failure message in `.1`.
pub(crate) fn convert_filters(
    ctx: &Ctx<'_>,
    route: &RouteView<'_>,
    views: Vec<FilterView>,
    problems: &mut Vec<Problem>,
) -> Result<(Vec<HttpRouteFilter>, Option<String>), Drop> {
    let mut out: Vec<HttpRouteFilter> = Vec::with_capacity(views.len());
    let mut failure = None;
    for view in views {
        match filters::convert(ctx, route, view, problems) {
            Ok(f) => {
                let repeatable = f.type_ == HttpRouteFilterType::RequestMirror;
                if !repeatable && out.iter().any(|o| o.type_ == f.type_) {
                    return Err(Drop(format!("filter {:?} appears twice", f.type_)));
                }
                out.push(f);
            }
            Err(FilterIssue::Unsupported(msg)) => return Err(Drop(msg)),
            Err(FilterIssue::FailClosed(msg)) => {
                problems.push(Problem { reason: reasons::INVALID_KIND, message: msg.clone() });
                failure.get_or_insert(msg);
            }
        }
    }
    let has = |t| out.iter().any(|f| f.type_ == t);
    if has(HttpRouteFilterType::RequestRedirect) && has(HttpRouteFilterType::UrlRewrite) {
        return Err(Drop("RequestRedirect and URLRewrite cannot be combined".into()));
    }
    Ok((out, failure))
}

/// Converts the weighted backends of a rule, resolving each one. A backend
/// whose own filter must fail closed is marked unresolved: only its share of
/// the traffic gets the error.
pub(crate) fn convert_backends(
    ctx: &Ctx<'_>,
    route: &RouteView<'_>,
    backends: Vec<(BackendRefView, Vec<FilterView>)>,
    problems: &mut Vec<Problem>,
) -> Result<Vec<HttpBackendRef>, Drop> {
    let mut out = Vec::with_capacity(backends.len());
    for (view, filter_views) in backends {
        let weight = view.weight.unwrap_or(1).max(0);
        let resolved = backends::resolve(ctx, route, view);
        if let Some(p) = &resolved.problem {
            problems.push(p.clone());
        }
        let (filters, failure) = convert_filters(ctx, route, filter_views, problems)?;
        out.push(HttpBackendRef {
            kind: resolved.kind,
            group: resolved.group,
            name: resolved.name,
            namespace: resolved.namespace,
            port: resolved.port,
            weight,
            unresolved: resolved.problem.map(|p| p.message).or(failure.clone()),
            filters: if failure.is_some() { Vec::new() } else { filters },
        });
    }
    Ok(out)
}

fn duration(field: &str, value: &str) -> Result<(GatewayDuration, String), Drop> {
    let d = GatewayDuration::from_str(value)
        .map_err(|e| Drop(format!("{field} {value:?} is not a Gateway API duration: {e}")))?;
    Ok((d, d.to_string()))
}

/// Validates and normalises `timeouts`.
pub(crate) fn timeouts(
    request: Option<&str>,
    backend_request: Option<&str>,
) -> Result<Option<HttpRouteTimeouts>, Drop> {
    if request.is_none() && backend_request.is_none() {
        return Ok(None);
    }
    let request = request.map(|v| duration("timeouts.request", v)).transpose()?;
    let backend = backend_request.map(|v| duration("timeouts.backendRequest", v)).transpose()?;
    if let (Some((r, _)), Some((b, _))) = (&request, &backend)
        && !r.is_zero()
        && !b.is_zero()
        && b.as_nanos() > r.as_nanos()
    {
        return Err(Drop("timeouts.backendRequest must not be longer than timeouts.request".into()));
    }
    Ok(Some(HttpRouteTimeouts { request: request.map(|(_, s)| s), backend_request: backend.map(|(_, s)| s) }))
}

/// Validates and normalises `retry` (GEP-1731).
pub(crate) fn retry(
    attempts: Option<i64>,
    backoff: Option<&str>,
    codes: Option<&[i64]>,
) -> Result<Option<HttpRouteRetry>, Drop> {
    if attempts.is_none() && backoff.is_none() && codes.is_none() {
        return Ok(None);
    }
    let attempts = attempts
        .map(|a| {
            i32::try_from(a).ok().filter(|a| *a >= 0).ok_or_else(|| Drop(format!("retry.attempts {a} is out of range")))
        })
        .transpose()?;
    let backoff = backoff.map(|b| duration("retry.backoff", b).map(|(_, s)| s)).transpose()?;
    let mut out_codes = Vec::new();
    for c in codes.unwrap_or(&[]) {
        if !(400..=599).contains(c) {
            return Err(Drop(format!("retry code {c} is not between 400 and 599")));
        }
        out_codes.push(*c as i32);
    }
    Ok(Some(HttpRouteRetry { attempts, backoff, codes: out_codes }))
}

/// Checks that a regular expression compiles on its own with the proxy's
/// engine (RE2 syntax, as the Gateway API recommends). It is checked before
/// being anchored, so `a)|(b` cannot balance the anchoring group and escape
/// it.
pub(crate) fn check_regex(field: &str, re: &str) -> Result<(), Drop> {
    regex::Regex::new(re).map(|_| ()).map_err(|e| {
        let text = e.to_string();
        let detail = text.lines().map(str::trim).rfind(|l| l.starts_with("error:")).unwrap_or("invalid syntax");
        let detail = detail.trim_start_matches("error:").trim();
        Drop(format!("{field} {re:?} is not a valid regular expression: {detail}"))
    })
}
