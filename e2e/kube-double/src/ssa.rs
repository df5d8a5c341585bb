//! Server-side apply and field ownership (`metadata.managedFields`).
//!
//! Apply merges the applied configuration into the live object
//! (associative lists by key, other lists atomically), reports conflicts
//! with other managers that own a field whose value would change (unless
//! forced, which takes ownership), removes fields the manager applied
//! before and no longer applies when no other manager owns them, and
//! records the manager's `Apply` entry. Other writes record an `Update`
//! entry owning the fields they changed.

use crate::fieldset::{self, FieldSet, Path, Scope, Types};
use serde_json::{Map, Value, json};

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub set: FieldSet,
}

impl Entry {
    fn same_identity(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    /// How the real server names a manager in conflict messages.
    fn describe(&self) -> String {
        if self.operation == "Update" {
            format!("conflict with \"{}\" using {}", self.manager, self.api_version)
        } else {
            format!("conflict with \"{}\"", self.manager)
        }
    }
}

pub fn parse(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj.pointer("/metadata/managedFields").and_then(Value::as_array) else { return vec![] };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: s("subresource"),
                set: e.get("fieldsV1").map(FieldSet::from_v1).unwrap_or_default(),
            }
        })
        .collect()
}

pub fn store(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut m = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": e.set.to_v1(),
            });
            if !e.subresource.is_empty() {
                m["subresource"] = Value::String(e.subresource.clone());
            }
            m
        })
        .collect();
    let meta = crate::util::meta_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".to_string(), Value::Array(list));
    }
}

/// Structured merge of an applied configuration into a live object.
pub fn merge(live: &Value, applied: &Value, types: &Types, fpath: &mut Vec<String>) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            let mut out = l.clone();
            for (k, av) in a {
                if av.is_null() {
                    out.remove(k);
                    continue;
                }
                fpath.push(k.clone());
                let merged = merge(l.get(k).unwrap_or(&Value::Null), av, types, fpath);
                fpath.pop();
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(a)) => match types.list_type(fpath) {
            fieldset::ListType::Map(keys) if a.iter().chain(l.iter()).all(Value::is_object) => {
                let mut out: Vec<Value> = l.clone();
                for item in a {
                    let key = fieldset::item_key(item, &keys);
                    match out.iter().position(|x| fieldset::item_key(x, &keys) == key) {
                        Some(i) => out[i] = merge(&out[i].clone(), item, types, fpath),
                        None => out.push(item.clone()),
                    }
                }
                Value::Array(out)
            }
            _ => applied.clone(),
        },
        _ => applied.clone(),
    }
}

/// A field owned by another manager whose value an apply would change.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub describe: String,
    pub path: String,
}

/// Builds the 409 of a conflicted apply, with the real server's message
/// and `FieldManagerConflict` causes.
pub fn conflict_error(
    conflicts: &[Conflict],
    gr: &crate::error::GroupResource<'_>,
    name: &str,
) -> crate::error::ApiError {
    let n = conflicts.len();
    let mut msg = format!("Apply failed with {n} conflict{}: ", if n == 1 { "" } else { "s" });
    let mut by_mgr: Vec<(String, Vec<String>)> = Vec::new();
    for c in conflicts {
        match by_mgr.iter_mut().find(|(d, _)| *d == c.describe) {
            Some((_, paths)) => paths.push(c.path.clone()),
            None => by_mgr.push((c.describe.clone(), vec![c.path.clone()])),
        }
    }
    let parts: Vec<String> = by_mgr
        .iter()
        .map(|(d, paths)| {
            if paths.len() == 1 {
                format!("{d}: {}", paths[0])
            } else {
                let d = d.replacen("conflict with", "conflicts with", 1);
                format!("{d}:\n- {}", paths.join("\n- "))
            }
        })
        .collect();
    msg.push_str(&parts.join("\n"));
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": c.describe, "field": c.path}))
        .collect();
    crate::error::ApiError::new(409, "Conflict", msg)
        .with_details(json!({"name": name, "group": gr.group, "kind": gr.resource, "causes": causes}))
}

