//! Push benchmark: a `weft-cp` process serving 5,000 Services (and 1,000
//! HTTPRoutes) to 10, 100 and 1,000 simulated proxies over real gRPC on
//! loopback. One HTTPRoute is changed on disk; the harness reports how long
//! until every proxy has received and acknowledged the change (p50, p99,
//! max, from the file write), the bytes each proxy received for it, the
//! control plane's CPU time for the change and its RSS with and without the
//! proxies.
//!
//! Run: `cargo bench --workspace --bench push`.
//! `WEFT_PUSH_PROXIES` (a list, e.g. `100,1000`) and `WEFT_PUSH_SERVICES`
//! change the sizes; `WEFT_PUSH_LOG` (a `RUST_LOG` filter) with
//! `WEFT_PUSH_LOG_FILE` keep the control plane's log; `WEFT_PUSH_METRICS`
//! prints its metrics after the change.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use weft_api as api;

const NAMESPACES: usize = 50;
const ROUTES: usize = 1_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn write_config(dir: &Path, services: usize, changed_weight: u32) {
    let mut text = String::new();
    for s in 0..services {
        let ns = s % NAMESPACES;
        let _ = write!(
            text,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc{s}, namespace: ns{ns}}}\nspec:\n  selector: {{app: svc{s}}}\n  ports: [{{name: http, port: 8080, appProtocol: http}}]\n"
        );
    }
    std::fs::write(dir.join("services.yaml"), text).unwrap();
    let route = |r: usize, w: u32| {
        let ns = r % NAMESPACES;
        let a = r;
        let b = (r + NAMESPACES) % services;
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: route{r}, namespace: ns{ns}}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: svc{a}, port: 8080}}]\n  rules:\n  - backendRefs: [{{name: svc{a}, port: 8080, weight: {w}}}, {{name: svc{b}, port: 8080, weight: {}}}]\n",
            100 - w
        )
    };
    let mut routes = String::new();
    for r in 1..ROUTES {
        routes.push_str(&route(r, 90));
    }
    std::fs::write(dir.join("routes.yaml"), routes).unwrap();
    // The route the benchmark changes lives in its own file.
    let tmp = dir.join(".changed.tmp");
    std::fs::write(&tmp, route(0, changed_weight)).unwrap();
    std::fs::rename(tmp, dir.join("changed.yaml")).unwrap();
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one simulated proxy observed of the change.
struct Observation {
    /// From the file write to the acknowledgement of the update carrying it.
    latency: Duration,
    /// Encoded size of that update.
    bytes: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::var("WEFT_PUSH_PROXIES")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("WEFT_PUSH_PROXIES is a comma-separated list of numbers"))
        .collect();
    let services = env_usize("WEFT_PUSH_SERVICES", 5_000);
    println!(
        "push benchmark: {services} Services, {ROUTES} HTTPRoutes, {NAMESPACES} namespaces; one HTTPRoute's weights change"
    );
    println!(
        "| proxies | initial sync (CP CPU) | acknowledged | p50 | p99 | max | bytes per proxy | CP CPU for the change | CP RSS without proxies | CP RSS synced | RSS per proxy |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, &proxies) in sizes.iter().enumerate() {
        run(i as u16, proxies, services).await;
    }
}

