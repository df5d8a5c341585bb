//! Kubernetes mode against the API-server double: the real `weft-cp`
//! binary, objects applied with the real `kubectl apply --server-side` and
//! read back with `kubectl get -o json`. Everything listens on loopback.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_e2e::kube::{Kube, is_write};

const WAIT: Duration = Duration::from_secs(20);
const CONTROLLER: &str = "weft.io/gateway-controller";

/// The GAMMA canary: clients of `reviews` get 90 % v1, 10 % v2.
fn canary(v1: u32, v2: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: bookinfo}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: bookinfo}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080, appProtocol: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: reviews-v1, namespace: bookinfo}}
spec:
  selector: {{app: reviews, version: v1}}
  ports: [{{name: http, port: 9080, appProtocol: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: reviews-v2, namespace: bookinfo}}
spec:
  selector: {{app: reviews, version: v2}}
  ports: [{{name: http, port: 9080, appProtocol: http}}]
---
{}"#,
        canary_route(v1, v2)
    )
}

fn canary_route(v1: u32, v2: u32) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: reviews-canary, namespace: bookinfo}}
spec:
  parentRefs: [{{group: "", kind: Service, name: reviews, port: 9080}}]
  rules:
  - backendRefs:
    - {{name: reviews-v1, port: 9080, weight: {v1}}}
    - {{name: reviews-v2, port: 9080, weight: {v2}}}
"#
    )
}

const GATEWAY: &str = r#"apiVersion: weft.io/v1alpha1
kind: MeshGatewayConfig
metadata: {name: edge-config}
spec:
  replicas: 2
  serviceType: LoadBalancer
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
  listeners:
  - {name: web, protocol: HTTP, port: 8080, hostname: store.example}
---
apiVersion: v1
kind: Service
metadata: {name: store, namespace: shop}
spec:
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
"#;

fn condition<'a>(conditions: &'a Value, type_: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_)
}

fn is_true(conditions: &Value, type_: &str) -> bool {
    condition(conditions, type_).is_some_and(|c| c["status"] == "True")
}

/// Weft's generated objects of `kind` made from the object `origin` (name).
fn generated(kube: &Kube, kind: &str, origin_kind: &str, origin: &str) -> anyhow::Result<Vec<Value>> {
    kube.list(kind, None, Some(&format!("weft.io/origin-kind={origin_kind},weft.io/origin-name={origin}")))
}

/// Weights of a generated MeshHTTPRoute's first rule.
fn weights(route: &Value) -> Vec<(String, i64)> {
    route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| (b["name"].as_str().unwrap_or("").to_string(), b["weight"].as_i64().unwrap_or(1)))
        .collect()
}

fn wait_for_weights(kube: &mut Kube, v1: i64, v2: i64, timeout: Duration) -> anyhow::Result<()> {
    kube.wait_for(&format!("the generated route to carry {v1}/{v2}"), timeout, |k| {
        let routes = generated(k, "meshhttproutes", "HTTPRoute", "reviews-canary")?;
        Ok(routes
            .first()
            .filter(|r| weights(r) == vec![("reviews-v1".to_string(), v1), ("reviews-v2".to_string(), v2)])
            .map(|_| ()))
    })
}

fn non_lease_writes(kube: &Kube, user: &str) -> Vec<String> {
    kube.writes_by(user)
        .into_iter()
        .filter(|r| r.resource != "leases")
        .map(|r| format!("{} {}/{} {}/{}", r.verb, r.resource, r.subresource, r.namespace, r.name))
        .collect()
}

