//! gRPC and HTTP/2 benchmark, following the performance notes' protocol
//! (Part C: release builds, everything under test on CPU 0, the load
//! generators on CPU 1, every round repeated while other processes use
//! more than 10 % of a core, peers interleaved in every round):
//!
//! - gRPC unary (`GrpcEcho/Echo` of the conformance echo, tonic client in
//!   this process) straight to the backend, and through the sidecar pair:
//!   client → weft-proxy outbound (explicit proxy by `:authority`, L7
//!   routing) → mTLS → weft-proxy inbound → backend; one call in flight
//!   (latency) and 16 (throughput);
//! - h2load (`-c 10 -m 10`, h2c) straight to the backend, and through a
//!   gateway proxy (HTTPRoute) → mTLS → the backend's sidecar → backend.
//!
//! The backend is `weft-echo` (tonic for gRPC, hyper for HTTP/2). When no
//! round of a peer is quiet within the attempts, the report says so
//! instead of printing figures ("REFUSED").
//!
//! Run: `./scripts/bench grpc`. Needs h2load (Debian nghttp2-client) and
//! taskset. `WEFT_BENCH_ROUNDS` (3) and `WEFT_BENCH_SECONDS` (10) change the
//! run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use weft_e2e::bench::{self, CpuWindow};
use weft_e2e::grpc_echo::conformance::{EchoRequest, grpc_echo_client::GrpcEchoClient};
use weft_e2e::netns::spawn_on_host;
use weft_e2e::process::ChildHandle;
use weft_e2e::workspace_bin;

const BACKEND_PORT: u16 = 9090;
const GATEWAY_PORT: u16 = 8080;
const FOREIGN_LIMIT_PERCENT: f64 = 10.0;
const ATTEMPTS: u32 = 5;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Loopback addresses for this run, 127.A.B.x with A.B from the pid.
fn addr(host: u8, port: u16) -> SocketAddr {
    let pid = std::process::id();
    let ip = Ipv4Addr::new(127, 100 + (pid % 50) as u8, ((pid / 50) % 250) as u8 + 1, host);
    SocketAddr::new(IpAddr::V4(ip), port)
}

const MANIFESTS: &str = "\
apiVersion: weft.io/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  mtls: {mode: Strict}
---
apiVersion: v1
kind: Namespace
metadata: {name: bench}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: bench}
spec:
  selector: {app: backend}
  ports: [{name: grpc, port: 9090, appProtocol: kubernetes.io/h2c}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec:
  controllerName: weft.io/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: bench}
spec:
  gatewayClassName: weft
  listeners: [{name: web, protocol: HTTP, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: edge, namespace: bench}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: backend, port: 9090}]}]
";

