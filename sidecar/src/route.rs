//! Picks the rule that serves a request, in the order the Gateway API
//! specifies: among all rules of all routes whose match accepts the request,
//! the most specific match wins — an Exact path before any prefix, then the
//! longest prefix, then a method, then the most header matches, then the
//! most query-parameter matches. Ties go to the route listed first (the
//! control plane lists routes oldest first, then by namespace/name), then to
//! the rule and match listed first. Regular-expression paths rank below
//! prefixes (implementation-specific in the spec).

use http::{HeaderMap, Method};

use crate::model::{HttpMatch, HttpRoute, HttpRule, PathMatch};

/// What matching needs to know of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// Host without port, lower case.
    pub host: &'a str,
    pub method: &'a Method,
    /// Path without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// The rule chosen for a request, with the match that chose it (its path
/// prefix drives `ReplacePrefixMatch`).
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    pub route: &'a HttpRoute,
    pub rule: &'a HttpRule,
    pub matched: &'a HttpMatch,
}

/// Ordering key of a match; greater is more specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Specificity {
    host: HostRank,
    path_kind: u8,
    path_len: usize,
    method: bool,
    headers: usize,
    query_params: usize,
}

/// Exact host names beat wildcards, longer wildcards beat shorter ones, and
/// any host name beats a route without host names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum HostRank {
    Any,
    Wildcard(usize),
    Exact,
}

