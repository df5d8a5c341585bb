//! Gateways on Kubernetes: a GatewayClass whose MeshGatewayConfig says how
//! gateway proxies run, and a Gateway of that class, become a
//! ServiceAccount, a Deployment and a Service in the API-server double,
//! read back with the real kubectl and compared with a golden file
//! (`tests/golden/gateway-provisioning.yaml`; `WEFT_BLESS=1` rewrites it).
//! A change of the config reaches them; a load balancer's address (set as a
//! cloud controller would) becomes the Gateway's address; deleting the
//! Gateway removes them.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use weft_e2e::kube::Kube;

const WAIT: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"apiVersion: weft.io/v1alpha1
kind: MeshGatewayConfig
metadata: {name: edge-config}
spec:
  replicas: 2
  serviceType: LoadBalancer
  serviceTemplate:
    metadata:
      annotations: {service.beta.kubernetes.io/aws-load-balancer-type: nlb}
      labels: {team: storefront}
    spec: {externalTrafficPolicy: Local, loadBalancerClass: example.com/lb}
  podTemplate:
    metadata:
      labels: {team: storefront}
      annotations: {prometheus.io/scrape: "true"}
    spec:
      nodeSelector: {node-role.example.com/edge: "true"}
      tolerations:
      - {key: dedicated, operator: Equal, value: edge, effect: NoSchedule}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector: {matchLabels: {weft.io/gateway-instance: edge}}
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway,
         labelSelector: {matchLabels: {weft.io/gateway-instance: edge}}}
      priorityClassName: edge-critical
      imagePullSecrets: [{name: registry-credentials}]
  resources:
    requests: {cpu: 250m, memory: 64Mi}
    limits: {memory: 256Mi}
  patches:
    deployment:
      spec:
        revisionHistoryLimit: 3
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec:
  controllerName: weft.io/gateway-controller
  parametersRef: {group: weft.io, kind: MeshGatewayConfig, name: edge-config}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: weft
  infrastructure:
    labels: {cost-center: web}
    annotations: {owner: storefront-team}
  listeners:
  - {name: web, protocol: HTTP, port: 80, hostname: store.example}
  - {name: admin, protocol: HTTP, port: 8080, hostname: admin.example}
"#;

/// Fields the API server (or the double) owns: not part of what Weft wrote.
fn normalize(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in ["uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"] {
            meta.remove(f);
        }
        if let Some(owners) = meta.get_mut("ownerReferences").and_then(Value::as_array_mut) {
            for o in owners {
                o.as_object_mut().map(|o| o.remove("uid"));
            }
        }
    }
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
    }
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "sessionAffinity", "internalTrafficPolicy"]
        {
            spec.remove(f);
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                p.as_object_mut().map(|p| p.remove("nodePort"));
            }
        }
    }
    v
}

fn provisioned(kube: &Kube) -> anyhow::Result<Option<String>> {
    let mut out = String::new();
    for kind in ["serviceaccount", "deployment", "service"] {
        let Some(obj) = kube.get(kind, Some("shop"), "edge")? else { return Ok(None) };
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&normalize(obj))?);
    }
    Ok(Some(out))
}

fn is_true(conditions: &Value, type_: &str) -> Option<bool> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_).map(|c| c["status"] == "True")
}

