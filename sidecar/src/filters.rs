//! The Gateway API filters, as pure functions over header maps and paths.

use http::Method;
use http::header::{self, HeaderMap, HeaderValue};

use crate::model::{Cors, HeaderModifier, PathModifier, Redirect};

/// Applies set, add, then remove, as the spec orders them.
pub fn modify_headers(m: &HeaderModifier, headers: &mut HeaderMap) {
    for (name, value) in &m.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &m.add {
        headers.append(name.clone(), value.clone());
    }
    for name in &m.remove {
        headers.remove(name);
    }
}

/// The path after a path modifier. `matched_prefix` is the PathPrefix of
/// the match that chose the rule (`ReplacePrefixMatch` needs one; the
/// translator rejects it otherwise, and without one the path is kept).
pub fn modify_path(m: &PathModifier, path: &str, matched_prefix: Option<&str>) -> String {
    match m {
        PathModifier::Full(p) => {
            if p.is_empty() {
                "/".to_owned()
            } else {
                p.clone()
            }
        }
        PathModifier::Prefix(replacement) => match matched_prefix {
            Some(prefix) => replace_prefix(path, prefix, replacement),
            None => path.to_owned(),
        },
    }
}

/// Replaces the matched prefix element-wise: with prefix `/foo`,
/// `/foo/bar` becomes `<replacement>/bar`; a replacement of `/` strips it.
fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let rest = if prefix == "/" { path } else { path.strip_prefix(prefix).unwrap_or(path) };
    let rest = if rest.is_empty() || rest.starts_with('/') { rest.to_owned() } else { format!("/{rest}") };
    let joined = format!("{}{}", replacement.trim_end_matches('/'), rest);
    if joined.is_empty() { "/".to_owned() } else { joined }
}

/// The request as the redirect filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct RedirectFrom<'a> {
    pub scheme: &'a str,
    /// Host without port.
    pub host: &'a str,
    /// The listener's port: the Service port in a sidecar.
    pub listener_port: u16,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub matched_prefix: Option<&'a str>,
}

/// The Location of a redirect. Without a port, a changed scheme takes its
/// well-known port and an unchanged one the listener's; 80 for http and 443
/// for https are left out.
pub fn redirect_location(r: &Redirect, from: &RedirectFrom<'_>) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(from.scheme);
    let host = r.hostname.as_deref().unwrap_or(from.host);
    let port = r.port.unwrap_or(match r.scheme.as_deref() {
        Some("http") => 80,
        Some("https") => 443,
        _ => from.listener_port,
    });
    let default_port = matches!((scheme, port), ("http", 80) | ("https", 443));
    let path = match &r.path {
        Some(m) => modify_path(m, from.path, from.matched_prefix),
        None => from.path.to_owned(),
    };
    let mut location =
        if default_port { format!("{scheme}://{host}{path}") } else { format!("{scheme}://{host}:{port}{path}") };
    if let Some(q) = from.query {
        location.push('?');
        location.push_str(q);
    }
    location
}

fn origin_allowed(cors: &Cors, origin: &str) -> bool {
    cors.allow_origins.iter().any(|allowed| {
        allowed == "*"
            || allowed == origin
            || allowed.split_once('*').is_some_and(|(before, after)| {
                origin.len() > before.len() + after.len() && origin.starts_with(before) && origin.ends_with(after)
            })
    })
}

