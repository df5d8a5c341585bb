//! `x-kubernetes-validations`: the CEL rules of a structural schema,
//! evaluated as the apiextensions apiserver does on create. The Gateway API
//! CRDs put much of their contract there (a backend request timeout may
//! not exceed the request timeout, hostnames are not IPs, a redirect sets
//! either `path.replaceFullPath` or `replacePrefixMatch` to match its type,
//! ...), so a local-mode loader that skipped them would accept objects the
//! API server refuses.
//!
//! Deviations from the API server, each deliberate:
//! - Transition rules (those naming `oldSelf`) are not evaluated: local
//!   mode has no "update" of an object, only the objects as the files now
//!   say, so every evaluation is a create, where the API server skips
//!   them too.
//! - No cost budget: the estimated-cost limits of the API server bound
//!   rules an operator writes; the rules here come from the CRDs Weft
//!   ships, and the values they range over are bounded by the schema's own
//!   `maxItems`/`maxLength`, which are checked first.
//! - Values carry JSON's types, not the schema's: an integer-valued
//!   `type: number` field is a CEL `int` here (the Gateway API has none).
//! - Of the Kubernetes CEL libraries, the strings extension (`split`, ...)
//!   and `isIP` are provided: they are what the Gateway API's rules use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cel::{Context, Env, Program, Value as Cel};
use regex::Regex;
use serde_json::Value;

use crate::FieldError;

/// The environment rules compile in: CEL's standard library plus the
/// strings extension Kubernetes enables.
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // Registering a fixed extension into a fresh environment fails only
        // on a duplicate overload, which would be a bug of the cel crate;
        // rules that need `split` would then report it when evaluated.
        let _ = env.add_extension(cel::extensions::strings);
        Arc::new(env)
    })
}

type Compiled = Result<Arc<Program>, String>;

/// Each rule is compiled once per process: the same few dozen rules are
/// evaluated for every object loaded.
fn compiled(rule: &str) -> Compiled {
    static CACHE: OnceLock<Mutex<HashMap<String, Compiled>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    c.entry(rule.to_string()).or_insert_with(|| env().compile(rule).map(Arc::new).map_err(|e| e.to_string())).clone()
}

/// A transition rule compares with the previous version of the object.
fn is_transition_rule(rule: &str) -> bool {
    static OLD_SELF: OnceLock<Option<Regex>> = OnceLock::new();
    OLD_SELF
        .get_or_init(|| Regex::new(r"\boldSelf\b").ok())
        .as_ref()
        .map_or_else(|| rule.contains("oldSelf"), |re| re.is_match(rule))
}

/// CEL keywords a property may be named after; Kubernetes exposes such a
/// property as `__{name}__` (`p.__namespace__`).
const RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// A property name as rules see it, escaped as the API server escapes it
/// (keywords, `__`, `.`, `-`, `/`).
pub fn escape_property(name: &str) -> String {
    if RESERVED.contains(&name) {
        return format!("__{name}__");
    }
    name.replace("__", "__underscores__").replace('.', "__dot__").replace('-', "__dash__").replace('/', "__slash__")
}

/// JSON as CEL sees it, shaped by its schema node: integers are `int`
/// (`uint` only beyond i64); the declared properties of an object are
/// escaped names, while the keys of a map (`additionalProperties`) are
/// kept as they are.
pub fn to_cel(v: &Value, node: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item_node = node.get("items").unwrap_or(&Value::Null);
            Cel::List(Arc::new(items.iter().map(|i| to_cel(i, item_node)).collect()))
        }
        Value::Object(map) => {
            let props = node.get("properties").and_then(Value::as_object);
            let addl = node.get("additionalProperties").filter(|a| a.is_object());
            let m: HashMap<String, Cel> = map
                .iter()
                .map(|(k, v)| match (props.and_then(|p| p.get(k)), addl) {
                    (Some(child), _) => (escape_property(k), to_cel(v, child)),
                    (None, Some(child)) => (k.clone(), to_cel(v, child)),
                    (None, None) => (k.clone(), to_cel(v, &Value::Null)),
                })
                .collect();
            Cel::Map(m.into())
        }
    }
}

