//! HTTPRoute and GRPCRoute filters → MeshHTTPRoute filters.
//!
//! The generated Gateway API crate has a distinct Rust type for each place a
//! filter can appear (rule or backend, HTTPRoute or GRPCRoute); the macros
//! here convert all of them into one [`FilterView`] so the rules live in one
//! function.

use weft_k8s_api::crds::{
    Cors, Fraction, HeaderModifier, HttpRouteFilter, HttpRouteFilterType, MirrorBackendRef, PathModifier,
    PathModifierType, RequestMirror, RequestRedirect, UrlRewrite,
};

use super::super::context::Ctx;
use super::RouteView;
use super::backends::{self, BackendRefView, Problem};

/// A filter of any generated type, normalised.
#[derive(Clone, Debug, Default)]
pub(crate) struct FilterView {
    pub type_: &'static str,
    pub request_header_modifier: Option<HeaderModifier>,
    pub response_header_modifier: Option<HeaderModifier>,
    pub request_redirect: Option<RedirectView>,
    pub url_rewrite: Option<UrlRewrite>,
    pub request_mirror: Option<MirrorView>,
    pub cors: Option<Cors>,
    pub extension_ref: Option<String>,
}

/// A RequestRedirect filter of any generated type.
#[derive(Clone, Debug, Default)]
pub(crate) struct RedirectView {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<i32>,
    pub status_code: Option<i64>,
}

/// A RequestMirror filter of any generated type.
#[derive(Clone, Debug, Default)]
pub(crate) struct MirrorView {
    pub backend: BackendRefView,
    pub percent: Option<i32>,
    /// Numerator and denominator.
    pub fraction: Option<(i32, Option<i32>)>,
}

/// The serde name of a generated enum value (`URLRewrite`, `http`, `GET`).
pub(crate) fn enum_str<T: serde::Serialize>(v: &T) -> &'static str {
    super::super::variant::variant_name(v)
}

macro_rules! header_modifier {
    ($m:expr) => {{
        let m = $m;
        weft_k8s_api::crds::HeaderModifier {
            set: m
                .set
                .iter()
                .flatten()
                .map(|h| weft_k8s_api::crds::HeaderValue { name: h.name.clone(), value: h.value.clone() })
                .collect(),
            add: m
                .add
                .iter()
                .flatten()
                .map(|h| weft_k8s_api::crds::HeaderValue { name: h.name.clone(), value: h.value.clone() })
                .collect(),
            remove: m.remove.clone().unwrap_or_default(),
        }
    }};
}
pub(crate) use header_modifier;

macro_rules! path_modifier {
    ($p:expr) => {{
        let p = $p;
        weft_k8s_api::crds::PathModifier {
            type_: if $crate::translate::routes::filters::enum_str(&p.r#type) == "ReplacePrefixMatch" {
                weft_k8s_api::crds::PathModifierType::ReplacePrefixMatch
            } else {
                weft_k8s_api::crds::PathModifierType::ReplaceFullPath
            },
            replace_full_path: p.replace_full_path.clone(),
            replace_prefix_match: p.replace_prefix_match.clone(),
        }
    }};
}
pub(crate) use path_modifier;

