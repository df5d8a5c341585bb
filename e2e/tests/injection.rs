//! Sidecar injection against the API-server double: the double calls the
//! control plane's webhook over HTTPS, verifying it with the `caBundle` of
//! the MutatingWebhookConfiguration, when a pod is created — as the real
//! API server does. Pods and the configuration are applied with the real
//! kubectl.

use std::time::{Duration, Instant};

use serde_json::Value;
use weft_e2e::kube::Kube;

const WAIT: Duration = Duration::from_secs(20);

fn pod(name: &str, namespace: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}}}\nspec:\n  containers:\n  - name: app\n    image: example/app:1\n    ports: [{{name: http, containerPort: 8080}}]\n    readinessProbe:\n      httpGet: {{path: /ready, port: http}}\n"
    )
}

fn init_containers(pod: &Value) -> Vec<String> {
    pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

fn ca_bundles(kube: &Kube) -> anyhow::Result<Vec<String>> {
    let mwc = kube.get("mutatingwebhookconfiguration", None, "weft-injector")?.expect("the configuration");
    Ok(mwc["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| w["clientConfig"]["caBundle"].as_str().unwrap_or("").to_string())
        .collect())
}

fn start() -> anyhow::Result<Kube> {
    let mut kube = Kube::start("injection", None)?;
    kube.start_control_plane("weft-cp-0", 6, None, None)?;
    kube.install_webhook()?;
    kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {weft.io/sidecar-injection: enabled}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: legacy}\n")?;
    let cp_ca = ca_bundles(&kube)?;
    assert_eq!(cp_ca.len(), 2);
    assert!(!cp_ca[0].is_empty() && cp_ca[0] == cp_ca[1]);
    // The control plane must have seen the namespaces before pods come.
    kube.wait_for("the namespaces in the control plane's index", WAIT, |k| {
        let view = k.control_planes[0].kubernetes()?;
        Ok((view["synced"] == true).then_some(()))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(kube)
}

#[test]
fn pods_are_injected_where_enabled_and_left_alone_elsewhere() -> anyhow::Result<()> {
    let mut kube = start()?;

    // A pod of an enabled namespace: stored with the proxy.
    kube.apply(&pod("web", "shop", "app: web"))?;
    let web = kube.get("pod", Some("shop"), "web")?.expect("the pod");
    assert_eq!(init_containers(&web), vec!["weft-init", "weft-proxy"], "{web}");
    assert_eq!(web["metadata"]["labels"]["weft.io/mesh"], "default");
    assert_eq!(web["spec"]["initContainers"][1]["restartPolicy"], "Always");
    // Its probe goes through the proxy's health port.
    assert_eq!(web["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"], 15021);
    let token = &web["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "weft-identity-token")
        .unwrap()["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "weft.io/identity");

    // Opted out, another namespace, or asked for by the pod itself.
    kube.apply(&pod("batch", "shop", "app: batch, weft.io/sidecar-injection: disabled"))?;
    kube.apply(&pod("plain", "legacy", "app: plain"))?;
    kube.apply(&pod("chosen", "legacy", "app: chosen, weft.io/sidecar-injection: enabled"))?;
    for (ns, name, injected) in [("shop", "batch", false), ("legacy", "plain", false), ("legacy", "chosen", true)] {
        let p = kube.get("pod", Some(ns), name)?.expect("the pod");
        assert_eq!(!init_containers(&p).is_empty(), injected, "{ns}/{name}: {p}");
    }
    // A pod with a generated name (as a ReplicaSet creates them).
    let (ok, out, err) = kube.kubectl_with(
        &["create", "-f", "-", "-o", "json"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {generateName: web-, namespace: shop}\nspec:\n  containers: [{name: app, image: example/app:1}]\n"),
    )?;
    assert!(ok, "{err}");
    let generated: Value = serde_json::from_str(&out)?;
    assert_eq!(init_containers(&generated), vec!["weft-init", "weft-proxy"]);

    // A pod whose injection settings are wrong is refused, naming them.
    let (ok, _, err) = kube.kubectl_with(
        &["apply", "--server-side", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: typo, namespace: shop, annotations: {weft.io/exclude-inbound-ports: \"80,http\"}}\nspec:\n  containers: [{name: app, image: example/app:1}]\n"),
    )?;
    assert!(!ok && err.contains("weft.io/exclude-inbound-ports"), "{err}");
    let admissions = kube.control_planes[0].metric("weft_cp_injector_admissions_total", &["kind=\"injected\""])?;
    assert_eq!(admissions, 3.0);

    // A pod that got past injection (created while the webhook was set to
    // Ignore and down, say; here written straight into the store) is
    // flagged: counted, listed, and an Event on it.
    let missed: Value = serde_saphyr::from_str(&pod("missed", "shop", "app: web"))?;
    kube.api.create(missed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let listed = kube.wait_for("the unmeshed pod flagged", WAIT, |k| {
        let view = k.control_planes[0].kubernetes()?;
        Ok(view["uninjected_pods"].as_array().filter(|a| !a.is_empty()).cloned())
    })?;
    assert_eq!(listed, vec![Value::from("shop/missed")]);
    assert_eq!(kube.control_planes[0].metric("weft_cp_uninjected_pods", &[])?, 1.0);
    let event = kube.wait_for("the NotMeshed event", WAIT, |k| {
        let events = k.list("events.events.k8s.io", Some("shop"), None)?;
        Ok(events.into_iter().find(|e| e["reason"] == "NotMeshed" && e["regarding"]["name"] == "missed"))
    })?;
    assert_eq!(event["type"], "Warning");
    Ok(())
}

#[test]
fn an_overwritten_ca_bundle_is_repaired_and_a_dead_webhook_fails_closed() -> anyhow::Result<()> {
    let mut kube = start()?;
    let good = ca_bundles(&kube)?;
    // A chart re-apply writes a stale bundle.
    let stale = r#"[{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": "c3RhbGU="}]"#;
    kube.kubectl(&["patch", "mutatingwebhookconfiguration", "weft-injector", "--type", "json", "-p", stale])?;
    let broken = Instant::now();
    kube.wait_for("the caBundle repaired", WAIT, |k| Ok((ca_bundles(k)? == good).then_some(())))?;
    let repaired = broken.elapsed();
    println!("an overwritten caBundle was repaired in {repaired:?}");
    assert!(repaired < Duration::from_secs(10));
    kube.apply(&pod("after-repair", "shop", "app: web"))?;
    let p = kube.get("pod", Some("shop"), "after-repair")?.expect("the pod");
    assert_eq!(init_containers(&p), vec!["weft-init", "weft-proxy"]);

    // The control plane is gone: failurePolicy Fail refuses pods that would
    // need the webhook (never run unmeshed by accident); namespaces the
    // webhook excludes keep working.
    kube.control_planes[0].process.signal("KILL")?;
    kube.control_planes.clear();
    let (ok, _, err) =
        kube.kubectl_with(&["apply", "--server-side", "-f", "-"], Some(&pod("while-down", "shop", "app: web")))?;
    assert!(!ok, "a pod was admitted without the webhook");
    assert!(err.contains("failed calling webhook"), "{err}");
    assert!(kube.get("pod", Some("shop"), "while-down")?.is_none());
    for ns in ["kube-system", "weft-system", "legacy"] {
        kube.apply(&pod("unaffected", ns, "app: x"))?;
        let p = kube.get("pod", Some(ns), "unaffected")?.expect("the pod");
        assert!(init_containers(&p).is_empty());
    }
    Ok(())
}
