//! Weft route resources (MeshHTTPRoute / MeshTCPRoute spec types) → the
//! proto route messages proxies apply, and the precedence order of routes.

use std::str::FromStr;

use weft_api as api;
use weft_k8s_api::crds::{
    HttpBackendRef, HttpRouteFilter, HttpRouteFilterType, HttpRouteRule, PathMatchType, PathModifier, PathModifierType,
    StringMatchType, TcpRouteRule,
};
use weft_k8s_api::gateway::GatewayDuration;
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weft_k8s_api::k8s_openapi::jiff::Timestamp;
use weft_k8s_api::labels;
use weft_translate::ObjectKey;

/// Where a route came from, and its rank: Gateway API breaks ties between
/// routes by the age of their source, then by `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RouteRank {
    missing_time: bool,
    created: Option<Timestamp>,
    namespace: String,
    name: String,
}

/// The source of a Weft route: its origin (for generated routes) or itself.
pub(crate) fn source(kind: &str, key: &ObjectKey, meta: &ObjectMeta) -> (api::ObjectRef, RouteRank) {
    let annotations = meta.annotations.as_ref();
    let origin_kind = meta.labels.as_ref().and_then(|l| l.get(labels::ORIGIN_KIND));
    let origin_full = annotations.and_then(|a| a.get(labels::ORIGIN_FULL_NAME));
    let (kind, namespace, name) = match (origin_kind, origin_full.and_then(|f| f.split_once('/'))) {
        (Some(k), Some((ns, n))) => (k.clone(), ns.to_string(), n.to_string()),
        _ => (kind.to_string(), key.namespace.clone(), key.name.clone()),
    };
    let created = annotations
        .and_then(|a| a.get(labels::ORIGIN_CREATION_TIMESTAMP))
        .and_then(|t| t.parse::<Timestamp>().ok())
        .or_else(|| meta.creation_timestamp.as_ref().map(|t| t.0));
    (
        api::ObjectRef { kind, namespace: namespace.clone(), name: name.clone() },
        RouteRank { missing_time: created.is_none(), created, namespace, name },
    )
}

