//! The namespace harness itself: pods reach each other and are reached from the root namespace,
//! `weft-echo` answers over HTTP/1.1 and h2c, and nothing is left behind afterwards, not even
//! when a test panics or a previous run died.
//!
//! Needs root (CI runs as root); fails with a message saying so otherwise.

use std::net::SocketAddr;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use weft_e2e::echo::EchoResponse;
use weft_e2e::http1::Response;
use weft_e2e::netns::{Cluster, wait_for_tcp, wait_for_tcp_from_root};
use weft_e2e::process::OWNER_ENV;

const READY: Duration = Duration::from_secs(10);
const REQUEST: Duration = Duration::from_secs(10);

fn echo_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft-echo"))
}

/// Namespaces and interfaces a cluster may have left behind.
fn leftovers(netns_prefix: &str, bridge: &str) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(netns_prefix))
                .collect()
        })
        .unwrap_or_default();
    if Path::new("/sys/class/net").join(bridge).exists() {
        found.push(bridge.to_owned());
    }
    found
}

async fn get_from_root(client_http2: bool, addr: SocketAddr, path: &str) -> anyhow::Result<EchoResponse> {
    let client = if client_http2 {
        Client::builder(TokioExecutor::new()).http2_only(true).build_http::<Empty<Bytes>>()
    } else {
        Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>()
    };
    let uri: http::Uri = format!("http://{addr}{path}").parse()?;
    let response = tokio::time::timeout(REQUEST, client.get(uri)).await.context("request timed out")??;
    ensure!(response.status() == 200, "status {}", response.status());
    ensure!(response.headers()["content-type"] == "application/json");
    let body = tokio::time::timeout(REQUEST, response.into_body().collect()).await.context("body timed out")??;
    Ok(serde_json::from_slice(&body.to_bytes())?)
}

#[test]
fn pods_reach_each_other_and_the_root_namespace() -> anyhow::Result<()> {
    let mut cluster = Cluster::new("harness")?;
    let (netns_prefix, bridge) = (cluster.netns_prefix(), cluster.bridge().to_owned());
    let server = cluster.pod("server")?;
    let client = cluster.pod("client")?;
    assert_ne!(server.ip(), client.ip());
    assert_eq!(server.gateway(), cluster.gateway());

    let addr = SocketAddr::new(server.ip().into(), 8080);
    let mut echo = server.spawn(
        echo_bin(),
        &["--listen", &addr.to_string(), "--namespace", "e2e"],
        &[],
        &server.log_file("echo"),
    )?;
    wait_for_tcp_from_root(addr, READY).or_else(|error| echo.ensure_running().and(Err(error)))?;
    wait_for_tcp(&client, addr, READY)?;

    // From the other pod; POD_NAME comes from the harness, like the downward API.
    let request =
        b"GET /from-pod?x=1 HTTP/1.1\r\nHost: server.e2e\r\nX-Test: a\r\nX-Test: b\r\nConnection: close\r\n\r\n";
    let response = Response::parse(&client.tcp_exchange(None, addr, request, REQUEST)?)?;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen: EchoResponse = response.json()?;
    assert_eq!(seen.pod, "server");
    assert_eq!(seen.namespace, "e2e");
    assert_eq!(seen.path, "/from-pod?x=1");
    assert_eq!(seen.host, "server.e2e");
    assert_eq!(seen.proto, "HTTP/1.1");
    assert_eq!(seen.headers["X-Test"], ["a", "b"]);

    // From the root namespace, over HTTP/1.1 and h2c.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let seen = runtime.block_on(get_from_root(false, addr, "/from-root"))?;
    assert_eq!((seen.pod.as_str(), seen.namespace.as_str(), seen.proto.as_str()), ("server", "e2e", "HTTP/1.1"));
    let seen = runtime.block_on(get_from_root(true, addr, "/h2c"))?;
    assert_eq!((seen.pod.as_str(), seen.path.as_str(), seen.proto.as_str()), ("server", "/h2c", "HTTP/2.0"));
    assert_eq!(seen.host, addr.to_string());

    // Commands run inside the pod, as the requested uid, and see only the pod's interfaces.
    assert_eq!(client.exec_ok(&["bash", "-c", "id -u"])?.trim(), "0");
    let output = client.exec_as(2102, &["bash", "-c", "id -u; id -G"])?;
    assert_eq!(String::from_utf8_lossy(&output.stdout), "2102\n2102\n");
    let links = client.exec_ok(&["ip", "-o", "link", "show"])?;
    assert_eq!(links.lines().count(), 2, "lo and eth0 only: {links}");

    drop(echo);
    drop(cluster);
    assert_eq!(leftovers(&netns_prefix, &bridge), Vec::<String>::new());
    Ok(())
}

#[test]
fn panicking_test_still_cleans_up() -> anyhow::Result<()> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let mut cluster = Cluster::new("panics").expect("cluster");
        let pod = cluster.pod("doomed").expect("pod");
        let _sleeper = pod.spawn(Path::new("sleep"), &["600"], &[], &pod.log_file("sleep")).expect("spawn");
        let names = (cluster.netns_prefix(), cluster.bridge().to_owned(), cluster.log_dir().to_owned());
        sender.send(names).expect("send");
        panic!("deliberate panic with a pod and a process running");
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    let (netns_prefix, bridge, log_dir) = receiver.recv()?;
    assert_eq!(leftovers(&netns_prefix, &bridge), Vec::<String>::new());
    // Logs are kept after a panic for the developer; this panic was deliberate.
    assert!(log_dir.join("doomed.sleep.log").exists());
    std::fs::remove_dir_all(log_dir)?;
    Ok(())
}

#[test]
fn leftovers_of_dead_runs_are_swept() -> anyhow::Result<()> {
    Cluster::require_supported()?;
    // A pid that existed and is gone: the run that "died" without cleaning up.
    let mut child = Command::new("true").spawn()?;
    child.wait()?;
    let dead = child.id();
    ensure!(!Path::new(&format!("/proc/{dead}")).exists(), "pid {dead} was reused already");
    let netns = format!("weft-{dead}-0-stale");
    let bridge = format!("wb{dead}-0");
    let ip = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("ip").args(args).status()?;
        ensure!(status.success(), "ip {args:?} failed");
        Ok(())
    };
    ip(&["netns", "add", &netns])?;
    ip(&["link", "add", &bridge, "type", "bridge"])?;
    // A process it started, in its own process group so Ctrl-C would not have reached it.
    let mut orphan = Command::new("sleep")
        .arg("600")
        .env(OWNER_ENV, dead.to_string())
        .process_group(0)
        .spawn()
        .context("starting sleep")?;

    let cluster = Cluster::new("sweep")?;
    assert_eq!(leftovers(&netns, &bridge), Vec::<String>::new(), "swept by Cluster::new");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = orphan.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            orphan.kill()?;
            orphan.wait()?;
            bail!("the orphan of the dead run was not killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.signal(), Some(9), "killed with SIGKILL");
    drop(cluster);
    Ok(())
}
