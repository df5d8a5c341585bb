//! The control plane in-process, with gRPC clients standing in for proxies:
//! file changes reach them quickly, invalid input never replaces the last
//! good configuration, NACKs are recorded, reconnects resend nothing, and
//! consumer routes and endpoints are per-namespace and live.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_api as api;
use weft_api::proxy_config_client::ProxyConfigClient;

const WAIT: Duration = Duration::from_secs(5);

/// A client that speaks the config protocol like a proxy would.
struct TestProxy {
    tx: mpsc::Sender<api::ProxyMessage>,
    updates: tonic::Streaming<api::ConfigUpdate>,
    /// Resources held (after applying updates).
    held: BTreeMap<String, api::Resource>,
}

impl TestProxy {
    /// Opens a stream as `workload`, proving its identity with a join token
    /// signed with the control plane's key (in `state`).
    async fn connect(
        addr: std::net::SocketAddr,
        state: &Path,
        workload: api::Workload,
        versions: BTreeMap<String, String>,
    ) -> Self {
        let token = token(state, &workload.namespace, &workload.service_account);
        Self::try_connect(addr, workload, versions, token).await.expect("stream")
    }

    /// Opens a stream with the token given; the control plane's refusal, if
    /// it refuses.
    async fn try_connect(
        addr: std::net::SocketAddr,
        workload: api::Workload,
        versions: BTreeMap<String, String>,
        token: String,
    ) -> Result<Self, tonic::Status> {
        let mut client = ProxyConfigClient::connect(format!("http://{addr}")).await.expect("connect");
        let (tx, rx) = mpsc::channel(16);
        tx.send(api::ProxyMessage {
            message: Some(api::proxy_message::Message::Hello(api::Hello {
                workload: Some(workload),
                versions: versions.into_iter().collect(),
                token,
            })),
        })
        .await
        .unwrap();
        let updates = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        Ok(TestProxy { tx, updates, held: BTreeMap::new() })
    }

    /// Next update, or None when none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<api::ConfigUpdate> {
        match tokio::time::timeout(wait, self.updates.message()).await {
            Ok(Ok(Some(u))) => Some(u),
            _ => None,
        }
    }

    /// Applies and acknowledges the next update; `reject` names resources
    /// to refuse.
    async fn apply_next(&mut self, reject: &[&str]) -> api::ConfigUpdate {
        let u = self.next(WAIT).await.expect("an update");
        let mut rejected = Vec::new();
        for r in &u.resources {
            if reject.contains(&r.name.as_str()) {
                rejected.push(api::Rejection { resource: r.name.clone(), error: "cannot apply this".into() });
            } else {
                self.held.insert(r.name.clone(), r.clone());
            }
        }
        for name in &u.removed {
            self.held.remove(name);
        }
        self.tx
            .send(api::ProxyMessage {
                message: Some(api::proxy_message::Message::Ack(api::Ack { nonce: u.nonce, rejected })),
            })
            .await
            .unwrap();
        u
    }

    /// Applies updates until `check` holds for what is held.
    async fn until(&mut self, check: impl Fn(&BTreeMap<String, api::Resource>) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !check(&self.held) {
            assert!(tokio::time::Instant::now() < deadline, "condition not reached; held: {:?}", self.held.keys());
            self.apply_next(&[]).await;
        }
    }

    fn versions(&self) -> BTreeMap<String, String> {
        self.held.iter().map(|(k, v)| (k.clone(), v.version.clone())).collect()
    }
}

/// A join token for `namespace/service_account`, signed with the control
/// plane's key in `state`.
fn token(state: &Path, namespace: &str, service_account: &str) -> String {
    let key = weft_identity::store::token_key(state).expect("the join-token key");
    key.issue(&weft_identity::Claims {
        mesh: "default".into(),
        namespace: namespace.into(),
        service_account: service_account.into(),
        expires_unix: i64::MAX / 2,
    })
}

fn workload(ns: &str, name: &str, ip: &str, labels: &[(&str, &str)]) -> api::Workload {
    api::Workload {
        name: name.into(),
        namespace: ns.into(),
        service_account: "default".into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ips: vec![ip.into()],
        ports: vec![api::WorkloadPort { name: "http".into(), port: 8080 }],
        mesh: String::new(),
        role: api::Role::Sidecar as i32,
        gateway: String::new(),
    }
}

