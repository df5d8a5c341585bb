//! Runs the Gateway API mesh conformance tests (the data in conformance/)
//! through `weft-conformance` and requires at least 90 % of their cases to
//! pass; the runner's report is printed for the record.

use std::process::Command;

#[test]
fn mesh_conformance_cases_pass() -> anyhow::Result<()> {
    weft_e2e::netns::Cluster::require_supported()?;
    let runner = weft_e2e::workspace_bin("weft-conformance")?;
    let cases = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/cases");
    let out = Command::new(runner)
        .args(["--cases", &cases.to_string_lossy(), "--client", "mesh", "--converge-seconds", "5"])
        .output()?;
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(out.status.success(), "runner failed: {}", String::from_utf8_lossy(&out.stderr));
    let tally = report.lines().find(|l| l.starts_with("cases: ")).expect("a case tally");
    let numbers: Vec<u32> = tally.split_whitespace().filter_map(|w| w.trim_end_matches(',').parse().ok()).collect();
    let (passed, failed) = (numbers[0], numbers[1]);
    let tests: u32 = report.lines().filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL ")).count() as u32;
    assert_eq!(tests, 23, "all 23 mesh tests run (21 MESH-HTTP, 2 MESH-GRPC)");
    assert!(passed * 10 >= (passed + failed) * 9, "only {passed} of {} cases passed", passed + failed);
    Ok(())
}
