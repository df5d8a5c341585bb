//! Fault injection seen from kube-rs: injected statuses become
//! `kube::Error::Api` with the code, reason and Retry-After; faults can be
//! scoped to one user; watches resume after a drop; delay adds latency.

mod common;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube_double::{ApiServer, FaultScope, Options};
use serde_json::json;
use std::time::{Duration, Instant};

fn code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn injected_statuses_delays_and_scopes() {
    let server = ApiServer::start(Options::default()).unwrap();
    // kube 4.2 clients retry 429/503/504 (up to 15 times): a transient 503
    // is invisible to the caller ...
    let retrying = server.client("controller").await.unwrap();
    server.fail_next(2, 503);
    server.clear_recorded();
    Api::<ConfigMap>::namespaced(retrying, "default").list(&Default::default()).await.unwrap();
    let codes: Vec<u16> = server.recorded().iter().map(|r| r.code).collect();
    assert_eq!(codes, vec![503, 503, 200]);

    // ... so the rest uses a client without retries, to see each status.
    let mut cfg = server.config("controller").await.unwrap();
    cfg.default_retry = false;
    let client = kube::Client::try_from(cfg).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    server.fail_next(2, 503);
    assert_eq!(code(api.list(&Default::default()).await.unwrap_err()), (503, "ServiceUnavailable".to_string()));
    assert_eq!(code(api.get("x").await.unwrap_err()), (503, "ServiceUnavailable".to_string()));
    api.list(&Default::default()).await.unwrap();

    server.fail_nth(2, 500);
    api.list(&Default::default()).await.unwrap();
    assert_eq!(code(api.list(&Default::default()).await.unwrap_err()).0, 500);
    api.list(&Default::default()).await.unwrap();

    // 429 with Retry-After, over raw HTTP.
    server.fail_next(1, 429);
    let (c, body) = common::http(&server, "GET", "/api/v1/namespaces", None, "");
    assert_eq!(c, 429);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "TooManyRequests");

    // Scoped to one user: kubectl (another user) is unaffected.
    server.fail_for_scoped(
        FaultScope { user: Some("controller".into()), ..Default::default() },
        Duration::from_millis(300),
        500,
    );
    let other = server.client("kubectl-user").await.unwrap();
    Api::<ConfigMap>::namespaced(other, "default").list(&Default::default()).await.unwrap();
    assert_eq!(code(api.list(&Default::default()).await.unwrap_err()).0, 500);
    tokio::time::sleep(Duration::from_millis(350)).await;
    api.list(&Default::default()).await.unwrap();

    // Delay.
    server.delay(Duration::from_millis(300));
    let t = Instant::now();
    api.list(&Default::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
    server.delay(Duration::ZERO);
    let t = Instant::now();
    api.list(&Default::default()).await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(300));

    // Failed requests are recorded with their code.
    assert!(server.recorded().iter().any(|r| r.code == 503 && r.user == "controller"));
    server.clear_recorded();
    assert!(server.recorded().is_empty());
}

#[tokio::test]
async fn watches_resume_after_drops_under_faults() {
    let server = ApiServer::start(Options::default()).unwrap();
    let client = server.client("controller").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    let mut created = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 5 && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            Ok(Some(Ok(watcher::Event::Apply(cm)))) => seen.push(cm.metadata.name.unwrap()),
            Ok(Some(_)) => {}
            Ok(None) => panic!("watcher ended"),
            Err(_) => {
                if created < 5 {
                    server.drop_watches();
                    let cm: ConfigMap =
                        serde_json::from_value(json!({"metadata": {"name": format!("c{created}")}})).unwrap();
                    api.create(&PostParams::default(), &cm).await.unwrap();
                    created += 1;
                }
            }
        }
    }
    assert_eq!(seen, vec!["c0", "c1", "c2", "c3", "c4"]);
}
