//! Cross-mesh gateways with real proxies in network namespaces: a client
//! in mesh `a` reaches a Service of mesh `b` through a gateway whose
//! MeshGatewayConfig says `crossMesh: true` (its sidecar speaks mTLS with
//! its mesh-`a` certificate and verifies the gateway with mesh `b`'s trust
//! bundle; the gateway accepts clients of every mesh and reaches the
//! backend over mesh `b`'s mTLS), while a gateway of mesh `b` that is not
//! cross-mesh refuses the same client at the handshake: the client gets a
//! 5xx, the gateway logs and counts the refusal.

use std::net::SocketAddr;
use std::time::Duration;

use weft_e2e::mesh::{Mesh, PodSpec};

const MANIFESTS: &str = "
apiVersion: weft.io/v1alpha1
kind: Mesh
metadata: {name: a}
spec:
  mtls: {mode: Strict}
---
apiVersion: weft.io/v1alpha1
kind: Mesh
metadata: {name: b}
spec:
  mtls: {mode: Strict}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.io/mesh: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: store, labels: {weft.io/mesh: b}}
---
apiVersion: weft.io/v1alpha1
kind: MeshGatewayConfig
metadata: {name: cross}
spec:
  crossMesh: true
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft-cross}
spec:
  controllerName: weft.io/gateway-controller
  parametersRef: {group: weft.io, kind: MeshGatewayConfig, name: cross}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec:
  controllerName: weft.io/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: store}
spec:
  gatewayClassName: weft-cross
  listeners:
  - {name: web, protocol: HTTP, port: 8080}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: private, namespace: store}
spec:
  gatewayClassName: weft
  listeners:
  - {name: web, protocol: HTTP, port: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: store, namespace: store}
