//! Real traffic with the control plane in Kubernetes mode: pods in network
//! namespaces with iptables capture and sidecars, registered with the
//! API-server double as the kubelet would (so its EndpointSlice controller
//! lists them); routes applied with the real kubectl.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
        "apiVersion: weft.io/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec:\n  mtls: {mode: Strict}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: bookinfo}\n---\n",
    );
    s += &svc("reviews", "app: reviews", REVIEWS_VIP);
    s += &svc("reviews-v1", "app: reviews, version: v1", "10.96.100.11");
    s += &svc("reviews-v2", "app: reviews, version: v2", "10.96.100.12");
    s
}

fn route(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: reviews-split, namespace: bookinfo}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: reviews, port: 9080}}]\n  rules:\n  - backendRefs:\n    - {{name: reviews-v1, port: 9080, weight: {v1}}}\n    - {{name: reviews-v2, port: 9080, weight: {v2}}}\n"
    )
}

fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| o.status != 200).collect()
}

fn weights(dump: &serde_json::Value) -> Vec<u64> {
    dump["services"]["svc/bookinfo/reviews"]["ports"][0]["http_routes"][0]["rules"][0]["backends"]
        .as_array()
        .map(|bs| bs.iter().filter_map(|b| b["weight"].as_u64()).collect())
        .unwrap_or_default()
}

fn endpoint_identities(dump: &serde_json::Value, service: &str) -> Vec<String> {
    dump["endpoints"][format!("ep/bookinfo/{service}")]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["identity"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn canary_split_from_the_kubernetes_mode_control_plane() -> anyhow::Result<()> {
    let mut mesh = Mesh::start_kubernetes("kube-canary")?;
    mesh.kube()?.apply(&manifests())?;
    mesh.kube()?.apply(&route(90, 10))?;
    for (name, version, sa) in [("reviews-v1-a", "v1", "reviews"), ("reviews-v2-a", "v2", "reviews")] {
        let mut spec =
            PodSpec::new(name, "bookinfo").label("app", "reviews").label("version", version).port("http", 9080);
        spec.service_account = sa.into();
        mesh.add_pod(&spec)?;
    }
    let client = mesh.add_pod(&PodSpec::new("productpage-a", "bookinfo").label("app", "productpage"))?;
    // Endpoints come from the cluster's EndpointSlices, each with the
    // identity of its pod's ServiceAccount.
    mesh.wait_for_config(&client, "endpoints with pod identities and the 90/10 route", Duration::from_secs(30), |d| {
        endpoint_identities(d, "reviews-v1") == ["spiffe://default.weft.local/ns/bookinfo/sa/reviews"]
            && endpoint_identities(d, "reviews-v2") == ["spiffe://default.weft.local/ns/bookinfo/sa/reviews"]
            && weights(d) == [90, 10]
            && d["mtls"] == "strict"
    })?;
    for pod in mesh.pods.clone() {
        mesh.wait_for_certificate(&pod, Duration::from_secs(30))?;
    }
    let vip = SocketAddr::new(REVIEWS_VIP.parse()?, 9080);

    let outcomes = mesh.load(&client, vip, "reviews.bookinfo:9080", 200, 5.0)?;
    assert!(outcomes.len() >= 990, "only {} requests were sent", outcomes.len());
    assert!(failures(&outcomes).is_empty(), "failed: {:?}", &failures(&outcomes)[..failures(&outcomes).len().min(5)]);
    let s = shares(&outcomes, &["reviews-v1", "reviews-v2"]);
    println!(
        "Kubernetes mode, 90/10 route: {} requests, v1 {:.1} %, v2 {:.1} %",
        outcomes.len(),
        s[0] * 100.0,
        s[1] * 100.0
    );
    assert!((s[0] - 0.90).abs() <= 0.03, "v1 share {:.3} is not 90 % ± 3 points", s[0]);

    // `kubectl apply` of a 50/50 route during 200 requests/s.
    let load = mesh.start_load(&client, vip, "reviews.bookinfo:9080", 200, 10.0)?;
    std::thread::sleep(Duration::from_secs(3));
    let changed_ms = load.started.elapsed().as_millis() as u64;
    mesh.kube()?.apply(&route(50, 50))?;
    let outcomes = load.finish()?;
    let failed = failures(&outcomes);
    assert!(
        failed.is_empty(),
        "{} requests failed during the change: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.at_ms >= changed_ms + 2_000).collect();
    let s = shares(after.iter().copied(), &["reviews-v1", "reviews-v2"]);
    println!(
        "kubectl apply of 50/50: from 2 s after it {} requests, v1 {:.1} %, v2 {:.1} %; {} requests in all, none failed",
        after.len(),
        s[0] * 100.0,
        s[1] * 100.0,
        outcomes.len()
    );
    assert!((s[0] - 0.5).abs() <= 0.08, "v1 share {:.3} after the change is not 50 % ± 8 points", s[0]);

    // 30 s of API-server errors for the control plane, under load: the
    // proxies keep serving, and a change made meanwhile arrives after.
    let scope = kube_double::FaultScope { user: Some("weft-cp-0".into()), verb: None, resource: None };
    mesh.kube()?.api.fail_for_scoped(scope, Duration::from_secs(30), 503);
    let outage = Instant::now();
    let load = mesh.start_load(&client, vip, "reviews.bookinfo:9080", 100, 32.0)?;
    mesh.kube()?.apply(&route(10, 90))?;
    let outcomes = load.finish()?;
    let failed = failures(&outcomes);
    println!("30 s of API errors: {} requests, {} failed", outcomes.len(), failed.len());
    assert!(
        failed.is_empty(),
        "{} requests failed during API errors: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    mesh.wait_for_config(&client, "the change made during the API errors", Duration::from_secs(60), |d| {
        weights(d) == [10, 90]
    })?;
    println!("the route applied during the errors reached the proxies {:?} after they began", outage.elapsed());
    Ok(())
}