fn pinned(bin: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> anyhow::Result<ChildHandle> {
    let mut full: Vec<&str> = vec!["-c", "0"];
    let bin = bin.to_string_lossy();
    full.push(&bin);
    full.extend_from_slice(args);
    spawn_on_host(Path::new("taskset"), &full, env, log)
}

struct Topology {
    _dir: tempfile::TempDir,
    children: Vec<ChildHandle>,
    backend: SocketAddr,
    outbound: SocketAddr,
    gateway: SocketAddr,
    /// Client sidecar, server sidecar, gateway.
    proxies: [u32; 3],
}

impl Topology {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let logs = dir.path().join("logs");
        let config = dir.path().join("config");
        std::fs::create_dir_all(&logs)?;
        std::fs::create_dir_all(&config)?;
        std::fs::write(config.join("bench.yaml"), MANIFESTS)?;
        let mut children = Vec::new();
        let backend = addr(21, BACKEND_PORT);
        children.push(pinned(
            &workspace_bin("weft-echo")?,
            &["--listen", &backend.to_string(), "--namespace", "bench", "--pod", "backend-1"],
            &[("RUST_LOG", "warn")],
            &logs.join("echo.log"),
        )?);
        let state = dir.path().join("state");
        let (cp_grpc, cp_admin) = (addr(1, 15010), addr(1, 15000));
        let cp_args = weft_e2e::control_plane_args(&config, cp_grpc, cp_admin, &state);
        let refs: Vec<&str> = cp_args.iter().map(String::as_str).collect();
        children.push(pinned(&workspace_bin("weft-cp")?, &refs, &[("RUST_LOG", "warn")], &logs.join("cp.log"))?);
        for _ in 0..200 {
            if state.join("token.key").exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let token = weft_e2e::join_token(&state, "bench", "default", "default")?;
        let proxy = workspace_bin("weft-proxy")?;
        let control_plane = format!("http://{cp_grpc}");
        let common = |name: &str, host: u8| -> Vec<String> {
            vec![
                "run".into(),
                "--control-plane".into(),
                control_plane.clone(),
                "--name".into(),
                name.into(),
                "--namespace".into(),
                "bench".into(),
                "--ip".into(),
                addr(host, 0).ip().to_string(),
                "--admin".into(),
                addr(host, 15020).to_string(),
                "--workers".into(),
                "1".into(),
            ]
        };
        let mut server = common("backend-1", 11);
        server.extend([
            "--label".into(),
            "app=backend".into(),
            "--port".into(),
            format!("grpc={BACKEND_PORT}"),
            "--inbound".into(),
            addr(11, BACKEND_PORT).to_string(),
            "--app-ip".into(),
            backend.ip().to_string(),
            "--outbound".into(),
            addr(11, 15001).to_string(),
        ]);
        let mut client = common("client-1", 12);
        client.extend([
            "--label".into(),
            "app=client".into(),
            "--outbound".into(),
            addr(12, 15001).to_string(),
            "--inbound".into(),
            addr(12, 15006).to_string(),
        ]);
        let mut gateway = common("edge-1", 13);
        gateway.extend(["--gateway".into(), "edge".into()]);
        let env = [("WEFT_TOKEN", token.as_str()), ("WEFT_LOG", "warn")];
        let mut pids = [0u32; 3];
        for (i, (args, name)) in [(client, "client"), (server, "server"), (gateway, "gateway")].into_iter().enumerate()
        {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let child = pinned(&proxy, &refs, &env, &logs.join(format!("{name}.log")))?;
            pids[i] = child.pid();
            children.push(child);
        }
        let topology = Topology {
            _dir: dir,
            children,
            backend,
            outbound: addr(12, 15001),
            gateway: addr(13, GATEWAY_PORT),
            proxies: pids,
        };
        topology.wait_ready().await?;
        Ok(topology)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let grpc = unary(self.outbound, Some("backend.bench:9090"), 1, Duration::from_millis(200)).await;
            let h2 = h2load(self.gateway, 1, 1, Duration::from_secs(1)).await;
            if grpc.is_ok_and(|r| r.calls > 0 && r.errors == 0) && h2.is_ok_and(|r| r.succeeded > 0 && r.failed == 0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> =
                    self.children.iter().map(|c| format!("--- {}\n{}", c.log_path().display(), c.log())).collect();
                bail!("the sidecar pair or the gateway did not answer within 60 s\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().flat_map(|c| bench::process_tree(c.pid())).collect()
    }

    fn cpu(&self, i: usize) -> f64 {
        bench::process_tree(self.proxies[i]).iter().map(|p| bench::process_cpu_seconds(*p)).sum()
    }
}

/// Unary calls in a closed loop: `concurrency` calls in flight on one
/// HTTP/2 connection for `duration`.
#[derive(Debug, Default)]
struct Unary {
    calls: u64,
    errors: u64,
    sorted_us: Vec<u64>,
    seconds: f64,
}

impl Unary {
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.sorted_us.is_empty() {
            return 0.0;
        }
        let i = ((q * self.sorted_us.len() as f64).ceil() as usize).clamp(1, self.sorted_us.len()) - 1;
        self.sorted_us[i] as f64 / 1000.0
    }
}

async fn unary(
    connect: SocketAddr,
    authority: Option<&str>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Unary> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("http://{connect}"))?;
    if let Some(a) = authority {
        endpoint = endpoint.origin(format!("http://{a}").parse()?);
    }
    let channel = endpoint.connect().await?;
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let mut client = GrpcEchoClient::new(channel.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                match client.echo(EchoRequest {}).await {
                    Ok(_) => lat.push(t.elapsed().as_micros() as u64),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        });
    }
    let mut out = Unary::default();
    while let Some(r) = tasks.join_next().await {
        let (lat, errors) = r?;
        out.calls += lat.len() as u64;
        out.errors += errors;
        out.sorted_us.extend(lat);
    }
    out.sorted_us.sort_unstable();
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

#[derive(Debug, Default)]
struct H2load {
    succeeded: u64,
    failed: u64,
    rps: f64,
    mean_ms: f64,
}

/// h2load on CPU 1 against `addr` (h2c), parsed from its report.
async fn h2load(addr: SocketAddr, clients: u32, streams: u32, duration: Duration) -> anyhow::Result<H2load> {
    let out = tokio::process::Command::new("taskset")
        .args(["-c", "1", "h2load", "-c", &clients.to_string(), "-m", &streams.to_string(), "-D"])
        .arg(duration.as_secs().max(1).to_string())
        .arg(format!("http://{addr}/"))
        .output()
        .await
        .context("running h2load (Debian nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = H2load::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("finished in") {
            r.rps = words.get(3).and_then(|w| w.parse().ok()).unwrap_or(0.0);
        } else if line.starts_with("requests:") {
            let num = |name: &str| {
                words.windows(2).find(|w| w[1].trim_end_matches(',') == name).and_then(|w| w[0].parse().ok())
            };
            r.succeeded = num("succeeded").unwrap_or(0);
            r.failed = num("failed").unwrap_or(0) + num("errored").unwrap_or(0);
        } else if line.starts_with("time for request:") {
            r.mean_ms = words.get(5).map(|w| parse_ms(w)).unwrap_or(0.0);
        }
    }
    Ok(r)
}

