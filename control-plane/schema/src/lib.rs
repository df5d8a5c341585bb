//! Structural-schema handling for custom resources, as the apiextensions
//! apiserver does it: prune unknown fields, apply `default`s, validate the
//! OpenAPI value constraints (types, enums, ranges, lengths, patterns, item
//! counts, list-map and set uniqueness) and the CEL rules
//! (`x-kubernetes-validations`, see [`rules`] for where evaluation differs
//! from the API server's). `allOf`/`anyOf`/`oneOf`/`not` are not evaluated
//! (structural schemas of the CRDs Weft reads do not use them).
//!
//! Shared by local mode's loader (which enforces the Gateway API's and
//! Weft's CRD schemas as the API server would) and the API-server double
//! used by the tests.

pub mod rules;

use regex::Regex;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

fn bool_of(node: &Value, key: &str) -> bool {
    node.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_string() } else { format!("{path}.{field}") }
}

/// The schema for a property of an object node: `properties[k]`, else an
/// `additionalProperties` schema.
pub fn property<'a>(node: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(p) = node.get("properties").and_then(|p| p.get(key)) {
        return Some(p);
    }
    node.get("additionalProperties").filter(|a| a.is_object())
}

/// The schema node at a path of field names (array items are transparent).
pub fn node_at<'a>(root: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = root;
    for f in path {
        while cur.get("type").and_then(Value::as_str) == Some("array") {
            cur = cur.get("items")?;
        }
        cur = property(cur, f)?;
    }
    Some(cur)
}

fn preserves_unknown(node: &Value) -> bool {
    bool_of(node, "x-kubernetes-preserve-unknown-fields")
        || node.get("additionalProperties").is_some_and(|a| a.as_bool() == Some(true))
}

/// Removes fields the schema does not declare; returns their paths (for
/// `fieldValidation=Strict|Warn`). `apiVersion`, `kind` and `metadata` are
/// always kept at the root and in embedded resources.
pub fn prune(obj: &mut Value, schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    prune_node(obj, schema, "", true, &mut unknown);
    unknown
}

fn prune_node(v: &mut Value, node: &Value, path: &str, root_like: bool, unknown: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let embedded = root_like || bool_of(node, "x-kubernetes-embedded-resource");
            let preserve = preserves_unknown(node);
            let has_props = node.get("properties").is_some();
            let addl = node.get("additionalProperties").filter(|a| a.is_object());
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    if let Some(p) = node.get("properties").and_then(|p| p.get(&k))
                        && k != "metadata"
                    {
                        prune_node(map.get_mut(&k).expect("key"), p, &join(path, &k), false, unknown);
                    }
                    continue;
                }
                let child_schema = node.get("properties").and_then(|p| p.get(&k)).or(addl);
                match child_schema {
                    Some(cs) => prune_node(map.get_mut(&k).expect("key"), cs, &join(path, &k), false, unknown),
                    None if preserve || (!has_props && addl.is_none() && node.get("type").is_none()) => {}
                    None => {
                        unknown.push(join(path, &k));
                        map.remove(&k);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = node.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_node(item, is, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

/// Applies `default`s for absent properties, recursively, and drops nulls of
/// non-nullable fields first, as structural defaulting does.
pub fn default(obj: &mut Value, schema: &Value) {
    match obj {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    if map.get(k).is_some_and(Value::is_null) && !bool_of(ps, "nullable") {
                        map.remove(k);
                    }
                    if !map.contains_key(k)
                        && let Some(d) = ps.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                }
                for (k, ps) in props {
                    if let Some(child) = map.get_mut(k) {
                        default(child, ps);
                    }
                }
            }
            if let Some(addl) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let props = schema.get("properties").and_then(Value::as_object);
                for (k, child) in map.iter_mut() {
                    if props.is_none_or(|p| !p.contains_key(k)) {
                        default(child, addl);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for item in items {
                    default(item, is);
                }
            }
        }
        _ => {}
    }
}

/// Validates a whole object against its schema (metadata is validated
/// elsewhere).
pub fn validate(obj: &Value, schema: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let (Some(map), Some(props)) = (obj.as_object(), schema.get("properties").and_then(Value::as_object)) {
        for (k, v) in map {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(ps) = props.get(k) {
                validate_node(v, ps, k, &mut errs);
            }
        }
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) && !matches!(r, "apiVersion" | "kind" | "metadata") {
                    errs.push(FieldError::required(r, ""));
                }
            }
        }
        // Root rules see metadata.name and generateName only, as in the API server.
        if schema.get("x-kubernetes-validations").is_some() {
            let mut root = map.clone();
            let meta = map.get("metadata").and_then(Value::as_object);
            let kept: Map<String, Value> = meta
                .into_iter()
                .flatten()
                .filter(|(k, _)| matches!(k.as_str(), "name" | "generateName"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            root.insert("metadata".into(), Value::Object(kept));
            rules::check(&Value::Object(root), schema, "", &mut errs);
        }
    }
    errs
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn regex_for(pattern: &str) -> Option<Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    c.entry(pattern.to_string()).or_insert_with(|| Regex::new(pattern).ok()).clone()
}

