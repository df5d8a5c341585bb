//! Golden tests: each directory under `tests/golden/` holds an `input.yaml`
//! (Gateway API and Weft objects, possibly with errors) and an
//! `output.yaml`: the load errors as `# error:` comment lines, then exactly
//! what `weftctl translate --partial --now 2026-01-01T00:00:00Z` prints. A
//! change in translation shows as a unified diff.
//!
//! Regenerate with `WEFT_BLESS=1 cargo test --workspace --test golden`, then
//! review the diff before committing.

use std::path::{Path, PathBuf};

use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weft_k8s_api::k8s_openapi::jiff::Timestamp;
use weft_translate::{load, render};

/// What the golden files are rendered with.
pub fn render_case(input: &Path) -> String {
    let text = std::fs::read_to_string(input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    let (snapshot, report) = load::load_str("input.yaml", &text);
    let now = Time("2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap());
    let output = weft_translate::translate(&snapshot, &now);
    let mut out = String::new();
    for e in &report.errors {
        out.push_str(&format!("# error: {e}\n"));
    }
    out.push_str(&render::to_yaml(&render::documents(&snapshot, &output)));
    out
}

fn cases() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("input.yaml").exists())
        .collect();
    cases.sort();
    cases
}

#[test]
fn golden_cases() {
    let bless = std::env::var_os("WEFT_BLESS").is_some();
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let actual = render_case(&case.join("input.yaml"));
        let expected_path = case.join("output.yaml");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            let diff = similar::TextDiff::from_lines(&expected, &actual);
            failures.push(format!(
                "{}:\n{}",
                case.file_name().unwrap().to_string_lossy(),
                diff.unified_diff().context_radius(3).header("expected", "actual")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) differ (WEFT_BLESS=1 to accept):\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{} golden cases", cases.len());
}

#[test]
fn there_are_enough_golden_cases() {
    assert!(cases().len() >= 60, "only {} golden cases", cases().len());
}
