//! HTTPS termination at the gateway, against nginx terminating the same
//! certificate, following the performance notes' protocol (Part C: release
//! builds, everything under test on CPU 0, the load generator on CPU 1,
//! every round repeated while other processes use more than 10 % of a
//! core, peers interleaved in every round):
//!
//! - `direct`: plain HTTP/1.1 to the backend (the baseline latency);
//! - `weft`: HTTPS to a Weft gateway proxy (one worker) whose Gateway has
//!   an HTTPS listener with the certificate in a `kubernetes.io/tls`
//!   Secret, an HTTPRoute to the backend Service (an EndpointSlice with the
//!   backend's address: plain HTTP upstream);
//! - `nginx`: HTTPS to nginx (one worker) with the same certificate and
//!   key, proxying to the backend with upstream keep-alive.
//!
//! The backend is nginx serving a 1 KiB body. Clients keep connections
//! alive (TLS 1.3, ALPN http/1.1, the handshake is in the warm-up).
//! Reported: latency at a fixed rate (open loop, from each request's due
//! time) and what the proxy adds over `direct`; maximum throughput with 50
//! connections and the proxy's CPU per request; RSS idle and at peak.
//!
//! Run: `./scripts/bench gateway_tls`. Needs nginx (`apt-get install -y
//! nginx-light`) and taskset. `WEFT_BENCH_ROUNDS` (3), `WEFT_BENCH_SECONDS`
//! (10) and `WEFT_BENCH_RATE` (1000) change the run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use weft_e2e::bench::{self, CpuWindow, Target};
use weft_e2e::netns::spawn_on_host;
use weft_e2e::process::ChildHandle;
use weft_e2e::workspace_bin;

const BACKEND_PORT: u16 = 9080;
const HTTPS_PORT: u16 = 8443;
const SITE: &str = "site.example";
const FOREIGN_LIMIT_PERCENT: f64 = 10.0;
const ATTEMPTS: u32 = 5;
const CONNECTIONS_OPEN_LOOP: u32 = 16;
const CONNECTIONS_AT_SATURATION: u32 = 50;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Loopback addresses for this run, 127.A.B.x with A.B from the pid.
fn addr(host: u8, port: u16) -> SocketAddr {
    let pid = std::process::id();
    let ip = Ipv4Addr::new(127, 100 + (pid % 50) as u8, ((pid / 50) % 250) as u8 + 1, host);
    SocketAddr::new(IpAddr::V4(ip), port)
}

fn pinned(bin: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> anyhow::Result<ChildHandle> {
    let mut full: Vec<&str> = vec!["-c", "0"];
    let bin = bin.to_string_lossy();
    full.push(&bin);
    full.extend_from_slice(args);
    spawn_on_host(Path::new("taskset"), &full, env, log)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The site's certificate (leaf + CA, PEM), its key, and the CA.
struct Pki {
    chain: PathBuf,
    key: PathBuf,
    ca_pem: String,
    chain_pem: String,
    key_pem: String,
}

fn pki(dir: &Path) -> anyhow::Result<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params.distinguished_name.push(DnType::CommonName, "bench CA");
    let ca_pem = ca_params.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![SITE.to_string()])?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, SITE);
    let chain_pem = format!("{}{ca_pem}", params.signed_by(&key, &issuer)?.pem());
    let key_pem = key.serialize_pem();
    let (chain, key_file) = (dir.join("site.crt"), dir.join("site.key"));
    std::fs::write(&chain, &chain_pem)?;
    std::fs::write(&key_file, &key_pem)?;
    Ok(Pki { chain, key: key_file, ca_pem, chain_pem, key_pem })
}

