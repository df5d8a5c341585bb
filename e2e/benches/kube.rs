//! Kubernetes-mode benchmark: `weft-cp` against the API-server double
//! holding 5,000 Services and 10,000 HTTPRoutes (GAMMA, one Service parent
//! each), with 100 simulated proxies on its gRPC stream. It reports:
//!
//! * initial sync: until the control plane has translated the whole
//!   cluster (ready), and until it has written every generated object and
//!   status (at the write rate given, `WEFT_KUBE_QPS`, default 200/s);
//! * one `kubectl apply --server-side` of a changed route: time to its
//!   generated MeshHTTPRoute, to its status (new observedGeneration), and
//!   to 100 proxies acknowledging the change; the control plane's API
//!   requests and writes for it;
//! * the control plane's RSS.
//!
//! The double runs in this process and shares the machine's two cores with
//! the control plane and the simulated proxies: the figures include that.
//!
//! Run: `cargo bench --workspace --bench kube`. `WEFT_KUBE_SERVICES`,
//! `WEFT_KUBE_ROUTES`, `WEFT_KUBE_PROXIES` change the sizes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use weft_api as api;
use weft_e2e::kube::{Kube, is_write};

const NAMESPACES: usize = 50;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn route(r: usize, services: usize, v1: u32) -> serde_json::Value {
    let ns = r % NAMESPACES;
    let svc = (r % (services / NAMESPACES)) * NAMESPACES + ns;
    let other = (svc + NAMESPACES) % services;
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": format!("route{r}"), "namespace": format!("ns{ns}")},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": format!("svc{svc}"), "port": 8080}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": format!("/r{r}")}}],
                "backendRefs": [
                    {"name": format!("svc{svc}"), "port": 8080, "weight": v1},
                    {"name": format!("svc{other}"), "port": 8080, "weight": 100 - v1},
                ],
            }],
        },
    })
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(2) {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn main() -> anyhow::Result<()> {
    let services = env_usize("WEFT_KUBE_SERVICES", 5_000);
    let routes = env_usize("WEFT_KUBE_ROUTES", 10_000);
    let proxies = env_usize("WEFT_KUBE_PROXIES", 100);
    let qps = env_usize("WEFT_KUBE_QPS", 200);
    println!(
        "kube benchmark: {services} Services, {routes} HTTPRoutes in {NAMESPACES} namespaces, {proxies} proxies, writes at {qps}/s"
    );

    let options = kube_double::Options {
        namespaces: std::iter::once("weft-system".to_string())
            .chain((0..NAMESPACES).map(|n| format!("ns{n}")))
            .collect(),
        history_limit: 100_000,
        ..kube_double::Options::default()
    }
    .with_crd_files(
        weft_e2e::kube::weft_crds()?.into_iter().chain([weft_e2e::kube::gateway_api_crds("v1.5.1-experimental")]),
    )?;
    let kube = Kube::start_with("bench", options)?;
    let filled = Instant::now();
    for s in 0..services {
        kube.api
            .create(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("svc{s}"), "namespace": format!("ns{}", s % NAMESPACES)},
                "spec": {"selector": {"app": format!("svc{s}")}, "ports": [{"name": "http", "port": 8080, "appProtocol": "http"}]}}))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    for r in 0..routes {
        kube.api.apply_as("kubectl", route(r, services, 90), false).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    println!("filled the double in {}", secs(filled.elapsed()));

    // The control plane, as a process; its writes at the chosen rate.
    let started = Instant::now();
    let kubeconfig = kube.kubeconfig("weft-cp-0")?;
    let log = kube.dir.join("weft-cp-0.log");
    let args = [
        "run".to_string(),
        "--kubeconfig".into(),
        kubeconfig.to_string_lossy().into_owned(),
        "--pod-name".into(),
        "weft-cp-0".into(),
        "--grpc-addr".into(),
        "127.0.0.1:25110".into(),
        "--admin-addr".into(),
        "127.0.0.1:25111".into(),
        "--write-qps".into(),
        qps.to_string(),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cp =
        weft_e2e::netns::spawn_on_host(&weft_e2e::workspace_bin("weft-cp")?, &refs, &[("RUST_LOG", "warn")], &log)?;
    let pid = cp.pid();
    let admin: std::net::SocketAddr = "127.0.0.1:25111".parse()?;
    let metric = |name: &str| -> f64 {
        let Ok(text) = http_get(admin, "/metrics") else { return -1.0 };
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while http_get(admin, "/readyz").is_err() {
        cp.ensure_running()?;
        anyhow::ensure!(Instant::now() < deadline, "weft-cp did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready = started.elapsed();
    let rss_ready = rss_kb(pid);
    // Every generated route applied and every route status written.
    loop {
        cp.ensure_running()?;
        anyhow::ensure!(Instant::now() < deadline, "initial writes did not finish");
        let applies = metric("weft_cp_kube_applies_total");
        let statuses = metric("weft_cp_kube_status_writes_total");
        let depth = metric("weft_cp_kube_write_queue_depth");
        if applies >= routes as f64 && statuses >= routes as f64 && depth == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let written = started.elapsed();
    let requests_sync = kube.api.recorded().into_iter().filter(|r| r.user == "weft-cp-0").count();
    let rss_written = rss_kb(pid);
    println!(
        "| initial sync | translated (ready) | {} generated objects and {} statuses written | API requests | RSS ready | RSS written |",
        routes, routes
    );
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| {services} Services, {routes} HTTPRoutes | {} | {} | {requests_sync} | {} MB | {} MB |",
        secs(ready),
        secs(written),
        rss_ready / 1024,
        rss_written / 1024
    );

    // Proxies.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let change_at: Arc<parking_lot::Mutex<Option<Instant>>> = Arc::default();
    let (synced_tx, mut synced_rx) = mpsc::unbounded_channel::<()>();
    let (acked_tx, mut acked_rx) = mpsc::unbounded_channel::<Duration>();
    // Every stream proves its identity with a ServiceAccount token (one per
    // namespace; the control plane caches the TokenReview of each).
    let tokens: Vec<String> = (0..NAMESPACES)
        .map(|ns| {
            kube.api.issue_token(&format!("ns{ns}"), "default", &["weft.io/identity"], Duration::from_secs(3600), None)
        })
        .collect();
    for p in 0..proxies {
        let (synced_tx, acked_tx, change_at) = (synced_tx.clone(), acked_tx.clone(), change_at.clone());
        let token = tokens[p % NAMESPACES].clone();
        rt.spawn(async move {
            let workload = api::Workload {
                name: format!("proxy{p}"),
                namespace: format!("ns{}", p % NAMESPACES),
                service_account: "default".into(),
                ips: vec![format!("10.200.{}.{}", p / 256, p % 256)],
                role: api::Role::Sidecar as i32,
                ..Default::default()
            };
            let Ok(channel) = Endpoint::from_static("http://127.0.0.1:25110").connect().await else { return };
            let (tx, rx) = mpsc::channel(16);
            let hello = api::Hello { workload: Some(workload), versions: Default::default(), token };
            let _ = tx.send(api::ProxyMessage { message: Some(api::proxy_message::Message::Hello(hello)) }).await;
            let Ok(mut updates) = open_stream(channel, ReceiverStream::new(rx)).await else { return };
            let mut synced = false;
            let mut changed = false;
            loop {
                let next = if synced {
                    updates.message().await
                } else {
                    match tokio::time::timeout(Duration::from_secs(3), updates.message()).await {
                        Ok(m) => m,
                        Err(_) => {
                            synced = true;
                            let _ = synced_tx.send(());
                            continue;
                        }
                    }
                };
                let Ok(Some(update)) = next else { return };
                let carries = update.resources.iter().any(is_changed);
                let _ = tx
                    .send(api::ProxyMessage {
                        message: Some(api::proxy_message::Message::Ack(api::Ack {
                            nonce: update.nonce,
                            rejected: vec![],
                        })),
                    })
                    .await;
                if carries && !changed {
                    changed = true;
                    if let Some(at) = *change_at.lock() {
                        let _ = acked_tx.send(at.elapsed());
                    }
                }
            }
        });
    }
    let connect = Instant::now();
    for n in 0..proxies {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(300), synced_rx.recv()).await })
            .map_err(|_| anyhow::anyhow!("only {n} of {proxies} proxies synced"))?;
    }
    let proxies_synced = connect.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let rss_proxies = rss_kb(pid);

    // One change through the real kubectl.
    kube.api.clear_recorded();
    let changed = route(0, services, 50);
    let generation_before = kube
        .api
        .get("gateway.networking.k8s.io/v1", "HTTPRoute", "ns0", "route0")
        .map(|r| r["metadata"]["generation"].as_i64().unwrap_or(0))
        .unwrap_or(0);
    *change_at.lock() = Some(Instant::now());
    let applied = Instant::now();
    kube.apply(&serde_json::to_string(&changed)?)?;
    let kubectl_done = applied.elapsed();
    let (mut t_generated, mut t_status) = (None, None);
    let mut acks = Vec::new();
    let wait = Instant::now() + Duration::from_secs(60);
    while (t_generated.is_none() || t_status.is_none() || acks.len() < proxies) && Instant::now() < wait {
        if t_generated.is_none() {
            let generated = kube.api.list("weft.io/v1alpha1", "MeshHTTPRoute", Some("ns0"));
            let moved = generated.iter().any(|g| {
                g["metadata"]["labels"]["weft.io/origin-name"] == "route0"
                    && g["spec"]["rules"][0]["backendRefs"][0]["weight"] == 50
            });
            if moved {
                t_generated = Some(applied.elapsed());
            }
        }
        if t_status.is_none() {
            let r = kube.api.get("gateway.networking.k8s.io/v1", "HTTPRoute", "ns0", "route0").unwrap_or_default();
            let observed = r["status"]["parents"][0]["conditions"][0]["observedGeneration"].as_i64();
            if observed.is_some_and(|g| g > generation_before) {
                t_status = Some(applied.elapsed());
            }
        }
        while let Ok(d) = acked_rx.try_recv() {
            acks.push(d);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_secs(3));
    let recorded: Vec<_> =
        kube.api.recorded().into_iter().filter(|r| r.user == "weft-cp-0" && r.resource != "leases").collect();
    let writes: Vec<String> = recorded
        .iter()
        .filter(|r| is_write(r))
        .map(|r| {
            format!(
                "{} {}{}",
                r.verb,
                r.resource,
                if r.subresource.is_empty() { String::new() } else { format!("/{}", r.subresource) }
            )
        })
        .collect();
    acks.sort();
    let pct = |q: f64| acks.get(((acks.len() as f64 - 1.0) * q).round() as usize).copied();
    println!();
    println!(
        "| change (kubectl apply --server-side) | kubectl returned | generated route | status written | {proxies} proxies acked p50 / p99 / max | API requests (not Lease) | writes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    println!(
        "| route0 90/10 → 50/50 | {} | {} | {} | {} / {} / {} ({} of {proxies}) | {} | {} |",
        secs(kubectl_done),
        t_generated.map(secs).unwrap_or("-".into()),
        t_status.map(secs).unwrap_or("-".into()),
        pct(0.5).map(secs).unwrap_or("-".into()),
        pct(0.99).map(secs).unwrap_or("-".into()),
        acks.last().copied().map(secs).unwrap_or("-".into()),
        acks.len(),
        recorded.len(),
        writes.join(", ")
    );
    println!();
    println!(
        "proxies' initial sync {}; control-plane RSS {} MB with {proxies} proxies",
        secs(proxies_synced),
        rss_proxies / 1024
    );
    rt.shutdown_background();
    Ok(())
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    anyhow::ensure!(buf.starts_with("HTTP/1.1 200"), "GET {path}: {}", buf.lines().next().unwrap_or(""));
    Ok(buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// Opens the config stream like a proxy, leaving resources encoded (see
/// the push benchmark: decoding in 100 clients would measure the harness).
async fn open_stream(
    channel: Channel,
    messages: ReceiverStream<api::ProxyMessage>,
) -> Result<tonic::Streaming<api::EncodedConfigUpdate>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<api::ProxyMessage, api::EncodedConfigUpdate>::default();
    let path = PathAndQuery::from_static("/weft.config.v1.ProxyConfig/Stream");
    Ok(grpc.streaming(tonic::Request::new(messages), path, codec).await?.into_inner())
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceName {
    #[prost(string, tag = "1")]
    name: String,
}

/// Whether an encoded resource is `svc/ns0/svc0` carrying the 50/50 split.
fn is_changed(encoded: &prost::bytes::Bytes) -> bool {
    let named = ResourceName::decode(encoded.clone()).is_ok_and(|r| r.name == "svc/ns0/svc0");
    named
        && api::Resource::decode(encoded.clone()).is_ok_and(|r| match &r.kind {
            Some(api::resource::Kind::Service(svc)) => svc
                .ports
                .iter()
                .flat_map(|p| p.http_routes.iter())
                .flat_map(|route| route.rules.iter())
                .any(|rule| rule.backends.iter().any(|b| b.weight == 50)),
            _ => false,
        })
}