fn write(dir: &Path, file: &str, text: &str) {
    // Write then rename, as editors and `kubectl`-style tools do, so the
    // watcher never sees half a file.
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(file)).unwrap();
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 8080, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v1, namespace: bookinfo}
spec:
  selector: {app: reviews, version: v1}
  ports: [{name: http, port: 9080, targetPort: 8080, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v2, namespace: bookinfo}
spec:
  selector: {app: reviews, version: v2}
  ports: [{name: http, port: 9080, targetPort: 8080, appProtocol: http}]
"#;

fn split_route(namespace: &str, v1: u32, v2: u32) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: split, namespace: {namespace}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: reviews, namespace: bookinfo, port: 9080}}]
  rules:
  - backendRefs:
    - {{name: reviews-v1, namespace: bookinfo, port: 9080, weight: {v1}}}
    - {{name: reviews-v2, namespace: bookinfo, port: 9080, weight: {v2}}}
"#
    )
}

/// Backend weights of the first rule of the first route on port 9080.
fn weights(held: &BTreeMap<String, api::Resource>) -> Vec<(String, u32)> {
    let Some(api::Resource { kind: Some(api::resource::Kind::Service(svc)), .. }) = held.get("svc/bookinfo/reviews")
    else {
        return Vec::new();
    };
    svc.ports[0].http_routes[0].rules[0].backends.iter().map(|b| (b.service.clone(), b.weight)).collect()
}

/// A control plane on `dir`, with its state directory (kept apart from the
/// watched directory, and removed when the returned guard drops).
async fn start(dir: &Path) -> (weft_cp::Running, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let running = start_with_state(dir, state.path(), Duration::from_secs(20)).await;
    (running, state)
}

/// A control plane on `dir` with the state directory `state` (which may hold
/// what an earlier control plane left there).
async fn start_with_state(dir: &Path, state: &Path, reconnect_grace: Duration) -> weft_cp::Running {
    let running = weft_cp::start(weft_cp::Config {
        source: weft_cp::Source::Local { dir: dir.to_path_buf(), state_dir: state.to_path_buf(), reconnect_grace },
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
    })
    .await
    .unwrap();
    let mut published = running.published.clone();
    tokio::time::timeout(WAIT, published.wait_for(|p| p.loaded)).await.unwrap().unwrap();
    running
}

async fn admin_get(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked or not, the JSON is the one line starting with '{'.
    let json = body.lines().find(|l| l.starts_with('{')).unwrap_or("null");
    serde_json::from_str(json).unwrap_or(serde_json::Value::Null)
}

