//! End to end through real sidecars: pods in network namespaces with
//! iptables capture, the control plane in local mode, HTTP load from a
//! client pod to a Service's cluster IP.

use std::net::SocketAddr;
use std::time::Duration;

use weft_e2e::load::{Outcome, shares};
use weft_e2e::mesh::{Mesh, PodSpec};

const REVIEWS_VIP: &str = "10.96.100.10";

fn services() -> String {
    let svc = |name: &str, selector: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: bookinfo}}\nspec:\n  clusterIP: {ip}\n  selector: {{{selector}}}\n  ports: [{{name: http, port: 9080, appProtocol: http}}]\n---\n"
        )
    };
    let mut s = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: bookinfo}\n---\n");
    s += &svc("reviews", "app: reviews", REVIEWS_VIP);
    s += &svc("reviews-v1", "app: reviews, version: v1", "10.96.100.11");
    s += &svc("reviews-v2", "app: reviews, version: v2", "10.96.100.12");
    s
}

fn split_route(namespace: &str, v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: reviews-split, namespace: {namespace}}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: reviews, namespace: bookinfo, port: 9080}}]\n  rules:\n  - backendRefs:\n    - {{name: reviews-v1, namespace: bookinfo, port: 9080, weight: {v1}}}\n    - {{name: reviews-v2, namespace: bookinfo, port: 9080, weight: {v2}}}\n"
    )
}

fn reviews_pods(mesh: &mut Mesh) -> anyhow::Result<()> {
    mesh.add_pod(
        &PodSpec::new("reviews-v1-a", "bookinfo").label("app", "reviews").label("version", "v1").port("http", 9080),
    )?;
    mesh.add_pod(
        &PodSpec::new("reviews-v2-a", "bookinfo").label("app", "reviews").label("version", "v2").port("http", 9080),
    )?;
    Ok(())
}

fn has_both_versions(dump: &serde_json::Value) -> bool {
    ["ep/bookinfo/reviews-v1", "ep/bookinfo/reviews-v2"]
        .iter()
        .all(|ep| dump["endpoints"][ep]["endpoints"].as_array().is_some_and(|a| !a.is_empty()))
}

fn weights(dump: &serde_json::Value) -> Vec<u64> {
    dump["services"]["svc/bookinfo/reviews"]["ports"][0]["http_routes"][0]["rules"][0]["backends"]
        .as_array()
        .map(|bs| bs.iter().filter_map(|b| b["weight"].as_u64()).collect())
        .unwrap_or_default()
}

fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| o.status != 200).collect()
}

fn vip() -> SocketAddr {
    SocketAddr::new(REVIEWS_VIP.parse().unwrap(), 9080)
}

/// The default mesh with mTLS required between all its proxies.
const STRICT_MESH: &str =
    "apiVersion: weft.io/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec:\n  mtls: {mode: Strict}\n";

