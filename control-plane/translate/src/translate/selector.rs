//! Evaluation of Kubernetes label selectors (`matchLabels` and
//! `matchExpressions`), used by allowedRoutes and allowedListeners.

use std::collections::BTreeMap;

/// One `matchExpressions` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`.
    pub values: Vec<String>,
}

/// A label selector. An empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// Labels that must be present with these values.
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements, all of which must hold.
    pub match_expressions: Vec<Requirement>,
}

impl Selector {
    /// Whether `labels` satisfy the selector. An unknown operator matches
    /// nothing, so a typo never widens access.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => !value.is_some_and(|v| r.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selector_semantics() {
        let mut s = Selector::default();
        assert!(s.matches(&labels(&[])));
        s.match_labels.insert("a".into(), "1".into());
        assert!(s.matches(&labels(&[("a", "1"), ("b", "2")])));
        assert!(!s.matches(&labels(&[("a", "2")])));
        s.match_expressions.push(Requirement { key: "b".into(), operator: "NotIn".into(), values: vec!["2".into()] });
        assert!(!s.matches(&labels(&[("a", "1"), ("b", "2")])));
        assert!(s.matches(&labels(&[("a", "1")])));
        s.match_expressions.push(Requirement { key: "c".into(), operator: "Bogus".into(), values: vec![] });
        assert!(!s.matches(&labels(&[("a", "1")])));
    }
}