/// Kubernetes' `isIP(string)`: an IPv4 or IPv6 address in canonical-enough
/// form (no zone, no leading zeros in IPv4 octets — what Rust's parser and
/// Kubernetes' strict parsing both refuse).
fn is_ip(s: Arc<String>) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

fn context(self_value: Cel) -> Context<'static, 'static> {
    let mut ctx = Context::with_env(env().clone());
    ctx.add_variable_from_value("self", self_value);
    // `isIP` is not a stdlib overload, so adding it cannot conflict.
    let _ = ctx.add_function("isIP", is_ip);
    ctx
}

/// The API server's reason for a failed rule (`reason` of the rule; Invalid
/// when unset or unknown).
fn reason_of(rule: &Value) -> &'static str {
    match rule.get("reason").and_then(Value::as_str) {
        Some("FieldValueForbidden") => "FieldValueForbidden",
        Some("FieldValueRequired") => "FieldValueRequired",
        Some("FieldValueDuplicate") => "FieldValueDuplicate",
        _ => "FieldValueInvalid",
    }
}

/// `fieldPath` of a rule (".spec.x", "['key']") appended to the node's path.
fn field_of(path: &str, rule: &Value) -> String {
    match rule.get("fieldPath").and_then(Value::as_str) {
        Some(fp) if !fp.is_empty() => {
            let fp = fp.strip_prefix('.').unwrap_or(fp);
            if path.is_empty() {
                fp.to_string()
            } else if fp.starts_with('[') {
                format!("{path}{fp}")
            } else {
                format!("{path}.{fp}")
            }
        }
        _ => path.to_string(),
    }
}

/// Evaluates the rules attached to `node` with `self` = `v` and records a
/// field error for each that does not hold (or cannot be evaluated).
pub fn check(v: &Value, node: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(rules) = node.get("x-kubernetes-validations").and_then(Value::as_array) else {
        return;
    };
    let mut self_value: Option<Cel> = None;
    for r in rules {
        let Some(rule) = r.get("rule").and_then(Value::as_str) else { continue };
        if is_transition_rule(rule) {
            continue;
        }
        let program = match compiled(rule) {
            Ok(p) => p,
            Err(e) => {
                errs.push(FieldError::invalid(path, v, format!("rule {rule:?} does not compile: {e}")));
                continue;
            }
        };
        let ctx = context(self_value.get_or_insert_with(|| to_cel(v, node)).clone());
        match program.execute(&ctx) {
            Ok(Cel::Bool(true)) => {}
            Ok(Cel::Bool(false)) => {
                let message = message_of(r, &ctx).unwrap_or_else(|| format!("failed rule: {rule}"));
                let field = field_of(path, r);
                errs.push(match reason_of(r) {
                    "FieldValueInvalid" => FieldError::invalid(&field, v, message),
                    reason => FieldError { reason, field, value: None, detail: message },
                });
            }
            Ok(other) => {
                errs.push(FieldError::invalid(path, v, format!("rule {rule:?} gave {:?}, not a bool", other.type_of())))
            }
            Err(e) => errs.push(FieldError::invalid(path, v, format!("rule {rule:?} could not be evaluated: {e}"))),
        }
    }
}