fn duration(value: Option<&str>) -> Option<prost_types::Duration> {
    let d = GatewayDuration::from_str(value?).ok()?;
    Some(prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
}

fn path_modifier(p: &PathModifier) -> api::PathModifier {
    match p.type_ {
        PathModifierType::ReplaceFullPath => api::PathModifier {
            kind: api::path_modifier::Kind::Full as i32,
            value: p.replace_full_path.clone().unwrap_or_default(),
        },
        PathModifierType::ReplacePrefixMatch => api::PathModifier {
            kind: api::path_modifier::Kind::Prefix as i32,
            value: p.replace_prefix_match.clone().unwrap_or_default(),
        },
    }
}

fn header_modifier(m: &weft_k8s_api::crds::HeaderModifier) -> api::HeaderModifier {
    let headers = |hs: &[weft_k8s_api::crds::HeaderValue]| {
        hs.iter().map(|h| api::Header { name: h.name.clone(), value: h.value.clone() }).collect()
    };
    api::HeaderModifier { set: headers(&m.set), add: headers(&m.add), remove: m.remove.clone() }
}

fn filter(f: &HttpRouteFilter) -> Option<api::Filter> {
    use api::filter::Kind;
    let kind = match f.type_ {
        HttpRouteFilterType::RequestHeaderModifier => {
            Kind::RequestHeaderModifier(header_modifier(f.request_header_modifier.as_ref()?))
        }
        HttpRouteFilterType::ResponseHeaderModifier => {
            Kind::ResponseHeaderModifier(header_modifier(f.response_header_modifier.as_ref()?))
        }
        HttpRouteFilterType::RequestRedirect => {
            let r = f.request_redirect.as_ref()?;
            Kind::Redirect(api::Redirect {
                scheme: r.scheme.clone().unwrap_or_default(),
                hostname: r.hostname.clone().unwrap_or_default(),
                path: r.path.as_ref().map(path_modifier),
                port: r.port.map(|p| p.max(0) as u32).unwrap_or(0),
                status: r.status_code.max(0) as u32,
            })
        }
        HttpRouteFilterType::UrlRewrite => {
            let r = f.url_rewrite.as_ref()?;
            Kind::Rewrite(api::Rewrite {
                hostname: r.hostname.clone().unwrap_or_default(),
                path: r.path.as_ref().map(path_modifier),
            })
        }
        HttpRouteFilterType::RequestMirror => {
            let m = f.request_mirror.as_ref()?;
            let b = &m.backend_ref;
            let (numerator, denominator) = m.fraction.map(|fr| (fr.numerator, fr.denominator)).unwrap_or((1, 1));
            Kind::Mirror(api::Mirror {
                backend: Some(api::Backend {
                    source: Some(api::ObjectRef {
                        kind: b.kind.clone(),
                        namespace: b.namespace.clone(),
                        name: b.name.clone(),
                    }),
                    service: service_resource_of(&b.kind, &b.group, &b.namespace, &b.name),
                    port: b.port.map(|p| p.max(0) as u32).unwrap_or(0),
                    weight: 1,
                    filters: Vec::new(),
                    unresolved: b.unresolved.clone().unwrap_or_default(),
                }),
                numerator: numerator.max(0) as u32,
                denominator: denominator.max(1) as u32,
            })
        }
        HttpRouteFilterType::Cors => {
            let c = f.cors.as_ref()?;
            Kind::Cors(api::Cors {
                allow_origins: c.allow_origins.clone(),
                allow_methods: c.allow_methods.clone(),
                allow_headers: c.allow_headers.clone(),
                expose_headers: c.expose_headers.clone(),
                allow_credentials: c.allow_credentials,
                max_age: c.max_age.max(0) as u32,
            })
        }
    };
    Some(api::Filter { kind: Some(kind) })
}

fn service_resource_of(kind: &str, group: &str, namespace: &str, name: &str) -> String {
    if kind == "Service" && (group.is_empty() || group == "core") {
        api::service_resource(namespace, name)
    } else {
        String::new()
    }
}

fn backend(b: &HttpBackendRef) -> api::Backend {
    api::Backend {
        source: Some(api::ObjectRef { kind: b.kind.clone(), namespace: b.namespace.clone(), name: b.name.clone() }),
        service: service_resource_of(&b.kind, &b.group, &b.namespace, &b.name),
        port: b.port.map(|p| p.max(0) as u32).unwrap_or(0),
        weight: b.weight.max(0) as u32,
        filters: b.filters.iter().filter_map(filter).collect(),
        unresolved: b.unresolved.clone().unwrap_or_default(),
    }
}

/// One HTTP rule in proto form.
pub(crate) fn http_rule(r: &HttpRouteRule) -> api::HttpRule {
    api::HttpRule {
        name: r.name.clone().unwrap_or_default(),
        matches: r
            .matches
            .iter()
            .map(|m| api::HttpMatch {
                path: m.path.as_ref().map(|p| api::PathMatch {
                    kind: match p.type_ {
                        PathMatchType::Exact => api::path_match::Kind::Exact,
                        PathMatchType::PathPrefix => api::path_match::Kind::Prefix,
                        PathMatchType::RegularExpression => api::path_match::Kind::Regex,
                    } as i32,
                    value: p.value.clone(),
                }),
                headers: m.headers.iter().map(string_match).collect(),
                query_params: m.query_params.iter().map(string_match).collect(),
                method: m.method.clone().unwrap_or_default(),
            })
            .collect(),
        filters: r.filters.iter().filter_map(filter).collect(),
        backends: r.backend_refs.iter().map(backend).collect(),
        timeouts: r.timeouts.as_ref().map(|t| api::Timeouts {
            request: duration(t.request.as_deref()),
            backend_request: duration(t.backend_request.as_deref()),
        }),
        retry: r.retry.as_ref().map(|rt| api::Retry {
            attempts: rt.attempts.map(|a| a.max(0) as u32).unwrap_or(1),
            backoff: duration(rt.backoff.as_deref()),
            codes: rt.codes.iter().map(|c| (*c).max(0) as u32).collect(),
        }),
        failure: r.failure.clone().unwrap_or_default(),
    }
}

fn string_match(m: &weft_k8s_api::crds::StringMatch) -> api::StringMatch {
    api::StringMatch {
        kind: match m.type_ {
            StringMatchType::Exact => api::string_match::Kind::Exact,
            StringMatchType::RegularExpression => api::string_match::Kind::Regex,
        } as i32,
        name: m.name.clone(),
        value: m.value.clone(),
    }
}

/// The backends of a TCP rule (the first rule: TCP has nothing to match).
pub(crate) fn tcp_backends(rules: &[TcpRouteRule]) -> Vec<api::Backend> {
    rules
        .first()
        .map(|r| {
            r.backend_refs
                .iter()
                .map(|b| api::Backend {
                    source: Some(api::ObjectRef {
                        kind: b.kind.clone(),
                        namespace: b.namespace.clone(),
                        name: b.name.clone(),
                    }),
                    service: service_resource_of(&b.kind, &b.group, &b.namespace, &b.name),
                    port: b.port.map(|p| p.max(0) as u32).unwrap_or(0),
                    weight: b.weight.max(0) as u32,
                    filters: Vec::new(),
                    unresolved: b.unresolved.clone().unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The route a port gets when no route attaches: everything to the Service.
pub(crate) fn default_http_route(namespace: &str, name: &str, port: u32) -> api::HttpRoute {
    api::HttpRoute {
        source: Some(api::ObjectRef { kind: "Service".into(), namespace: namespace.into(), name: name.into() }),
        hostnames: Vec::new(),
        rules: vec![api::HttpRule {
            matches: vec![api::HttpMatch {
                path: Some(api::PathMatch { kind: api::path_match::Kind::Prefix as i32, value: "/".into() }),
                ..Default::default()
            }],
            backends: vec![self_backend(namespace, name, port)],
            ..Default::default()
        }],
    }
}

/// The TCP route a port gets when no TCP route attaches.
pub(crate) fn default_tcp_route(namespace: &str, name: &str, port: u32) -> api::TcpRoute {
    api::TcpRoute {
        source: Some(api::ObjectRef { kind: "Service".into(), namespace: namespace.into(), name: name.into() }),
        hostnames: Vec::new(),
        backends: vec![self_backend(namespace, name, port)],
    }
}

fn self_backend(namespace: &str, name: &str, port: u32) -> api::Backend {
    api::Backend {
        source: Some(api::ObjectRef { kind: "Service".into(), namespace: namespace.into(), name: name.into() }),
        service: api::service_resource(namespace, name),
        port,
        weight: 1,
        filters: Vec::new(),
        unresolved: String::new(),
    }
}