#[test]
fn canary_split_holds_and_moves_under_load_without_errors() -> anyhow::Result<()> {
    let mut mesh = Mesh::start(
        "canary",
        &[("mesh.yaml", STRICT_MESH), ("services.yaml", &services()), ("route.yaml", &split_route("bookinfo", 90, 10))],
    )?;
    reviews_pods(&mut mesh)?;
    let client = mesh.add_pod(&PodSpec::new("productpage-a", "bookinfo").label("app", "productpage"))?;
    mesh.wait_for_config(&client, "endpoints of both versions and the 90/10 route", Duration::from_secs(30), |d| {
        has_both_versions(d) && weights(d) == [90, 10] && d["mtls"] == "strict"
    })?;
    for pod in mesh.pods.clone() {
        mesh.wait_for_certificate(&pod, Duration::from_secs(30))?;
    }

    // 1,000 requests on the 90/10 split.
    let outcomes = mesh.load(&client, vip(), "reviews.bookinfo.svc.cluster.local:9080", 200, 5.0)?;
    assert!(outcomes.len() >= 990, "only {} requests were sent", outcomes.len());
    assert!(failures(&outcomes).is_empty(), "failed: {:?}", &failures(&outcomes)[..failures(&outcomes).len().min(5)]);
    let s = shares(&outcomes, &["reviews-v1", "reviews-v2"]);
    println!("90/10 route: {} requests, v1 {:.1} %, v2 {:.1} %", outcomes.len(), s[0] * 100.0, s[1] * 100.0);
    assert!((s[0] - 0.90).abs() <= 0.03, "v1 share {:.3} is not 90 % ± 3 points", s[0]);
    assert!((s[0] + s[1] - 1.0).abs() < 1e-9, "responses from unexpected pods");

    // The route changes to 50/50 during 200 requests/s.
    let load = mesh.start_load(&client, vip(), "reviews.bookinfo:9080", 200, 10.0)?;
    std::thread::sleep(Duration::from_secs(3));
    let changed_ms = load.started.elapsed().as_millis() as u64;
    mesh.write("route.yaml", &split_route("bookinfo", 50, 50))?;
    let outcomes = load.finish()?;
    let failed = failures(&outcomes);
    assert!(
        failed.is_empty(),
        "{} requests failed during the change: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // The load's clock started a little after `started`: allow 200 ms.
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.at_ms >= changed_ms + 2_000).collect();
    let s = shares(after.iter().copied(), &["reviews-v1", "reviews-v2"]);
    println!(
        "50/50 route from 2 s after the change: {} requests, v1 {:.1} %, v2 {:.1} %; {} requests in all, none failed",
        after.len(),
        s[0] * 100.0,
        s[1] * 100.0,
        outcomes.len()
    );
    // Strict mTLS carried it all: the client's sidecar opened mTLS
    // connections only, and the servers accepted only mTLS.
    let client_mtls = mesh.metric(&client, "weft_proxy_tls_connections_total", &["outbound", "\"mtls\""])?;
    let plaintext = mesh.metric(&client, "weft_proxy_tls_connections_total", &["outbound", "plaintext"])?;
    let server = mesh.pods.iter().find(|p| p.name().starts_with("reviews-v1")).unwrap().clone();
    let server_mtls = mesh.metric(&server, "weft_proxy_tls_connections_total", &["inbound", "\"mtls\""])?;
    println!(
        "strict mTLS: client opened {client_mtls} mTLS connections, 0 plaintext; reviews-v1 accepted {server_mtls}"
    );
    assert!(client_mtls >= 1.0 && server_mtls >= 1.0 && plaintext == 0.0);
    assert!(after.len() >= 900, "only {} requests after the change", after.len());
    assert!((s[0] - 0.5).abs() <= 0.06, "v1 share {:.3} two seconds after the change is not 50 % ± 6 points", s[0]);
    Ok(())
}

#[test]
fn a_consumer_route_changes_only_its_namespace() -> anyhow::Result<()> {
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: consumers, namespace: bookinfo}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: team-a}]\n  to: [{group: \"\", kind: Service}]\n";
    let namespaces = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-b}\n";
    let mut mesh = Mesh::start(
        "consumer",
        &[
            ("services.yaml", &services()),
            ("namespaces.yaml", namespaces),
            ("grant.yaml", grant),
            // Producer: everyone gets v1.
            ("producer.yaml", &split_route("bookinfo", 100, 0)),
            // Consumer in team-a: v2 only.
            ("consumer.yaml", &split_route("team-a", 0, 100)),
        ],
    )?;
    reviews_pods(&mut mesh)?;
    let a = mesh.add_pod(&PodSpec::new("client-a", "team-a").label("app", "client"))?;
    let b = mesh.add_pod(&PodSpec::new("client-b", "team-b").label("app", "client"))?;
    mesh.wait_for_config(&a, "the consumer route", Duration::from_secs(30), |d| {
        has_both_versions(d) && weights(d) == [0, 100]
    })?;
    mesh.wait_for_config(&b, "the producer route", Duration::from_secs(30), |d| {
        has_both_versions(d) && weights(d) == [100, 0]
    })?;
    let from_a = mesh.load(&a, vip(), "reviews.bookinfo:9080", 100, 2.0)?;
    let from_b = mesh.load(&b, vip(), "reviews.bookinfo:9080", 100, 2.0)?;
    assert!(failures(&from_a).is_empty() && failures(&from_b).is_empty(), "requests failed");
    let (sa, sb) = (shares(&from_a, &["reviews-v1", "reviews-v2"]), shares(&from_b, &["reviews-v1", "reviews-v2"]));
    println!(
        "team-a: v2 {:.0} % of {}; team-b: v1 {:.0} % of {}",
        sa[1] * 100.0,
        from_a.len(),
        sb[0] * 100.0,
        from_b.len()
    );
    assert_eq!(sa[1], 1.0, "team-a's consumer route sends everything to v2");
    assert_eq!(sb[0], 1.0, "team-b follows the producer route to v1");
    Ok(())
}
