//! `weft-proxy init` against a real kernel: the rules are installed once however often init
//! runs, they really redirect inbound and outbound TCP (but not the proxy's own traffic, the
//! control-plane port or the admin port), and `--remove` takes everything away.
//!
//! Needs root and iptables (CI installs it), and `weft-proxy` built by
//! `cargo build --workspace`. `weft-echo` processes stand in for the proxy's listeners, so what
//! answers tells where a connection went.

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use weft_e2e::echo::EchoResponse;
use weft_e2e::http1::Response;
use weft_e2e::netns::{Cluster, Pod, spawn_on_host, wait_for_tcp, wait_for_tcp_from_root};
use weft_e2e::workspace_bin;

const PROXY_UID: u32 = 2102;
const APP_UID: u32 = 1000;
const OUTBOUND_PORT: u16 = 15001;
const INBOUND_PORT: u16 = 15006;
const CONTROL_PLANE_PORT: u16 = 15010;
const ADMIN_PORT: u16 = 15020;
/// A port nothing listens on: reaching it means the connection was redirected.
const APP_PORT: u16 = 8080;
const READY: Duration = Duration::from_secs(10);
const REQUEST: Duration = Duration::from_secs(10);

fn require_iptables() -> anyhow::Result<()> {
    match Command::new("iptables").arg("-V").output() {
        Ok(output) if output.status.success() => Ok(()),
        _ => bail!("iptables is not installed; CI installs it (`apt-get install -y iptables`)"),
    }
}

/// Which echo answered a GET sent from inside the pod as `uid`.
fn answered_from_pod(pod: &Pod, uid: u32, addr: SocketAddr) -> anyhow::Result<String> {
    let request = format!("GET /probe HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let raw = pod.tcp_exchange(Some(uid), addr, request.as_bytes(), REQUEST)?;
    let response = Response::parse(&raw)?;
    ensure!(response.status == 200, "status {}: {}", response.status, response.text());
    Ok(response.json::<EchoResponse>()?.pod)
}

/// Which echo answered a GET sent from the root namespace.
fn answered_from_root(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(REQUEST))?;
    stream.write_all(format!("GET /probe HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(Response::parse(&raw)?.json::<EchoResponse>()?.pod)
}

fn nat_table(pod: &Pod) -> anyhow::Result<String> {
    pod.exec_ok(&["iptables-save", "-t", "nat"])
}

#[test]
fn init_redirects_idempotently_and_removes_cleanly() -> anyhow::Result<()> {
    Cluster::require_supported()?;
    require_iptables()?;
    let proxy = workspace_bin("weft-proxy")?;
    let proxy = proxy.to_str().context("non-UTF-8 path")?;
    let echo = Path::new(env!("CARGO_BIN_EXE_weft-echo"));

    let mut cluster = Cluster::new("init")?;
    let pod = cluster.pod("app")?;
    let gateway = cluster.gateway();
    let at = |ip: Ipv4Addr, port: u16| SocketAddr::new(ip.into(), port);

    // Outbound REDIRECT rewrites the destination to 127.0.0.1, inbound REDIRECT to the address
    // of the interface the connection arrived on.
    let (outbound, inbound) = (at(Ipv4Addr::LOCALHOST, OUTBOUND_PORT), at(pod.ip(), INBOUND_PORT));
    let mut stand_in = pod.spawn(
        echo,
        &["--listen", &outbound.to_string(), "--listen", &inbound.to_string(), "--pod", "proxy"],
        &[],
        &pod.log_file("proxy-stand-in"),
    )?;
    let admin = at(pod.ip(), ADMIN_PORT);
    let _admin = pod.spawn(echo, &["--listen", &admin.to_string(), "--pod", "admin"], &[], &pod.log_file("admin"))?;
    let (upstream, control_plane) = (at(gateway, APP_PORT), at(gateway, CONTROL_PLANE_PORT));
    let _upstream = spawn_on_host(
        echo,
        &["--listen", &upstream.to_string(), "--listen", &control_plane.to_string(), "--pod", "upstream"],
        &[],
        &cluster.log_dir().join("upstream.log"),
    )?;
    wait_for_tcp_from_root(inbound, READY).or_else(|error| stand_in.ensure_running().and(Err(error)))?;
    wait_for_tcp(&pod, outbound, READY)?;
    wait_for_tcp_from_root(admin, READY)?;
    wait_for_tcp_from_root(upstream, READY)?;
    wait_for_tcp_from_root(control_plane, READY)?;
    assert_eq!(answered_from_pod(&pod, APP_UID, upstream)?, "upstream", "no capture before init");

    // Twice: the second run must not duplicate anything.
    pod.exec_ok(&[proxy, "init"])?;
    pod.exec_ok(&[proxy, "init"])?;
    let planned = pod.exec_ok(&[proxy, "init", "--dry-run"])?;
    let planned_rules = planned.lines().filter(|line| line.contains(" -A ")).count();
    let table = nat_table(&pod)?;
    let installed: Vec<&str> = table.lines().filter(|line| line.starts_with("-A ") && line.contains("WEFT_")).collect();
    assert_eq!(installed.len(), planned_rules, "installed:\n{table}\nplanned:\n{planned}");
    assert_eq!(installed.iter().collect::<HashSet<_>>().len(), installed.len(), "duplicates in\n{table}");
    assert!(table.contains(":WEFT_INBOUND") && table.contains(":WEFT_OUTPUT"), "{table}");

    // Outbound: the application is captured, the proxy's own uid and the control plane are not.
    assert_eq!(answered_from_pod(&pod, APP_UID, upstream)?, "proxy");
    assert_eq!(answered_from_pod(&pod, 0, upstream)?, "proxy");
    assert_eq!(answered_from_pod(&pod, PROXY_UID, upstream)?, "upstream");
    assert_eq!(answered_from_pod(&pod, APP_UID, control_plane)?, "upstream");
    // Inbound: any port but the admin port reaches the proxy.
    assert_eq!(answered_from_root(at(pod.ip(), APP_PORT))?, "proxy");
    assert_eq!(answered_from_root(admin)?, "admin");

    // Twice: removing what is already gone succeeds.
    pod.exec_ok(&[proxy, "init", "--remove"])?;
    pod.exec_ok(&[proxy, "init", "--remove"])?;
    let table = nat_table(&pod)?;
    assert!(!table.contains("WEFT"), "left behind:\n{table}");
    assert_eq!(answered_from_pod(&pod, APP_UID, upstream)?, "upstream", "no capture after --remove");
    Ok(())
}