/// Whether a request is a CORS preflight, which the proxy answers itself.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The CORS headers for a response to `request`: none when the origin is
/// not allowed. For a preflight, also the allowed methods, headers and max
/// age.
pub fn cors_headers(cors: &Cors, request: &HeaderMap, preflight: bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    let Some(origin) = request.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return out };
    if !origin_allowed(cors, origin) {
        return out;
    }
    let wildcard = cors.allow_origins.iter().any(|o| o == "*") && !cors.allow_credentials;
    let allow_origin = if wildcard { "*" } else { origin };
    if let Ok(v) = HeaderValue::from_str(allow_origin) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    if cors.allow_credentials {
        out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    let list = |values: &[String]| HeaderValue::from_str(&values.join(", ")).ok();
    // A `*` cannot be used with credentials (browsers take it literally
    // then), so with credentials the gateway echoes what the preflight asks
    // for instead.
    let allowed = |values: &[String], requested: header::HeaderName| -> Option<HeaderValue> {
        if values.is_empty() {
            return None;
        }
        if !values.iter().any(|v| v == "*") {
            return list(values);
        }
        if !cors.allow_credentials {
            return Some(HeaderValue::from_static("*"));
        }
        request.get(requested).cloned()
    };
    if preflight {
        if let Some(v) = allowed(&cors.allow_methods, header::ACCESS_CONTROL_REQUEST_METHOD) {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        if let Some(v) = allowed(&cors.allow_headers, header::ACCESS_CONTROL_REQUEST_HEADERS) {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(cors.max_age.unwrap_or(5)));
    }
    // Exposed headers go on preflight and actual responses alike; with
    // credentials a `*` would expose nothing, so it is left out.
    let exposed: Vec<String> =
        cors.expose_headers.iter().filter(|h| !(cors.allow_credentials && *h == "*")).cloned().collect();
    if !exposed.is_empty()
        && let Some(v) = list(&exposed)
    {
        out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    #[test]
    fn header_modifier_sets_adds_then_removes() {
        let m = HeaderModifier {
            set: vec![(HeaderName::from_static("x-set"), HeaderValue::from_static("new"))],
            add: vec![(HeaderName::from_static("x-add"), HeaderValue::from_static("two"))],
            remove: vec![HeaderName::from_static("x-gone")],
        };
        let mut h = HeaderMap::new();
        h.insert("x-set", HeaderValue::from_static("old"));
        h.insert("x-add", HeaderValue::from_static("one"));
        h.insert("x-gone", HeaderValue::from_static("bye"));
        modify_headers(&m, &mut h);
        assert_eq!(h.get("x-set").unwrap(), "new");
        assert_eq!(h.get_all("x-add").iter().collect::<Vec<_>>(), ["one", "two"]);
        assert!(!h.contains_key("x-gone"));
    }

    #[test]
    fn path_modifiers_follow_the_spec() {
        let cases = [
            // (modifier, path, matched prefix, expected)
            (PathModifier::Prefix("/one".into()), "/prefix/one/two", Some("/prefix/one"), "/one/two"),
            (PathModifier::Prefix("/one".into()), "/prefix/one", Some("/prefix/one"), "/one"),
            (PathModifier::Prefix("/".into()), "/strip-prefix/three", Some("/strip-prefix"), "/three"),
            (PathModifier::Prefix("/".into()), "/strip-prefix", Some("/strip-prefix"), "/"),
            (PathModifier::Prefix("/new/".into()), "/old/x", Some("/old"), "/new/x"),
            (PathModifier::Prefix("/foo".into()), "/bar", Some("/"), "/foo/bar"),
            (PathModifier::Full("/one".into()), "/full/path/two", Some("/full"), "/one"),
            (PathModifier::Prefix("/x".into()), "/a", None, "/a"),
        ];
        for (m, path, prefix, want) in cases {
            assert_eq!(modify_path(&m, path, prefix), want, "{m:?} on {path}");
        }
    }

    fn redirect(
        scheme: Option<&str>,
        hostname: Option<&str>,
        port: Option<u16>,
        path: Option<PathModifier>,
    ) -> Redirect {
        Redirect { scheme: scheme.map(Into::into), hostname: hostname.map(Into::into), path, port, status: 302 }
    }

    #[test]
    fn redirect_ports_follow_the_spec() {
        let from = RedirectFrom {
            scheme: "http",
            host: "svc.ns",
            listener_port: 8080,
            path: "/a",
            query: Some("x=1"),
            matched_prefix: Some("/"),
        };
        let cases = [
            (redirect(None, None, None, None), "http://svc.ns:8080/a?x=1"),
            (redirect(Some("https"), None, None, None), "https://svc.ns/a?x=1"),
            (redirect(Some("https"), None, Some(8443), None), "https://svc.ns:8443/a?x=1"),
            (redirect(None, Some("example.com"), Some(80), None), "http://example.com/a?x=1"),
            (redirect(Some("http"), Some("example.com"), None, None), "http://example.com/a?x=1"),
            (redirect(None, None, None, Some(PathModifier::Full("/b".into()))), "http://svc.ns:8080/b?x=1"),
        ];
        for (r, want) in cases {
            assert_eq!(redirect_location(&r, &from), want, "{r:?}");
        }
    }

    fn cors() -> Cors {
        Cors {
            allow_origins: vec!["https://app.example".into(), "https://*.wild.example".into()],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-a".into()],
            expose_headers: vec!["x-b".into()],
            allow_credentials: true,
            max_age: Some(60),
        }
    }

    fn with_origin(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h
    }

    #[test]
    fn cors_allows_listed_and_wildcard_origins_only() {
        let ok = cors_headers(&cors(), &with_origin("https://app.example"), true);
        assert_eq!(ok.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "https://app.example");
        assert_eq!(ok.get(header::ACCESS_CONTROL_ALLOW_METHODS).unwrap(), "GET, POST");
        assert_eq!(ok.get(header::ACCESS_CONTROL_MAX_AGE).unwrap(), "60");
        assert_eq!(ok.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).unwrap(), "true");
        let wild = cors_headers(&cors(), &with_origin("https://a.wild.example"), false);
        assert_eq!(wild.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).unwrap(), "x-b");
        assert!(cors_headers(&cors(), &with_origin("https://wild.example"), false).is_empty());
        assert!(cors_headers(&cors(), &with_origin("https://evil.example"), true).is_empty());
        assert!(cors_headers(&cors(), &HeaderMap::new(), true).is_empty());
    }

    #[test]
    fn preflights_expose_headers_and_wildcards_echo_the_request_with_credentials() {
        let mut preflight = with_origin("https://app.example");
        preflight.insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("PUT"));
        preflight.insert(header::ACCESS_CONTROL_REQUEST_HEADERS, HeaderValue::from_static("x-one, x-two"));
        let h = cors_headers(&cors(), &preflight, true);
        assert_eq!(h.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).unwrap(), "x-b");

        let any = Cors {
            allow_methods: vec!["*".into()],
            allow_headers: vec!["*".into()],
            expose_headers: vec!["*".into()],
            ..cors()
        };
        // With credentials a `*` is taken literally by browsers: echo.
        let h = cors_headers(&any, &preflight, true);
        assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_METHODS).unwrap(), "PUT");
        assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_HEADERS).unwrap(), "x-one, x-two");
        assert!(h.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).is_none());
        // Without credentials the wildcard itself is the answer.
        let h = cors_headers(&Cors { allow_credentials: false, ..any }, &preflight, true);
        assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_METHODS).unwrap(), "*");
        assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_HEADERS).unwrap(), "*");
        assert_eq!(h.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).unwrap(), "*");
    }

    #[test]
    fn a_star_origin_without_credentials_answers_star() {
        let c = Cors { allow_origins: vec!["*".into()], allow_credentials: false, ..cors() };
        let h = cors_headers(&c, &with_origin("https://any.example"), false);
        assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "*");
    }
}