fn validate_node(v: &Value, node: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        if !bool_of(node, "nullable") && node.get("type").is_some() {
            let t = node.get("type").and_then(Value::as_str).unwrap_or("");
            errs.push(FieldError::type_invalid(path, v, format!("{path} in body must be of type {t}: \"null\"")));
        }
        return;
    }
    if bool_of(node, "x-kubernetes-int-or-string") {
        if !is_integer(v) && !v.is_string() {
            errs.push(FieldError::type_invalid(
                path,
                v,
                format!("{path} in body must be of type integer,string: \"{}\"", type_name(v)),
            ));
            return;
        }
    } else if let Some(t) = node.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => is_integer(v),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => true,
        };
        if !ok {
            errs.push(FieldError::type_invalid(
                path,
                v,
                format!("{path} in body must be of type {t}: \"{}\"", type_name(v)),
            ));
            return;
        }
    }
    if let Some(allowed) = node.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        errs.push(FieldError::not_supported(path, v, allowed));
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(max) = node.get("maximum").and_then(Value::as_f64) {
                let excl = bool_of(node, "exclusiveMaximum");
                if (excl && x >= max) || (!excl && x > max) {
                    let word = if excl { "less than" } else { "less than or equal to" };
                    errs.push(FieldError::invalid(path, v, format!("{path} in body should be {word} {}", num(max))));
                }
            }
            if let Some(min) = node.get("minimum").and_then(Value::as_f64) {
                let excl = bool_of(node, "exclusiveMinimum");
                if (excl && x <= min) || (!excl && x < min) {
                    let word = if excl { "greater than" } else { "greater than or equal to" };
                    errs.push(FieldError::invalid(path, v, format!("{path} in body should be {word} {}", num(min))));
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = node.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errs.push(FieldError {
                    reason: "FieldValueTooLong",
                    field: path.to_string(),
                    value: None,
                    detail: format!("Too long: may not be more than {max} bytes"),
                });
            }
            if let Some(min) = node.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errs.push(FieldError::invalid(path, v, format!("{path} in body should be at least {min} chars long")));
            }
            if let Some(p) = node.get("pattern").and_then(Value::as_str)
                && let Some(re) = regex_for(p)
                && !re.is_match(s)
            {
                errs.push(FieldError::invalid(path, v, format!("{path} in body should match '{p}'")));
            }
        }
        Value::Array(items) => {
            if let Some(max) = node.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errs.push(FieldError::too_many(path, format!("{}: must have at most {max} items", items.len())));
            }
            if let Some(min) = node.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errs.push(FieldError::invalid(path, v, format!("{path} in body should have at least {min} items")));
            }
            if let Some(is) = node.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_node(item, is, &format!("{path}[{i}]"), errs);
                }
            }
            match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("map") => {
                    let keys = list_map_keys(node);
                    let mut seen = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        let k: Vec<Option<&Value>> = keys.iter().map(|k| item.get(k)).collect();
                        if seen.contains(&k) {
                            errs.push(FieldError {
                                reason: "FieldValueDuplicate",
                                field: format!("{path}[{i}]"),
                                value: None,
                                detail: "Duplicate value".to_string(),
                            });
                        } else {
                            seen.push(k);
                        }
                    }
                }
                Some("set") => {
                    for (i, item) in items.iter().enumerate() {
                        if items[..i].contains(item) {
                            errs.push(FieldError {
                                reason: "FieldValueDuplicate",
                                field: format!("{path}[{i}]"),
                                value: None,
                                detail: format!("Duplicate value: {item}"),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        Value::Object(map) => {
            if let Some(req) = node.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        errs.push(FieldError::required(&join(path, r), ""));
                    }
                }
            }
            if let Some(max) = node.get("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                errs.push(FieldError::too_many(path, format!("{}: must have at most {max} items", map.len())));
            }
            if let Some(min) = node.get("minProperties").and_then(Value::as_u64)
                && (map.len() as u64) < min
            {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    format!("{path} in body should have at least {min} properties"),
                ));
            }
            let props = node.get("properties").and_then(Value::as_object);
            let addl = node.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in map {
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    validate_node(child, ps, &join(path, k), errs);
                } else if let Some(a) = addl {
                    validate_node(child, a, &format!("{path}[{k}]"), errs);
                }
            }
        }
        _ => {}
    }
    rules::check(v, node, path, errs);
}

