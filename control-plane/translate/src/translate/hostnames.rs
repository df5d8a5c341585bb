//! Host name matching and intersection as the Gateway API defines them: a
//! leading `*.` label matches one or more labels (`*.example.com` matches
//! `a.example.com` and `a.b.example.com`, not `example.com`).

/// True when `name` is a wildcard host name.
pub fn is_wildcard(name: &str) -> bool {
    name.starts_with("*.")
}

/// True when the concrete host `host` is covered by `pattern`.
pub fn matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && ends_with_ignore_case(host, suffix),
        None => host.eq_ignore_ascii_case(pattern),
    }
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len() && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// The host names both `a` and `b` accept, or `None` when they are disjoint:
/// the more specific of the two when one covers the other.
pub fn intersect<'a>(a: &'a str, b: &'a str) -> Option<&'a str> {
    match (is_wildcard(a), is_wildcard(b)) {
        (false, false) => a.eq_ignore_ascii_case(b).then_some(a),
        (true, false) => matches(a, b).then_some(b),
        (false, true) => matches(b, a).then_some(a),
        (true, true) => {
            // `*.b.example.com` is within `*.example.com`.
            let (sa, sb) = (&a[1..], &b[1..]);
            if sa.eq_ignore_ascii_case(sb) {
                Some(a)
            } else if sb.len() > sa.len() && ends_with_ignore_case(sb, sa) {
                Some(b)
            } else if sa.len() > sb.len() && ends_with_ignore_case(sa, sb) {
                Some(a)
            } else {
                None
            }
        }
    }
}

/// The host names a route serves on a listener. `Ok(vec![])` means any host;
/// `Err(())` means the route's names and the listener's do not intersect.
pub fn effective(listener: Option<&str>, route: &[String]) -> Result<Vec<String>, ()> {
    match (listener, route.is_empty()) {
        (None, _) => Ok(route.to_vec()),
        (Some(l), true) => Ok(vec![l.to_string()]),
        (Some(l), false) => {
            let mut out: Vec<String> = Vec::new();
            for name in route.iter().filter_map(|r| intersect(l, r)) {
                if !out.iter().any(|o| o.eq_ignore_ascii_case(name)) {
                    out.push(name.to_string());
                }
            }
            if out.is_empty() { Err(()) } else { Ok(out) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching() {
        assert!(matches("*.example.com", "a.example.com"));
        assert!(matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(!matches("*.example.com", "aexample.com"));
        assert!(matches("Foo.Example.com", "foo.example.COM"));
    }

    #[test]
    fn intersections() {
        assert_eq!(intersect("*.example.com", "a.example.com"), Some("a.example.com"));
        assert_eq!(intersect("a.example.com", "*.example.com"), Some("a.example.com"));
        assert_eq!(intersect("*.example.com", "*.b.example.com"), Some("*.b.example.com"));
        assert_eq!(intersect("*.b.example.com", "*.example.com"), Some("*.b.example.com"));
        assert_eq!(intersect("*.example.com", "*.example.org"), None);
        assert_eq!(intersect("a.com", "b.com"), None);
        assert_eq!(intersect("*.com", "*.com"), Some("*.com"));
    }

    #[test]
    fn effective_names() {
        let r = vec!["a.example.com".to_string(), "other.org".to_string()];
        assert_eq!(effective(Some("*.example.com"), &r), Ok(vec!["a.example.com".to_string()]));
        assert_eq!(effective(None, &r), Ok(r.clone()));
        assert_eq!(effective(Some("x.com"), &[]), Ok(vec!["x.com".to_string()]));
        assert_eq!(effective(Some("x.com"), &r), Err(()));
    }
}
