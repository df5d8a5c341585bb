//! Slow clients are shed and everyone else is served: hundreds of
//! connections that send a request's header section one byte per second
//! (slowloris), at a gateway and at a sidecar's outbound listener, are
//! closed once the header read timeout passes, while real requests through
//! both keep succeeding. And a gateway out of file descriptors (more slow
//! connections than its limit allows) waits between failed accepts instead
//! of spinning, sheds the slow connections, and keeps serving.

use std::net::SocketAddr;
use std::time::Duration;

use weft_e2e::load::Outcome;
use weft_e2e::mesh::{Mesh, PodSpec, which};

const MANIFESTS: &str = "
apiVersion: weft.io/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  mtls: {mode: Strict}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec:
  controllerName: weft.io/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: weft
  listeners:
  - {name: web, protocol: HTTP, port: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: store, namespace: shop}
spec:
  clusterIP: 10.96.50.11
  selector: {app: store}
  ports: [{name: http, port: 9080, appProtocol: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: store, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  rules:
  - backendRefs: [{name: store, port: 9080}]
";

/// Slow connections per target.
const SLOW: usize = 300;
/// The proxies' header read timeout in this test (seconds).
const TIMEOUT: u64 = 3;

fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| o.status != 200).collect()
}

#[test]
fn slowloris_connections_are_shed_while_real_requests_succeed() -> anyhow::Result<()> {
    let python = which("python3")?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("slowloris.py");
    let mut mesh = Mesh::start("slowloris", &[("mesh.yaml", MANIFESTS)])?;
    let timeout = TIMEOUT.to_string();
    let limits = ["--header-read-timeout", timeout.as_str()];
    mesh.add_pod(&PodSpec::new("store-a", "shop").label("app", "store").port("http", 9080))?;
    let gateway = mesh.add_pod(&PodSpec::new("edge-gw-a", "shop").gateway("edge").proxy_args(&limits))?;
    let shopper = mesh.add_pod(&PodSpec::new("shopper", "shop").label("app", "shopper").proxy_args(&limits))?;
    let outsider = mesh.add_pod(&PodSpec::new("outsider", "shop").without_sidecar())?;
    for pod in [&gateway, &shopper] {
        mesh.wait_for_certificate(pod, Duration::from_secs(30))?;
        mesh.wait_for_config(pod, "the store's endpoints", Duration::from_secs(30), |d| {
            d["endpoints"]["ep/shop/store"]["endpoints"].as_array().is_some_and(|a| !a.is_empty())
        })?;
    }
    let entry = SocketAddr::new(gateway.ip().into(), 8080);
    let vip: SocketAddr = "10.96.50.11:9080".parse()?;

    // The attackers: from outside at the gateway, and from inside the
    // shopper pod (its traffic goes through its sidecar's outbound).
    let slow = |pod: &weft_e2e::netns::Pod, target: SocketAddr, tag: &str| {
        pod.spawn(
            &python,
            &[&script.to_string_lossy(), &target.ip().to_string(), &target.port().to_string(), &SLOW.to_string(), "12"],
            &[],
            &pod.log_file(tag),
        )
    };
    let mut at_gateway = slow(&outsider, entry, "slow-gateway")?;
    let mut at_sidecar = slow(&shopper, vip, "slow-sidecar")?;
    std::thread::sleep(Duration::from_secs(1));
    let through_gateway = mesh.start_load(&outsider, entry, "store.example", 50, 10.0)?;
    let through_sidecar = mesh.start_load(&shopper, vip, "store.shop:9080", 50, 10.0)?;
    for (what, load) in [("through the gateway", through_gateway), ("through the sidecar", through_sidecar)] {
        let outcomes = load.finish()?;
        let failed = failures(&outcomes);
        println!("{what}, beside {SLOW} slow connections: {} requests, {} failed", outcomes.len(), failed.len());
        assert!(outcomes.len() >= 450, "{what}: only {} requests", outcomes.len());
        assert!(failed.is_empty(), "{what}: {:?}", &failed[..failed.len().min(5)]);
    }
    for (what, child, pod, listener) in
        [("gateway", &mut at_gateway, &gateway, "gateway"), ("sidecar", &mut at_sidecar, &shopper, "outbound")]
    {
        anyhow::ensure!(
            child.wait_timeout(Duration::from_secs(30))?.is_some(),
            "the slowloris at the {what} did not end"
        );
        let line = std::fs::read_to_string(child.log_path())?
            .lines()
            .find(|l| l.starts_with('{'))
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("the slowloris printed nothing: {}", child.log()))?;
        let report: serde_json::Value = serde_json::from_str(&line)?;
        let times: Vec<f64> =
            report["seconds_to_close"].as_array().into_iter().flatten().filter_map(serde_json::Value::as_f64).collect();
        let last = times.last().copied().unwrap_or(f64::INFINITY);
        println!(
            "slowloris at the {what}: {} connections, {} closed by the proxy, the last after {last:.1} s (timeout {TIMEOUT} s)",
            report["opened"], report["closed"]
        );
        assert_eq!(report["closed"], SLOW, "the {what} kept slow connections open: {report}");
        assert!(last <= TIMEOUT as f64 + 2.5, "the {what} took {last:.1} s to close a slow connection");
        let shed = mesh.metric(pod, "weft_proxy_header_read_timeouts_total", &[&format!("listener=\"{listener}\"")])?;
        println!("{what}: weft_proxy_header_read_timeouts_total{{listener=\"{listener}\"}} {shed}");
        assert!(shed >= SLOW as f64, "the {what} counted {shed} header timeouts");
    }
    Ok(())
}