async fn admin_text(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_reaches_the_proxy_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "services.yaml", SERVICES);
    write(dir.path(), "route.yaml", &split_route("bookinfo", 90, 10));
    let (cp, state) = start(dir.path()).await;
    let mut proxy = TestProxy::connect(
        cp.grpc_addr,
        state.path(),
        workload("frontend", "web-1", "127.0.0.1", &[("app", "web")]),
        BTreeMap::new(),
    )
    .await;
    proxy.until(|h| weights(h).len() == 2).await;
    assert_eq!(
        weights(&proxy.held),
        vec![("svc/bookinfo/reviews-v1".into(), 90), ("svc/bookinfo/reviews-v2".into(), 10)]
    );

    let changed_at = std::time::Instant::now();
    write(dir.path(), "route.yaml", &split_route("bookinfo", 50, 50));
    let update = proxy.apply_next(&[]).await;
    let elapsed = changed_at.elapsed();
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    // Only what changed travels.
    let names: Vec<&str> = update.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["svc/bookinfo/reviews"]);
    assert_eq!(
        weights(&proxy.held),
        vec![("svc/bookinfo/reviews-v1".into(), 50), ("svc/bookinfo/reviews-v2".into(), 50)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_keeps_the_last_good_configuration() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "services.yaml", SERVICES);
    write(dir.path(), "route.yaml", &split_route("bookinfo", 90, 10));
    let (cp, state) = start(dir.path()).await;
    let mut proxy = TestProxy::connect(
        cp.grpc_addr,
        state.path(),
        workload("frontend", "web-1", "127.0.0.1", &[]),
        BTreeMap::new(),
    )
    .await;
    proxy.until(|h| weights(h).len() == 2).await;

    write(
        dir.path(),
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: split, namespace: bookinfo}\nspec:\n  rules: [{backendRefs: [{name: reviews-v1, port: ninety}]}]\n",
    );
    let mut published = cp.published.clone();
    tokio::time::timeout(WAIT, published.wait_for(|p| !p.load_errors.is_empty())).await.unwrap().unwrap();
    // The proxy gets nothing: the file's previous version stays in force.
    assert!(proxy.next(Duration::from_millis(500)).await.is_none());
    assert_eq!(weights(&proxy.held)[0].1, 90);
    // Another file's change is not held back by the broken one.
    write(
        dir.path(),
        "ratings.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: bookinfo}\nspec:\n  clusterIP: 10.96.0.50\n  ports: [{name: http, port: 9080}]\n",
    );
    proxy.until(|h| h.contains_key("svc/bookinfo/ratings")).await;
    assert_eq!(weights(&proxy.held)[0].1, 90);
    let errors = admin_get(cp.admin_addr, "/api/v1/errors").await;
    let first = errors["errors"][0].as_str().unwrap_or("");
    assert!(first.contains("route.yaml") && first.contains("spec.rules[0].backendRefs[0].port"), "{errors}");
    assert!(admin_text(cp.admin_addr, "/metrics").await.contains("weft_cp_load_errors 1"));

    // Fixing the file clears the error and applies the new content.
    write(dir.path(), "route.yaml", &split_route("bookinfo", 20, 80));
    proxy.until(|h| weights(h).first().map(|w| w.1) == Some(20)).await;
    assert!(admin_text(cp.admin_addr, "/metrics").await.contains("weft_cp_load_errors 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_is_recorded_and_the_proxy_keeps_its_version() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "services.yaml", SERVICES);
    write(dir.path(), "route.yaml", &split_route("bookinfo", 90, 10));
    let (cp, state) = start(dir.path()).await;
    let mut proxy = TestProxy::connect(
        cp.grpc_addr,
        state.path(),
        workload("frontend", "web-1", "127.0.0.1", &[]),
        BTreeMap::new(),
    )
    .await;
    proxy.until(|h| weights(h).len() == 2).await;
    let good = proxy.held["svc/bookinfo/reviews"].version.clone();

    write(dir.path(), "route.yaml", &split_route("bookinfo", 30, 70));
    let update = proxy.apply_next(&["svc/bookinfo/reviews"]).await;
    assert_eq!(update.resources[0].name, "svc/bookinfo/reviews");
    assert_eq!(proxy.held["svc/bookinfo/reviews"].version, good, "the proxy kept its previous version");

    // The rejection is visible per proxy and in the metrics.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let proxies = admin_get(cp.admin_addr, "/api/v1/proxies").await;
        let p = &proxies["items"][0];
        if p["rejected"]["svc/bookinfo/reviews"]["error"] == "cannot apply this" {
            assert_ne!(p["rejected"]["svc/bookinfo/reviews"]["version"], good.as_str());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{proxies}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admin_text(cp.admin_addr, "/metrics").await.contains("weft_cp_config_rejections_total 1"));
    // Nothing is resent for the rejected version.
    assert!(proxy.next(Duration::from_millis(300)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_current_versions_receives_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "services.yaml", SERVICES);
    write(dir.path(), "route.yaml", &split_route("bookinfo", 90, 10));
    let (cp, state) = start(dir.path()).await;
    let w = workload("frontend", "web-1", "127.0.0.1", &[]);
    let mut first = TestProxy::connect(cp.grpc_addr, state.path(), w.clone(), BTreeMap::new()).await;
    first.until(|h| weights(h).len() == 2 && h.contains_key("inbound") && h.contains_key("mesh")).await;
    let held = first.versions();
    let resources = first.held.clone();
    drop(first);
    // Wait for the old stream to be gone before reconnecting under its name.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cp.proxies.is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut again = TestProxy::connect(cp.grpc_addr, state.path(), w, held).await;
    again.held = resources;
    assert!(again.next(Duration::from_millis(500)).await.is_none(), "nothing is resent");
    // The stream is live: a change arrives, and only it.
    write(dir.path(), "route.yaml", &split_route("bookinfo", 60, 40));
    let update = again.apply_next(&[]).await;
    assert_eq!(update.resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["svc/bookinfo/reviews"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_routes_win_for_their_namespace_only() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "services.yaml", SERVICES);
    write(dir.path(), "producer.yaml", &split_route("bookinfo", 90, 10));
    write(dir.path(), "consumer.yaml", &split_route("team-a", 0, 100));
    let (cp, state) = start(dir.path()).await;
    let mut a =
        TestProxy::connect(cp.grpc_addr, state.path(), workload("team-a", "client", "127.0.1.1", &[]), BTreeMap::new())
            .await;
    let mut b =
        TestProxy::connect(cp.grpc_addr, state.path(), workload("team-b", "client", "127.0.2.1", &[]), BTreeMap::new())
            .await;
    let mut producer_ns = TestProxy::connect(
        cp.grpc_addr,
        state.path(),
        workload("bookinfo", "productpage", "127.0.3.1", &[]),
        BTreeMap::new(),
    )
    .await;
    a.until(|h| weights(h).len() == 2).await;
    b.until(|h| weights(h).len() == 2).await;
    producer_ns.until(|h| weights(h).len() == 2).await;
    assert_eq!(weights(&a.held), vec![("svc/bookinfo/reviews-v1".into(), 0), ("svc/bookinfo/reviews-v2".into(), 100)]);
    assert_eq!(weights(&b.held), vec![("svc/bookinfo/reviews-v1".into(), 90), ("svc/bookinfo/reviews-v2".into(), 10)]);
    assert_eq!(weights(&producer_ns.held), weights(&b.held));

    // Removing the consumer route sends team-a back to the producer route,
    // and team-b is not sent anything.
    std::fs::remove_file(dir.path().join("consumer.yaml")).unwrap();
    a.until(|h| weights(h).first().map(|w| w.1) == Some(90)).await;
    assert!(b.next(Duration::from_millis(300)).await.is_none());
}

fn endpoint_ips(held: &BTreeMap<String, api::Resource>, name: &str) -> Vec<String> {
    match held.get(name) {
        Some(api::Resource { kind: Some(api::resource::Kind::Endpoints(e)), .. }) => {
            e.endpoints.iter().map(|e| e.ip.clone()).collect()
        }
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_proxies_connecting_and_leaving() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "services.yaml", SERVICES);
    write(
        dir.path(),
        "slice.yaml",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: reviews-legacy, namespace: bookinfo, labels: {kubernetes.io/service-name: reviews-v1}}\naddressType: IPv4\nports: [{name: http, port: 9999}]\nendpoints: [{addresses: [192.0.2.9]}]\n",
    );
    let (cp, state) = start(dir.path()).await;
    let mut client =
        TestProxy::connect(cp.grpc_addr, state.path(), workload("frontend", "web", "127.0.0.1", &[]), BTreeMap::new())
            .await;
    client.until(|h| endpoint_ips(h, "ep/bookinfo/reviews-v1") == ["192.0.2.9"]).await;

    let v1 = TestProxy::connect(
        cp.grpc_addr,
        state.path(),
        workload("bookinfo", "reviews-v1-a", "127.1.0.1", &[("app", "reviews"), ("version", "v1")]),
        BTreeMap::new(),
    )
    .await;
    client.until(|h| endpoint_ips(h, "ep/bookinfo/reviews-v1") == ["127.1.0.1", "192.0.2.9"]).await;
    let e = match &client.held["ep/bookinfo/reviews-v1"].kind {
        Some(api::resource::Kind::Endpoints(e)) => e.clone(),
        _ => unreachable!(),
    };
    let meshed = e.endpoints.iter().find(|e| e.ip == "127.1.0.1").unwrap();
    assert_eq!(meshed.ports.get(&9080), Some(&8080), "target port resolved");
    assert_eq!(meshed.identity, "spiffe://default.weft.local/ns/bookinfo/sa/default");
    assert_eq!(endpoint_ips(&client.held, "ep/bookinfo/reviews"), ["127.1.0.1"]);

    drop(v1);
    client.until(|h| endpoint_ips(h, "ep/bookinfo/reviews-v1") == ["192.0.2.9"]).await;
    assert!(endpoint_ips(&client.held, "ep/bookinfo/reviews").is_empty());
}

/// `weft_cp_config_streams_refused_total` by reason.
async fn refused(admin: std::net::SocketAddr) -> BTreeMap<String, f64> {
    admin_text(admin, "/metrics")
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("weft_cp_config_streams_refused_total{reason=\""))
        .filter_map(|l| {
            let (reason, value) = l.split_once("\"} ")?;
            Some((reason.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_without_a_proven_identity_or_announcing_more_than_it_allows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "services.yaml", SERVICES);
    let (cp, state) = start(dir.path()).await;
    let v1 = workload("bookinfo", "reviews-v1-a", "127.1.0.1", &[("app", "reviews"), ("version", "v1")]);
    let own = token(state.path(), "bookinfo", "default");
    let cases = [
        ("no token", v1.clone(), String::new(), tonic::Code::Unauthenticated, "no_token"),
        ("a forged token", v1.clone(), format!("{own}x"), tonic::Code::PermissionDenied, "bad_token"),
        (
            "another namespace's token",
            v1.clone(),
            token(state.path(), "frontend", "default"),
            tonic::Code::PermissionDenied,
            "other_namespace",
        ),
        (
            "another ServiceAccount's token",
            v1.clone(),
            token(state.path(), "bookinfo", "reviews"),
            tonic::Code::PermissionDenied,
            "other_service_account",
        ),
        (
            "an address that is not an IP",
            workload("bookinfo", "reviews-v1-b", "not-an-ip", &[("app", "reviews")]),
            own.clone(),
            tonic::Code::PermissionDenied,
            "bad_address",
        ),
        (
            "someone else's address",
            workload("bookinfo", "reviews-v1-c", "203.0.113.7", &[("app", "reviews")]),
            own.clone(),
            tonic::Code::PermissionDenied,
            "bad_address",
        ),
    ];
    for (what, w, token, code, reason) in cases {
        let before = refused(cp.admin_addr).await.get(reason).copied().unwrap_or(0.0);
        let refusal = TestProxy::try_connect(cp.grpc_addr, w, BTreeMap::new(), token).await.err();
        let refusal = refusal.unwrap_or_else(|| panic!("{what}: the stream was accepted"));
        assert_eq!(refusal.code(), code, "{what}: {refusal:?}");
        assert!(!refusal.message().is_empty(), "{what}: no reason given");
        let after = refused(cp.admin_addr).await.get(reason).copied().unwrap_or(0.0);
        assert_eq!(after, before + 1.0, "{what}: not counted under {reason}");
    }
    assert!(cp.proxies.is_empty(), "a refused stream registered: {:?}", cp.proxies.list());

    // A proven proxy connects; another identity cannot take its name, the
    // same identity reconnecting takes over (the old stream ends).
    let mut first = TestProxy::connect(cp.grpc_addr, state.path(), v1.clone(), BTreeMap::new()).await;
    first.until(|h| h.contains_key("inbound")).await;
    let mut impostor = v1.clone();
    impostor.service_account = "reviews".into();
    let taken =
        TestProxy::try_connect(cp.grpc_addr, impostor, BTreeMap::new(), token(state.path(), "bookinfo", "reviews"))
            .await
            .err()
            .expect("another identity took a connected proxy's name");
    assert_eq!(taken.code(), tonic::Code::AlreadyExists, "{taken:?}");
    let mut second = TestProxy::connect(cp.grpc_addr, state.path(), v1, BTreeMap::new()).await;
    second.until(|h| h.contains_key("inbound")).await;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match first.updates.message().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the displaced stream did not end");
    assert_eq!(cp.proxies.len(), 1);
    assert_eq!(cp.proxies.list()[0].proven.as_deref(), Some("bookinfo/default"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_control_plane_keeps_known_workloads_as_endpoints_until_they_reconnect_or_the_grace_ends() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "services.yaml", SERVICES);
    let state = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(3);
    let cp = start_with_state(dir.path(), state.path(), grace).await;
    let v1 = workload("bookinfo", "reviews-v1-a", "127.1.0.1", &[("app", "reviews"), ("version", "v1")]);
    let _server = TestProxy::connect(cp.grpc_addr, state.path(), v1, BTreeMap::new()).await;
    let client_w = workload("frontend", "web", "127.0.0.1", &[]);
    let mut client = TestProxy::connect(cp.grpc_addr, state.path(), client_w.clone(), BTreeMap::new()).await;
    client.until(|h| endpoint_ips(h, "ep/bookinfo/reviews-v1") == ["127.1.0.1"]).await;
    // Stopped as by a crash: the proxies' streams end only with it.
    drop(cp);
    drop(client);
    drop(_server);

    // The restarted control plane: the first proxy to reconnect is sent the
    // endpoints of the proxies that have not reconnected yet.
    let cp = start_with_state(dir.path(), state.path(), grace).await;
    let restarted = tokio::time::Instant::now();
    let mut client = TestProxy::connect(cp.grpc_addr, state.path(), client_w, BTreeMap::new()).await;
    client.until(|h| h.contains_key("ep/bookinfo/reviews-v1") && h.contains_key("svc/bookinfo/reviews")).await;
    assert_eq!(endpoint_ips(&client.held, "ep/bookinfo/reviews-v1"), ["127.1.0.1"]);
    // Its name is kept for its ServiceAccount while it reconnects.
    let mut impostor = workload("bookinfo", "reviews-v1-a", "127.1.0.1", &[("app", "reviews")]);
    impostor.service_account = "reviews".into();
    let refused =
        TestProxy::try_connect(cp.grpc_addr, impostor, BTreeMap::new(), token(state.path(), "bookinfo", "reviews"))
            .await
            .err()
            .expect("another identity took a remembered proxy's name");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    // It never reconnects: after the grace it is dropped.
    client.until(|h| endpoint_ips(h, "ep/bookinfo/reviews-v1").is_empty()).await;
    assert!(restarted.elapsed() >= grace - Duration::from_millis(200), "dropped before the grace ended");
}
