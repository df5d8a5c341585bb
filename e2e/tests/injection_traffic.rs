//! Injected pods carrying real traffic: each pod is created through the
//! API (the webhook injects it), then run in a network namespace exactly as
//! its injected spec says — `weft-init`'s command, then the sidecar's
//! command, environment and projected ServiceAccount token. The proxies
//! get their certificates through TokenReviews and carry the canary split;
//! tokens that do not prove the pod's identity are refused, visibly.

mod support;

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
        "apiVersion: weft.io/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec:\n  mtls: {mode: Strict}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: bookinfo, labels: {weft.io/sidecar-injection: enabled}}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: reviews, namespace: bookinfo}\n---\n",
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
fn injected_pods_get_certificates_through_token_reviews_and_carry_the_split() -> anyhow::Result<()> {
    let mut mesh = Mesh::start_kubernetes("inject-canary")?;
    mesh.kube()?.install_webhook()?;
    mesh.kube()?.apply(&manifests())?;
    std::thread::sleep(Duration::from_secs(1));
    let mut pods = Vec::new();
    let mut server_stored = serde_json::Value::Null;
    for (name, version) in [("reviews-v1-a", "v1"), ("reviews-v2-a", "v2")] {
        let mut spec =
            PodSpec::new(name, "bookinfo").label("app", "reviews").label("version", version).port("http", 9080);
        spec.service_account = "reviews".into();
        let (pod, stored) = mesh.add_injected_pod(&spec, None)?;
        pods.push(pod);
        if version == "v1" {
            server_stored = stored;
        }
    }
    let (client, stored) =
        mesh.add_injected_pod(&PodSpec::new("productpage-a", "bookinfo").label("app", "productpage"), None)?;
    assert_eq!(stored["spec"]["initContainers"][1]["name"], "weft-proxy");
    pods.push(client.clone());
    for pod in &pods {
        mesh.wait_ready_and_report(pod, "bookinfo", Duration::from_secs(30))?;
        mesh.wait_for_certificate(pod, Duration::from_secs(30))?;
    }
    mesh.wait_for_config(&client, "endpoints of both versions and the 90/10 route", Duration::from_secs(30), |d| {
        let ids = |svc: &str| {
            d["endpoints"][format!("ep/bookinfo/{svc}")]["endpoints"]
                .as_array()
                .map(|a| a.iter().filter_map(|e| e["identity"].as_str().map(str::to_owned)).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        ids("reviews-v1") == ["spiffe://default.weft.local/ns/bookinfo/sa/reviews"]
            && ids("reviews-v2") == ["spiffe://default.weft.local/ns/bookinfo/sa/reviews"]
    })?;
    let dump = mesh.config_dump(&client)?;
    assert_eq!(dump["certificate"]["identity"], "spiffe://default.weft.local/ns/bookinfo/sa/default");

    let vip = SocketAddr::new(REVIEWS_VIP.parse()?, 9080);
    let outcomes = mesh.load(&client, vip, "reviews.bookinfo:9080", 200, 5.0)?;
    assert!(outcomes.len() >= 990, "only {} requests were sent", outcomes.len());
    assert!(failures(&outcomes).is_empty(), "failed: {:?}", &failures(&outcomes)[..failures(&outcomes).len().min(5)]);
    let s = shares(&outcomes, &["reviews-v1", "reviews-v2"]);
    println!(
        "injected pods, 90/10 route under strict mTLS: {} requests, v1 {:.1} %, v2 {:.1} %",
        outcomes.len(),
        s[0] * 100.0,
        s[1] * 100.0
    );
    assert!((s[0] - 0.90).abs() <= 0.03, "v1 share {:.3}", s[0]);

    // Prometheus scrapes each proxy on the pod's address at the port the
    // injected annotations name (left out of the capture, so a plaintext
    // scrape works under Strict mTLS); the exposition passes promtool.
    for (pod, stored) in [(&pods[0], &server_stored), (&client, &stored)] {
        let annotations = &stored["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{annotations}");
        let port: u16 = annotations["prometheus.io/port"].as_str().unwrap_or_default().parse()?;
        let path = annotations["prometheus.io/path"].as_str().unwrap_or_default();
        let (content_type, text) = support::scrape(SocketAddr::new(pod.ip().into(), port), path, "*/*")?;
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
        // Both ends count the mTLS connections the traffic made.
        assert!(text.contains("weft_proxy_tls_connections_total{"), "{}:\n{text}", pod.name());
        let lint = support::promtool_check(pod.name(), &text)?;
        println!(
            "{}: /metrics on {}:{port}: {} families, promtool check metrics: clean",
            pod.name(),
            pod.ip(),
            lint.families
        );
        let (content_type, _) =
            support::scrape(SocketAddr::new(pod.ip().into(), port), path, support::PROMETHEUS_ACCEPT)?;
        assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
        // Nothing but metrics there: the config dump stays on loopback.
        assert!(support::scrape(SocketAddr::new(pod.ip().into(), port), "/config_dump", "*/*").is_err());
    }

    // Tokens that do not prove the pod's identity: refused by the control
    // plane, counted and logged, and the proxy gets no certificate.
    let kube = mesh.kube()?;
    let other_sa = kube.api.issue_token("bookinfo", "reviews", &["weft.io/identity"], Duration::from_secs(3600), None);
    let expired = kube.api.issue_token("bookinfo", "default", &["weft.io/identity"], Duration::from_secs(1), None);
    let no_audience = kube.api.issue_token(
        "bookinfo",
        "default",
        &["https://kubernetes.default.svc"],
        Duration::from_secs(3600),
        None,
    );
    // A token bound to another pod (as a projected token is): it proves the
    // right ServiceAccount, but only for that pod.
    let victim_uid = kube
        .api
        .get("v1", "Pod", "bookinfo", "productpage-a")
        .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow::anyhow!("no uid for pod productpage-a"))?;
    let stolen = kube.api.issue_token(
        "bookinfo",
        "default",
        &["weft.io/identity"],
        Duration::from_secs(3600),
        Some(("productpage-a", &victim_uid)),
    );
    std::thread::sleep(Duration::from_secs(2));
    let cp = mesh.kube()?.control_planes[0].admin_addr;
    let refused_before = refused(cp)?;
    let mut impostors = Vec::new();
    for (name, token) in
        [("other-sa-a", other_sa), ("expired-a", expired), ("no-audience-a", no_audience), ("stolen-a", stolen)]
    {
        let (pod, _) = mesh.add_injected_pod(&PodSpec::new(name, "bookinfo").label("app", "impostor"), Some(token))?;
        impostors.push(pod);
    }
    std::thread::sleep(Duration::from_secs(8));
    for pod in &impostors {
        let dump = mesh.config_dump(pod)?;
        assert!(dump["certificate"].is_null(), "{} got a certificate: {}", pod.name(), dump["certificate"]);
    }
    let refused_after = refused(cp)?;
    println!("refused signing requests: {refused_before:?} before, {refused_after:?} after the impostors");
    // None of them opens a config stream (the proxy presents the same token
    // there first), so none gets as far as asking for a certificate: the
    // other ServiceAccount's token is refused as a mismatch with the pod's
    // ServiceAccount, the expired and audience-less ones do not verify, and
    // the token bound to productpage-a does not speak for stolen-a.
    assert_eq!(refused_after, refused_before, "a signing request was refused: the stream should have been");
    let streams = refused_streams(cp)?;
    println!("refused config streams: {streams:?}");
    assert!(
        streams.get("other_service_account").copied().unwrap_or(0.0) >= 1.0,
        "the other ServiceAccount's token was not refused"
    );
    assert!(
        streams.get("bad_token").copied().unwrap_or(0.0) >= 2.0,
        "the expired and audience-less tokens were not refused"
    );
    assert!(streams.get("other_pod").copied().unwrap_or(0.0) >= 1.0, "another pod's token was accepted for this one");
    let log = std::fs::read_to_string(mesh.kube()?.dir.join("weft-cp-0.log"))?;
    assert!(log.contains("the token proves ServiceAccount"), "the mismatch's reason is not in the log");
    assert!(log.contains("config stream refused"), "no refused stream in the control plane's log");
    assert!(
        log.contains("invalid for the target audiences") || log.contains("is not for the audience"),
        "the audience-less token's reason is not in the log"
    );
    assert!(log.contains("has expired"), "the expired token's reason is not in the log");
    // Traffic still flows.
    let outcomes = mesh.load(&client, vip, "reviews.bookinfo:9080", 100, 2.0)?;
    assert!(failures(&outcomes).is_empty());
    Ok(())
}

/// `weft_cp_config_streams_refused_total` by reason.
fn refused_streams(admin: SocketAddr) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    by_reason(admin, "weft_cp_config_streams_refused_total{")
}

/// `weft_cp_certificates_refused_total` by reason.
fn refused(admin: SocketAddr) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    by_reason(admin, "weft_cp_certificates_refused_total{")
}

fn by_reason(admin: SocketAddr, prefix: &str) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2))?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: weft-cp\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?.to_string();
            Some((reason, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect())
}