/// The message of a failed rule: `messageExpression` when it evaluates to
/// a non-empty string, else `message`.
fn message_of(rule: &Value, ctx: &Context<'_, '_>) -> Option<String> {
    if let Some(expr) = rule.get("messageExpression").and_then(Value::as_str)
        && let Ok(program) = compiled(expr)
        && let Ok(Cel::String(s)) = program.execute(ctx)
        && !s.is_empty()
    {
        return Some(s.to_string());
    }
    rule.get("message").and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(v: Value, rules: Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        check(&v, &json!({"x-kubernetes-validations": rules}), "spec", &mut errs);
        errs
    }

    #[test]
    fn a_rule_that_holds_gives_no_error_and_one_that_fails_gives_its_message() {
        let rules = json!([{"rule": "self.a < self.b", "message": "a must be below b"}]);
        assert!(errors(json!({"a": 1, "b": 2}), rules.clone()).is_empty());
        let errs = errors(json!({"a": 3, "b": 2}), rules);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec");
        assert_eq!(errs[0].detail, "a must be below b");
    }

    #[test]
    fn without_a_message_the_rule_is_named_and_field_path_and_reason_are_used() {
        let errs = errors(
            json!({"x": ""}),
            json!([{"rule": "self.x.size() > 0", "fieldPath": ".x", "reason": "FieldValueRequired"}]),
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.x");
        assert_eq!(errs[0].reason, "FieldValueRequired");
        assert_eq!(errs[0].detail, "failed rule: self.x.size() > 0");
    }

    #[test]
    fn durations_split_and_is_ip_are_available() {
        let timeouts = json!([{"rule": "!(has(self.request) && has(self.backendRequest) && duration(self.request) != duration('0s') && duration(self.backendRequest) > duration(self.request))"}]);
        assert!(errors(json!({"request": "10s", "backendRequest": "500ms"}), timeouts.clone()).is_empty());
        assert_eq!(errors(json!({"request": "10s", "backendRequest": "1m"}), timeouts).len(), 1);
        let labels = json!([{"rule": "self.all(key, key.split('/')[0].size() < 253)"}]);
        assert!(errors(json!({"example.com/a": "b"}), labels.clone()).is_empty());
        assert_eq!(errors(json!({format!("{}/a", "x".repeat(300)): "b"}), labels).len(), 1);
        let hosts = json!([{"rule": "self.all(h, !isIP(h))"}]);
        assert!(errors(json!(["example.com"]), hosts.clone()).is_empty());
        assert_eq!(errors(json!(["10.0.0.1"]), hosts.clone()).len(), 1);
        assert_eq!(errors(json!(["fd00::1"]), hosts).len(), 1);
    }

    #[test]
    fn transition_rules_are_skipped_and_broken_rules_are_reported() {
        assert!(errors(json!({"a": 1}), json!([{"rule": "self == oldSelf"}])).is_empty());
        let errs = errors(json!({"a": 1}), json!([{"rule": "self.a +"}]));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].detail.contains("does not compile"), "{}", errs[0].detail);
        let errs = errors(json!({"a": 1}), json!([{"rule": "self.missing == 1"}]));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].detail.contains("could not be evaluated"), "{}", errs[0].detail);
    }

    #[test]
    fn properties_named_after_keywords_are_escaped_but_map_keys_are_not() {
        let node = json!({
            "type": "object",
            "properties": {"namespace": {"type": "string"}, "labels": {"type": "object", "additionalProperties": {"type": "string"}}},
            "x-kubernetes-validations": [
                {"rule": "has(self.__namespace__) && self.__namespace__ == 'shop'"},
                {"rule": "self.labels['app.kubernetes.io/name'] == 'web'"}
            ]
        });
        let mut errs = Vec::new();
        check(&json!({"namespace": "shop", "labels": {"app.kubernetes.io/name": "web"}}), &node, "spec", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        check(&json!({"namespace": "other", "labels": {"app.kubernetes.io/name": "web"}}), &node, "spec", &mut errs);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(escape_property("a-b.c/d__e"), "a__dash__b__dot__c__slash__d__underscores__e");
    }

    #[test]
    fn message_expressions_are_evaluated() {
        let errs = errors(
            json!({"n": 5}),
            json!([{"rule": "self.n < 3", "messageExpression": "'n is ' + string(self.n)", "message": "fallback"}]),
        );
        assert_eq!(errs[0].detail, "n is 5");
    }
}