/// Keeps only what a scope covers of an applied configuration (plus the
/// identity fields).
pub fn restrict(applied: &Value, scope: Scope) -> Value {
    let Some(m) = applied.as_object() else { return applied.clone() };
    let mut out = Map::new();
    for (k, v) in m {
        let keep = match (scope, k.as_str()) {
            (_, "apiVersion" | "kind") => true,
            (Scope::Status, "metadata") => {
                let mut meta = Map::new();
                for key in ["name", "namespace", "resourceVersion"] {
                    if let Some(x) = v.get(key) {
                        meta.insert(key.to_string(), x.clone());
                    }
                }
                out.insert(k.clone(), Value::Object(meta));
                false
            }
            (Scope::Status, "status") => true,
            (Scope::Status, _) => false,
            (Scope::Main { exclude_status: true }, "status") => false,
            _ => true,
        };
        if keep {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

#[derive(Debug)]
pub struct ApplyRequest<'a> {
    pub manager: &'a str,
    pub force: bool,
    pub subresource: &'a str,
    pub api_version: &'a str,
    pub scope: Scope,
    pub types: &'a Types,
    pub now: String,
}

/// Server-side apply. `live` is `{}` for create-on-apply. Returns the new
/// object with its `managedFields`, or the conflicts.
pub fn apply(live: &Value, applied: &Value, req: &ApplyRequest<'_>) -> Result<Value, Vec<Conflict>> {
    let mut entries = parse(live);
    let applied = restrict(applied, req.scope);
    let new_set = fieldset::of_object(&applied, req.types, req.scope);
    let mut live_clean = live.clone();
    crate::util::meta_mut(&mut live_clean).remove("managedFields");
    let mut merged = merge(&live_clean, &applied, req.types, &mut Vec::new());

    let mut conflicts = Vec::new();
    let mut taken: Vec<(usize, Path)> = Vec::new();
    for p in new_set.paths() {
        if new_set.has_children(&p) {
            continue;
        }
        let Some(lv) = fieldset::get_at(&live_clean, &p) else { continue };
        if fieldset::get_at(&merged, &p) == Some(lv) {
            continue;
        }
        for (i, e) in entries.iter().enumerate() {
            if e.same_identity(req.manager, "Apply", req.subresource) || !e.set.contains(&p) {
                continue;
            }
            if req.force {
                taken.push((i, p.clone()));
            } else {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    describe: e.describe(),
                    path: fieldset::display(&p),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    for (i, p) in taken {
        entries[i].set.remove(&p);
    }

    let own = entries.iter().position(|e| e.same_identity(req.manager, "Apply", req.subresource));
    let old_set = own.map(|i| entries[i].set.clone()).unwrap_or_default();
    let mut removed: Vec<Path> = Vec::new();
    for p in old_set.paths() {
        if new_set.contains(&p) || new_set.contains_at_or_below(&p) {
            continue;
        }
        let owned_by_other = entries
            .iter()
            .any(|e| !e.same_identity(req.manager, "Apply", req.subresource) && e.set.contains_at_or_below(&p));
        if !owned_by_other && fieldset::remove_at(&mut merged, &p) {
            removed.push(p);
        }
    }
    // Parents emptied by a removal go too, unless someone owns them.
    for p in removed {
        let mut parent = p.clone();
        while parent.len() > 1 {
            parent.pop();
            let empty = fieldset::get_at(&merged, &parent).is_some_and(|v| v.as_object().is_some_and(Map::is_empty));
            let owned = new_set.contains(&parent) || entries.iter().any(|e| e.set.contains(&parent));
            if empty && !owned {
                fieldset::remove_at(&mut merged, &parent);
            } else {
                break;
            }
        }
    }

    let entry = Entry {
        manager: req.manager.to_string(),
        operation: "Apply".to_string(),
        api_version: req.api_version.to_string(),
        time: req.now.clone(),
        subresource: req.subresource.to_string(),
        set: new_set,
    };
    match own {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    prune_entries(&mut entries, &merged);
    store(&mut merged, &entries);
    Ok(merged)
}

/// Drops owned paths that no longer exist in the object.
fn prune_entries(entries: &mut [Entry], obj: &Value) {
    for e in entries.iter_mut() {
        for p in e.set.paths() {
            if fieldset::get_at(obj, &p).is_none() {
                e.set.remove(&p);
            }
        }
    }
}

/// Records a non-apply write (create, update, patch) by `manager`: it owns
/// the fields whose value it changed; other managers lose them.
pub fn record_update(old: Option<&Value>, new: &mut Value, req: &ApplyRequest<'_>) {
    let (manager, subresource, api_version, types, scope) =
        (req.manager, req.subresource, req.api_version, req.types, req.scope);
    let now = req.now.clone();
    let mut entries = match old {
        Some(o) => parse(o),
        None => parse(new),
    };
    let new_set = fieldset::of_object(new, types, scope);
    let mut changed = FieldSet::default();
    for p in new_set.paths() {
        let nv = fieldset::get_at(new, &p);
        let ov = old.and_then(|o| fieldset::get_at(o, &p));
        let leaf = !new_set.has_children(&p);
        if (leaf && ov != nv) || (!leaf && ov.is_none()) {
            changed.insert(&p);
        }
    }
    let changed_leaves: Vec<Path> = changed.paths().into_iter().filter(|p| !changed.has_children(p)).collect();
    for e in entries.iter_mut() {
        for p in &changed_leaves {
            e.set.remove(p);
        }
    }
    if !changed.is_empty() {
        match entries.iter().position(|e| e.same_identity(manager, "Update", subresource)) {
            Some(i) => {
                entries[i].set.union(&changed);
                entries[i].time = now;
                entries[i].api_version = api_version.to_string();
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".to_string(),
                api_version: api_version.to_string(),
                time: now,
                subresource: subresource.to_string(),
                set: changed,
            }),
        }
    }
    prune_entries(&mut entries, new);
    store(new, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> Types {
        Types { schema: None, group: "".into(), kind: "ConfigMap".into() }
    }

    fn req<'a>(m: &'a str, force: bool, t: &'a Types) -> ApplyRequest<'a> {
        ApplyRequest {
            manager: m,
            force,
            subresource: "",
            api_version: "v1",
            scope: Scope::Main { exclude_status: false },
            types: t,
            now: "t".into(),
        }
    }

    #[test]
    fn apply_conflicts_removal_and_shared_ownership() {
        let t = types();
        let a1 =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1", "y": "1"}});
        let o1 = apply(&json!({}), &a1, &req("a", false, &t)).unwrap();
        // b sets x to the same value: shared, no conflict.
        let b1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1"}});
        let o2 = apply(&o1, &b1, &req("b", false, &t)).unwrap();
        // b changes y: conflict with a.
        let b2 =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1", "y": "2"}});
        let c = apply(&o2, &b2, &req("b", false, &t)).unwrap_err();
        assert_eq!(c[0].path, ".data.y");
        assert_eq!(c[0].manager, "a");
        // a stops applying x and y: y is removed, x stays (b owns it).
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"z": "3"}});
        let o3 = apply(&o2, &a2, &req("a", false, &t)).unwrap();
        assert_eq!(o3["data"], json!({"x": "1", "z": "3"}));
        // forced apply takes ownership.
        let o4 = apply(
            &o3,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"z": "4"}}),
            &req("b", true, &t),
        )
        .unwrap();
        assert_eq!(o4["data"]["z"], "4");
        let entries = parse(&o4);
        let z = ["f:data".to_string(), "f:z".to_string()];
        assert!(entries.iter().all(|e| e.manager != "a" || !e.set.contains(&z)));
        assert!(entries.iter().any(|e| e.manager == "b" && e.set.contains(&z)));
    }
}
