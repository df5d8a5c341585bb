//! `crds/` must be exactly what the Rust types render to, and every schema
//! must be one the API server accepts (structural, no `$ref`).
//!
//! Regenerate with `WEFT_BLESS=1 cargo test --workspace --test crds`.

use std::path::PathBuf;

use serde_json::Value;
use weft_k8s_api::crds;

/// Where generated CRDs live: the repository's `crds/` and the Helm
/// chart's copy (Helm installs `crds/` of a chart before its templates).
fn crds_dirs() -> [PathBuf; 2] {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    [root.join("crds"), root.join("charts/weft/crds")]
}

fn render(crd: &impl serde::Serialize) -> String {
    let yaml = serde_saphyr::to_string(crd).expect("CRD renders as YAML");
    format!(
        "# Generated from control-plane/k8s-api by `WEFT_BLESS=1 cargo test --workspace --test crds`. Do not edit.\n{yaml}"
    )
}

#[test]
fn crds_directories_are_up_to_date() {
    for dir in crds_dirs() {
        check_dir(&dir);
    }
}

fn check_dir(dir: &std::path::Path) {
    let bless = std::env::var_os("WEFT_BLESS").is_some();
    let dir = dir.to_path_buf();
    let mut expected_files = Vec::new();
    let mut stale = Vec::new();
    for crd in crds::all() {
        let file = format!("{}.yaml", crd.metadata.name.as_deref().expect("CRD has a name"));
        let path = dir.join(&file);
        let rendered = render(&crd);
        expected_files.push(file.clone());
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &rendered).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(rendered.as_str()) {
            stale.push(file);
        }
    }
    let mut extra: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.ends_with(".yaml") && !expected_files.contains(f))
                .collect()
        })
        .unwrap_or_default();
    extra.sort();
    if bless {
        for f in &extra {
            std::fs::remove_file(dir.join(f)).unwrap();
        }
        return;
    }
    assert!(
        stale.is_empty() && extra.is_empty(),
        "{} is stale (changed: {stale:?}, not generated: {extra:?}); run `WEFT_BLESS=1 cargo test --workspace --test crds`",
        dir.display()
    );
}

/// Collects violations of the structural-schema rules of
/// apiextensions.k8s.io/v1 for one schema node.
fn check_structural(node: &Value, path: &str, in_junctor: bool, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        out.push(format!("{path}: schema is not an object"));
        return;
    };
    if obj.contains_key("$ref") {
        out.push(format!("{path}: $ref is not allowed"));
    }
    let escapes_typing = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if in_junctor {
        for banned in ["type", "description", "default", "nullable", "additionalProperties"] {
            if obj.contains_key(banned) {
                out.push(format!("{path}: `{banned}` inside allOf/anyOf/oneOf/not"));
            }
        }
    } else if !obj.contains_key("type") && !escapes_typing {
        out.push(format!("{path}: missing `type`"));
    }
    if obj.contains_key("properties") && obj.get("additionalProperties").is_some_and(|v| v != &Value::Bool(false)) {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    if obj.get("type") == Some(&Value::String("array".into())) && !obj.contains_key("items") {
        out.push(format!("{path}: array without items"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            check_structural(child, &format!("{path}.{name}"), in_junctor, out);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[]"), in_junctor, out);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        check_structural(ap, &format!("{path}{{}}"), in_junctor, out);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(branches) = obj.get(junctor).and_then(Value::as_array) {
            for (i, branch) in branches.iter().enumerate() {
                let branch_path = format!("{path}.{junctor}[{i}]");
                check_structural(branch, &branch_path, true, out);
                // Every property a junctor mentions must also be declared
                // outside it, with a type.
                if let Some(bprops) = branch.get("properties").and_then(Value::as_object) {
                    for name in bprops.keys() {
                        if obj.get("properties").and_then(|p| p.get(name)).is_none() {
                            out.push(format!("{branch_path}: property `{name}` not declared outside the junctor"));
                        }
                    }
                }
            }
        }
    }
    if let Some(not) = obj.get("not") {
        check_structural(not, &format!("{path}.not"), true, out);
    }
}

#[test]
fn every_crd_schema_is_structural() {
    let mut violations = Vec::new();
    for crd in crds::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        assert!(crd.spec.versions.iter().any(|v| v.storage), "{name}: no storage version");
        for version in &crd.spec.versions {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap_or_else(|| panic!("{name}: no schema"));
            let schema = serde_json::to_value(schema).unwrap();
            check_structural(&schema, &format!("{name}/{}", version.name), false, &mut violations);
            assert!(
                version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
                "{name}: no status subresource"
            );
        }
    }
    assert!(violations.is_empty(), "non-structural schemas:\n{}", violations.join("\n"));
}

#[test]
fn the_checker_catches_a_non_structural_schema() {
    // An untagged `i32 | String` renders without a type; the checker must see it.
    let bad = serde_json::json!({
        "type": "object",
        "properties": {"port": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}
    });
    let mut violations = Vec::new();
    check_structural(&bad, "bad", false, &mut violations);
    assert!(violations.iter().any(|v| v.contains("missing `type`")), "{violations:?}");
    assert!(violations.iter().any(|v| v.contains("inside allOf/anyOf/oneOf/not")), "{violations:?}");
}