#[test]
fn canary_and_gateway_produce_generated_objects_and_statuses() -> anyhow::Result<()> {
    let mut kube = Kube::start("generated", Some("v1.5.1-experimental"))?;
    kube.start_control_plane("weft-cp-0", 6, None, None)?;
    kube.apply(&canary(90, 10))?;
    kube.apply(GATEWAY)?;
    // Another controller's entry on the route, written as that controller
    // would (a merge patch of status), racing Weft's own write.
    let other = json!({"parents": [{
        "controllerName": "example.com/other-controller",
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "other-gw"},
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "mine",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
    }]});
    kube.api
        .patch_status(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "bookinfo",
            "reviews-canary",
            json!({"status": other}),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // The GAMMA route: generated MeshHTTPRoute, labelled and owned.
    let route = kube.get("httproute", Some("bookinfo"), "reviews-canary")?.expect("the route");
    let gen_route = kube.wait_for("the generated MeshHTTPRoute", WAIT, |k| {
        Ok(generated(k, "meshhttproutes", "HTTPRoute", "reviews-canary")?.into_iter().next())
    })?;
    let labels = &gen_route["metadata"]["labels"];
    assert_eq!(labels["weft.io/origin-namespace"], "bookinfo");
    assert_eq!(labels["weft.io/mesh"], "default");
    let owner = &gen_route["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), owner["uid"].as_str()), (Some("HTTPRoute"), route["metadata"]["uid"].as_str()));
    assert_eq!(owner["controller"], true);
    assert_eq!(weights(&gen_route), vec![("reviews-v1".into(), 90), ("reviews-v2".into(), 10)]);
    let gen_name = gen_route["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let shown: Value = serde_json::from_str(&kube.kubectl(&[
        "get",
        "meshhttproute",
        &gen_name,
        "-n",
        "bookinfo",
        "--show-managed-fields",
        "-o",
        "json",
    ])?)?;
    let managers: Vec<&str> = shown["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["operation"] == "Apply")
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, vec!["weft-control-plane"], "{shown}");

    // Its status: Weft's entry next to the other controller's.
    let status = kube.wait_for("both controllers' entries in the route status", WAIT, |k| {
        let r = k.get("httproute", Some("bookinfo"), "reviews-canary")?.expect("the route");
        let parents = r["status"]["parents"].as_array().cloned().unwrap_or_default();
        let ours = parents.iter().find(|p| p["controllerName"] == CONTROLLER).cloned();
        let theirs = parents.iter().any(|p| p["controllerName"] == "example.com/other-controller");
        Ok(ours.filter(|_| theirs).map(|o| (o, r["metadata"]["generation"].clone())))
    })?;
    let (ours, generation) = status;
    assert!(is_true(&ours["conditions"], "Accepted"), "{ours}");
    assert!(is_true(&ours["conditions"], "ResolvedRefs"), "{ours}");
    assert_eq!(condition(&ours["conditions"], "Accepted").unwrap()["observedGeneration"], generation);
    assert_eq!(ours["parentRef"]["kind"], "Service");

    // The Gateway side: class accepted, Gateway accepted, MeshGateway
    // (cluster-scoped: no owner) and MeshGatewayInstance (owned) generated
    // with the class's MeshGatewayConfig, and a MeshHTTPRoute for the route.
    kube.wait_for("the GatewayClass accepted", WAIT, |k| {
        let c = k.get("gatewayclass", None, "weft")?.expect("the class");
        Ok(is_true(&c["status"]["conditions"], "Accepted").then_some(()))
    })?;
    let gateway = kube.wait_for("the Gateway accepted", WAIT, |k| {
        let g = k.get("gateway", Some("shop"), "edge")?.expect("the gateway");
        Ok(is_true(&g["status"]["conditions"], "Accepted").then_some(g))
    })?;
    let listener = &gateway["status"]["listeners"][0];
    assert_eq!(listener["name"], "web");
    assert_eq!(listener["attachedRoutes"], 1, "{gateway}");
    let mesh_gateway = kube.wait_for("the generated MeshGateway", WAIT, |k| {
        Ok(generated(k, "meshgateways", "Gateway", "edge")?.into_iter().next())
    })?;
    assert!(mesh_gateway["metadata"]["ownerReferences"].is_null(), "a cluster-scoped object has no namespaced owner");
    let instance = kube.wait_for("the generated MeshGatewayInstance", WAIT, |k| {
        Ok(generated(k, "meshgatewayinstances", "Gateway", "edge")?.into_iter().next())
    })?;
    assert_eq!(instance["metadata"]["ownerReferences"][0]["uid"], gateway["metadata"]["uid"]);
    assert_eq!(instance["spec"]["replicas"], 2, "{instance}");
    assert_eq!(instance["spec"]["serviceType"], "LoadBalancer", "{instance}");
    assert_eq!(instance["spec"]["ports"], json!([8080]));
    let store_route = kube.wait_for("the generated route of the Gateway's HTTPRoute", WAIT, |k| {
        Ok(generated(k, "meshhttproutes", "HTTPRoute", "store")?.into_iter().next())
    })?;
    assert_eq!(store_route["spec"]["targetRef"]["kind"], "MeshGateway");

    // A while later the other controller's entry is still there.
    std::thread::sleep(Duration::from_secs(2));
    let r = kube.get("httproute", Some("bookinfo"), "reviews-canary")?.expect("the route");
    let controllers: Vec<&str> =
        r["status"]["parents"].as_array().unwrap().iter().filter_map(|p| p["controllerName"].as_str()).collect();
    assert_eq!(controllers, vec!["example.com/other-controller", CONTROLLER]);
    Ok(())
}