fn manifests(pki: &Pki, backend: SocketAddr) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: bench}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: site, namespace: bench}}\ntype: kubernetes.io/tls\n\
         data:\n  tls.crt: {}\n  tls.key: {}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: backend, namespace: bench}}\n\
         spec:\n  ports: [{{name: http, port: {BACKEND_PORT}, appProtocol: http}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: backend-1\n  namespace: bench\n  \
         labels: {{kubernetes.io/service-name: backend}}\naddressType: IPv4\n\
         ports: [{{name: http, port: {BACKEND_PORT}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: weft}}\n\
         spec: {{controllerName: weft.io/gateway-controller}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: bench}}\n\
         spec:\n  gatewayClassName: weft\n  listeners:\n  - name: https\n    protocol: HTTPS\n    port: {HTTPS_PORT}\n    \
         hostname: {SITE}\n    tls: {{mode: Terminate, certificateRefs: [{{name: site}}]}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: site, namespace: bench}}\n\
         spec:\n  parentRefs: [{{name: edge}}]\n  rules: [{{backendRefs: [{{name: backend, port: {BACKEND_PORT}}}]}}]\n",
        b64(&pki.chain_pem),
        b64(&pki.key_pem),
        backend.ip(),
    )
}

fn nginx_conf(dir: &Path, server: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("tmp"))?;
    let d = dir.display();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
         fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
         {server}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

fn start_nginx(dir: &Path, server: &str, logs: &Path, name: &str) -> anyhow::Result<ChildHandle> {
    let dir = dir.join(name);
    let conf = nginx_conf(&dir, server)?;
    let nginx = which("nginx").context("nginx is the backend and the peer: apt-get install -y nginx-light")?;
    pinned(
        &nginx,
        &["-p", &dir.to_string_lossy(), "-c", &conf.to_string_lossy(), "-e", &dir.join("error.log").to_string_lossy()],
        &[],
        &logs.join(format!("{name}.log")),
    )
}

struct Peer {
    name: &'static str,
    target: Target,
    /// The process under test (none for `direct`).
    proxy: Option<u32>,
}

impl Peer {
    fn cpu_seconds(&self) -> f64 {
        self.proxy.map_or(0.0, |p| bench::process_tree(p).iter().map(|p| bench::process_cpu_seconds(*p)).sum())
    }

    fn rss_kib(&self) -> u64 {
        self.proxy.map_or(0, |p| bench::process_tree(p).iter().map(|p| bench::rss_kib(*p)).sum())
    }
}

struct Topology {
    _dir: tempfile::TempDir,
    children: Vec<ChildHandle>,
    peers: Vec<Peer>,
}

impl Topology {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // nginx workers drop to an unprivileged user when run as root.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let logs = dir.path().join("logs");
        let config = dir.path().join("config");
        std::fs::create_dir_all(&logs)?;
        std::fs::create_dir_all(&config)?;
        let pki = pki(&dir.path().join("pki"))?;
        for f in [&pki.chain, &pki.key] {
            std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        }
        let mut children = Vec::new();
        let body = "x".repeat(1024);
        let backend = addr(21, BACKEND_PORT);
        let backend_server = format!(
            "  server {{\n    listen {backend};\n    keepalive_requests 1000000;\n    location / {{\n      \
             default_type text/plain;\n      return 200 \"{body}\";\n    }}\n  }}"
        );
        children.push(start_nginx(dir.path(), &backend_server, &logs, "backend")?);

        std::fs::write(config.join("bench.yaml"), manifests(&pki, backend))?;
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
        let gateway_ip = addr(13, 0).ip().to_string();
        let args = [
            "run",
            "--control-plane",
            &format!("http://{cp_grpc}"),
            "--name",
            "edge-1",
            "--namespace",
            "bench",
            "--ip",
            &gateway_ip,
            "--admin",
            &addr(13, 15020).to_string(),
            "--workers",
            "1",
            "--gateway",
            "edge",
        ];
        let env = [("WEFT_TOKEN", token.as_str()), ("WEFT_LOG", "warn")];
        let gateway = pinned(&workspace_bin("weft-proxy")?, &args, &env, &logs.join("gateway.log"))?;