/// h2load's durations: `123us`, `1.23ms`, `1.2s`.
fn parse_ms(w: &str) -> f64 {
    if let Some(v) = w.strip_suffix("us") {
        v.parse::<f64>().unwrap_or(0.0) / 1000.0
    } else if let Some(v) = w.strip_suffix("ms") {
        v.parse().unwrap_or(0.0)
    } else if let Some(v) = w.strip_suffix('s') {
        v.parse::<f64>().unwrap_or(0.0) * 1000.0
    } else {
        0.0
    }
}

/// Runs `measure` until a round is quiet; `None` when no attempt was.
async fn guarded<T, F, Fut>(t: &Topology, what: &str, mut measure: F) -> Option<(T, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for attempt in 1..=ATTEMPTS {
        let window = CpuWindow::start(t.pids());
        let (children, started) = (children_cpu_seconds(), Instant::now());
        let result = measure().await;
        // h2load is this process's child: its CPU is ours, not foreign.
        let h2load = (children_cpu_seconds() - children) / started.elapsed().as_secs_f64() * 100.0;
        let foreign = (window.foreign_percent() - h2load).max(0.0) + window.steal_percent();
        if foreign <= FOREIGN_LIMIT_PERCENT {
            return Some((result, foreign));
        }
        eprintln!("  {what}: attempt {attempt} repeated, foreign CPU {foreign:.1} % of a core");
    }
    None
}

