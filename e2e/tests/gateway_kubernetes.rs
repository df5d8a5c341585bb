//! A provisioned gateway carrying real traffic: the control plane in
//! Kubernetes mode provisions the Gateway's Deployment and Service; a
//! replica of that Deployment runs in a network namespace exactly as its
//! pod template says (command, environment, projected token, sysctl);
//! backends are injected pods in a strict-mTLS mesh; a load balancer
//! address is given to the Service as a cloud controller would, and the
//! Gateway becomes Programmed with it. A client outside the mesh calls that
//! address.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use weft_e2e::load::{Outcome, shares};
use weft_e2e::mesh::{Mesh, PodSpec};

const MANIFESTS: &str = r#"apiVersion: weft.io/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  mtls: {mode: Strict}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.io/sidecar-injection: enabled}}
---
apiVersion: weft.io/v1alpha1
kind: MeshGatewayConfig
metadata: {name: edge-config}
spec:
  serviceType: LoadBalancer
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec:
  controllerName: weft.io/gateway-controller
  parametersRef: {group: weft.io, kind: MeshGatewayConfig, name: edge-config}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: weft
  listeners:
  - {name: web, protocol: HTTP, port: 80, hostname: store.example}
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
"#;

fn route(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: store, namespace: shop}}\nspec:\n  \
         parentRefs: [{{name: edge}}]\n  rules:\n  - backendRefs:\n    - {{name: store-v1, port: 9080, weight: {v1}}}\n    - {{name: store-v2, port: 9080, weight: {v2}}}\n"
    )
}

fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| o.status != 200).collect()
}

fn condition(gw: &Value, type_: &str) -> Option<Value> {
    gw["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).cloned()
}

#[test]
fn a_provisioned_gateway_serves_outside_clients_once_programmed() -> anyhow::Result<()> {
    let mut mesh = Mesh::start_kubernetes("gateway-kube")?;
    mesh.kube()?.install_webhook()?;
    mesh.kube()?.apply(MANIFESTS)?;
    mesh.kube()?.apply(&route(90, 10))?;
    mesh.kube()?.wait_for("the gateway's Deployment", Duration::from_secs(30), |k| {
        Ok(k.get("deployment", Some("shop"), "edge")?.map(|_| ()))
    })?;
    let mut backends = Vec::new();
    for (name, version) in [("store-v1-a", "v1"), ("store-v2-a", "v2")] {
        let spec = PodSpec::new(name, "shop").label("app", "store").label("version", version).port("http", 9080);
        backends.push(mesh.add_injected_pod(&spec, None)?.0);
    }
    for pod in &backends {
        mesh.wait_ready_and_report(pod, "shop", Duration::from_secs(30))?;
    }
    let gateway = mesh.add_gateway_replica("shop", "edge", "edge-7d9f-a")?;
    mesh.wait_ready_and_report(&gateway, "shop", Duration::from_secs(30))?;

    // Not programmed until the Service has an address.
    let gw = mesh.kube()?.get("gateway", Some("shop"), "edge")?.expect("the gateway");
    assert_eq!(condition(&gw, "Programmed").map(|c| c["status"].clone()), Some(json!("False")), "{}", gw["status"]);
    // The cloud's load balancer sends to the gateway's pod.
    let lb = gateway.ip().to_string();
    let ingress = json!({"status": {"loadBalancer": {"ingress": [{"ip": lb}]}}});
    mesh.kube()?.api.patch_status("v1", "Service", "shop", "edge", ingress).map_err(|e| anyhow::anyhow!("{e}"))?;
    mesh.kube()?.wait_for("the Gateway programmed with the load balancer's address", Duration::from_secs(30), |k| {
        let g = k.get("gateway", Some("shop"), "edge")?.expect("the gateway");
        let programmed = condition(&g, "Programmed").is_some_and(|c| c["status"] == "True");
        Ok((programmed && g["status"]["addresses"] == json!([{"type": "IPAddress", "value": lb}])).then_some(()))
    })?;
    let instance = mesh.kube()?.get("meshgatewayinstance", Some("shop"), "edge")?.expect("the instance");
    assert_eq!(instance["status"]["readyReplicas"], 1);
    assert_eq!(instance["status"]["conditions"][0]["status"], "True");

    let client = mesh.add_pod(&PodSpec::new("outsider", "shop").without_sidecar())?;
    let address = SocketAddr::new(lb.parse()?, 80);
    mesh.wait_for_config(&gateway, "the route on the gateway", Duration::from_secs(30), |d| {
        d["gateways"].as_object().is_some_and(|g| !g.is_empty())
    })?;
    let outcomes = mesh.load(&client, address, "store.example", 200, 5.0)?;
    assert!(failures(&outcomes).is_empty(), "failed: {:?}", &failures(&outcomes)[..failures(&outcomes).len().min(5)]);
    let s = shares(&outcomes, &["store-v1", "store-v2"]);
    println!(
        "provisioned gateway, 90/10: {} requests, v1 {:.1} %, v2 {:.1} %",
        outcomes.len(),
        s[0] * 100.0,
        s[1] * 100.0
    );
    assert!((s[0] - 0.90).abs() <= 0.03, "v1 share {:.3}", s[0]);

    let load = mesh.start_load(&client, address, "store.example", 200, 8.0)?;
    std::thread::sleep(Duration::from_secs(2));
    let changed_ms = load.started.elapsed().as_millis() as u64;
    mesh.kube()?.apply(&route(50, 50))?;
    let outcomes = load.finish()?;
    assert!(failures(&outcomes).is_empty(), "{} requests failed during the change", failures(&outcomes).len());
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.at_ms >= changed_ms + 2_000).collect();
    let s = shares(after.iter().copied(), &["store-v1", "store-v2"]);
    println!(
        "kubectl apply of 50/50 through the gateway: v1 {:.1} % of {} requests after it, none failed",
        s[0] * 100.0,
        after.len()
    );
    assert!((s[0] - 0.5).abs() <= 0.08);
    Ok(())
}
