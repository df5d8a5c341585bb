//! `weft-demo`: the README's run command. A control plane in local mode on
//! a copy of examples/canary, two versions of `reviews` and a client, each
//! behind its own weft-proxy on loopback addresses (no root, no iptables:
//! the client uses its sidecar as an explicit proxy). It prints the split
//! the client observes every second, then changes the HTTPRoute to 50/50
//! while traffic runs, and the split moves.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::sync::mpsc;
use weft_e2e::load::{Outcome, Target};
use weft_e2e::netns::spawn_on_host;
use weft_e2e::process::ChildHandle;
use weft_e2e::workspace_bin;

#[derive(Parser, Debug)]
#[command(about = "Weft's local demo: a canary split that moves while traffic runs")]
struct Args {
    /// Seconds of traffic before the route changes.
    #[arg(long, default_value_t = 8)]
    before: u64,
    /// Seconds of traffic after the change.
    #[arg(long, default_value_t = 8)]
    after: u64,
    /// Requests per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// The example directory (copied; the original is not changed).
    #[arg(long, default_value = "examples/canary")]
    example: PathBuf,
}

const ROUTE_FILE: &str = "route-change.yaml";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(demo(args))
}

/// Loopback addresses for this run: 127.A.B.x with A.B from the process id,
/// so two demos on one machine do not collide.
fn base(pid: u32) -> [u8; 3] {
    [127, 100 + (pid % 100) as u8, ((pid / 100) % 250) as u8 + 1]
}

fn addr(b: [u8; 3], host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], host)), port)
}

struct Workload {
    name: &'static str,
    labels: &'static [&'static str],
    /// The pod's address (its sidecar's inbound and outbound listen here).
    ip: u8,
    /// The application's address, when it serves.
    app: Option<u8>,
}

async fn demo(args: Args) -> anyhow::Result<()> {
    let b = base(std::process::id());
    let work = std::env::temp_dir().join(format!("weft-demo-{}", std::process::id()));
    let config = work.join("config");
    let logs = work.join("logs");
    std::fs::create_dir_all(&config)?;
    std::fs::create_dir_all(&logs)?;
    for entry in std::fs::read_dir(&args.example).with_context(|| format!("reading {}", args.example.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            std::fs::copy(&path, config.join(path.file_name().unwrap_or_default()))?;
        }
    }
    let result = run(&args, b, &config, &logs, &work.join("state")).await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("logs kept in {}", logs.display());
    }
    result
}