/// CPU time (user + system, in clock ticks) a process has used.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

#[test]
fn a_gateway_out_of_file_descriptors_backs_off_sheds_and_keeps_serving() -> anyhow::Result<()> {
    let python = which("python3")?;
    let prlimit = which("prlimit")?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("slowloris.py");
    let mut mesh = Mesh::start("fd-exhaustion", &[("mesh.yaml", MANIFESTS)])?;
    let timeout = TIMEOUT.to_string();
    mesh.add_pod(&PodSpec::new("store-a", "shop").label("app", "store").port("http", 9080))?;
    let gateway = mesh
        .add_pod(&PodSpec::new("edge-gw-a", "shop").gateway("edge").proxy_args(&["--header-read-timeout", &timeout]))?;
    let outsider = mesh.add_pod(&PodSpec::new("outsider", "shop").without_sidecar())?;
    mesh.wait_for_certificate(&gateway, Duration::from_secs(30))?;
    mesh.wait_for_config(&gateway, "the store's endpoints", Duration::from_secs(30), |d| {
        d["endpoints"]["ep/shop/store"]["endpoints"].as_array().is_some_and(|a| !a.is_empty())
    })?;
    let entry = SocketAddr::new(gateway.ip().into(), 8080);
    let pid = mesh.proxy_pid(&gateway).ok_or_else(|| anyhow::anyhow!("no gateway proxy process"))?;
    // 256 descriptors: the attack below holds 350 connections (the rest of
    // them wait in the accept queue).
    // As the proxy's own user: lowering a process's limit needs no privilege
    // then (root here may lack CAP_SYS_RESOURCE).
    let limited = std::process::Command::new("setpriv")
        .args(["--reuid=2102", "--regid=2102", "--clear-groups", "--"])
        .arg(&prlimit)
        .args(["--pid", &pid.to_string(), "--nofile=256:256"])
        .output()?;
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " ");
    anyhow::ensure!(
        limited.status.success(),
        "prlimit --pid {pid} ({cmdline}) failed: {}",
        String::from_utf8_lossy(&limited.stderr)
    );

    let load = mesh.start_load(&outsider, entry, "store.example", 50, 14.0)?;
    std::thread::sleep(Duration::from_secs(2));
    let mut attack = outsider.spawn(
        &python,
        &[&script.to_string_lossy(), &entry.ip().to_string(), &entry.port().to_string(), "350", "10"],
        &[],
        &outsider.log_file("slow-fds"),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let (ticks_before, measured_from) = (cpu_ticks(pid)?, std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(6));
    let cpu = (cpu_ticks(pid)? - ticks_before) as f64 / 100.0 / measured_from.elapsed().as_secs_f64();
    anyhow::ensure!(attack.wait_timeout(Duration::from_secs(30))?.is_some(), "the attack did not end");
    let outcomes = load.finish()?;
    let failed = failures(&outcomes);
    let accept_errors = mesh.metric(&gateway, "weft_proxy_accept_errors_total", &["listener=\"gateway\""])?;
    let shed = mesh.metric(&gateway, "weft_proxy_header_read_timeouts_total", &["listener=\"gateway\""])?;
    println!(
        "gateway limited to 256 descriptors, 350 slow connections: {accept_errors} failed accepts (backing off), {shed} slow connections shed, {cpu:.2} CPU-s/s while out of descriptors; {} real requests on kept-alive connections, {} failed",
        outcomes.len(),
        failed.len()
    );
    assert!(accept_errors > 0.0, "the gateway never ran out of descriptors");
    assert!(shed > 0.0, "no slow connection was shed");
    assert!(cpu < 0.5, "the gateway used {cpu:.2} CPU-s/s while out of descriptors (spinning?)");
    assert!(outcomes.len() >= 650, "only {} requests", outcomes.len());
    assert!(failed.is_empty(), "{:?}", &failed[..failed.len().min(5)]);
    // Once the attack is over, new connections are accepted again.
    let after = mesh.load(&outsider, entry, "store.example", 50, 2.0)?;
    assert!(failures(&after).is_empty(), "after the attack: {:?}", failures(&after));
    Ok(())
}
