//! Runs the Gateway API gateway conformance tests (the data in
//! conformance/) through `weft-conformance`, with a gateway pod per Gateway
//! and a client outside the mesh (HTTP, HTTPS, gRPC, raw TCP and TLS), and
//! requires every case of the tests whose features Weft's GatewayClass
//! claims to pass; the runner's report is printed for the record.

use std::process::Command;

#[test]
fn gateway_conformance_cases_pass() -> anyhow::Result<()> {
    weft_e2e::netns::Cluster::require_supported()?;
    let runner = weft_e2e::workspace_bin("weft-conformance")?;
    let cases = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/cases");
    let out = Command::new(runner)
        .args(["--cases", &cases.to_string_lossy(), "--client", "gateway", "--converge-seconds", "5"])
        .output()?;
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(out.status.success(), "runner failed: {}", String::from_utf8_lossy(&out.stderr));
    let tally = report.lines().find(|l| l.starts_with("cases: ")).expect("a case tally");
    let numbers: Vec<u32> = tally.split_whitespace().filter_map(|w| w.trim_end_matches(',').parse().ok()).collect();
    let (passed, failed) = (numbers[0], numbers[1]);
    let tests = report.lines().filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL ")).count();
    // Tests needing features Weft does not claim are skipped, as the
    // upstream suite skips them; 68 remain (403 cases).
    assert!(tests >= 68, "only {tests} gateway tests ran");
    assert!(passed >= 403, "only {passed} cases passed");
    assert_eq!(failed, 0, "{failed} of {} cases failed", passed + failed);
    Ok(())
}