#[test]
fn a_gateway_becomes_a_deployment_and_service_shaped_by_its_class() -> anyhow::Result<()> {
    let mut kube = Kube::start("provisioning", Some("v1.5.1-experimental"))?;
    kube.start_control_plane("weft-cp-0", 6, None, None)?;
    kube.apply(CONFIG)?;
    let actual = kube.wait_for("the gateway's ServiceAccount, Deployment and Service", WAIT, provisioned)?;
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/gateway-provisioning.yaml");
    if std::env::var_os("WEFT_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap())?;
        std::fs::write(&golden, &actual)?;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_default();
    if expected != actual {
        let diff = similar::TextDiff::from_lines(&expected, &actual);
        panic!("{}", diff.unified_diff().context_radius(3).header("golden", "kubectl get -o yaml"));
    }

    // The config changes: the Deployment follows.
    kube.apply(&CONFIG.replace("  replicas: 2\n", "  replicas: 3\n").replace(
        "      - {key: dedicated, operator: Equal, value: edge, effect: NoSchedule}\n",
        "      - {key: dedicated, operator: Equal, value: edge, effect: NoSchedule}\n      - {key: spot, operator: Exists}\n",
    ))?;
    kube.wait_for("the Deployment updated", WAIT, |k| {
        let d = k.get("deployment", Some("shop"), "edge")?.expect("the deployment");
        let tolerations = d["spec"]["template"]["spec"]["tolerations"].as_array().map(Vec::len);
        Ok((d["spec"]["replicas"] == 3 && tolerations == Some(2)).then_some(()))
    })?;

    // No address yet: not programmed, and the Gateway says why.
    let gw = kube.get("gateway", Some("shop"), "edge")?.expect("the gateway");
    assert_eq!(is_true(&gw["status"]["conditions"], "Programmed"), Some(false), "{}", gw["status"]);
    // A cloud controller gives the Service a load balancer.
    let ingress = json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}});
    kube.api.patch_status("v1", "Service", "shop", "edge", ingress).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gw = kube.wait_for("the load balancer's address on the Gateway", WAIT, |k| {
        let g = k.get("gateway", Some("shop"), "edge")?.expect("the gateway");
        Ok((g["status"]["addresses"] == json!([{"type": "IPAddress", "value": "203.0.113.10"}])).then_some(g))
    })?;
    // The address alone does not make it programmed: no gateway proxy runs.
    assert_eq!(is_true(&gw["status"]["conditions"], "Programmed"), Some(false));
    let instance = kube.wait_for("the MeshGatewayInstance's status", WAIT, |k| {
        let i = k.get("meshgatewayinstance", Some("shop"), "edge")?.expect("the instance");
        Ok((i["status"]["addresses"][0]["value"] == "203.0.113.10").then_some(i))
    })?;
    assert_eq!(instance["status"]["conditions"][0]["reason"], "NoReadyReplicas");

    // Deleting the Gateway removes everything made for it.
    kube.kubectl(&["delete", "gateway", "edge", "-n", "shop"])?;
    kube.wait_for("the gateway's objects gone", WAIT, |k| {
        let left = ["serviceaccount", "deployment", "service", "meshgatewayinstance"]
            .iter()
            .filter(|kind| k.get(kind, Some("shop"), "edge").ok().flatten().is_some())
            .count();
        Ok((left == 0).then_some(()))
    })?;
    Ok(())
}

#[test]
fn an_invalid_config_gives_the_class_invalid_parameters_and_nothing_is_applied() -> anyhow::Result<()> {
    let mut kube = Kube::start("provisioning-invalid", Some("v1.5.1-experimental"))?;
    kube.start_control_plane("weft-cp-0", 6, None, None)?;
    kube.apply(&CONFIG.replace("  replicas: 2\n", "  replicas: 2\n  autoscaling: {minReplicas: 5, maxReplicas: 2}\n"))?;
    let class = kube.wait_for("the class's condition", WAIT, |k| {
        let c = k.get("gatewayclass", None, "weft")?.expect("the class");
        let accepted =
            c["status"]["conditions"].as_array().and_then(|a| a.iter().find(|c| c["type"] == "Accepted").cloned());
        // Until Weft writes, the CRD's default says Unknown/Pending.
        Ok(accepted.filter(|a| a["status"] != "Unknown"))
    })?;
    assert_eq!(class["status"], "False");
    assert_eq!(class["reason"], "InvalidParameters");
    assert!(class["message"].as_str().unwrap().contains("spec.autoscaling.maxReplicas"), "{class}");
    std::thread::sleep(Duration::from_secs(2));
    for kind in ["serviceaccount", "deployment", "service", "meshgatewayinstance"] {
        assert!(kube.get(kind, Some("shop"), "edge")?.is_none(), "a {kind} was made for a rejected class");
    }
    Ok(())
}