#[test]
fn deleted_sources_edited_outputs_and_handwritten_routes() -> anyhow::Result<()> {
    let mut kube = Kube::start("lifecycle", Some("v1.5.1-experimental"))?;
    kube.start_control_plane("weft-cp-0", 6, None, None)?;
    kube.apply(&canary(90, 10))?;
    kube.apply(GATEWAY)?;
    let handwritten = r#"apiVersion: weft.io/v1alpha1
kind: MeshHTTPRoute
metadata: {name: by-hand, namespace: bookinfo}
spec:
  targetRef: {kind: Mesh}
  to: [{kind: Service, name: reviews-v2, port: 9080}]
  rules:
  - backendRefs: [{kind: Service, name: reviews-v2, namespace: bookinfo, port: 9080}]
"#;
    kube.apply(handwritten)?;
    wait_for_weights(&mut kube, 90, 10, WAIT)?;
    let before = kube.get("meshhttproute", Some("bookinfo"), "by-hand")?.expect("the hand-written route");

    // An edit of a generated object is reverted.
    let gen_name = generated(&kube, "meshhttproutes", "HTTPRoute", "reviews-canary")?[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let edit = r#"{"spec":{"rules":[{"backendRefs":[{"kind":"Service","name":"reviews-v2","namespace":"bookinfo","port":9080,"weight":100}]}]}}"#;
    kube.kubectl(&["patch", "meshhttproute", &gen_name, "-n", "bookinfo", "--type", "merge", "-p", edit])?;
    let edited = Instant::now();
    wait_for_weights(&mut kube, 90, 10, WAIT)?;
    println!("an edited generated route was restored in {:?}", edited.elapsed());

    // The hand-written route keeps its spec; Weft writes only its status.
    let accepted = kube.wait_for("the hand-written route's status", WAIT, |k| {
        let r = k.get("meshhttproute", Some("bookinfo"), "by-hand")?.expect("the route");
        Ok(condition(&r["status"]["conditions"], "Accepted").cloned().map(|c| (c, r)))
    })?;
    assert_eq!(accepted.1["spec"], before["spec"]);
    let touched: Vec<String> = kube
        .writes_by("weft-cp-0")
        .into_iter()
        .filter(|r| r.name == "by-hand" && r.subresource != "status")
        .map(|r| format!("{} {}", r.verb, r.path))
        .collect();
    assert!(touched.is_empty(), "Weft wrote the hand-written route: {touched:?}");

    // Deleting the Gateway removes its cluster-scoped MeshGateway (no owner
    // reference can reach it: Weft's sweep deletes it) and the rest.
    kube.kubectl(&["delete", "gateway", "edge", "-n", "shop"])?;
    kube.wait_for("the Gateway's generated objects to be gone", WAIT, |k| {
        let left = generated(k, "meshgateways", "Gateway", "edge")?.len()
            + generated(k, "meshgatewayinstances", "Gateway", "edge")?.len();
        Ok((left == 0).then_some(()))
    })?;
    let swept = kube.writes_by("weft-cp-0").into_iter().any(|r| r.verb == "delete" && r.resource == "meshgateways");
    assert!(swept, "the MeshGateway was not deleted by Weft");

    // Deleting the HTTPRoute removes its MeshHTTPRoute.
    kube.kubectl(&["delete", "httproute", "reviews-canary", "-n", "bookinfo"])?;
    kube.wait_for("the generated MeshHTTPRoute to be gone", WAIT, |k| {
        Ok(generated(k, "meshhttproutes", "HTTPRoute", "reviews-canary")?.is_empty().then_some(()))
    })?;
    assert!(kube.get("meshhttproute", Some("bookinfo"), "by-hand")?.is_some(), "the hand-written route was deleted");
    Ok(())
}

/// The HTTPRoute CRD of a newer bundle: a filter type Weft's types do not
/// know yet (as Gateway API releases add them).
fn crd_with_future_filter() -> anyhow::Result<String> {
    let crds = kube_double::read_crds(&weft_e2e::kube::gateway_api_crds("v1.5.1-experimental"))?;
    let crd = crds
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some("httproutes.gateway.networking.k8s.io"))
        .expect("the HTTPRoute CRD");
    let mut v = serde_json::to_value(crd)?;
    for version in v["spec"]["versions"].as_array_mut().expect("versions") {
        let schema = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["rules"]["items"]["properties"]
            ["filters"]["items"];
        let types = schema["properties"]["type"]["enum"].as_array_mut().expect("the filter type enum");
        types.push(json!("FutureFilter"));
        // The CEL rules tie each filter field to its type and would refuse
        // the new type (here and on a real server): drop them.
        if let Some(o) = schema.as_object_mut() {
            o.remove("x-kubernetes-validations");
        }
    }
    for field in ["resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"] {
        v["metadata"].as_object_mut().expect("metadata").remove(field);
    }
    v.as_object_mut().expect("a CRD").remove("status");
    Ok(v.to_string())
}

