//! Properties of the loader and translator over generated inputs:
//! the order of documents never changes the output, and no input — random
//! text or a valid object with random damage — makes either panic.

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weft_k8s_api::k8s_openapi::jiff::Timestamp;
use weft_translate::load::{Loader, load_str};
use weft_translate::render;

fn now() -> Time {
    Time(Timestamp::from_second(1_800_000_000).unwrap())
}

/// Documents from the golden inputs and the conformance manifests: a corpus
/// that touches every kind and most fields.
fn corpus() -> Vec<Value> {
    static CORPUS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(read_corpus).clone()
}

fn read_corpus() -> Vec<Value> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [root.join("tests/golden"), root.join("../../conformance/manifests")] {
        if let Ok(found) = weft_translate::load::manifest_files(&dir) {
            files.extend(found);
        }
    }
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap().replace("{GATEWAY_CLASS_NAME}", "weft");
        for chunk in text.split("\n---") {
            if let Ok(v) = serde_saphyr::from_str::<Value>(chunk) {
                if v["kind"] == "List" {
                    docs.extend(v["items"].as_array().cloned().unwrap_or_default());
                } else if v.get("kind").is_some() {
                    docs.push(v);
                }
            }
        }
    }
    docs.push(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "weft"}, "spec": {"controllerName": "weft.io/gateway-controller"}}));
    docs
}

/// Identity of a document, to drop duplicates (whose first copy wins, so
/// their order would legitimately matter).
fn identity(doc: &Value) -> String {
    let namespace = doc["metadata"]["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or("default");
    format!("{}/{namespace}/{}", doc["kind"], doc["metadata"]["name"])
}

fn unique(docs: Vec<Value>) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    docs.into_iter().filter(|d| seen.insert(identity(d))).collect()
}

fn translate_docs(docs: &[Value]) -> String {
    let mut loader = Loader::default();
    for (i, d) in docs.iter().enumerate() {
        loader.add_document("input", i + 1, d.clone());
    }
    let (snapshot, report) = loader.finish();
    let output = weft_translate::translate(&snapshot, &now());
    let mut errors: Vec<String> = report.errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect();
    errors.sort();
    format!("{errors:?}\n{}", render::to_yaml(&render::documents(&snapshot, &output)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn document_order_does_not_change_output(seed in any::<u64>()) {
        let docs = unique(corpus());
        let expected = translate_docs(&docs);
        let mut shuffled = docs.clone();
        // Fisher-Yates with a small deterministic generator from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(translate_docs(&shuffled), expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in ".{0,400}") {
        let (snapshot, _) = load_str("random", &text);
        weft_translate::translate(&snapshot, &now());
    }

    #[test]
    fn yaml_like_text_never_panics(lines in prop::collection::vec(
        prop_oneof![
            Just("---".to_string()),
            Just("apiVersion: gateway.networking.k8s.io/v1".to_string()),
            Just("kind: HTTPRoute".to_string()),
            Just("kind: Gateway".to_string()),
            Just("metadata: {name: a}".to_string()),
            Just("spec:".to_string()),
            "  [a-zA-Z]{1,10}: [\\[\\]{}a-z0-9:\"'-]{0,12}",
            "  - [a-z]{1,8}: [a-z0-9]{0,8}",
        ],
        0..30,
    )) {
        let (snapshot, _) = load_str("random", &lines.join("\n"));
        weft_translate::translate(&snapshot, &now());
    }
}

/// All paths to nodes of a JSON value.
fn paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(json!(k));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(json!(i));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(v, |cur, step| match step {
        Value::String(k) => &mut cur[k.as_str()],
        Value::Number(i) => &mut cur[i.as_u64().unwrap() as usize],
        _ => cur,
    })
}

fn replacement(choice: u8) -> Value {
    match choice % 10 {
        0 => Value::Null,
        1 => json!(""),
        2 => json!(-1),
        3 => json!(2_147_483_648_i64),
        4 => json!([]),
        5 => json!({}),
        6 => json!("*.*"),
        7 => json!(true),
        8 => json!("x".repeat(300)),
        _ => json!([{"name": "gw"}]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn damaged_objects_never_panic(
        picks in prop::collection::vec((any::<Index>(), any::<Index>(), any::<u8>()), 1..6),
    ) {
        let corpus = corpus();
        let mut docs: Vec<Value> = Vec::new();
        for (doc_pick, node_pick, choice) in picks {
            let mut doc = doc_pick.get(&corpus).clone();
            let mut all = Vec::new();
            paths(&doc, &mut Vec::new(), &mut all);
            let path = node_pick.get(&all).clone();
            *node_mut(&mut doc, &path) = replacement(choice);
            docs.push(doc);
        }
        // The damaged objects alongside intact ones, so references resolve.
        docs.extend(corpus.into_iter().take(40));
        translate_docs(&docs);
    }
}