async fn run(args: &Args, b: [u8; 3], config: &Path, logs: &Path, state: &Path) -> anyhow::Result<()> {
    let cp_grpc = addr(b, 1, 15010);
    let cp_admin = addr(b, 1, 15000);
    let mut children: Vec<ChildHandle> = Vec::new();
    println!("weft demo: control plane in local mode on {}, proxies on {}.{}.{}.*", config.display(), b[0], b[1], b[2]);
    let cp_args = weft_e2e::control_plane_args(config, cp_grpc, cp_admin, state);
    let cp_refs: Vec<&str> = cp_args.iter().map(String::as_str).collect();
    children.push(spawn_on_host(
        &workspace_bin("weft-cp")?,
        &cp_refs,
        &[("RUST_LOG", "warn")],
        &logs.join("weft-cp.log"),
    )?);

    let workloads = [
        Workload { name: "reviews-v1-5c7f", labels: &["app=reviews", "version=v1"], ip: 11, app: Some(21) },
        Workload { name: "reviews-v2-8d41", labels: &["app=reviews", "version=v2"], ip: 12, app: Some(22) },
        Workload { name: "productpage-1", labels: &["app=productpage"], ip: 13, app: None },
    ];
    // Each proxy proves its identity with a join token signed with the
    // control plane's key (made when it first starts).
    let token_key = state.join("token.key");
    wait_until("the control plane's state directory", Duration::from_secs(20), || {
        let exists = token_key.exists();
        async move { exists }
    })
    .await?;
    let token = weft_e2e::join_token(state, "bookinfo", "default", "default")?;
    let proxy_bin = workspace_bin("weft-proxy")?;
    let echo_bin = workspace_bin("weft-echo")?;
    for w in &workloads {
        let pod_ip = addr(b, w.ip, 0).ip().to_string();
        if let Some(app) = w.app {
            children.push(spawn_on_host(
                &echo_bin,
                &["--listen", &addr(b, app, 9080).to_string(), "--namespace", "bookinfo", "--pod", w.name],
                &[],
                &logs.join(format!("{}-app.log", w.name)),
            )?);
        }
        let mut proxy_args: Vec<String> = vec![
            "run".into(),
            "--control-plane".into(),
            format!("http://{cp_grpc}"),
            "--name".into(),
            w.name.into(),
            "--namespace".into(),
            "bookinfo".into(),
            "--ip".into(),
            pod_ip.clone(),
            "--outbound".into(),
            addr(b, w.ip, 15001).to_string(),
            "--admin".into(),
            addr(b, w.ip, 15020).to_string(),
        ];
        for l in w.labels {
            proxy_args.extend(["--label".into(), (*l).into()]);
        }
        if let Some(app) = w.app {
            // Without iptables the sidecar's inbound listens on the pod's
            // service port itself and forwards to the application.
            proxy_args.extend([
                "--port".into(),
                "http=9080".into(),
                "--inbound".into(),
                addr(b, w.ip, 9080).to_string(),
                "--app-ip".into(),
                addr(b, app, 0).ip().to_string(),
            ]);
        } else {
            proxy_args.extend(["--inbound".into(), addr(b, w.ip, 15006).to_string()]);
        }
        let refs: Vec<&str> = proxy_args.iter().map(String::as_str).collect();
        children.push(spawn_on_host(
            &proxy_bin,
            &refs,
            &[("WEFT_LOG", "warn"), ("WEFT_TOKEN", &token)],
            &logs.join(format!("{}-proxy.log", w.name)),
        )?);
    }

    let client_admin = addr(b, 13, 15020);
    wait_until("the client's sidecar has endpoints for both versions", Duration::from_secs(20), || async {
        let Ok(dump) = get(client_admin, "/config_dump").await else { return false };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&dump) else { return false };
        ["ep/bookinfo/reviews-v1", "ep/bookinfo/reviews-v2"]
            .iter()
            .all(|ep| v["endpoints"][ep]["endpoints"].as_array().is_some_and(|a| !a.is_empty()))
            && v["certificate"]["identity"].is_string()
    })
    .await
    .inspect_err(|_| {
        for c in &children {
            eprintln!("--- {}\n{}", c.log_path().display(), c.log());
        }
    })?;

    println!("client productpage-1 → reviews.bookinfo:9080 through its sidecar, {} requests/s", args.rate);
    println!("HTTPRoute reviews-canary: reviews-v1 90, reviews-v2 10");
    println!("sidecar to sidecar over mTLS: certificates for spiffe://default.weft.local/ns/bookinfo/sa/default\n");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let target =
        Target { connect: addr(b, 13, 15001), host: "reviews.bookinfo:9080".into(), path: "/".into(), tls_roots: None };
    let total = Duration::from_secs(args.before + args.after);
    let load = tokio::spawn(weft_e2e::load::run(target, args.rate, total, tx));
    let start = Instant::now();
    let mut second: Vec<Outcome> = Vec::new();
    let mut all: Vec<Outcome> = Vec::new();
    let mut changed_at: Option<u64> = None;
    let mut next_report = 1_000u64;
    loop {
        let deadline = tokio::time::Instant::from_std(start + Duration::from_millis(next_report));
        tokio::select! {
            o = rx.recv() => match o {
                Some(o) => second.push(o),
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => {
                report(next_report / 1000, &second);
                all.append(&mut second);
                next_report += 1000;
                if changed_at.is_none() && next_report > args.before * 1000 {
                    std::fs::write(config.join(ROUTE_FILE), route(50, 50))?;
                    // The example's own route file is replaced by the new one.
                    remove_original_route(config)?;
                    changed_at = Some(start.elapsed().as_millis() as u64);
                    println!("\n>>> route changed: reviews-v1 50, reviews-v2 50 (the control plane pushes it to the client's sidecar)\n");
                }
            }
        }
    }
    if !second.is_empty() {
        report(next_report / 1000, &second);
        all.append(&mut second);
    }
    load.await?;
    let failed = all.iter().filter(|o| o.status != 200).count();
    let changed = changed_at.unwrap_or(u64::MAX);
    let before: Vec<&Outcome> = all.iter().filter(|o| o.at_ms < changed).collect();
    let after: Vec<&Outcome> = all.iter().filter(|o| o.at_ms > changed + 2_000).collect();
    let s_before = weft_e2e::load::shares(before.iter().copied(), &["reviews-v1", "reviews-v2"]);
    let s_after = weft_e2e::load::shares(after.iter().copied(), &["reviews-v1", "reviews-v2"]);
    println!(
        "\n{} requests, {} failed. Before the change: v1 {:.1}% / v2 {:.1}%; from 2 s after it: v1 {:.1}% / v2 {:.1}%.",
        all.len(),
        failed,
        s_before[0] * 100.0,
        s_before[1] * 100.0,
        s_after[0] * 100.0,
        s_after[1] * 100.0
    );
    for o in all.iter().filter(|o| o.status != 200).take(5) {
        println!("  failed at {} ms: status {} {}", o.at_ms, o.status, o.error.as_deref().unwrap_or(""));
    }
    drop(children);
    if failed > 0 {
        bail!("{failed} requests failed");
    }
    Ok(())
}

