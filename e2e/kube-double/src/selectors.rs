//! Label and field selectors: the string syntax of `?labelSelector=` and
//! `?fieldSelector=`, and the structured `metav1.LabelSelector` used by
//! webhooks' namespaceSelector/objectSelector.

use crate::error::ApiError;
use crate::util;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed `labelSelector`; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part).ok_or_else(|| {
                ApiError::bad_request(format!("unable to parse requirement: invalid label selector: \"{part}\""))
            })?);
        }
        Ok(LabelSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match &r.op {
            Op::Eq(v) => get(&r.key) == Some(v.as_str()),
            Op::NotEq(v) => get(&r.key) != Some(v.as_str()),
            Op::In(vs) => get(&r.key).is_some_and(|x| vs.iter().any(|v| v == x)),
            Op::NotIn(vs) => get(&r.key).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Op::Exists => get(&r.key).is_some(),
            Op::DoesNotExist => get(&r.key).is_none(),
        })
    }

    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(util::labels_of(obj))
    }

    /// Builds a selector from a structured `metav1.LabelSelector`
    /// (`matchLabels` and `matchExpressions` with In/NotIn/Exists/DoesNotExist).
    /// An absent selector (None) matches everything, as in webhooks.
    pub fn from_structured(sel: Option<&Value>) -> Result<Self, String> {
        let mut reqs = Vec::new();
        let Some(sel) = sel else { return Ok(LabelSelector { reqs }) };
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                reqs.push(Requirement { key: k.clone(), op: Op::Eq(v.as_str().unwrap_or_default().to_string()) });
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                let op = match e.get("operator").and_then(Value::as_str).unwrap_or_default() {
                    "In" => Op::In(values),
                    "NotIn" => Op::NotIn(values),
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::DoesNotExist,
                    other => return Err(format!("{other:?} is not a valid label selector operator")),
                };
                reqs.push(Requirement { key, op });
            }
        }
        Ok(LabelSelector { reqs })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(v: &str) -> bool {
    v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn parse_requirement(p: &str) -> Option<Requirement> {
    if let Some(key) = p.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key).then(|| Requirement { key: key.to_string(), op: Op::DoesNotExist });
    }
    for (tok, neg) in [(" notin ", true), (" in ", false)] {
        if let Some(idx) = p.find(tok) {
            let key = p[..idx].trim();
            let rest = p[idx + tok.len()..].trim();
            let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
            let values: Vec<String> =
                inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
            if !valid_key(key) || values.iter().any(|v| !valid_value(v)) {
                return None;
            }
            let op = if neg { Op::NotIn(values) } else { Op::In(values) };
            return Some(Requirement { key: key.to_string(), op });
        }
    }
    for (tok, neg) in [("!=", true), ("==", false), ("=", false)] {
        if let Some(idx) = p.find(tok) {
            let key = p[..idx].trim();
            let value = p[idx + tok.len()..].trim();
            if !valid_key(key) || !valid_value(value) {
                return None;
            }
            let op = if neg { Op::NotEq(value.to_string()) } else { Op::Eq(value.to_string()) };
            return Some(Requirement { key: key.to_string(), op });
        }
    }
    valid_key(p).then(|| Requirement { key: p.to_string(), op: Op::Exists })
}

/// A parsed `fieldSelector` (`a=b`, `a==b`, `a!=b`, comma-separated).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses and checks every field against what the resource supports
    /// (`supported`), answering 400 like the real server for others.
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, neg, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(ApiError::bad_request(format!("invalid selector: '{part}'; can't understand '{part}'")));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                let quoted: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
                return Err(ApiError::bad_request(format!(
                    "\"{field}\" is not a known field selector: only {}",
                    quoted.join(", ")
                )));
            }
            reqs.push((field.to_string(), neg, value.trim().to_string()));
        }
        Ok(FieldSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(field, neg, value)| {
            let actual = field_value(obj, field);
            (actual == *value) != *neg
        })
    }
}

/// The value of a selectable field; absent fields compare as "".
fn field_value(obj: &Value, field: &str) -> String {
    match util::path(obj, field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The field selectors a resource supports, as the real server registers them.
pub fn supported_fields(group: &str, resource: &str) -> Vec<&'static str> {
    let mut v = vec!["metadata.name", "metadata.namespace"];
    match (group, resource) {
        ("", "secrets") => v.push("type"),
        ("", "pods") => v.extend([
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ]),
        ("", "namespaces") => v.push("status.phase"),
        ("", "events") | ("events.k8s.io", "events") => v.extend([
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ]),
        _ => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_semantics() {
        let labels = json!({"app": "web", "tier": "front"});
        let l = labels.as_object();
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("app notin (web)", false),
            ("missing notin (web)", true),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("", true),
        ] {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(l), want, "{sel}");
        }
        assert!(LabelSelector::parse("a b c").is_err());
    }

    #[test]
    fn field_selector_rejects_unknown_fields() {
        let fs = FieldSelector::parse("metadata.name=x", &["metadata.name"]).unwrap();
        assert!(fs.matches(&json!({"metadata": {"name": "x"}})));
        let err = FieldSelector::parse("spec.foo=x", &["metadata.name"]).unwrap_err();
        assert_eq!(err.code, 400);
    }
}
