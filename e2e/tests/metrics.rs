//! Every metric the control plane and the proxies expose passes `promtool
//! check metrics` (Prometheus's own linter: naming, HELP and TYPE, units,
//! counters ending in `_total`): scraped from a control plane and from the
//! sidecars of a client and a server pod after real traffic between them
//! (a 90/10 split under strict mTLS). The Kubernetes-mode control plane's
//! metrics are checked the same way by tests/install.rs, after it has
//! watched, written, injected and signed.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{PROMETHEUS_ACCEPT, promtool_check, scrape, tool};
use weft_e2e::mesh::{Mesh, PodSpec};

const REVIEWS_VIP: &str = "10.96.100.10";
/// The harness's local-mode control plane serves its admin API on the
/// cluster's gateway address, port 15000.
const CP_ADMIN_PORT: u16 = 15000;

fn report(what: &str, lint: &support::Promtool) {
    println!("{what}: {} metric families, promtool check metrics: clean", lint.families);
}

fn manifests() -> String {
    let svc = |name: &str, selector: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: bookinfo}}\nspec:\n  clusterIP: {ip}\n  selector: {{{selector}}}\n  ports: [{{name: http, port: 9080, appProtocol: http}}]\n---\n"
        )
    };
    let mut s = String::from(
        "apiVersion: weft.io/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec:\n  mtls: {mode: Strict}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: bookinfo}\n---\n",
    );
    s += &svc("reviews", "app: reviews", REVIEWS_VIP);
    s += &svc("reviews-v1", "app: reviews, version: v1", "10.96.100.11");
    s += &svc("reviews-v2", "app: reviews, version: v2", "10.96.100.12");
    s += "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: reviews-split, namespace: bookinfo}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: reviews, port: 9080}]\n  rules:\n  - backendRefs:\n    - {name: reviews-v1, port: 9080, weight: 90}\n    - {name: reviews-v2, port: 9080, weight: 10}\n";
    s
}

#[test]
fn control_plane_and_proxy_metrics_pass_promtool_after_traffic() -> anyhow::Result<()> {
    tool("promtool")?;
    let mut mesh = Mesh::start("metrics", &[("mesh.yaml", &manifests())])?;
    for (name, version) in [("reviews-v1-a", "v1"), ("reviews-v2-a", "v2")] {
        mesh.add_pod(
            &PodSpec::new(name, "bookinfo").label("app", "reviews").label("version", version).port("http", 9080),
        )?;
    }
    let client = mesh.add_pod(&PodSpec::new("productpage-a", "bookinfo").label("app", "productpage"))?;
    mesh.wait_for_config(&client, "both versions and the split", Duration::from_secs(30), |d| {
        ["ep/bookinfo/reviews-v1", "ep/bookinfo/reviews-v2"]
            .iter()
            .all(|ep| d["endpoints"][ep]["endpoints"].as_array().is_some_and(|a| !a.is_empty()))
    })?;
    for pod in mesh.pods.clone() {
        mesh.wait_for_certificate(&pod, Duration::from_secs(30))?;
    }
    let vip = SocketAddr::new(REVIEWS_VIP.parse()?, 9080);
    let outcomes = mesh.load(&client, vip, "reviews.bookinfo:9080", 100, 3.0)?;
    let ok = outcomes.iter().filter(|o| o.status == 200).count();
    assert!(ok >= 250, "only {ok} of {} requests succeeded", outcomes.len());

    let server = mesh.pods.iter().find(|p| p.name() == "reviews-v1-a").cloned().expect("the server pod");
    for (what, pod) in [("the client's sidecar", &client), ("a server's sidecar", &server)] {
        let resp = mesh.admin_get(pod, "/metrics")?;
        assert_eq!(resp.status, 200);
        let text = resp.text();
        let lint = promtool_check(what, &text)?;
        let requests: f64 = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("request"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(requests > 0.0, "{what} shows no requests after traffic:\n{text}");
        report(what, &lint);
    }
    let cp_admin = SocketAddr::new(mesh.cluster.gateway().into(), CP_ADMIN_PORT);
    let (content_type, cp) = scrape(cp_admin, "/metrics", "*/*")?;
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    report("the control plane (local mode)", &promtool_check("the control plane", &cp)?);
    // A scraper that prefers OpenMetrics gets it, with its terminator and
    // the counters named by family.
    let (content_type, om) = scrape(cp_admin, "/metrics", PROMETHEUS_ACCEPT)?;
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{content_type}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    let counters: Vec<&str> = om.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    assert!(!counters.is_empty() && counters.iter().all(|c| !c.ends_with("_total")), "{counters:?}");
    Ok(())
}

#[test]
fn the_lint_refuses_what_prometheus_would_misread() {
    // A counter without `_total`, a metric without help text, a parse
    // error, or OpenMetrics served as text (its counters' HELP naming the
    // family, not the `_total` samples) all fail.
    for bad in [
        "# HELP weft_x_requests Requests.\n# TYPE weft_x_requests counter\nweft_x_requests 1\n",
        "# TYPE weft_x_open gauge\nweft_x_open 1\n",
        "weft_x_open{ 1\n",
    ] {
        assert!(promtool_check("a bad exposition", bad).is_err(), "promtool_check let through:\n{bad}");
    }
    let openmetrics =
        "# HELP weft_x_requests Requests.\n# TYPE weft_x_requests counter\nweft_x_requests_total 1\n# EOF\n";
    assert!(promtool_check("an OpenMetrics counter", openmetrics).is_err());
    let classic =
        "# HELP weft_x_requests_total Requests.\n# TYPE weft_x_requests_total counter\nweft_x_requests_total 1\n";
    assert_eq!(promtool_check("a classic counter", classic).expect("a classic counter").families, 1);
}