fn num(x: f64) -> String {
    if x.fract() == 0.0 { format!("{}", x as i64) } else { x.to_string() }
}

/// `x-kubernetes-list-map-keys` of a list node.
pub fn list_map_keys(node: &Value) -> Vec<String> {
    node.get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Adds the defaults of a sub-schema to a value, used for a fresh `{}`.
pub fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["port"], "properties": {
            "port": {"type": "integer", "maximum": 65535, "minimum": 1},
            "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
            "rules": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {
                "path": {"type": "object", "default": {"type": "PathPrefix"}, "properties": {
                    "type": {"type": "string"}, "value": {"type": "string", "default": "/"}}}}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }}}})
    }

    #[test]
    fn prunes_defaults_validates() {
        let s = schema();
        let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"port": 70000, "extra": 1, "rules": [{}], "free": {"anything": 1}}});
        let unknown = prune(&mut o, &s);
        assert_eq!(unknown, vec!["spec.extra"]);
        default(&mut o, &s);
        assert_eq!(o["spec"]["mode"], "A");
        assert_eq!(o["spec"]["rules"][0]["path"], json!({"type": "PathPrefix", "value": "/"}));
        assert_eq!(o["spec"]["free"]["anything"], 1);
        let errs = validate(&o, &s);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.port");
        let errs = validate(&json!({"spec": {"mode": "C"}}), &s);
        assert!(errs.iter().any(|e| e.field == "spec.port" && e.reason == "FieldValueRequired"));
        assert!(errs.iter().any(|e| e.field == "spec.mode" && e.reason == "FieldValueNotSupported"));
    }
}

/// One field error, as the API server's `field.Error` (what a 422 lists).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, ...
    pub reason: &'static str,
    pub field: String,
    /// The offending value, rendered (only for Invalid / NotSupported).
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn invalid(field: &str, value: &Value, detail: impl Into<String>) -> Self {
        FieldError {
            reason: "FieldValueInvalid",
            field: field.to_string(),
            value: Some(render(value)),
            detail: detail.into(),
        }
    }
    pub fn required(field: &str, detail: impl Into<String>) -> Self {
        FieldError { reason: "FieldValueRequired", field: field.to_string(), value: None, detail: detail.into() }
    }
    pub fn not_supported(field: &str, value: &Value, allowed: &[Value]) -> Self {
        let list: Vec<String> = allowed.iter().map(render).collect();
        FieldError {
            reason: "FieldValueNotSupported",
            field: field.to_string(),
            value: Some(render(value)),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }
    pub fn too_many(field: &str, detail: impl Into<String>) -> Self {
        FieldError { reason: "FieldValueTooMany", field: field.to_string(), value: None, detail: detail.into() }
    }
    pub fn type_invalid(field: &str, value: &Value, detail: impl Into<String>) -> Self {
        FieldError {
            reason: "FieldValueTypeInvalid",
            field: field.to_string(),
            value: Some(render(value)),
            detail: detail.into(),
        }
    }

    /// The cause message, without the field path (the Status puts the path in `field`).
    pub fn detail_message(&self) -> String {
        match (self.reason, &self.value) {
            ("FieldValueRequired", _) => "Required value".to_string(),
            ("FieldValueNotSupported", Some(v)) => format!("Unsupported value: {v}: {}", self.detail),
            ("FieldValueTypeInvalid", Some(v)) => format!("Invalid value: {v}: {}", self.detail),
            ("FieldValueTooMany", _) => format!("Too many: {}", self.detail),
            (_, Some(v)) => format!("Invalid value: {v}: {}", self.detail),
            (_, None) => self.detail.clone(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail_message())
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Object(_) => "\"object\"".to_string(),
        Value::Array(_) => "\"array\"".to_string(),
        other => other.to_string(),
    }
}
