//! Scale sanity: many objects and many concurrent watchers. Every watcher
//! sees every event and lists stay linear. Most watchers are raw HTTP
//! streams that only count events (measuring the double's fan-out, not
//! client-side decoding); a few are kube-runtime watchers. The defaults are
//! small enough for CI in a debug build;
//! `KUBE_DOUBLE_SCALE=<services>,<routes>,<watchers>` runs other sizes
//! (the benchmark's: `5000,10000,100`).

mod common;

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::runtime::watcher;
use kube_double::{ApiServer, Options};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Counts ADDED events on a raw watch stream until `want` arrived.
async fn raw_watcher(addr: std::net::SocketAddr, want: usize) -> usize {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = "GET /apis/gateway.networking.k8s.io/v1/httproutes?watch=true&allowWatchBookmarks=true HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(s).lines();
    let mut n = 0;
    while n < want {
        match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
            Ok(Ok(Some(l))) => {
                if l.contains("\"type\":\"ADDED\"") {
                    n += 1;
                }
            }
            _ => break,
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_objects_many_watchers() {
    let (services, routes, watchers) = std::env::var("KUBE_DOUBLE_SCALE")
        .ok()
        .and_then(|s| {
            let v: Vec<usize> = s.split(',').filter_map(|x| x.parse().ok()).collect();
            (v.len() == 3).then(|| (v[0], v[1], v[2]))
        })
        .unwrap_or((500, 1000, 20));
    let bundle = common::repo_root().join("third_party/gateway-api-crds/v1.5.1-standard.yaml");
    let server = std::sync::Arc::new(ApiServer::start(Options::default().with_crd_files([bundle]).unwrap()).unwrap());
    server.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})).unwrap();

    let s2 = server.clone();
    let services_took = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        for i in 0..services {
            s2.create(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
                             "spec": {"selector": {"app": format!("a{i}")}, "ports": [{"port": 80}]}}))
                .unwrap();
        }
        t.elapsed()
    })
    .await
    .unwrap();

    let client = server.client("bench").await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let kube_watchers = watchers.min(3);
    let mut raw = Vec::new();
    for _ in kube_watchers..watchers {
        raw.push(tokio::spawn(raw_watcher(server.addr(), routes)));
    }
    let mut typed = Vec::new();
    for _ in 0..kube_watchers {
        let api = api.clone();
        typed.push(tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default()).boxed();
            let mut seen = std::collections::HashSet::new();
            while seen.len() < routes {
                match tokio::time::timeout(Duration::from_secs(60), s.next()).await {
                    Ok(Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)))) => {
                        seen.insert(o.metadata.name.unwrap());
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            seen.len()
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s2 = server.clone();
    let t = Instant::now();
    let routes_took = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        for i in 0..routes {
            let svc = format!("svc-{}", i % services.max(1));
            s2.create(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                             "metadata": {"name": format!("r-{i}"), "namespace": "bench"},
                             "spec": {"parentRefs": [{"kind": "Service", "group": "", "name": svc}],
                                      "rules": [{"backendRefs": [{"name": svc, "port": 80}]}]}}))
                .unwrap();
        }
        t.elapsed()
    })
    .await
    .unwrap();
    for w in raw {
        assert_eq!(w.await.unwrap(), routes, "a raw watcher missed events");
    }
    let raw_took = t.elapsed();
    for w in typed {
        assert_eq!(w.await.unwrap(), routes, "a kube watcher missed events");
    }
    let typed_took = t.elapsed();
    let t = Instant::now();
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), routes);
    let list_took = t.elapsed();
    let paged = api.list(&ListParams::default().limit(500)).await.unwrap();
    assert_eq!(paged.items.len(), 500.min(routes));
    eprintln!(
        "scale: {services} services in {services_took:?}; {routes} routes in {routes_took:?}; \
         {} raw watchers saw all in {raw_took:?}, {kube_watchers} kube watchers in {typed_took:?}; full list in {list_took:?}",
        watchers - kube_watchers
    );
}
