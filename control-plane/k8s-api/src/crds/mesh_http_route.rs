//! MeshHTTPRoute: HTTP and gRPC routing for sidecars and gateways.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Destination, TargetRef, default_backend_kind, default_weight};

/// HTTP routing rules for traffic from `targetRef`'s workloads to the `to`
/// destinations. Generated from HTTPRoutes and GRPCRoutes (one per route and
/// parent), or written by hand; both are ranked by the same Gateway API
/// precedence rules.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "weft.io",
    version = "v1alpha1",
    kind = "MeshHTTPRoute",
    plural = "meshhttproutes",
    namespaced,
    status = "MeshRouteStatus",
    category = "weft",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"Target-Name","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[kube(derive = "Default", derive = "PartialEq")]
#[serde(rename_all = "camelCase")]
pub struct MeshHTTPRouteSpec {
    /// Whose traffic this route shapes.
    pub target_ref: TargetRef,
    /// Which destinations the rules apply to.
    #[serde(default)]
    pub to: Vec<Destination>,
    /// Rules, in the source's order.
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

/// One routing rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Name of the rule, shown in metrics and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A request matches the rule when it matches any of these.
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    /// Filters applied before the request is sent to a backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    /// Weighted backends. Empty: the proxy answers 500 unless a filter (a
    /// redirect) answers first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRef>,
    /// Timeouts of the whole request and of each backend attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Retries (GEP-1731).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<HttpRouteRetry>,
    /// Set when the rule names a filter Weft cannot apply (an unknown
    /// ExtensionRef, ExternalAuth): the proxy answers every request the rule
    /// matches with 500 and this message, as Gateway API requires, instead of
    /// skipping the filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Conditions a request must all meet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// Path condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Header conditions; names are case-insensitive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<StringMatch>,
    /// Query parameter conditions; names are case-sensitive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<StringMatch>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A path condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    /// How `value` is compared.
    #[serde(rename = "type")]
    pub type_: PathMatchType,
    /// The path, prefix or regular expression.
    pub value: String,
}

/// Path comparison kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PathMatchType {
    /// The whole path equals the value.
    Exact,
    /// The path starts with the value, on a `/` boundary.
    #[default]
    PathPrefix,
    /// The whole path matches the regular expression.
    RegularExpression,
}

/// A header or query parameter condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    /// How `value` is compared.
    #[serde(rename = "type", default)]
    pub type_: StringMatchType,
    /// Header or parameter name.
    pub name: String,
    /// Value or regular expression.
    pub value: String,
}

/// Value comparison kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StringMatchType {
    /// Equal.
    #[default]
    Exact,
    /// The whole value matches the regular expression.
    RegularExpression,
}

/// A filter, in Gateway API shape: `type` names the one field that is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    /// Which of the fields below applies.
    #[serde(rename = "type")]
    pub type_: HttpRouteFilterType,
    /// Headers to set, add and remove on the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// Headers to set, add and remove on the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    /// Rewrite host and path before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    /// Send a copy of the request to another backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
    /// Answer CORS preflights and add CORS headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
}

/// Filter kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HttpRouteFilterType {
    /// See [`HttpRouteFilter::request_header_modifier`].
    #[default]
    RequestHeaderModifier,
    /// See [`HttpRouteFilter::response_header_modifier`].
    ResponseHeaderModifier,
    /// See [`HttpRouteFilter::request_redirect`].
    RequestRedirect,
    /// See [`HttpRouteFilter::url_rewrite`].
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    /// See [`HttpRouteFilter::request_mirror`].
    RequestMirror,
    /// See [`HttpRouteFilter::cors`].
    #[serde(rename = "CORS")]
    Cors,
}

/// Header changes, applied in the order set, add, remove.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    /// Replace (or create) these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    /// Append these values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeaderValue {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// A redirect answered by the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestRedirect {
    /// `http` or `https`; empty keeps the request's scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// New host; empty keeps the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// New port; empty follows the Gateway API rules for the scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub status_code: i32,
}

fn default_redirect_status() -> i32 {
    302
}

/// A rewrite of the request before it is forwarded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlRewrite {
    /// New Host header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// A path replacement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub type_: PathModifierType,
    /// The new full path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// What replaces the matched prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// Path replacement kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PathModifierType {
    /// Replace the whole path.
    #[default]
    ReplaceFullPath,
    /// Replace the part matched by a `PathPrefix` match.
    ReplacePrefixMatch,
}

/// A mirror: a copy of each (sampled) request goes to `backendRef`, and its
/// answer is dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestMirror {
    /// Where copies go.
    pub backend_ref: MirrorBackendRef,
    /// Share of requests mirrored, as a fraction; empty means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

/// A mirror target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorBackendRef {
    /// Kind of the backend; only `Service` (core group) resolves.
    #[serde(default = "default_backend_kind")]
    pub kind: String,
    /// API group of the backend; empty for the core group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Service name.
    pub name: String,
    /// Service namespace.
    pub namespace: String,
    /// Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Set when the reference could not be resolved; nothing is mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
}

/// `numerator / denominator`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Fraction {
    /// Numerator.
    pub numerator: i32,
    /// Denominator, at least 1.
    pub denominator: i32,
}

/// Cross-origin resource sharing (the HTTPRoute CORS filter).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// Allowed origins; `*` or patterns with a leading `*.` host label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    /// Allowed methods, or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Allowed request headers, or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers exposed to the page, or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true`.
    #[serde(default)]
    pub allow_credentials: bool,
    /// Seconds a preflight answer may be cached.
    #[serde(default = "default_cors_max_age")]
    pub max_age: i32,
}

fn default_cors_max_age() -> i32 {
    5
}

/// A weighted backend of an HTTP rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackendRef {
    /// Kind of the backend; only `Service` (core group) resolves.
    #[serde(default = "default_backend_kind")]
    pub kind: String,
    /// API group of the backend; empty for the core group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Service name.
    pub name: String,
    /// Service namespace.
    pub namespace: String,
    /// Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Relative share of the traffic; 0 sends nothing.
    #[serde(default = "default_weight")]
    pub weight: i32,
    /// Filters applied only when this backend is picked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    /// Set when the reference could not be resolved: the backend keeps its
    /// weight and proxies answer its share with 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
}

/// Timeouts (GEP-1742), as Gateway API durations; `0s` disables one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    /// Whole request, retries included, until the response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Each attempt to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// Retries (GEP-1731).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRetry {
    /// Retries after the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Wait before a retry (a Gateway API duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// HTTP statuses that are retried (connection errors always are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<i32>,
}

/// Observed state of a hand-written route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshRouteStatus {
    /// `Accepted`, with the reason when it is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
