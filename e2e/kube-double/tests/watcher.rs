//! The real kube-runtime watcher and reflector against the double: initial
//! list, live events, resumption after dropped watches without a relist, a
//! relist after compaction (410), bookmarks, selectors, streaming lists,
//! metadata-only watches and DeserializeGuard.

mod common;

use common::next;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube_double::{ApiServer, Options};
use serde_json::json;
use std::time::Duration;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

fn server() -> ApiServer {
    ApiServer::start(Options { bookmark_interval: Duration::from_millis(200), ..Default::default() }).unwrap()
}

/// Forwards a watcher's events (as short strings) into a channel.
fn spawn_watch<K>(
    stream: impl futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
) -> tokio::sync::mpsc::UnboundedReceiver<String>
where
    K: kube::Resource + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(ev) = s.next().await {
            let line = match ev {
                Ok(watcher::Event::Init) => "Init".to_string(),
                Ok(watcher::Event::InitApply(o)) => format!("InitApply {}", o.meta().name.clone().unwrap_or_default()),
                Ok(watcher::Event::InitDone) => "InitDone".to_string(),
                Ok(watcher::Event::Apply(o)) => format!("Apply {}", o.meta().name.clone().unwrap_or_default()),
                Ok(watcher::Event::Delete(o)) => format!("Delete {}", o.meta().name.clone().unwrap_or_default()),
                Err(e) => format!("Error {e}"),
            };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

async fn expect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, want: &str) {
    loop {
        let got = next(rx, want).await;
        if got == want {
            return;
        }
        assert!(
            got.starts_with("Error") || got.starts_with("InitApply") || got == "Init",
            "expected {want}, got {got}"
        );
    }
}

#[tokio::test]
async fn watcher_resumes_after_dropped_watches_and_relists_after_compaction() {
    let server = server();
    let client = server.client("controller").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("a", json!({}))).await.unwrap();

    let mut rx = spawn_watch(watcher(api.clone(), watcher::Config::default()));
    assert_eq!(next(&mut rx, "Init").await, "Init");
    assert_eq!(next(&mut rx, "InitApply a").await, "InitApply a");
    assert_eq!(next(&mut rx, "InitDone").await, "InitDone");

    api.create(&PostParams::default(), &cm("b", json!({}))).await.unwrap();
    assert_eq!(next(&mut rx, "Apply b").await, "Apply b");

    // Dropped watches resume from the last resourceVersion: no relist.
    server.clear_recorded();
    server.drop_watches();
    api.create(&PostParams::default(), &cm("c", json!({}))).await.unwrap();
    expect(&mut rx, "Apply c").await;
    let rec = server.recorded();
    assert!(rec.iter().any(|r| r.user == "controller" && r.verb == "watch" && r.resource == "configmaps"), "{rec:?}");
    assert!(!rec.iter().any(|r| r.verb == "list" && r.resource == "configmaps"), "no relist expected: {rec:?}");

    // Compacted history: the resumed watch gets 410 and the watcher relists.
    server.clear_recorded();
    server.compact_history();
    server.drop_watches();
    expect(&mut rx, "InitDone").await;
    let rec = server.recorded();
    assert!(rec.iter().any(|r| r.user == "controller" && r.verb == "list" && r.resource == "configmaps"), "{rec:?}");
    api.create(&PostParams::default(), &cm("d", json!({}))).await.unwrap();
    expect(&mut rx, "Apply d").await;
}

#[tokio::test]
async fn too_old_resource_version_is_http_200_then_an_error_event() {
    let server = server();
    let client = server.client("c").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = api.create(&PostParams::default(), &cm("a", json!({}))).await.unwrap();
    let rv = created.metadata.resource_version.unwrap();
    server.compact_history();
    let mut stream = api.watch(&WatchParams::default(), &rv).await.expect("HTTP 200").boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(s))) => {
            assert_eq!(s.code, 410);
            assert_eq!(s.reason, "Expired");
        }
        other => panic!("expected an ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_and_label_selector_transitions() {
    let server = server();
    let client = server.client("c").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let list = api.list(&Default::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let wp = WatchParams::default().labels("app=web").timeout(10);
    let mut stream = api.watch(&wp, &rv).await.unwrap().boxed();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            let s = match ev {
                Ok(WatchEvent::Added(o)) => format!("ADDED {}", o.metadata.name.unwrap()),
                Ok(WatchEvent::Modified(o)) => format!("MODIFIED {}", o.metadata.name.unwrap()),
                Ok(WatchEvent::Deleted(o)) => format!("DELETED {}", o.metadata.name.unwrap()),
                Ok(WatchEvent::Bookmark(b)) => format!("BOOKMARK {}", b.metadata.resource_version),
                Ok(WatchEvent::Error(e)) => format!("ERROR {}", e.code),
                Err(e) => format!("ERR {e}"),
            };
            let _ = tx.send(s);
        }
    });
    // A bookmark arrives on its own.
    let first = next(&mut rx, "bookmark").await;
    assert!(first.starts_with("BOOKMARK"), "{first}");
    server.create(serde_json::to_value(cm("other", json!({"app": "api"}))).unwrap()).unwrap();
    server.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w", "namespace": "default", "labels": {"app": "web"}}})).unwrap();
    assert_eq!(next_non_bookmark(&mut rx).await, "ADDED w");
    server.patch("v1", "ConfigMap", "default", "w", json!({"metadata": {"labels": {"app": "api"}}})).unwrap();
    assert_eq!(next_non_bookmark(&mut rx).await, "DELETED w");
    server.patch("v1", "ConfigMap", "default", "w", json!({"metadata": {"labels": {"app": "web"}}})).unwrap();
    assert_eq!(next_non_bookmark(&mut rx).await, "ADDED w");
    server.patch("v1", "ConfigMap", "default", "w", json!({"data": {"x": "y"}})).unwrap();
    assert_eq!(next_non_bookmark(&mut rx).await, "MODIFIED w");
    server.delete("v1", "ConfigMap", "default", "w").unwrap();
    assert_eq!(next_non_bookmark(&mut rx).await, "DELETED w");
}