/// CPU seconds of this process's children that have been waited for
/// (`cutime` + `cstime` of /proc/self/stat).
fn children_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // cutime and cstime are fields 16 and 17, i.e. 13 and 14 after ")".
    let ticks: f64 = [13, 14].iter().filter_map(|i| fields.get(*i)?.parse::<f64>().ok()).sum();
    ticks / 100.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn main() -> anyhow::Result<()> {
    let status = Command::new("taskset").args(["-pc", "1", &std::process::id().to_string()]).output()?;
    if !status.status.success() {
        bail!("taskset could not pin the load generator to CPU 1");
    }
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let rounds = env_u64("WEFT_BENCH_ROUNDS", 3);
    let secs = Duration::from_secs(env_u64("WEFT_BENCH_SECONDS", 10));
    let t = Topology::start().await?;
    println!(
        "gRPC/HTTP/2 benchmark: generator on CPU 1, everything else on CPU 0; {rounds} rounds of {secs:?}; commit {}",
        std::env::var("WEFT_BENCH_COMMIT").unwrap_or_else(|_| "(set WEFT_BENCH_COMMIT)".into())
    );
    let mut table: Vec<(String, Metrics)> = Vec::new();
    let mut refused = Vec::new();
    for round in 1..=rounds {
        eprintln!("round {round}");
        let peers: [(&str, SocketAddr, Option<&str>); 2] =
            [("grpc direct", t.backend, None), ("grpc sidecar pair (mTLS)", t.outbound, Some("backend.bench:9090"))];
        for (name, connect, authority) in peers {
            for concurrency in [1usize, 16] {
                let label = format!("{name}, {concurrency} in flight");
                // CPU is read around each attempt: only the kept one counts.
                let measure = || async {
                    let before = [t.cpu(0), t.cpu(1)];
                    let result = unary(connect, authority, concurrency, secs).await;
                    (result, [t.cpu(0) - before[0], t.cpu(1) - before[1]])
                };
                match guarded(&t, &label, measure).await {
                    Some(((Ok(u), spent), foreign)) => {
                        let rps = u.calls as f64 / u.seconds;
                        let cpu: Vec<f64> = spent.iter().map(|c| c * 1e6 / u.calls.max(1) as f64).collect();
                        let row = vec![
                            ("calls/s", vec![rps]),
                            ("p50 ms", vec![u.quantile_ms(0.5)]),
                            ("p90 ms", vec![u.quantile_ms(0.9)]),
                            ("p99 ms", vec![u.quantile_ms(0.99)]),
                            ("errors", vec![u.errors as f64]),
                            ("client-side proxy µs/call", vec![if authority.is_some() { cpu[0] } else { 0.0 }]),
                            ("server-side proxy µs/call", vec![if authority.is_some() { cpu[1] } else { 0.0 }]),
                            ("foreign CPU %", vec![foreign]),
                        ];
                        merge(&mut table, label, row);
                    }
                    Some(((Err(e), _), _)) => bail!("{label}: {e:#}"),
                    None => refused.push(format!("round {round}: {label}")),
                }
            }
        }
        for (name, target) in
            [("h2load direct", t.backend), ("h2load via gateway (mTLS to the backend's sidecar)", t.gateway)]
        {
            let measure = || async {
                let before = t.cpu(2);
                let result = h2load(target, 10, 10, secs).await;
                (result, t.cpu(2) - before)
            };
            match guarded(&t, name, measure).await {
                Some(((Ok(h), spent), foreign)) => {
                    let cpu = spent * 1e6 / h.succeeded.max(1) as f64;
                    let row = vec![
                        ("req/s", vec![h.rps]),
                        ("mean ms", vec![h.mean_ms]),
                        ("failed", vec![h.failed as f64]),
                        ("gateway µs/req", vec![if target == t.gateway { cpu } else { 0.0 }]),
                        ("foreign CPU %", vec![foreign]),
                    ];
                    merge(&mut table, name.to_owned(), row);
                }
                Some(((Err(e), _), _)) => bail!("{name}: {e:#}"),
                None => refused.push(format!("round {round}: {name}")),
            }
        }
    }
    println!("\nmedian over quiet rounds (min–max):");
    for (label, metrics) in &mut table {
        let parts: Vec<String> = metrics
            .iter_mut()
            .map(|(m, v)| {
                let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
                let n = v.len();
                format!("{m} {:.3} ({lo:.3}–{hi:.3}, {n} rounds)", median(v))
            })
            .collect();
        println!("| {label} | {} |", parts.join(" | "));
    }
    if !refused.is_empty() {
        println!(
            "\nREFUSED by the quiet-machine guard (foreign CPU above {FOREIGN_LIMIT_PERCENT} % in all {ATTEMPTS} attempts): {}",
            refused.join("; ")
        );
    }
    Ok(())
}

/// Metric name and its values over rounds.
type Metrics = Vec<(&'static str, Vec<f64>)>;

fn merge(table: &mut Vec<(String, Metrics)>, label: String, row: Metrics) {
    match table.iter_mut().find(|(l, _)| *l == label) {
        Some((_, metrics)) => {
            for ((_, have), (_, new)) in metrics.iter_mut().zip(row) {
                have.extend(new);
            }
        }
        None => table.push((label, row)),
    }
}
