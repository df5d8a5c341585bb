//! Scale sanity: many objects and many concurrent watchers. Every watcher
//! sees every event, lists stay linear, and the run stays bounded. The
//! defaults are small enough for CI in a debug build;
//! `KUBE_DOUBLE_SCALE=<services>,<routes>,<watchers>` runs the benchmark's
//! sizes (e.g. `5000,10000,100`, best with `--release`).

mod common;

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::runtime::watcher;
use kube_double::{ApiServer, Options};
use serde_json::json;
use std::time::{Duration, Instant};

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
    let server = ApiServer::start(Options::default().with_crd_files([bundle]).unwrap()).unwrap();
    server.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})).unwrap();

    let t = Instant::now();
    for i in 0..services {
        server
            .create(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
                           "spec": {"selector": {"app": format!("a{i}")}, "ports": [{"port": 80}]}}))
            .unwrap();
    }
    let services_took = t.elapsed();

    let client = server.client("bench").await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"), "httproutes");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
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
    let t = Instant::now();
    for i in 0..routes {
        server
            .create(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                           "metadata": {"name": format!("r-{i}"), "namespace": "bench"},
                           "spec": {"parentRefs": [{"kind": "Service", "group": "", "name": format!("svc-{}", i % services.max(1))}],
                                    "rules": [{"backendRefs": [{"name": format!("svc-{}", i % services.max(1)), "port": 80}]}]}}))
            .unwrap();
    }
    let routes_took = t.elapsed();
    for t in tasks {
        assert_eq!(t.await.unwrap(), routes, "a watcher missed events");
    }
    let watch_took = t.elapsed();
    let t = Instant::now();
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), routes);
    let list_took = t.elapsed();
    let paged = api.list(&ListParams::default().limit(500)).await.unwrap();
    assert_eq!(paged.items.len(), 500.min(routes));
    eprintln!(
        "scale: {services} services in {services_took:?}; {routes} routes in {routes_took:?}; \
         {watchers} watchers saw all in {watch_took:?}; full list in {list_took:?}"
    );
}