#[test]
fn an_unreadable_object_is_reported_and_the_others_still_translate() -> anyhow::Result<()> {
    let mut kube = Kube::start("invalid", Some("v1.5.1-experimental"))?;
    kube.start_control_plane("weft-cp-0", 6, None, None)?;
    kube.apply(&canary(90, 10))?;
    wait_for_weights(&mut kube, 90, 10, WAIT)?;
    let (ok, out, err) = kube
        .kubectl_with(&["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&crd_with_future_filter()?))?;
    assert!(ok, "{err}{out}");
    let future = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: future, namespace: bookinfo}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews-v1, port: 9080}]
  rules:
  - filters: [{type: FutureFilter}]
    backendRefs: [{name: reviews-v1, port: 9080}]
"#;
    kube.apply(future)?;
    // A later change of another route is still translated.
    kube.apply(&canary_route(70, 30))?;
    wait_for_weights(&mut kube, 70, 30, WAIT)?;
    let report = kube.wait_for("the unreadable route reported", WAIT, |k| {
        let view = k.control_planes[0].kubernetes()?;
        Ok(view["invalid"].as_array().and_then(|a| a.first()).cloned())
    })?;
    assert_eq!(report["kind"], "HTTPRoute");
    assert_eq!(report["object"], "bookinfo/future");
    assert!(report["error"].as_str().unwrap().contains("FutureFilter"), "{report}");
    let gauge = kube.control_planes[0].metric("weft_cp_kube_invalid_objects", &["kind=\"HTTPRoute\""])?;
    assert_eq!(gauge, 1.0);
    assert!(generated(&kube, "meshhttproutes", "HTTPRoute", "future")?.is_empty());
    // Fixed: no longer reported, translated.
    kube.apply(&future.replace("  - filters: [{type: FutureFilter}]\n    backendRefs", "  - backendRefs"))?;
    kube.wait_for("the fixed route translated", WAIT, |k| {
        let view = k.control_planes[0].kubernetes()?;
        let gone = view["invalid"].as_array().is_some_and(|a| a.is_empty());
        Ok((gone && !generated(k, "meshhttproutes", "HTTPRoute", "future")?.is_empty()).then_some(()))
    })?;
    Ok(())
}