fn report(t: u64, outcomes: &[Outcome]) {
    let mut by_version: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failed = 0;
    for o in outcomes {
        match (&o.pod, o.status) {
            (Some(p), 200) => {
                *by_version.entry(if p.starts_with("reviews-v1") { "v1" } else { "v2" }).or_default() += 1
            }
            _ => failed += 1,
        }
    }
    let ok: usize = by_version.values().sum();
    let share = |v: &str| if ok == 0 { 0.0 } else { *by_version.get(v).unwrap_or(&0) as f64 / ok as f64 };
    let bar = |s: f64| {
        let n = (s * 30.0).round() as usize;
        format!("{}{}", "█".repeat(n), "·".repeat(30 - n.min(30)))
    };
    println!(
        "t={t:>3}s  reviews-v1 {:>5.1}% {}  reviews-v2 {:>5.1}% {}  {:>4} ok {:>2} failed",
        share("v1") * 100.0,
        bar(share("v1")),
        share("v2") * 100.0,
        bar(share("v2")),
        ok,
        failed
    );
}

fn route(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: reviews-canary\n  namespace: bookinfo\nspec:\n  parentRefs:\n  - group: \"\"\n    kind: Service\n    name: reviews\n    port: 9080\n  rules:\n  - backendRefs:\n    - name: reviews-v1\n      port: 9080\n      weight: {v1}\n    - name: reviews-v2\n      port: 9080\n      weight: {v2}\n"
    )
}

/// Removes the HTTPRoute document from the example's own file, so the new
/// file is the route's only definition.
fn remove_original_route(config: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(config)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n == ROUTE_FILE) {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        if !text.contains("kind: HTTPRoute") {
            continue;
        }
        let kept: Vec<&str> = text.split("\n---").filter(|doc| !doc.contains("kind: HTTPRoute")).collect();
        std::fs::write(&path, kept.join("\n---"))?;
    }
    Ok(())
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    for _ in 0..(timeout.as_millis() / 100 + 1) {
        if check().await {
            return Ok(());
        }
        if start.elapsed() > timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out after {timeout:?} waiting until {what}")
}

/// A plain HTTP/1.1 GET on a fresh connection.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await??;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await??;
    let resp = weft_e2e::http1::Response::parse(&buf)?;
    if resp.status != 200 {
        bail!("GET {path} from {addr}: status {}", resp.status);
    }
    Ok(resp.text())
}
