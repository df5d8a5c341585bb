//! Comparisons that decide whether a write is needed at all. At steady
//! state the control plane writes nothing, so these must never report a
//! difference that a write would not remove (a timestamp, a default the
//! API server added): that is how controllers end up in write loops.

use serde_json::Value;

/// Whether every field of `desired` is in `actual` with the same value.
/// Objects may have more fields in `actual` (defaults the API server
/// added, fields of other managers); arrays must have the same length, and
/// their items are compared the same way, in order.
pub fn is_subset(desired: &Value, actual: &Value) -> bool {
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => d.iter().all(|(k, dv)| match a.get(k) {
            Some(av) => is_subset(dv, av),
            // Applying null or an empty value sets nothing.
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(a)) => d.len() == a.len() && d.iter().zip(a).all(|(dv, av)| is_subset(dv, av)),
        (Value::Number(d), Value::Number(a)) => d == a || d.as_f64() == a.as_f64(),
        _ => desired == actual || (is_empty(desired) && is_empty(actual)),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Removes nulls (fields Weft does not set) recursively, so that an apply
/// never claims a field it has no value for.
pub fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(o) => {
            Value::Object(o.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, without_nulls(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// A copy without any `lastTransitionTime` (at any depth), for comparing
/// statuses: a condition whose type, status, reason, message and
/// observedGeneration are unchanged is unchanged.
pub fn without_transition_times(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_transition_times(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_transition_times).collect()),
        other => other.clone(),
    }
}

/// Whether two statuses are the same but for transition times and empty
/// fields.
pub fn same_status(a: &Value, b: &Value) -> bool {
    let (a, b) = (without_nulls(without_transition_times(a)), without_nulls(without_transition_times(b)));
    is_subset(&a, &b) && is_subset(&b, &a)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_and_other_fields_in_the_cluster_do_not_count() {
        let desired =
            json!({"spec": {"rules": [{"matches": [{"path": {"value": "/"}}]}]}, "metadata": {"labels": {"a": "1"}}});
        let actual = json!({"spec": {"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]},
                            "metadata": {"labels": {"a": "1", "b": "2"}, "uid": "x"}});
        assert!(is_subset(&desired, &actual));
        assert!(!is_subset(&json!({"metadata": {"labels": {"a": "2"}}}), &actual));
        assert!(!is_subset(&json!({"spec": {"rules": []}}), &actual));
        assert!(is_subset(&json!({"spec": {"extra": null, "list": []}}), &json!({"spec": {}})));
        assert!(is_subset(&json!({"n": 1}), &json!({"n": 1.0})));
    }

    #[test]
    fn statuses_compare_without_transition_times() {
        let a = json!({"conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        let b = json!({"conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "2026-06-01T00:00:00Z"}]});
        let c = json!({"conditions": [{"type": "Accepted", "status": "False", "lastTransitionTime": "2026-06-01T00:00:00Z"}]});
        assert!(same_status(&a, &b));
        assert!(!same_status(&a, &c));
        assert!(!same_status(&a, &json!({"conditions": []})));
        assert!(same_status(&json!({"parents": []}), &json!({})));
    }

    #[test]
    fn nulls_are_dropped_everywhere() {
        assert_eq!(without_nulls(json!({"a": null, "b": [{"c": null, "d": 1}]})), json!({"b": [{"d": 1}]}));
    }
}