        let nginx_addr = addr(31, HTTPS_PORT);
        let nginx_server = format!(
            "  upstream next {{ server {backend}; keepalive 64; }}\n  keepalive_requests 1000000;\n  server {{\n    \
             listen {nginx_addr} ssl;\n    server_name {SITE};\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
             ssl_protocols TLSv1.2 TLSv1.3;\n    location / {{\n      proxy_pass http://next;\n      \
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}",
            pki.chain.display(),
            pki.key.display()
        );
        let nginx = start_nginx(dir.path(), &nginx_server, &logs, "nginx")?;
        let tls = bench::tls_client(&pki.ca_pem)?;
        let https = |connect| Target { connect, host: SITE.into(), path: "/".into(), tls: Some(tls.clone()) };
        let peers = vec![
            Peer {
                name: "direct",
                target: Target { connect: backend, host: SITE.into(), path: "/".into(), tls: None },
                proxy: None,
            },
            Peer { name: "weft", target: https(addr(13, HTTPS_PORT)), proxy: Some(gateway.pid()) },
            Peer { name: "nginx", target: https(nginx_addr), proxy: Some(nginx.pid()) },
        ];
        children.push(gateway);
        children.push(nginx);
        let topology = Topology { _dir: dir, children, peers };
        topology.wait_ready().await?;
        Ok(topology)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut ready = true;
            for peer in &self.peers {
                let t = bench::closed_loop(&peer.target, 1, Duration::from_millis(200)).await;
                ready &= t.requests > 0 && t.errors == 0;
            }
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> =
                    self.children.iter().map(|c| format!("--- {}\n{}", c.log_path().display(), c.log())).collect();
                bail!("a peer did not answer within 60 s\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().flat_map(|c| bench::process_tree(c.pid())).collect()
    }
}

/// Runs `measure` until other processes used at most the limit, up to
/// [`ATTEMPTS`] times; `None` when no attempt was quiet.
async fn guarded<T, F, Fut>(t: &Topology, what: &str, mut measure: F) -> Option<(T, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for attempt in 1..=ATTEMPTS {
        let window = CpuWindow::start(t.pids());
        let result = measure().await;
        let foreign = window.foreign_percent() + window.steal_percent();
        if foreign <= FOREIGN_LIMIT_PERCENT {
            return Some((result, foreign));
        }
        eprintln!("  {what}: attempt {attempt} repeated, other processes used {foreign:.1} % of a core");
    }
    None
}

#[derive(Default)]
struct Rounds {
    p50: Vec<f64>,
    p99: Vec<f64>,
    added_p50: Vec<f64>,
    added_p99: Vec<f64>,
    rps: Vec<f64>,
    cpu_us: Vec<f64>,
    rss_peak_kib: u64,
    errors: u64,
    foreign: Vec<f64>,
    refused: u32,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn span(values: &[f64]) -> String {
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    if values.is_empty() { "-".into() } else { format!("{lo:.3}–{hi:.3}") }
}

fn main() -> anyhow::Result<()> {
    // The load generator on CPU 1, everything under test on CPU 0.
    let _ = std::process::Command::new("taskset").args(["-cp", "1", &std::process::id().to_string()]).output();
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let rounds = env_u64("WEFT_BENCH_ROUNDS", 3) as usize;
    let seconds = Duration::from_secs(env_u64("WEFT_BENCH_SECONDS", 10));
    let rate = env_u64("WEFT_BENCH_RATE", 1000) as u32;
    let topology = Topology::start().await?;
    let idle: Vec<u64> = topology.peers.iter().map(Peer::rss_kib).collect();
    let mut results: Vec<Rounds> = topology.peers.iter().map(|_| Rounds::default()).collect();
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        let mut direct = (0.0, 0.0);
        for (i, peer) in topology.peers.iter().enumerate() {
            let open = guarded(&topology, peer.name, || {
                bench::open_loop(&peer.target, rate, CONNECTIONS_OPEN_LOOP, Duration::from_secs(2), seconds)
            })
            .await;
            let r = &mut results[i];
            let Some((latencies, foreign)) = open else {
                r.refused += 1;
                continue;
            };
            let (p50, p99) = (latencies.quantile_ms(0.5), latencies.quantile_ms(0.99));
            if peer.name == "direct" {
                direct = (p50, p99);
            }
            r.p50.push(p50);
            r.p99.push(p99);
            r.added_p50.push(p50 - direct.0);
            r.added_p99.push(p99 - direct.1);
            r.errors += latencies.errors;
            r.foreign.push(foreign);
            let saturated = guarded(&topology, peer.name, || async {
                let before = peer.cpu_seconds();
                let sampler = async {
                    let mut peak = 0u64;
                    let end = Instant::now() + seconds;
                    while Instant::now() < end {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        peak = peak.max(peer.rss_kib());
                    }
                    peak
                };
                let (t, peak) =
                    tokio::join!(bench::closed_loop(&peer.target, CONNECTIONS_AT_SATURATION, seconds), sampler);
                (t, (peer.cpu_seconds() - before) * 1e6 / t.requests.max(1) as f64, peak)
            })
            .await;
            let Some(((t, cpu_us, peak), foreign)) = saturated else {
                r.refused += 1;
                continue;
            };
            r.rps.push(t.per_second());
            r.cpu_us.push(cpu_us);
            r.rss_peak_kib = r.rss_peak_kib.max(peak);
            r.errors += t.errors;
            r.foreign.push(foreign);
        }
    }
    println!(
        "\n### HTTPS termination: {rounds} rounds, open loop {rate} req/s over {CONNECTIONS_OPEN_LOOP} connections, \
         closed loop {CONNECTIONS_AT_SATURATION} connections, {} s each\n",
        seconds.as_secs()
    );
    println!(
        "| path | p50 ms | p99 ms | added p50 ms (min–max) | added p99 ms (min–max) | max req/s (min–max) | proxy CPU µs/req | RSS idle / peak MiB | errors | foreign CPU % (max) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, peer) in topology.peers.iter().enumerate() {
        let r = &results[i];
        if r.refused > 0 {
            println!("| {} | REFUSED: {} measurements found no quiet window |||||||||", peer.name, r.refused);
            continue;
        }
        let rps_span = {
            let (lo, hi) = r.rps.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            format!("{:.0} ({lo:.0}–{hi:.0})", median(&r.rps))
        };
        println!(
            "| {} | {:.3} | {:.3} | {:.3} ({}) | {:.3} ({}) | {rps_span} | {} | {} | {} | {:.1} |",
            peer.name,
            median(&r.p50),
            median(&r.p99),
            median(&r.added_p50),
            span(&r.added_p50),
            median(&r.added_p99),
            span(&r.added_p99),
            if peer.proxy.is_some() { format!("{:.1}", median(&r.cpu_us)) } else { "-".into() },
            if peer.proxy.is_some() {
                format!("{:.1} / {:.1}", idle[i] as f64 / 1024.0, r.rss_peak_kib as f64 / 1024.0)
            } else {
                "-".into()
            },
            r.errors,
            r.foreign.iter().copied().fold(0.0, f64::max),
        );
    }
    let weft = topology.peers.iter().position(|p| p.name == "weft");
    let nginx = topology.peers.iter().position(|p| p.name == "nginx");
    if let (Some(w), Some(n)) = (weft, nginx)
        && results[w].refused == 0
        && results[n].refused == 0
    {
        println!(
            "\nweft vs nginx: added p50 {:.2}×, added p99 {:.2}×, max req/s {:.2}×, CPU per request {:.2}×.",
            median(&results[w].added_p50) / median(&results[n].added_p50).max(1e-6),
            median(&results[w].added_p99) / median(&results[n].added_p99).max(1e-6),
            median(&results[w].rps) / median(&results[n].rps).max(1e-6),
            median(&results[w].cpu_us) / median(&results[n].cpu_us).max(1e-6),
        );
    }
    Ok(())
}
