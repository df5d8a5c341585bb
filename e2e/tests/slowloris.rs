//! Slow clients are shed and everyone else is served: hundreds of
//! connections that send a request's header section one byte per second
//! (slowloris), at a gateway and at a sidecar's outbound listener, are
//! closed once the header read timeout passes, while real requests through
//! both keep succeeding.

use std::net::SocketAddr;
use std::time::Duration;

use weft_e2e::load::Outcome;
use weft_e2e::mesh::{Mesh, PodSpec, which};

const MANIFESTS: &str = "
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
  - {name: web, protocol: HTTP, port: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: store, namespace: shop}
spec:
  clusterIP: 10.96.50.11
  selector: {app: store}
  ports: [{name: http, port: 9080, appProtocol: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: store, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  rules:
  - backendRefs: [{name: store, port: 9080}]
";

/// Slow connections per target.
const SLOW: usize = 300;
/// The proxies' header read timeout in this test (seconds).
const TIMEOUT: u64 = 3;

fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| o.status != 200).collect()
}

#[test]
fn slowloris_connections_are_shed_while_real_requests_succeed() -> anyhow::Result<()> {
    let python = which("python3")?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("slowloris.py");
    let mut mesh = Mesh::start("slowloris", &[("mesh.yaml", MANIFESTS)])?;
    let timeout = TIMEOUT.to_string();
    let limits = ["--header-read-timeout", timeout.as_str()];
    mesh.add_pod(&PodSpec::new("store-a", "shop").label("app", "store").port("http", 9080))?;
    let gateway = mesh.add_pod(&PodSpec::new("edge-gw-a", "shop").gateway("edge").proxy_args(&limits))?;
    let shopper = mesh.add_pod(&PodSpec::new("shopper", "shop").label("app", "shopper").proxy_args(&limits))?;
    let outsider = mesh.add_pod(&PodSpec::new("outsider", "shop").without_sidecar())?;
    for pod in [&gateway, &shopper] {
        mesh.wait_for_certificate(pod, Duration::from_secs(30))?;
        mesh.wait_for_config(pod, "the store's endpoints", Duration::from_secs(30), |d| {
            d["endpoints"]["ep/shop/store"]["endpoints"].as_array().is_some_and(|a| !a.is_empty())
        })?;
    }
    let entry = SocketAddr::new(gateway.ip().into(), 8080);
    let vip: SocketAddr = "10.96.50.11:9080".parse()?;

    // The attackers: from outside at the gateway, and from inside the
    // shopper pod (its traffic goes through its sidecar's outbound).
    let slow = |pod: &weft_e2e::netns::Pod, target: SocketAddr, tag: &str| {
        pod.spawn(
            &python,
            &[&script.to_string_lossy(), &target.ip().to_string(), &target.port().to_string(), &SLOW.to_string(), "12"],
            &[],
            &pod.log_file(tag),
        )
    };
    let mut at_gateway = slow(&outsider, entry, "slow-gateway")?;
    let mut at_sidecar = slow(&shopper, vip, "slow-sidecar")?;
    std::thread::sleep(Duration::from_secs(1));
    let through_gateway = mesh.start_load(&outsider, entry, "store.example", 50, 10.0)?;
    let through_sidecar = mesh.start_load(&shopper, vip, "store.shop:9080", 50, 10.0)?;
    for (what, load) in [("through the gateway", through_gateway), ("through the sidecar", through_sidecar)] {
        let outcomes = load.finish()?;
        let failed = failures(&outcomes);
        println!("{what}, beside {SLOW} slow connections: {} requests, {} failed", outcomes.len(), failed.len());
        assert!(outcomes.len() >= 450, "{what}: only {} requests", outcomes.len());
        assert!(failed.is_empty(), "{what}: {:?}", &failed[..failed.len().min(5)]);
    }
    for (what, child, pod, listener) in
        [("gateway", &mut at_gateway, &gateway, "gateway"), ("sidecar", &mut at_sidecar, &shopper, "outbound")]
    {
        anyhow::ensure!(
            child.wait_timeout(Duration::from_secs(30))?.is_some(),
            "the slowloris at the {what} did not end"
        );
        let line = std::fs::read_to_string(child.log_path())?
            .lines()
            .find(|l| l.starts_with('{'))
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("the slowloris printed nothing: {}", child.log()))?;
        let report: serde_json::Value = serde_json::from_str(&line)?;
        let times: Vec<f64> =
            report["seconds_to_close"].as_array().into_iter().flatten().filter_map(serde_json::Value::as_f64).collect();
        let last = times.last().copied().unwrap_or(f64::INFINITY);
        println!(
            "slowloris at the {what}: {} connections, {} closed by the proxy, the last after {last:.1} s (timeout {TIMEOUT} s)",
            report["opened"], report["closed"]
        );
        assert_eq!(report["closed"], SLOW, "the {what} kept slow connections open: {report}");
        assert!(last <= TIMEOUT as f64 + 2.5, "the {what} took {last:.1} s to close a slow connection");
        let shed = mesh.metric(pod, "weft_proxy_header_read_timeouts_total", &[&format!("listener=\"{listener}\"")])?;
        println!("{what}: weft_proxy_header_read_timeouts_total{{listener=\"{listener}\"}} {shed}");
        assert!(shed >= SLOW as f64, "the {what} counted {shed} header timeouts");
    }
    Ok(())
}
