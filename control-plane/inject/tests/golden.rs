//! Golden tests of injection: each directory under `tests/golden/` holds a
//! `case.yaml` (how injection is asked: `mode` webhook or explicit,
//! `native`, and for webhook cases the `namespace`), an `input.yaml` and
//! the expected `output.yaml`:
//!
//! * explicit: exactly what `weftctl inject` prints for the input
//!   (preceded by one `# document N (Kind ns/name): outcome` line per pod
//!   template);
//! * webhook: for each input Pod, its outcome line, then the pod as
//!   admission leaves it.
//!
//! Regenerate with `WEFT_BLESS=1 cargo test --workspace --test golden_inject`
//! and review the diff.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use weft_inject::manifest::inject_yaml;
use weft_inject::{Mode, NamespaceInfo, Outcome, Settings, inject};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    mode: String,
    #[serde(default = "yes")]
    native: bool,
    #[serde(default)]
    namespace: Option<Namespace>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
struct Namespace {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The settings golden files are rendered with (a fixed image, so that a
/// version bump does not rewrite every file).
fn settings() -> Settings {
    Settings { image: "ghcr.io/weft-mesh/weft-proxy:golden".into(), ..Settings::default() }
}

fn render(dir: &std::path::Path) -> String {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{}/{f}: {e}", dir.display()));
    let case: Case = serde_saphyr::from_str(&read("case.yaml")).expect("case.yaml");
    let input = read("input.yaml");
    let mut out = String::new();
    match case.mode.as_str() {
        "explicit" => match inject_yaml(&input, &settings(), case.native) {
            Ok((yaml, notes)) => {
                for n in notes {
                    out.push_str(&format!("# document {} ({}): {}\n", n.document, n.object, n.outcome));
                }
                out.push_str(&yaml);
            }
            Err(e) => out.push_str(&format!("# error: {e}\n")),
        },
        "webhook" => {
            let ns = case.namespace.unwrap_or_default();
            let ns = NamespaceInfo { name: ns.name, labels: ns.labels, annotations: ns.annotations };
            let pods: Vec<Pod> = serde_saphyr::from_multiple(&input).expect("input pods");
            for (i, pod) in pods.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                let name = pod.metadata.name.clone().unwrap_or_default();
                match inject(pod, &ns, &settings(), case.native, Mode::Webhook) {
                    Ok(Outcome::Injected(p)) => {
                        out.push_str(&format!("# {name}: injected\n"));
                        out.push_str(&serde_saphyr::to_string(&p).unwrap());
                    }
                    Ok(Outcome::Skipped(why)) => {
                        out.push_str(&format!("# {name}: skipped: {}\n", why.reason()));
                        out.push_str(&serde_saphyr::to_string(pod).unwrap());
                    }
                    Err(e) => out.push_str(&format!("# {name}: refused: {e}\n")),
                }
            }
        }
        other => panic!("{}: unknown mode {other}", dir.display()),
    }
    out
}

#[test]
fn golden_cases() {
    let bless = std::env::var_os("WEFT_BLESS").is_some();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("case.yaml").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "only {} golden cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let actual = render(case);
        let path = case.join("output.yaml");
        if bless {
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            let diff = similar::TextDiff::from_lines(&expected, &actual);
            failures.push(format!(
                "{}:\n{}",
                case.file_name().unwrap().to_string_lossy(),
                diff.unified_diff().context_radius(3).header("expected", "actual")
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// Injection is idempotent: injecting an injected pod changes nothing.
#[test]
fn injecting_twice_changes_nothing() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/native-sidecar");
    let input = std::fs::read_to_string(root.join("input.yaml")).unwrap();
    let pod: Pod = serde_saphyr::from_str(&input).unwrap();
    let ns = NamespaceInfo {
        name: "shop".into(),
        labels: BTreeMap::from([("weft.io/sidecar-injection".into(), "enabled".into())]),
        ..Default::default()
    };
    let Outcome::Injected(once) = inject(&pod, &ns, &settings(), true, Mode::Webhook).unwrap() else {
        panic!("injected")
    };
    assert_eq!(
        inject(&once, &ns, &settings(), true, Mode::Webhook).unwrap(),
        Outcome::Skipped(weft_inject::Skip::AlreadyInjected)
    );
}