async fn next_non_bookmark(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    loop {
        let e = next(rx, "event").await;
        if !e.starts_with("BOOKMARK") {
            return e;
        }
    }
}

#[tokio::test]
async fn reflector_with_selector_streaming_lists_and_metadata_watch() {
    let server = server();
    let client = server.client("c").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("in", json!({"app": "web"}))).await.unwrap();
    api.create(&PostParams::default(), &cm("out", json!({"app": "db"}))).await.unwrap();

    // Reflector with a label selector, using streaming lists.
    let (reader, writer) = reflector::store();
    let stream =
        reflector(writer, watcher(api.clone(), watcher::Config::default().labels("app in (web)").streaming_lists()));
    tokio::spawn(stream.default_backoff().for_each(|_| async {}));
    tokio::time::timeout(Duration::from_secs(10), reader.wait_until_ready()).await.unwrap().unwrap();
    let names: Vec<String> = reader.state().iter().map(|o| o.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, vec!["in".to_string()]);
    api.create(&PostParams::default(), &cm("in2", json!({"app": "web"}))).await.unwrap();
    common::eventually("reflector sees in2", || (reader.state().len() == 2).then_some(())).await;
    assert!(server.recorded().iter().any(|r| r.verb == "watch" && r.resource == "configmaps"));

    // Metadata-only watch of Namespaces.
    let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let mut rx = spawn_watch(watcher(ns_api, watcher::Config::default()));
    assert_eq!(next(&mut rx, "Init").await, "Init");
    let mut names = Vec::new();
    loop {
        let e = next(&mut rx, "namespaces").await;
        if e == "InitDone" {
            break;
        }
        names.push(e);
    }
    names.sort();
    assert_eq!(
        names,
        vec!["InitApply default", "InitApply kube-node-lease", "InitApply kube-public", "InitApply kube-system"]
    );
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap())
        .await
        .unwrap();
    assert_eq!(next(&mut rx, "Apply team").await, "Apply team");
    let meta_list = Api::<Namespace>::all(client.clone()).list_metadata(&Default::default()).await.unwrap();
    let team = meta_list.items.iter().find(|m| m.metadata.name.as_deref() == Some("team")).unwrap();
    assert_eq!(team.metadata.labels.as_ref().unwrap()["kubernetes.io/metadata.name"], "team");
    assert_eq!(team.types.as_ref().unwrap().kind, "PartialObjectMetadata");
}

#[tokio::test]
async fn deserialize_guard_surfaces_one_bad_object_without_failing_the_watch() {
    let server = server();
    let client = server.client("c").await.unwrap();
    // The double keeps unknown or mistyped fields of built-in kinds, so an
    // object that does not decode as a ConfigMap can be stored.
    server.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad", "namespace": "default"}, "data": {"k": 1}})).unwrap();
    server.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "good", "namespace": "default"}, "data": {"k": "1"}})).unwrap();
    let api: Api<DeserializeGuard<ConfigMap>> = Api::namespaced(client, "default");
    let mut s = watcher(api, watcher::Config::default()).boxed();
    let (mut good, mut bad) = (0, 0);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.next()).await.unwrap().unwrap().unwrap() {
            watcher::Event::InitApply(DeserializeGuard(Ok(cm))) => {
                assert_eq!(cm.metadata.name.as_deref(), Some("good"));
                good += 1;
            }
            watcher::Event::InitApply(DeserializeGuard(Err(invalid))) => {
                assert_eq!(invalid.metadata.name.as_deref(), Some("bad"));
                bad += 1;
            }
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!((good, bad), (1, 1));
}

#[tokio::test]
async fn timeout_seconds_ends_the_stream_cleanly() {
    let server = server();
    let client = server.client("c").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = api.list(&Default::default()).await.unwrap().metadata.resource_version.unwrap();
    let t = std::time::Instant::now();
    let mut stream = api.watch(&WatchParams::default().timeout(1).disable_bookmarks(), &rv).await.unwrap().boxed();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("the stream ends by itself");
    assert!(end.is_none(), "a clean end, not {end:?}");
    assert!(t.elapsed() >= Duration::from_millis(900), "{:?}", t.elapsed());
}
