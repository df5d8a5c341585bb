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

/// How long the time-bounded loader fuzz runs (`WEFT_FUZZ_SECONDS`, 10 s
/// by default in CI; docs/fuzzing.md records a 10-minute run).
fn budget() -> std::time::Duration {
    let secs = std::env::var("WEFT_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    std::time::Duration::from_secs(secs)
}

/// Characters YAML gives meaning to, and a few that break encodings of it.
const YAML_CHARS: &[char] = &[
    ':', '-', ' ', '\n', '\t', '{', '}', '[', ']', '"', '\'', '&', '*', '!', '|', '>', '%', '@', '#', ',', '?', '0',
    '9', 'a', 'Z', '\u{0}', '\u{feff}', 'é',
];

/// The corpus as YAML text (a few documents), with character edits:
/// (position, operation, character).
fn mutated_manifest() -> impl Strategy<Value = (Vec<Index>, Vec<(Index, u8, Index)>)> {
    (
        prop::collection::vec(any::<Index>(), 1..5),
        prop::collection::vec((any::<Index>(), 0u8..3, any::<Index>()), 1..16),
    )
}

#[test]
fn mutated_manifest_text_never_panics_and_every_error_is_located() {
    use proptest::test_runner::{Config, TestRunner};
    let corpus = corpus();
    let deadline = std::time::Instant::now() + budget();
    let cases = std::sync::atomic::AtomicU64::new(0);
    while std::time::Instant::now() < deadline {
        let config = Config { cases: 64, failure_persistence: None, max_shrink_time: 60_000, ..Config::default() };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&mutated_manifest(), |(docs, edits)| {
            cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut text: Vec<char> = docs
                .iter()
                .map(|d| render::to_yaml(&[d.get(&corpus).clone()]))
                .collect::<Vec<_>>()
                .join("---\n")
                .chars()
                .collect();
            for (at, op, c) in &edits {
                let c = *c.get(YAML_CHARS);
                if text.is_empty() {
                    text.push(c);
                    continue;
                }
                let at = at.index(text.len());
                match op {
                    0 => text[at] = c,
                    1 => text.insert(at, c),
                    _ => {
                        text.remove(at);
                    }
                }
            }
            let text: String = text.into_iter().collect();
            let (snapshot, report) = load_str("mutated.yaml", &text);
            for e in &report.errors {
                prop_assert_eq!(&e.file, "mutated.yaml");
                prop_assert!(e.document >= 1 && e.line >= 1, "an error without a place: {e}");
                prop_assert!(!e.message.is_empty(), "an error without a reason: {e}");
            }
            weft_translate::translate(&snapshot, &now());
            Ok(())
        });
        if let Err(e) = result {
            panic!("mutated manifests: {e}");
        }
    }
    let cases = cases.into_inner();
    println!("mutated manifests: {cases} cases in {:?}, no failure", budget());
    assert!(cases > 0);
}
