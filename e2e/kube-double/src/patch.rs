//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and an
//! approximation of strategic merge patch driven by the merge-key table of
//! [`crate::fieldset::Types`] (associative lists merged by key, `$patch:
//! delete|replace`, `$retainKeys`, `$deleteFromPrimitiveList/`,
//! `$setElementOrder/` ignored; `finalizers` merged as a set).

use crate::error::ApiError;
use crate::fieldset::{ListType, Types, item_key};
use serde_json::{Map, Value};

pub fn merge_patch(target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !patch.is_object() {
        return Err(ApiError::bad_request("merge patch must be a JSON object"));
    }
    let mut out = target.clone();
    json_patch::merge(&mut out, &patch);
    Ok(out)
}

pub fn json_patch(target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: json_patch::Patch =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut out = target.clone();
    json_patch::patch(&mut out, &patch).map_err(|e| {
        ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}"))
    })?;
    Ok(out)
}

pub fn strategic_merge_patch(target: &Value, body: &[u8], types: &Types) -> Result<Value, ApiError> {
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !patch.is_object() {
        return Err(ApiError::bad_request("strategic merge patch must be a JSON object"));
    }
    smp(target, &patch, types, &mut Vec::new())
}

fn smp(target: &Value, patch: &Value, types: &Types, fpath: &mut Vec<String>) -> Result<Value, ApiError> {
    let (Some(t), Some(p)) = (target.as_object(), patch.as_object()) else {
        return Ok(strip_directives(patch));
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => return Ok(strip_directives(patch)),
        Some("delete") => return Ok(Value::Null),
        Some(other) if other != "merge" => {
            return Err(ApiError::bad_request(format!("Unknown patch type: {other}")));
        }
        _ => {}
    }
    let mut out = t.clone();
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (out.get_mut(field), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        if v.get("$patch").and_then(Value::as_str) == Some("delete") {
            out.remove(k);
            continue;
        }
        fpath.push(k.clone());
        let merged = match (out.get(k), v) {
            (Some(cur @ Value::Object(_)), Value::Object(_)) => smp(cur, v, types, fpath)?,
            (Some(Value::Array(cur)), Value::Array(items)) => merge_list(cur, items, types, fpath)?,
            (None, Value::Array(items)) => merge_list(&[], items, types, fpath)?,
            _ => strip_directives(v),
        };
        fpath.pop();
        out.insert(k.clone(), merged);
    }
    if let Some(retain) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Value::Object(out))
}

fn merge_list(cur: &[Value], items: &[Value], types: &Types, fpath: &mut Vec<String>) -> Result<Value, ApiError> {
    match types.list_type(fpath) {
        ListType::Map(keys) => {
            if items.len() == 1 && items[0].get("$patch").and_then(Value::as_str) == Some("replace") {
                return Ok(Value::Array(vec![]));
            }
            let mut out: Vec<Value> = cur.to_vec();
            for item in items {
                if !item.is_object() {
                    return Err(ApiError::bad_request("strategic merge patch: list item is not an object"));
                }
                let key = item_key(item, &keys);
                let pos = out.iter().position(|x| x.is_object() && item_key(x, &keys) == key);
                match (item.get("$patch").and_then(Value::as_str), pos) {
                    (Some("delete"), Some(i)) => {
                        out.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(i)) => out[i] = smp(&out[i].clone(), item, types, fpath)?,
                    (_, None) => out.push(strip_directives(item)),
                }
            }
            Ok(Value::Array(out))
        }
        ListType::Set => {
            let mut out: Vec<Value> = cur.to_vec();
            for item in items {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ListType::Atomic => Ok(Value::Array(items.iter().map(strip_directives).collect())),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect::<Map<
                String,
                Value,
            >>(
            ),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_by_key() {
        let types = Types { schema: None, group: "".into(), kind: "Pod".into() };
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]},
            "metadata": {"finalizers": ["x"]}});
        let patch = json!({"spec": {"containers": [{"name": "a", "image": "2"}, {"name": "b", "$patch": "delete"}, {"name": "c", "image": "3"}]},
            "metadata": {"finalizers": ["y"]}});
        let out = strategic_merge_patch(&pod, patch.to_string().as_bytes(), &types).unwrap();
        assert_eq!(out["spec"]["containers"], json!([{"name": "a", "image": "2"}, {"name": "c", "image": "3"}]));
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
    }
}