#[test]
fn gateway_api_crds_installed_after_start_are_served_without_a_restart() -> anyhow::Result<()> {
    let mut kube = Kube::start("late-crds", None)?;
    kube.start_control_plane("weft-cp-0", 6, None, None)?;
    let pid = kube.control_planes[0].process.pid();
    kube.wait_for("the control plane synced without the Gateway API", WAIT, |k| {
        let view = k.control_planes[0].kubernetes()?;
        Ok((view["synced"] == true && view["served"].get("HTTPRoute").is_none()).then_some(()))
    })?;
    // The real bundle file, applied as users install it.
    let bundle = weft_e2e::kube::gateway_api_crds("v1.5.1-experimental");
    kube.kubectl(&["apply", "--server-side", "-f", bundle.to_str().unwrap()])?;
    let installed = Instant::now();
    kube.apply(&canary(90, 10))?;
    wait_for_weights(&mut kube, 90, 10, Duration::from_secs(60))?;
    println!("Gateway API CRDs installed after start: a route was translated {:?} later", installed.elapsed());
    let view = kube.control_planes[0].kubernetes()?;
    assert_eq!(view["served"]["TLSRoute"], "gateway.networking.k8s.io/v1");
    assert_eq!(view["served"]["ReferenceGrant"], "gateway.networking.k8s.io/v1");
    assert_eq!(kube.control_planes[0].process.pid(), pid);
    kube.control_planes[0].process.ensure_running()?;

    // Removing a CRD removes what came from it.
    kube.kubectl(&["delete", "crd", "httproutes.gateway.networking.k8s.io"])?;
    kube.wait_for("the generated route of a kind no longer served to be gone", Duration::from_secs(60), |k| {
        Ok(generated(k, "meshhttproutes", "HTTPRoute", "reviews-canary")?.is_empty().then_some(()))
    })?;
    Ok(())
}

