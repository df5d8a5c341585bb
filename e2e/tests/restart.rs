//! A local-mode control plane killed and restarted under load loses no
//! request: the restarted control plane sends nothing until its directory
//! is loaded, keeps the workloads it knew (its state directory's workload
//! list) as endpoints while their proxies reconnect, and the proxies do not
//! let a control plane that has just connected empty an endpoint set they
//! hold (the hold-down; shown by a restart that lost the workload list).

use std::net::SocketAddr;
use std::time::Duration;

use weft_e2e::load::{Outcome, shares};
use weft_e2e::mesh::{Mesh, PodSpec};

const REVIEWS_VIP: &str = "10.96.100.10";

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

fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| o.status != 200).collect()
}

#[test]
fn control_plane_sigkill_and_restart_under_load_fail_no_request() -> anyhow::Result<()> {
    let mut mesh = Mesh::start("cp-restart", &[("mesh.yaml", &manifests())])?;
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
    let reconnected = |mesh: &Mesh| -> anyhow::Result<usize> {
        Ok(mesh.control_plane_get("/api/v1/proxies")?["items"].as_array().map_or(0, Vec::len))
    };

    // Three crashes, each down for a second; then one killed again right
    // after it started (before it can have loaded its directory).
    let load = mesh.start_load(&client, vip, "reviews.bookinfo:9080", 200, 40.0)?;
    for cycle in 1..=3 {
        std::thread::sleep(Duration::from_secs(4));
        mesh.restart_control_plane(Duration::from_secs(1))?;
        println!("restart {cycle}: control plane killed (SIGKILL) and started again");
    }
    std::thread::sleep(Duration::from_secs(4));
    mesh.restart_control_plane(Duration::from_millis(100))?;
    mesh.restart_control_plane(Duration::ZERO)?;
    println!("restart 4: killed again as soon as it listened, started again");
    let outcomes = load.finish()?;
    let failed = failures(&outcomes);
    let s = shares(&outcomes, &["reviews-v1", "reviews-v2"]);
    println!(
        "4 control-plane restarts under 200 req/s: {} requests, {} failed; v1 {:.1} %, v2 {:.1} %",
        outcomes.len(),
        failed.len(),
        s[0] * 100.0,
        s[1] * 100.0
    );
    assert!(outcomes.len() >= 7_500, "only {} requests were sent", outcomes.len());
    assert!(failed.is_empty(), "failed: {:?}", &failed[..failed.len().min(5)]);
    assert!((s[0] - 0.90).abs() <= 0.03, "v1 share {:.3}", s[0]);
    // Every proxy is back on the last control plane (reconnects back off to
    // at most 7.5 s).
    let mut proxies = 0;
    for _ in 0..50 {
        proxies = reconnected(&mesh)?;
        if proxies == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(proxies, 3, "not every proxy reconnected to the last control plane");

    // A restart that lost the workload list (as a control plane with a new
    // state directory would): the first proxies to reconnect are sent empty
    // endpoint sets, and hold their endpoints until the others are back.
    let load = mesh.start_load(&client, vip, "reviews.bookinfo:9080", 200, 15.0)?;
    std::thread::sleep(Duration::from_secs(3));
    let cp = mesh.state_dir.join("workloads.pb");
    mesh.restart_control_plane_with(Duration::from_secs(1), || std::fs::remove_file(&cp).map_err(anyhow::Error::from))?;
    let outcomes = load.finish()?;
    let failed = failures(&outcomes);
    println!(
        "a restart without the workload list under 200 req/s: {} requests, {} failed",
        outcomes.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed: {:?}", &failed[..failed.len().min(5)]);
    let held = mesh
        .pods
        .iter()
        .map(|p| std::fs::read_to_string(p.log_file("proxy")).unwrap_or_default())
        .filter(|log| log.contains("would empty this endpoint set"))
        .count();
    println!("proxies that held endpoint sets the new control plane would have emptied: {held}");
    assert!(held >= 1, "no proxy logged a held endpoint set");
    Ok(())
}
