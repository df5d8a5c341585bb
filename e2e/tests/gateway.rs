//! End to end through a gateway proxy: a Gateway and an HTTPRoute in the
//! control plane's directory, a gateway pod serving the Gateway's listener,
//! backends behind sidecars in a strict-mTLS mesh, and a client outside
//! the mesh calling the gateway's address.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use weft_e2e::load::{Outcome, shares};
use weft_e2e::mesh::{Mesh, PodSpec};

const MANIFESTS: &str = "\
apiVersion: weft.io/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  mtls: {mode: Strict}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec:
  controllerName: weft.io/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: weft
  listeners:
  - {name: web, protocol: HTTP, port: 8080, hostname: store.example}
---
apiVersion: v1
kind: Service
metadata: {name: store-v1, namespace: shop}
spec:
  clusterIP: 10.96.50.11
  selector: {app: store, version: v1}
  ports: [{name: http, port: 9080, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: store-v2, namespace: shop}
spec:
  clusterIP: 10.96.50.12
  selector: {app: store, version: v2}
  ports: [{name: http, port: 9080, appProtocol: http}]
";

fn route(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: store, namespace: shop}}\nspec:\n  \
         parentRefs: [{{name: edge}}]\n  rules:\n  \
         - matches: [{{path: {{type: PathPrefix, value: /v2}}}}]\n    backendRefs: [{{name: store-v2, port: 9080}}]\n  \
         - backendRefs:\n    - {{name: store-v1, port: 9080, weight: {v1}}}\n    - {{name: store-v2, port: 9080, weight: {v2}}}\n"
    )
}

fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| o.status != 200).collect()
}

#[test]
fn a_gateway_routes_outside_clients_to_mesh_services_over_mtls() -> anyhow::Result<()> {
    let route_90_10 = route(90, 10);
    let mut mesh = Mesh::start("gateway", &[("mesh.yaml", MANIFESTS), ("route.yaml", &route_90_10)])?;
    for (name, version) in [("store-v1-a", "v1"), ("store-v2-a", "v2")] {
        mesh.add_pod(&PodSpec::new(name, "shop").label("app", "store").label("version", version).port("http", 9080))?;
    }
    let gateway = mesh.add_pod(&PodSpec::new("edge-gw-a", "shop").gateway("edge"))?;
    let client = mesh.add_pod(&PodSpec::new("outsider", "shop").without_sidecar())?;
    for pod in mesh.pods.clone() {
        if pod.name() != "outsider" {
            mesh.wait_for_certificate(&pod, Duration::from_secs(30))?;
        }
    }
    mesh.wait_for_config(
        &gateway,
        "the listener with the route and both endpoint sets",
        Duration::from_secs(30),
        |d| {
            let listener = &d["gateways"]["gw/edge.shop"]["listeners"][0];
            let both = ["ep/shop/store-v1", "ep/shop/store-v2"]
                .iter()
                .all(|ep| d["endpoints"][ep]["endpoints"].as_array().is_some_and(|a| !a.is_empty()));
            listener["port"] == 8080 && listener["http_routes"].as_array().is_some_and(|r| r.len() == 1) && both
        },
    )?;
    let entry = SocketAddr::new(gateway.ip().into(), 8080);

    // The Gateway is programmed, with the gateway pod's address.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = mesh.control_plane_get("/api/v1/status/Gateway/shop/edge")?;
        let programmed = status["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Programmed" && c["status"] == "True");
        let address = status["status"]["addresses"][0]["value"].as_str() == Some(&gateway.ip().to_string());
        if programmed && address {
            println!("Gateway shop/edge: Programmed=True at {}", gateway.ip());
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the Gateway was not programmed with the gateway's address: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // 90/10 by weight, and /v2 to v2 only.
    let outcomes = mesh.load(&client, entry, "store.example", 200, 5.0)?;
    anyhow::ensure!(
        failures(&outcomes).is_empty(),
        "failed: {:?}",
        &failures(&outcomes)[..failures(&outcomes).len().min(5)]
    );
    let s = shares(&outcomes, &["store-v1", "store-v2"]);
    println!(
        "via the gateway, 90/10 route: {} requests, v1 {:.1} %, v2 {:.1} %",
        outcomes.len(),
        s[0] * 100.0,
        s[1] * 100.0
    );
    anyhow::ensure!(outcomes.len() >= 990, "only {} requests were sent", outcomes.len());
    anyhow::ensure!((s[0] - 0.9).abs() <= 0.03, "v1 share {:.3} is not 90 % ± 3 points", s[0]);
    let v2_only = mesh.start_load_path(&client, entry, "store.example", "/v2/items", 100, 2.0)?.finish()?;
    let s = shares(&v2_only, &["store-v1", "store-v2"]);
    anyhow::ensure!(failures(&v2_only).is_empty() && s[1] == 1.0, "/v2 should reach v2 only: {s:?}");

    // A host the listener does not serve is answered by the gateway.
    let other = mesh.load(&client, entry, "other.example", 10, 1.0)?;
    anyhow::ensure!(
        other.iter().all(|o| o.status == 404),
        "other.example should get 404: {:?}",
        &other[..other.len().min(3)]
    );

    // The route changes to 50/50 while traffic runs: no request fails.
    let load = mesh.start_load(&client, entry, "store.example", 200, 8.0)?;
    std::thread::sleep(Duration::from_secs(2));
    let changed_ms = load.started.elapsed().as_millis() as u64;
    mesh.write("route.yaml", &route(50, 50))?;
    let outcomes = load.finish()?;
    let failed = failures(&outcomes);
    anyhow::ensure!(
        failed.is_empty(),
        "{} requests failed during the change: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.at_ms >= changed_ms + 2_000).collect();
    let s = shares(after.iter().copied(), &["store-v1", "store-v2"]);
    println!(
        "50/50 from 2 s after the change: {} requests, v1 {:.1} %, v2 {:.1} %; {} in all, none failed",
        after.len(),
        s[0] * 100.0,
        s[1] * 100.0,
        outcomes.len()
    );
    anyhow::ensure!((s[0] - 0.5).abs() <= 0.06, "v1 share {:.3} after the change is not 50 % ± 6 points", s[0]);

    // Strict mTLS from the gateway to the backends.
    let mtls = mesh.metric(&gateway, "weft_proxy_tls_connections_total", &["outbound", "\"mtls\""])?;
    let plaintext = mesh.metric(&gateway, "weft_proxy_tls_connections_total", &["outbound", "plaintext"])?;
    println!("gateway → backends: {mtls} mTLS connections, {plaintext} plaintext");
    anyhow::ensure!(mtls >= 1.0 && plaintext == 0.0, "the gateway should reach the backends over mTLS only");
    Ok(())
}
