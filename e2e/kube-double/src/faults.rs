//! Fault injection: failing requests with a chosen status, added latency,
//! optionally restricted to one user (so a test can break one controller
//! but not kubectl). Watch drops and history compaction live on the server
//! handle because they act on streams and the store.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Which requests a fault applies to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    /// Only this user's requests (None: everyone's).
    pub user: Option<String>,
    /// Only this audit verb (get, list, watch, create, ...).
    pub verb: Option<String>,
    /// Only this plural resource.
    pub resource: Option<String>,
}

impl Scope {
    pub fn matches(&self, user: &str, verb: &str, resource: &str) -> bool {
        self.user.as_deref().is_none_or(|u| u == user)
            && self.verb.as_deref().is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == resource)
    }
}

#[derive(Debug, Clone)]
enum Rule {
    /// Fail the next `left` matching requests.
    Next { left: u32, code: u16 },
    /// Fail the `n`th matching request from now (1-based), once.
    Nth { n: u32, seen: u32, code: u16 },
    /// Fail every matching request until `until`.
    Until { until: Instant, code: u16 },
    /// Delay every matching request.
    Delay { by: Duration },
}

#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<(Scope, Rule)>,
}

/// What to do with one request.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub fail: Option<u16>,
    pub delay: Duration,
}

impl Faults {
    pub fn fail_next(&mut self, scope: Scope, n: u32, code: u16) {
        self.rules.push((scope, Rule::Next { left: n, code }));
    }
    pub fn fail_nth(&mut self, scope: Scope, n: u32, code: u16) {
        self.rules.push((scope, Rule::Nth { n: n.max(1), seen: 0, code }));
    }
    pub fn fail_for(&mut self, scope: Scope, d: Duration, code: u16) {
        self.rules.push((scope, Rule::Until { until: Instant::now() + d, code }));
    }
    pub fn delay(&mut self, scope: Scope, by: Duration) {
        self.rules.retain(|(s, r)| !(matches!(r, Rule::Delay { .. }) && *s == scope));
        if !by.is_zero() {
            self.rules.push((scope, Rule::Delay { by }));
        }
    }
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Decides for one request and consumes counted faults.
    pub fn check(&mut self, user: &str, verb: &str, resource: &str) -> Verdict {
        let mut v = Verdict::default();
        let now = Instant::now();
        for (scope, rule) in self.rules.iter_mut() {
            if !scope.matches(user, verb, resource) {
                continue;
            }
            match rule {
                Rule::Next { left, code } if *left > 0 && v.fail.is_none() => {
                    *left -= 1;
                    v.fail = Some(*code);
                }
                Rule::Nth { n, seen, code } if *seen < *n => {
                    *seen += 1;
                    if *seen == *n && v.fail.is_none() {
                        v.fail = Some(*code);
                    }
                }
                Rule::Until { until, code } if now < *until && v.fail.is_none() => {
                    v.fail = Some(*code);
                }
                Rule::Delay { by } => v.delay += *by,
                _ => {}
            }
        }
        self.rules.retain(|(_, r)| match r {
            Rule::Next { left, .. } => *left > 0,
            Rule::Nth { n, seen, .. } => seen < n,
            Rule::Until { until, .. } => now < *until,
            Rule::Delay { .. } => true,
        });
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults() {
        let mut f = Faults::default();
        f.fail_next(Scope::default(), 2, 503);
        f.fail_nth(Scope { user: Some("a".into()), ..Default::default() }, 2, 500);
        assert_eq!(f.check("a", "get", "pods").fail, Some(503));
        assert_eq!(f.check("a", "get", "pods").fail, Some(503));
        assert_eq!(f.check("b", "get", "pods").fail, None);
        assert_eq!(f.check("a", "get", "pods").fail, None);
    }
}