spec:
  clusterIP: 10.96.80.10
  selector: {app: store}
  ports: [{name: http, port: 9080, appProtocol: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: public, namespace: store}
spec:
  parentRefs: [{name: public}]
  rules:
  - backendRefs: [{name: store, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: private, namespace: store}
spec:
  parentRefs: [{name: private}]
  rules:
  - backendRefs: [{name: store, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: public-gw, namespace: store}
spec:
  clusterIP: 10.96.80.21
  selector: {app: public-gw}
  ports: [{name: http, port: 8080, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: private-gw, namespace: store}
spec:
  clusterIP: 10.96.80.22
  selector: {app: private-gw}
  ports: [{name: http, port: 8080, appProtocol: http}]
";

fn endpoint_ips(dump: &serde_json::Value, key: &str) -> Vec<String> {
    dump["endpoints"][key]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["ip"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_cross_mesh_gateway_serves_another_meshs_client_and_a_plain_gateway_refuses_it() -> anyhow::Result<()> {
    let mut mesh = Mesh::start("cross-mesh", &[("mesh.yaml", MANIFESTS)])?;
    let store = mesh.add_pod(&PodSpec::new("store-1", "store").mesh("b").label("app", "store").port("http", 9080))?;
    let public =
        mesh.add_pod(&PodSpec::new("public-gw-1", "store").mesh("b").gateway("public").label("app", "public-gw"))?;
    let private =
        mesh.add_pod(&PodSpec::new("private-gw-1", "store").mesh("b").gateway("private").label("app", "private-gw"))?;
    let shopper = mesh.add_pod(&PodSpec::new("shopper", "shop").mesh("a").label("app", "shopper"))?;
    for pod in [&store, &public, &private, &shopper] {
        mesh.wait_for_certificate(pod, Duration::from_secs(30))?;
    }
    // The client of mesh `a` holds both gateways' Services (they front
    // gateway proxies) and mesh `b`'s trust bundle.
    mesh.wait_for_config(&shopper, "the gateways of mesh b", Duration::from_secs(30), |d| {
        endpoint_ips(d, "ep/store/public-gw") == [public.ip().to_string()]
            && endpoint_ips(d, "ep/store/private-gw") == [private.ip().to_string()]
    })?;
    let dump = mesh.config_dump(&shopper)?;
    println!("mesh a client: own mesh {}, federated {}", dump["mesh"]["trust_domain"], dump["mesh"]["federated"]);
    // It does not hold mesh b's own Services.
    anyhow::ensure!(dump["services"]["svc/store/store"].is_null(), "a Service of mesh b leaked into mesh a");
    for pod in [&public, &private] {
        mesh.wait_for_config(pod, "the store's endpoint", Duration::from_secs(30), |d| {
            endpoint_ips(d, "ep/store/store") == [store.ip().to_string()]
        })?;
    }

    // Through the cross-mesh gateway: every request answered by mesh b's store.
    let outcomes = mesh.load(&shopper, "10.96.80.21:8080".parse::<SocketAddr>()?, "public-gw.store:8080", 50, 4.0)?;
    let failed: Vec<_> = outcomes.iter().filter(|o| o.status != 200).collect();
    println!("mesh a → cross-mesh gateway of mesh b → store: {} requests, {} failed", outcomes.len(), failed.len());
    anyhow::ensure!(outcomes.len() >= 150, "only {} requests", outcomes.len());
    anyhow::ensure!(failed.is_empty(), "{:?}", &failed[..failed.len().min(3)]);
    anyhow::ensure!(
        outcomes.iter().all(|o| o.pod.as_deref() == Some("store-1")),
        "not every request reached store-1: {:?}",
        outcomes.iter().find(|o| o.pod.as_deref() != Some("store-1"))
    );
    let cross = mesh.metric(&public, "weft_proxy_tls_connections_total", &["gateway", "mtls_cross_mesh"])?;
    anyhow::ensure!(cross >= 1.0, "the cross-mesh gateway did not count a mesh-a client over mTLS");
    let mtls_out = mesh.metric(&shopper, "weft_proxy_tls_connections_total", &["outbound", "\"mtls\""])?;
    anyhow::ensure!(mtls_out >= 1.0, "the client's sidecar did not use mTLS");

    // Through the gateway that is not cross-mesh: refused at the handshake.
    let outcomes = mesh.load(&shopper, "10.96.80.22:8080".parse::<SocketAddr>()?, "private-gw.store:8080", 10, 2.0)?;
    let served = outcomes.iter().filter(|o| o.status == 200).count();
    println!(
        "mesh a → gateway of mesh b that is not cross-mesh: {} requests, {served} served; first answer: {} {:?}",
        outcomes.len(),
        outcomes.first().map_or(0, |o| o.status),
        outcomes.first().and_then(|o| o.error.clone())
    );
    anyhow::ensure!(!outcomes.is_empty() && served == 0, "a client of mesh a got through a plain gateway of mesh b");
    anyhow::ensure!(outcomes.iter().all(|o| o.status >= 500 || o.status == 0), "{:?}", outcomes.first());
    let refused = mesh.metric(&private, "weft_proxy_tls_connections_total", &["gateway", "client_refused"])?;
    anyhow::ensure!(refused >= 1.0, "the refusal is not counted at the gateway");
    let log = std::fs::read_to_string(private.log_file("proxy"))?;
    anyhow::ensure!(log.contains("mesh client refused"), "the refusal is not logged by the gateway");
    println!("private gateway: {refused} mesh clients refused at the handshake (logged)");

    // Clients outside any mesh still reach both gateways in plaintext.
    let outsider = mesh.add_pod(&PodSpec::new("outsider", "store").without_sidecar())?;
    for gw in [&public, &private] {
        let outcomes = mesh.load(&outsider, SocketAddr::new(gw.ip().into(), 8080), "store.example", 20, 1.0)?;
        anyhow::ensure!(outcomes.iter().all(|o| o.status == 200), "{}: {:?}", gw.name(), outcomes.first());
    }
    Ok(())
}