/// Converts an HTTPRoute filter (rule or backend level).
macro_rules! http_filter_view {
    ($f:expr) => {{
        let f = $f;
        $crate::translate::routes::filters::FilterView {
            type_: $crate::translate::routes::filters::enum_str(&f.r#type),
            request_header_modifier: f
                .request_header_modifier
                .as_ref()
                .map(|m| $crate::translate::routes::filters::header_modifier!(m)),
            response_header_modifier: f
                .response_header_modifier
                .as_ref()
                .map(|m| $crate::translate::routes::filters::header_modifier!(m)),
            request_redirect: f.request_redirect.as_ref().map(|r| $crate::translate::routes::filters::RedirectView {
                scheme: r.scheme.as_ref().map(|s| $crate::translate::routes::filters::enum_str(s).to_string()),
                hostname: r.hostname.clone(),
                path: r.path.as_ref().map(|p| $crate::translate::routes::filters::path_modifier!(p)),
                port: r.port,
                status_code: r.status_code,
            }),
            url_rewrite: f.url_rewrite.as_ref().map(|u| weft_k8s_api::crds::UrlRewrite {
                hostname: u.hostname.clone(),
                path: u.path.as_ref().map(|p| $crate::translate::routes::filters::path_modifier!(p)),
            }),
            request_mirror: f.request_mirror.as_ref().map(|m| $crate::translate::routes::filters::MirrorView {
                backend: $crate::translate::routes::backends::backend_view!(&m.backend_ref),
                percent: m.percent,
                fraction: m.fraction.as_ref().map(|fr| (fr.numerator, fr.denominator)),
            }),
            cors: f.cors.as_ref().map(|c| weft_k8s_api::crds::Cors {
                allow_origins: c.allow_origins.clone().unwrap_or_default(),
                allow_methods: c.allow_methods.clone().unwrap_or_default(),
                allow_headers: c.allow_headers.clone().unwrap_or_default(),
                expose_headers: c.expose_headers.clone().unwrap_or_default(),
                allow_credentials: c.allow_credentials.unwrap_or(false),
                max_age: c.max_age.unwrap_or(5),
            }),
            extension_ref: f.extension_ref.as_ref().map(|e| format!("{}/{} {}", e.group, e.kind, e.name)),
        }
    }};
}
pub(crate) use http_filter_view;

/// Converts a GRPCRoute filter (rule or backend level).
macro_rules! grpc_filter_view {
    ($f:expr) => {{
        let f = $f;
        $crate::translate::routes::filters::FilterView {
            type_: $crate::translate::routes::filters::enum_str(&f.r#type),
            request_header_modifier: f
                .request_header_modifier
                .as_ref()
                .map(|m| $crate::translate::routes::filters::header_modifier!(m)),
            response_header_modifier: f
                .response_header_modifier
                .as_ref()
                .map(|m| $crate::translate::routes::filters::header_modifier!(m)),
            request_mirror: f.request_mirror.as_ref().map(|m| $crate::translate::routes::filters::MirrorView {
                backend: $crate::translate::routes::backends::backend_view!(&m.backend_ref),
                percent: m.percent,
                fraction: m.fraction.as_ref().map(|fr| (fr.numerator, fr.denominator)),
            }),
            extension_ref: f.extension_ref.as_ref().map(|e| format!("{}/{} {}", e.group, e.kind, e.name)),
            ..Default::default()
        }
    }};
}
pub(crate) use grpc_filter_view;

/// What went wrong with a filter.
#[derive(Clone, Debug)]
pub(crate) enum FilterIssue {
    /// Weft cannot honour it: the rule is dropped (PartiallyInvalid).
    Unsupported(String),
    /// A filter that cannot be applied and must not be skipped: the requests
    /// it would have processed get an error response.
    FailClosed(String),
}

/// Converts one filter. A mirror whose target does not resolve is kept (it
/// mirrors nothing) and reported through `problems`.
pub(crate) fn convert(
    ctx: &Ctx<'_>,
    route: &RouteView<'_>,
    f: FilterView,
    problems: &mut Vec<Problem>,
) -> Result<HttpRouteFilter, FilterIssue> {
    let mut f = f;
    let type_ = f.type_;
    let missing = |field: &str| FilterIssue::Unsupported(format!("filter {type_} has no {field}"));
    let mut out = HttpRouteFilter::default();
    match f.type_ {
        "RequestHeaderModifier" => {
            out.type_ = HttpRouteFilterType::RequestHeaderModifier;
            out.request_header_modifier =
                Some(f.request_header_modifier.take().ok_or_else(|| missing("requestHeaderModifier"))?);
        }
        "ResponseHeaderModifier" => {
            out.type_ = HttpRouteFilterType::ResponseHeaderModifier;
            out.response_header_modifier =
                Some(f.response_header_modifier.take().ok_or_else(|| missing("responseHeaderModifier"))?);
        }
        "RequestRedirect" => {
            let RedirectView { scheme, hostname, path, port, status_code: status } =
                f.request_redirect.take().ok_or_else(|| missing("requestRedirect"))?;
            let status_code = status.unwrap_or(302) as i32;
            if ![301, 302, 303, 307, 308].contains(&status_code) {
                return Err(FilterIssue::Unsupported(format!(
                    "redirect status {status_code} is not one of 301, 302, 303, 307, 308"
                )));
            }
            check_path_modifier(path.as_ref())?;
            out.type_ = HttpRouteFilterType::RequestRedirect;
            out.request_redirect = Some(RequestRedirect { scheme, hostname, path, port, status_code });
        }
        "URLRewrite" => {
            let rewrite = f.url_rewrite.take().ok_or_else(|| missing("urlRewrite"))?;
            check_path_modifier(rewrite.path.as_ref())?;
            out.type_ = HttpRouteFilterType::UrlRewrite;
            out.url_rewrite = Some(rewrite);
        }
        "RequestMirror" => {
            let MirrorView { backend, percent, fraction } =
                f.request_mirror.take().ok_or_else(|| missing("requestMirror"))?;
            let resolved = backends::resolve(ctx, route, backend);
            if let Some(p) = &resolved.problem {
                problems.push(p.clone());
            }
            let fraction = match (percent, fraction) {
                (Some(p), _) => Some(Fraction { numerator: p.clamp(0, 100), denominator: 100 }),
                (None, Some((n, d))) => {
                    let d = d.unwrap_or(100);
                    if d < 1 || n < 0 || n > d {
                        return Err(FilterIssue::Unsupported(format!(
                            "mirror fraction {n}/{d} is not between 0 and 1"
                        )));
                    }
                    Some(Fraction { numerator: n, denominator: d })
                }
                (None, None) => None,
            };
            out.type_ = HttpRouteFilterType::RequestMirror;
            out.request_mirror = Some(RequestMirror {
                backend_ref: MirrorBackendRef {
                    kind: resolved.kind,
                    group: resolved.group,
                    name: resolved.name,
                    namespace: resolved.namespace,
                    port: resolved.port,
                    unresolved: resolved.problem.map(|p| p.message),
                },
                fraction,
            });
        }
        "CORS" => {
            out.type_ = HttpRouteFilterType::Cors;
            out.cors = Some(f.cors.take().ok_or_else(|| missing("cors"))?);
        }
        "ExtensionRef" => {
            return Err(FilterIssue::FailClosed(format!(
                "filter ExtensionRef {} is not known to Weft, so its requests are answered with 500",
                f.extension_ref.as_deref().unwrap_or("(empty)")
            )));
        }
        "ExternalAuth" => {
            // Authentication must fail closed: skipping the filter (or
            // dropping the rule, so requests fall through to another rule)
            // would let unauthenticated requests through.
            return Err(FilterIssue::FailClosed(
                "filter ExternalAuth is not supported by Weft, so its requests are answered with 500".into(),
            ));
        }
        other => {
            return Err(FilterIssue::Unsupported(format!("filter type {other} is not supported by Weft")));
        }
    }
    Ok(out)
}

fn check_path_modifier(p: Option<&PathModifier>) -> Result<(), FilterIssue> {
    let Some(p) = p else { return Ok(()) };
    let ok = match p.type_ {
        PathModifierType::ReplaceFullPath => p.replace_full_path.is_some(),
        PathModifierType::ReplacePrefixMatch => p.replace_prefix_match.is_some(),
    };
    if ok { Ok(()) } else { Err(FilterIssue::Unsupported(format!("path modifier {:?} has no value", p.type_))) }
}