/// Selects the rule for `req` among `routes`, or `None` (the caller answers
/// 404).
pub fn select<'a>(routes: &'a [HttpRoute], req: &RequestInfo<'_>) -> Option<Selected<'a>> {
    let mut best: Option<(Specificity, Selected<'a>)> = None;
    for route in routes {
        let Some(host) = host_rank(&route.hostnames, req.host) else { continue };
        for rule in &route.rules {
            for m in &rule.matches {
                let Some(path_len) = path_matches(&m.path, req.path) else { continue };
                if !rest_matches(m, req) {
                    continue;
                }
                let key = Specificity {
                    host,
                    path_kind: match m.path {
                        PathMatch::Exact(_) => 2,
                        PathMatch::Prefix(_) => 1,
                        PathMatch::Regex(_) => 0,
                    },
                    path_len,
                    method: m.method.is_some(),
                    headers: m.headers.len(),
                    query_params: m.query_params.len(),
                };
                // Strictly greater: the first of equals stays.
                if best.as_ref().is_none_or(|(k, _)| key > *k) {
                    best = Some((key, Selected { route, rule, matched: m }));
                }
            }
        }
    }
    best.map(|(_, s)| s)
}

fn host_rank(hostnames: &[String], host: &str) -> Option<HostRank> {
    if hostnames.is_empty() {
        return Some(HostRank::Any);
    }
    hostnames
        .iter()
        .filter_map(|h| match h.strip_prefix('*') {
            // `*.example.com` matches `a.example.com` and `a.b.example.com`,
            // never `example.com` itself.
            Some(suffix) => {
                (host.len() > suffix.len() && host.ends_with(suffix)).then_some(HostRank::Wildcard(suffix.len()))
            }
            None => (h == host).then_some(HostRank::Exact),
        })
        .max()
}

/// The length that ranks a path match, when it matches.
fn path_matches(m: &PathMatch, path: &str) -> Option<usize> {
    match m {
        PathMatch::Exact(p) => (p == path).then_some(p.len()),
        PathMatch::Prefix(p) => prefix_matches(p, path).then_some(p.len()),
        PathMatch::Regex(r) => r.is_match(path).then_some(r.as_str().len()),
    }
}

/// Element-wise prefix: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not
/// `/foobar`. `prefix` has no trailing slash (except `/`).
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn rest_matches(m: &HttpMatch, req: &RequestInfo<'_>) -> bool {
    if m.method.as_ref().is_some_and(|method| method != req.method) {
        return false;
    }
    let headers_ok = m.headers.iter().all(|h| {
        // Several values of one header are compared as the comma-joined list.
        let mut values = req.headers.get_all(&h.name).iter().filter_map(|v| v.to_str().ok()).peekable();
        let Some(first) = values.next() else { return false };
        if values.peek().is_none() {
            h.value.matches(first)
        } else {
            let joined = std::iter::once(first).chain(values).collect::<Vec<_>>().join(",");
            h.value.matches(&joined)
        }
    });
    headers_ok
        && m.query_params.iter().all(|q| {
            // The first value of a repeated parameter decides.
            query_value(req.query, &q.name).is_some_and(|v| q.value.matches(&v))
        })
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    let query = query?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes and `+` (form encoding) of a query component.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HeaderMatch, QueryMatch, Source, Timeouts, ValueMatch};
    use http::HeaderValue;

    fn m(path: PathMatch) -> HttpMatch {
        HttpMatch { path, headers: vec![], query_params: vec![], method: None }
    }
    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }
    fn exact(p: &str) -> PathMatch {
        PathMatch::Exact(p.into())
    }
    fn rule(name: &str, matches: Vec<HttpMatch>) -> HttpRule {
        HttpRule {
            name: name.into(),
            matches,
            filters: vec![],
            backends: vec![],
            timeouts: Timeouts::default(),
            retry: None,
            failure: None,
        }
    }
    fn route(name: &str, hostnames: &[&str], rules: Vec<HttpRule>) -> HttpRoute {
        HttpRoute {
            label: format!("ns/{name}").into(),
            latency: Default::default(),
            source: Source { kind: "HTTPRoute".into(), namespace: "ns".into(), name: name.into() },
            hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
            rules,
        }
    }
    fn header(name: &'static str, value: &str) -> HeaderMatch {
        HeaderMatch { name: http::HeaderName::from_static(name), value: ValueMatch::Exact(value.into()) }
    }

    /// (route name, rule name) chosen for a request, or None.
    fn pick(
        routes: &[HttpRoute],
        method: &str,
        target: &str,
        host: &str,
        headers: &[(&'static str, &str)],
    ) -> Option<String> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(*n, HeaderValue::from_str(v).unwrap());
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let req = RequestInfo { host, method: &method, path, query, headers: &map };
        select(routes, &req).map(|s| format!("{}/{}", s.route.source.name, s.rule.name))
    }

    #[test]
    fn precedence_follows_the_spec() {
        struct Case {
            what: &'static str,
            routes: Vec<HttpRoute>,
            target: &'static str,
            method: &'static str,
            headers: Vec<(&'static str, &'static str)>,
            want: Option<&'static str>,
        }
        let cases = vec![
            Case {
                what: "exact beats a longer prefix",
                routes: vec![route(
                    "r",
                    &[],
                    vec![rule("prefix", vec![m(prefix("/foo/bar"))]), rule("exact", vec![m(exact("/foo/bar"))])],
                )],
                target: "/foo/bar",
                method: "GET",
                headers: vec![],
                want: Some("r/exact"),
            },
            Case {
                what: "longest prefix wins",
                routes: vec![route(
                    "r",
                    &[],
                    vec![rule("short", vec![m(prefix("/"))]), rule("long", vec![m(prefix("/v1/api"))])],
                )],
                target: "/v1/api/x",
                method: "GET",
                headers: vec![],
                want: Some("r/long"),
            },
            Case {
                what: "prefixes match whole segments",
                routes: vec![route("r", &[], vec![rule("foo", vec![m(prefix("/foo"))])])],
                target: "/foobar",
                method: "GET",
                headers: vec![],
                want: None,
            },
            Case {
                what: "a prefix matches its own path with a trailing slash",
                routes: vec![route("r", &[], vec![rule("foo", vec![m(prefix("/foo"))])])],
                target: "/foo/",
                method: "GET",
                headers: vec![],
                want: Some("r/foo"),
            },
            Case {
                what: "method beats header count",
                routes: vec![route(
                    "r",
                    &[],
                    vec![
                        rule(
                            "headers",
                            vec![HttpMatch { headers: vec![header("a", "1"), header("b", "2")], ..m(prefix("/")) }],
                        ),
                        rule("method", vec![HttpMatch { method: Some(Method::POST), ..m(prefix("/")) }]),
                    ],
                )],
                target: "/",
                method: "POST",
                headers: vec![("a", "1"), ("b", "2")],
                want: Some("r/method"),
            },
            Case {
                what: "more headers beat fewer",
                routes: vec![route(
                    "r",
                    &[],
                    vec![
                        rule("one", vec![HttpMatch { headers: vec![header("a", "1")], ..m(prefix("/")) }]),
                        rule(
                            "two",
                            vec![HttpMatch { headers: vec![header("a", "1"), header("b", "2")], ..m(prefix("/")) }],
                        ),
                    ],
                )],
                target: "/",
                method: "GET",
                headers: vec![("a", "1"), ("b", "2")],
                want: Some("r/two"),
            },
            Case {
                what: "headers beat query parameters",
                routes: vec![route(
                    "r",
                    &[],
                    vec![
                        rule(
                            "query",
                            vec![HttpMatch {
                                query_params: vec![
                                    QueryMatch { name: "x".into(), value: ValueMatch::Exact("1".into()) },
                                    QueryMatch { name: "y".into(), value: ValueMatch::Exact("2".into()) },
                                ],
                                ..m(prefix("/"))
                            }],
                        ),
                        rule("header", vec![HttpMatch { headers: vec![header("a", "1")], ..m(prefix("/")) }]),
                    ],
                )],
                target: "/?x=1&y=2",
                method: "GET",
                headers: vec![("a", "1")],
                want: Some("r/header"),
            },
            Case {
                what: "query values are decoded and the first value decides",
                routes: vec![route(
                    "r",
                    &[],
                    vec![rule(
                        "q",
                        vec![HttpMatch {
                            query_params: vec![QueryMatch {
                                name: "who".into(),
                                value: ValueMatch::Exact("a b".into()),
                            }],
                            ..m(prefix("/"))
                        }],
                    )],
                )],
                target: "/?who=a%20b&who=c",
                method: "GET",
                headers: vec![],
                want: Some("r/q"),
            },
            Case {
                what: "header names are case-insensitive, values are not",
                routes: vec![route(
                    "r",
                    &[],
                    vec![rule("h", vec![HttpMatch { headers: vec![header("version", "V2")], ..m(prefix("/")) }])],
                )],
                target: "/",
                method: "GET",
                headers: vec![("version", "v2")],
                want: None,
            },
            Case {
                what: "ties go to the route listed first",
                routes: vec![
                    route("older", &[], vec![rule("a", vec![m(prefix("/"))])]),
                    route("newer", &[], vec![rule("a", vec![m(prefix("/"))])]),
                ],
                target: "/x",
                method: "GET",
                headers: vec![],
                want: Some("older/a"),
            },
            Case {
                what: "a more specific match in a newer route still wins",
                routes: vec![
                    route("older", &[], vec![rule("a", vec![m(prefix("/"))])]),
                    route("newer", &[], vec![rule("b", vec![m(prefix("/x"))])]),
                ],
                target: "/x",
                method: "GET",
                headers: vec![],
                want: Some("newer/b"),
            },
            Case {
                what: "exact host beats wildcard, which beats none",
                routes: vec![
                    route("any", &[], vec![rule("a", vec![m(prefix("/long/path"))])]),
                    route("wild", &["*.example.com"], vec![rule("a", vec![m(prefix("/"))])]),
                    route("exact", &["foo.example.com"], vec![rule("a", vec![m(prefix("/"))])]),
                ],
                target: "/long/path",
                method: "GET",
                headers: vec![],
                want: Some("exact/a"),
            },
            Case {
                what: "a wildcard does not match its bare suffix",
                routes: vec![route("wild", &["*.example.com"], vec![rule("a", vec![m(prefix("/"))])])],
                target: "/",
                method: "GET",
                headers: vec![],
                want: None,
            },
            Case {
                what: "regex paths match whole paths and rank below prefixes",
                routes: vec![route(
                    "r",
                    &[],
                    vec![
                        rule("regex", vec![m(PathMatch::Regex(regex::Regex::new("^(?:/v[0-9]+/.*)$").unwrap()))]),
                        rule("prefix", vec![m(prefix("/v1"))]),
                    ],
                )],
                target: "/v1/x",
                method: "GET",
                headers: vec![],
                want: Some("r/prefix"),
            },
        ];
        for c in cases {
            let host = if c.what.contains("host") || c.what.contains("wildcard") {
                if c.what.contains("bare") { "example.com" } else { "foo.example.com" }
            } else {
                "svc.ns"
            };
            let got = pick(&c.routes, c.method, c.target, host, &c.headers);
            assert_eq!(got.as_deref(), c.want, "{}", c.what);
        }
    }

    #[test]
    fn percent_decoding_tolerates_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("a+b"), "a b");
    }
}