#[test]
fn an_older_gateway_api_bundle_is_read_at_the_versions_it_serves() -> anyhow::Result<()> {
    let mut kube = Kube::start("old-bundle", Some("v1.4.1-experimental"))?;
    kube.start_control_plane("weft-cp-0", 6, None, None)?;
    let view = kube.wait_for("discovery", WAIT, |k| {
        let view = k.control_planes[0].kubernetes()?;
        Ok((view["synced"] == true).then_some(view))
    })?;
    assert_eq!(view["served"]["TLSRoute"], "gateway.networking.k8s.io/v1alpha3", "{view}");
    assert_eq!(view["served"]["ReferenceGrant"], "gateway.networking.k8s.io/v1beta1", "{view}");
    assert!(view["served"].get("ListenerSet").is_none(), "{view}");
    // A ReferenceGrant read at v1beta1 still grants: a Gateway route to a
    // Service of another namespace resolves.
    kube.apply(GATEWAY)?;
    kube.apply(
        r#"apiVersion: v1
kind: Namespace
metadata: {name: backend}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: backend}
spec:
  selector: {app: api}
  ports: [{name: http, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-shop, namespace: backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]
  to: [{group: "", kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  rules:
  - backendRefs: [{name: api, namespace: backend, port: 9080}]
"#,
    )?;
    kube.wait_for("the cross-namespace route resolved through the v1beta1 grant", WAIT, |k| {
        let r = k.get("httproute", Some("shop"), "api")?.expect("the route");
        let ours = r["status"]["parents"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["controllerName"] == CONTROLLER).cloned());
        Ok(ours.filter(|o| is_true(&o["conditions"], "ResolvedRefs")).map(|_| ()))
    })?;
    Ok(())
}

#[test]
fn dropped_watches_and_expired_history_lose_no_update_and_api_errors_are_survived() -> anyhow::Result<()> {
    let mut kube = Kube::start("faults", Some("v1.5.1-experimental"))?;
    kube.start_control_plane("weft-cp-0", 6, None, None)?;
    kube.apply(&canary(90, 10))?;
    wait_for_weights(&mut kube, 90, 10, WAIT)?;
    // Watches cut while changes happen: each change still arrives.
    for v1 in [80, 70, 60] {
        kube.api.drop_watches();
        kube.apply(&canary_route(v1, 100 - v1))?;
        wait_for_weights(&mut kube, v1 as i64, 100 - v1 as i64, WAIT)?;
    }
    // History gone: watches cannot resume (410) and relist.
    let relists = kube.control_planes[0].metric("weft_cp_kube_relists_total", &["kind=\"HTTPRoute\""])?;
    kube.apply(&canary_route(55, 45))?;
    kube.api.compact_history();
    kube.api.drop_watches();
    kube.apply(&canary_route(50, 50))?;
    wait_for_weights(&mut kube, 50, 50, WAIT)?;
    kube.wait_for("a relist of HTTPRoutes after the 410", WAIT, |k| {
        let now = k.control_planes[0].metric("weft_cp_kube_relists_total", &["kind=\"HTTPRoute\""])?;
        Ok((now > relists).then_some(()))
    })?;

    // 30 s of errors for every request of the control plane; meanwhile a
    // user changes the route. The control plane keeps serving what it has,
    // and recovers by itself.
    let scope = kube_double::FaultScope { user: Some("weft-cp-0".into()), verb: None, resource: None };
    kube.api.fail_for_scoped(scope, Duration::from_secs(30), 500);
    let outage = Instant::now();
    kube.apply(&canary_route(30, 70))?;
    while outage.elapsed() < Duration::from_secs(25) {
        kube.control_planes[0].process.ensure_running()?;
        let served = kube.control_planes[0].get("/api/v1/generated/meshhttproutes")?;
        let items = served["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 1, "the control plane dropped its configuration during the outage: {served}");
        std::thread::sleep(Duration::from_secs(1));
    }
    wait_for_weights(&mut kube, 30, 70, Duration::from_secs(60))?;
    println!("API errors for 30 s: the change made during them was written {:?} after they began", outage.elapsed());
    Ok(())
}

#[test]
fn one_leader_writes_and_a_replica_takes_over_within_the_lease() -> anyhow::Result<()> {
    const LEASE: u32 = 6;
    let mut kube = Kube::start("leader", Some("v1.5.1-experimental"))?;
    kube.start_control_plane("weft-cp-a", LEASE, None, None)?;
    kube.start_control_plane("weft-cp-b", LEASE, None, None)?;
    kube.apply(&canary(90, 10))?;
    kube.apply(GATEWAY)?;
    wait_for_weights(&mut kube, 90, 10, WAIT)?;
    let (leader, follower) = kube.wait_for("exactly one leader", WAIT, |k| {
        let a = k.control_planes[0].is_leader();
        let b = k.control_planes[1].is_leader();
        Ok(match (a, b) {
            (true, false) => Some(("weft-cp-a", "weft-cp-b")),
            (false, true) => Some(("weft-cp-b", "weft-cp-a")),
            _ => None,
        })
    })?;
    // Both translated; only the leader wrote.
    let follower_writes = non_lease_writes(&kube, follower);
    assert!(follower_writes.is_empty(), "the follower wrote: {follower_writes:?}");
    assert!(!non_lease_writes(&kube, leader).is_empty());
    // The follower computes everything too (from its own watches, which
    // may lag the leader's by a moment).
    let started = Instant::now();
    loop {
        let view = kube.control_plane(follower)?.get("/api/v1/generated/meshhttproutes")?;
        let count = view["items"].as_array().map(Vec::len);
        if count == Some(2) {
            break;
        }
        assert!(started.elapsed() < WAIT, "the follower computed {count:?} routes, not 2");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Steady state: 30 s with nothing to write.
    std::thread::sleep(Duration::from_secs(3));
    kube.api.clear_recorded();
    std::thread::sleep(Duration::from_secs(30));
    let all: Vec<_> = kube.api.recorded().into_iter().filter(is_write).collect();
    let leases = all.iter().filter(|r| r.resource == "leases").count();
    let others: Vec<String> = all
        .iter()
        .filter(|r| r.resource != "leases")
        .map(|r| format!("{} {} {}/{}/{}", r.user, r.verb, r.resource, r.subresource, r.name))
        .collect();
    println!("steady 30 s: {} writes besides {leases} Lease renewals", others.len());
    assert!(others.is_empty(), "writes at steady state: {others:?}");

    // The leader dies; the follower takes over and writes.
    kube.control_plane(leader)?.process.signal("KILL")?;
    let killed = Instant::now();
    kube.control_planes.retain(|c| c.name != leader);
    kube.wait_for("the follower to take over", Duration::from_secs(LEASE as u64 * 3), |k| {
        Ok(k.control_planes[0].is_leader().then_some(()))
    })?;
    let takeover = killed.elapsed();
    println!("takeover {takeover:?} after the leader was killed (Lease {LEASE} s)");
    // A follower judges expiry from when it last saw the Lease change, so
    // the bound is the Lease duration plus one follower retry interval.
    assert!(takeover < Duration::from_secs(LEASE as u64) + Duration::from_secs(2), "takeover took {takeover:?}");
    kube.apply(&canary_route(50, 50))?;
    wait_for_weights(&mut kube, 50, 50, WAIT)?;
    assert!(non_lease_writes(&kube, follower).iter().any(|w| w.starts_with("patch meshhttproutes")));
    Ok(())
}