/// One control plane, `proxies` simulated proxies, one change; prints a
/// table row.
async fn run(index: u16, proxies: usize, services: usize) {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), services, 90);

    let grpc = format!("127.0.0.1:{}", 25010 + 2 * index);
    let admin = format!("127.0.0.1:{}", 25011 + 2 * index);
    let state = tempfile::tempdir().unwrap();
    let cp = Command::new(env!("CARGO_BIN_EXE_weft-cp"))
        .args(["run", "--local"])
        .arg(dir.path())
        .arg("--state-dir")
        .arg(state.path())
        .args(["--grpc-addr", &grpc, "--admin-addr", &admin])
        .env("RUST_LOG", std::env::var("WEFT_PUSH_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(match std::env::var_os("WEFT_PUSH_LOG_FILE") {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log file")),
            None => Stdio::null(),
        })
        .spawn()
        .expect("start weft-cp");
    let pid = cp.id();
    let _cp = KillOnDrop(cp);
    // Every stream proves an identity: join tokens signed with the key the
    // control plane keeps in its state directory (it creates the key at
    // start; reading it first creates the same file if the bench is faster).
    let deadline = Instant::now() + Duration::from_secs(60);
    let key = loop {
        match weft_identity::store::token_key(state.path()) {
            Ok(key) => break Arc::new(key),
            Err(e) => {
                assert!(Instant::now() < deadline, "no join-token key: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // Ready: listening, and the directory loaded and translated.
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(&admin, "/readyz").await.is_none_or(|(status, _)| status != 200) {
        assert!(Instant::now() < deadline, "weft-cp did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_base = rss_kb(pid);

    let connect_started = Instant::now();
    let cpu_start = cpu_ticks(pid);
    let (synced, mut synced_rx) = mpsc::unbounded_channel::<Instant>();
    let (obs_tx, mut obs_rx) = mpsc::unbounded_channel::<Observation>();
    let change_at: Arc<parking_lot::Mutex<Option<Instant>>> = Arc::default();
    let mut tasks = Vec::new();
    for p in 0..proxies {
        let synced = synced.clone();
        let obs_tx = obs_tx.clone();
        let change_at = change_at.clone();
        let grpc = grpc.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let ns = p % NAMESPACES;
            let token = key.issue(&weft_identity::token::Claims {
                mesh: "default".into(),
                namespace: format!("ns{ns}"),
                service_account: "default".into(),
                expires_unix: i64::MAX / 2,
            });
            let workload = api::Workload {
                name: format!("proxy{p}"),
                namespace: format!("ns{ns}"),
                service_account: "default".into(),
                labels: [("app".to_string(), format!("svc{}", p % services))].into_iter().collect(),
                // Loopback addresses: the streams come from loopback, and a
                // proxy may announce only the address its stream comes from.
                ips: vec![format!("127.{}.{}.{}", 100 + p / 65_536, (p / 256) % 256, p % 256)],
                ports: vec![api::WorkloadPort { name: "http".into(), port: 8080 }],
                mesh: String::new(),
                role: api::Role::Sidecar as i32,
                gateway: String::new(),
            };
            // A thousand connections at once can overflow the listen
            // backlog; a reset connection is retried a bounded number of
            // times, as a proxy would.
            let mut attempts = 0;
            let (tx, mut updates) = loop {
                attempts += 1;
                assert!(attempts <= 50, "proxy{p} could not open its stream");
                let Ok(channel) = Endpoint::from_shared(format!("http://{grpc}")).unwrap().connect().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (tx, rx) = mpsc::channel(16);
                let hello =
                    api::Hello { workload: Some(workload.clone()), versions: Default::default(), token: token.clone() };
                tx.send(api::ProxyMessage { message: Some(api::proxy_message::Message::Hello(hello)) }).await.unwrap();
                match open_stream(channel, ReceiverStream::new(rx)).await {
                    Ok(stream) => break (tx, stream),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            let mut reported_sync = false;
            let mut reported_change = false;
            let mut last_update = Instant::now();
            loop {
                // Until the initial sync is complete, a quiet two seconds
                // means "synced" (as of the last update received).
                let next = if reported_sync {
                    updates.message().await
                } else {
                    match tokio::time::timeout(Duration::from_secs(2), updates.message()).await {
                        Ok(m) => m,
                        Err(_) => {
                            reported_sync = true;
                            let _ = synced.send(last_update);
                            continue;
                        }
                    }
                };
                let Ok(Some(update)) = next else { break };
                last_update = Instant::now();
                let bytes = update.encoded_len();
                let carries_change = update.resources.iter().any(is_changed);
                tx.send(api::ProxyMessage {
                    message: Some(api::proxy_message::Message::Ack(api::Ack { nonce: update.nonce, rejected: vec![] })),
                })
                .await
                .ok();
                if carries_change && !reported_change {
                    reported_change = true;
                    let at = change_at.lock().expect("change time set");
                    let _ = obs_tx.send(Observation { latency: at.elapsed(), bytes });
                }
            }
        }));
    }
    drop(obs_tx);
    drop(synced);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut all_synced = connect_started;
    for n in 0..proxies {
        match tokio::time::timeout_at(deadline, synced_rx.recv()).await {
            Ok(Some(at)) => all_synced = all_synced.max(at),
            _ => panic!("only {n} of {proxies} proxies finished their initial sync"),
        }
    }
    let connect_time = all_synced - connect_started;
    let cpu_sync = cpu_ticks(pid) - cpu_start;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_synced = rss_kb(pid);
    let cpu_before = cpu_ticks(pid);

    // The change: one route's weights.
    *change_at.lock() = Some(Instant::now());
    write_config_change(dir.path(), services);

    let mut observed = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while observed.len() < proxies {
        match tokio::time::timeout_at(deadline, obs_rx.recv()).await {
            Ok(Some(o)) => observed.push(o),
            _ => break,
        }
    }
    let cpu_change = cpu_ticks(pid) - cpu_before;
    if std::env::var_os("WEFT_PUSH_METRICS").is_some()
        && let Some((_, body)) = http_get(&admin, "/metrics").await
    {
        for line in body.lines().filter(|l| !l.starts_with('#') && !l.contains("_bucket")) {
            eprintln!("{line}");
        }
    }
    for t in tasks {
        t.abort();
    }
    observed.sort_by_key(|o| o.latency);
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    let (p50, p99, max, bytes) = if observed.is_empty() {
        ("-".into(), "-".into(), "-".into(), "-".into())
    } else {
        let pct = |q: f64| observed[((observed.len() as f64 - 1.0) * q).round() as usize].latency;
        let min_bytes = observed.iter().map(|o| o.bytes).min().unwrap_or(0);
        let max_bytes = observed.iter().map(|o| o.bytes).max().unwrap_or(0);
        let bytes =
            if min_bytes == max_bytes { format!("{min_bytes} B") } else { format!("{min_bytes}–{max_bytes} B") };
        (ms(pct(0.5)), ms(pct(0.99)), ms(observed[observed.len() - 1].latency), bytes)
    };
    // Clock ticks are 1/100 s on Linux.
    let cpu_ms = cpu_change * 10;
    let per_proxy_kb = rss_synced.saturating_sub(rss_base) / proxies.max(1) as u64;
    println!(
        "| {proxies} | {:.1} s ({:.1} s) | {} of {proxies} | {p50} | {p99} | {max} | {bytes} | {cpu_ms} ms | {} MB | {} MB | {per_proxy_kb} KB |",
        connect_time.as_secs_f64(),
        cpu_sync as f64 / 100.0,
        observed.len(),
        rss_base / 1024,
        rss_synced / 1024,
    );
}

/// A plain HTTP/1.1 GET against the admin API: status and body.
async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut buf)).await.ok()?.ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and
    // stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

fn write_config_change(dir: &Path, services: usize) {
    let route = format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: route0, namespace: ns0}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: svc0, port: 8080}}]\n  rules:\n  - backendRefs: [{{name: svc0, port: 8080, weight: 50}}, {{name: svc{}, port: 8080, weight: 50}}]\n",
        NAMESPACES % services
    );
    let tmp = dir.join(".changed.tmp");
    std::fs::write(&tmp, route).unwrap();
    std::fs::rename(tmp, dir.join("changed.yaml")).unwrap();
}

/// Opens the config stream like a proxy, but reads updates with their
/// resources left encoded: the simulated proxies share the control plane's
/// two cores, and decoding every resource of every proxy would measure the
/// harness rather than the control plane. The bytes are the same.
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

/// Just the name of a `Resource` (prost skips the other fields).
#[derive(Clone, PartialEq, prost::Message)]
struct ResourceName {
    #[prost(string, tag = "1")]
    name: String,
}

/// Whether an encoded resource is `svc/ns0/svc0` with the changed split
/// (50/50).
fn is_changed(encoded: &prost::bytes::Bytes) -> bool {
    let named = ResourceName::decode(encoded.clone()).is_ok_and(|r| r.name == "svc/ns0/svc0");
    named && api::Resource::decode(encoded.clone()).is_ok_and(|r| has_changed_split(&r))
}

fn has_changed_split(r: &api::Resource) -> bool {
    match &r.kind {
        Some(api::resource::Kind::Service(svc)) => svc
            .ports
            .iter()
            .flat_map(|p| p.http_routes.iter())
            .flat_map(|route| route.rules.iter())
            .any(|rule| rule.backends.iter().any(|b| b.weight == 50)),
        _ => false,
    }
}
