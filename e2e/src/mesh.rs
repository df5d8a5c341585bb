//! A mesh on the netns harness: the control plane in local mode on the
//! host, and pods each with an echo application, `weft-proxy init` and a
//! sidecar running under its own uid — real iptables capture, real
//! processes. Tests and the conformance runner build scenarios from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::load::Outcome;
use crate::netns::{Cluster, Pod, spawn_on_host, wait_for_tcp_from_root};
use crate::process::ChildHandle;
use crate::workspace_bin;

/// The uid the sidecar runs as; its traffic is not captured.
pub const PROXY_UID: u32 = 2102;
const CP_GRPC_PORT: u16 = 15010;
const CP_ADMIN_PORT: u16 = 15000;
const PROXY_ADMIN: &str = "127.0.0.1:15020";
/// Numbers load logs.
static LOADS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A pod to start.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub labels: Vec<(String, String)>,
    /// Ports the echo application serves on the pod's loopback (named).
    pub ports: Vec<(String, u16)>,
    pub service_account: String,
    /// The mesh the pod's join token is for.
    pub mesh: String,
    /// Whether the pod gets `weft-proxy init` and a sidecar.
    pub sidecar: bool,
    /// A gateway pod: its proxy serves this MeshGatewayInstance's
    /// listeners (no init, no application).
    pub gateway: Option<String>,
    /// The sidecar's scheduler threads (`--workers`); its default when unset.
    pub workers: Option<u16>,
    /// The application to run instead of `weft-echo` (program and
    /// arguments), e.g. a third-party server; it must serve `ports`.
    pub app: Option<Vec<String>>,
    /// Extra arguments for the sidecar (`weft-proxy run`).
    pub proxy_args: Vec<String>,
}

impl PodSpec {
    pub fn new(name: &str, namespace: &str) -> Self {
        PodSpec {
            name: name.into(),
            namespace: namespace.into(),
            service_account: "default".into(),
            mesh: "default".into(),
            sidecar: true,
            ..Default::default()
        }
    }
    /// A pod outside the mesh: its application only.
    pub fn without_sidecar(mut self) -> Self {
        self.sidecar = false;
        self
    }
    pub fn mesh(mut self, mesh: &str) -> Self {
        self.mesh = mesh.into();
        self
    }
    /// A gateway proxy for the MeshGatewayInstance `instance` (the
    /// Gateway's name) of the pod's namespace.
    pub fn gateway(mut self, instance: &str) -> Self {
        self.gateway = Some(instance.into());
        self
    }
    /// Runs the sidecar with `n` scheduler threads (1: single-threaded).
    pub fn workers(mut self, n: u16) -> Self {
        self.workers = Some(n);
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.into(), v.into()));
        self
    }
    pub fn port(mut self, name: &str, port: u16) -> Self {
        self.ports.push((name.into(), port));
        self
    }
    /// Runs `command` (program first) as the pod's application instead of
    /// the echo.
    pub fn app(mut self, command: &[&str]) -> Self {
        self.app = Some(command.iter().map(|s| s.to_string()).collect());
        self
    }
    /// Passes `args` to the sidecar or gateway proxy.
    pub fn proxy_args(mut self, args: &[&str]) -> Self {
        self.proxy_args.extend(args.iter().map(|s| s.to_string()));
        self
    }
}

/// The path of a program: as given when it holds a `/`, else found on
/// `PATH`; a program that is not installed is an error naming it.
pub fn which(program: &str) -> anyhow::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} is not installed (not on PATH); .ci/run installs it"))
}

/// A running mesh. Dropping it stops every process and removes the pods.
#[derive(Debug)]
pub struct Mesh {
    // Field order is drop order: processes first, then the cluster.
    processes: Vec<ChildHandle>,
    pub cluster: Cluster,
    pub config_dir: PathBuf,
    /// The control plane's state directory (CAs, token key).
    pub state_dir: PathBuf,
    pub pods: Vec<Pod>,
}

impl Mesh {
    /// Starts the control plane on `manifests` (file name, YAML).
    pub fn start(tag: &str, manifests: &[(&str, &str)]) -> anyhow::Result<Mesh> {
        let cluster = Cluster::new(tag)?;
        let config_dir = cluster.log_dir().join("config");
        std::fs::create_dir_all(&config_dir)?;
        for (file, yaml) in manifests {
            std::fs::write(config_dir.join(file), yaml)?;
        }
        let state_dir = cluster.log_dir().join("state");
        let grpc = SocketAddr::new(cluster.gateway().into(), CP_GRPC_PORT);
        let admin = SocketAddr::new(cluster.gateway().into(), CP_ADMIN_PORT);
        let args = crate::control_plane_args(&config_dir, grpc, admin, &state_dir);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let cp = spawn_on_host(
            &workspace_bin("weft-cp")?,
            &refs,
            &[("RUST_LOG", "info")],
            &cluster.log_dir().join("weft-cp.log"),
        )?;
        let mut mesh = Mesh { processes: vec![cp], cluster, config_dir, state_dir, pods: Vec::new() };
        wait_for_tcp_from_root(grpc, Duration::from_secs(20)).context("the control plane did not start")?;
        mesh.processes[0].ensure_running()?;
        Ok(mesh)
    }

    /// GETs `path` of the control plane's admin API (JSON), from the root
    /// namespace where the control plane runs.
    pub fn control_plane_get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        use std::io::{Read, Write};
        let addr = SocketAddr::new(self.cluster.gateway().into(), CP_ADMIN_PORT);
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: weft-cp\r\nConnection: close\r\n\r\n")?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let resp = crate::http1::Response::parse(&raw)?;
        if resp.status != 200 {
            bail!("GET {path} from the control plane: status {}: {}", resp.status, resp.text());
        }
        resp.json()
    }

    /// Writes (or replaces) a manifest file; the control plane picks it up.
    pub fn write(&self, file: &str, yaml: &str) -> anyhow::Result<()> {
        // Write then rename, as tools that edit manifests do: the control
        // plane never reads half a file.
        let tmp = self.config_dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, self.config_dir.join(file))?;
        Ok(())
    }

    /// Starts a pod with its echo application and sidecar.
    pub fn add_pod(&mut self, spec: &PodSpec) -> anyhow::Result<Pod> {
        let pod = self.cluster.pod(&spec.name)?;
        let echo = workspace_bin("weft-echo")?;
        let proxy = workspace_bin("weft-proxy")?;
        if let Some(command) = &spec.app {
            let (program, args) = command.split_first().context("an empty application command")?;
            let program = which(program)?;
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            self.processes.push(pod.spawn(&program, &refs, &[], &pod.log_file("app"))?);
        } else if !spec.ports.is_empty() {
            let mut args =
                vec!["--namespace".to_owned(), spec.namespace.clone(), "--pod".to_owned(), spec.name.clone()];
            // Like an application in a pod, the echo serves on loopback and
            // on the pod's address (traffic from outside still reaches it
            // through the sidecar: iptables redirects it first).
            for (_, port) in &spec.ports {
                args.extend(["--listen".to_owned(), format!("127.0.0.1:{port}")]);
                args.extend(["--listen".to_owned(), format!("{}:{port}", pod.ip())]);
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            self.processes.push(pod.spawn(&echo, &refs, &[], &pod.log_file("echo"))?);
        }
        if !spec.sidecar {
            self.pods.push(pod.clone());
            return Ok(pod);
        }
        let token = crate::join_token(&self.state_dir, &spec.namespace, &spec.service_account, &spec.mesh)?;
        // A gateway serves its own address (its listeners may use ports
        // below 1024, as a gateway pod's NET_BIND_SERVICE allows); only
        // sidecars intercept.
        if spec.gateway.is_some() {
            pod.exec_ok(&["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start"])?;
        } else {
            pod.exec_ok(&[
                &proxy.to_string_lossy(),
                "init",
                "--proxy-uid",
                &PROXY_UID.to_string(),
                "--control-plane-port",
                &CP_GRPC_PORT.to_string(),
            ])?;
        }
        let mut args = vec![
            "run".to_owned(),
            "--control-plane".into(),
            format!("http://{}:{CP_GRPC_PORT}", self.cluster.gateway()),
            "--name".into(),
            spec.name.clone(),
            "--namespace".into(),
            spec.namespace.clone(),
            "--ip".into(),
            pod.ip().to_string(),
            "--admin".into(),
            PROXY_ADMIN.into(),
            "--service-account".into(),
            spec.service_account.clone(),
            "--mesh".into(),
            spec.mesh.clone(),
        ];
        for (k, v) in &spec.labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        for (name, port) in &spec.ports {
            args.extend(["--port".into(), format!("{name}={port}")]);
        }
        if let Some(n) = spec.workers {
            args.extend(["--workers".into(), n.to_string()]);
        }
        if let Some(instance) = &spec.gateway {
            args.extend(["--gateway".into(), instance.clone()]);
        }
        args.extend(spec.proxy_args.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let env = [("WEFT_LOG", "info"), ("WEFT_TOKEN", token.as_str())];
        self.processes.push(pod.spawn_as(PROXY_UID, &proxy, &refs, &env, &pod.log_file("proxy"))?);
        self.pods.push(pod.clone());
        Ok(pod)
    }

    /// GETs a path of the sidecar's admin port from inside the pod.
    pub fn admin_get(&self, pod: &Pod, path: &str) -> anyhow::Result<crate::http1::Response> {
        let addr: SocketAddr = PROXY_ADMIN.parse()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        let raw = pod.tcp_exchange(None, addr, request.as_bytes(), Duration::from_secs(5))?;
        crate::http1::Response::parse(&raw)
    }

    /// The value of a metric of the pod's sidecar (summed over the label
    /// sets that contain every `labels` fragment, e.g. `result="issued"`).
    pub fn metric(&self, pod: &Pod, name: &str, labels: &[&str]) -> anyhow::Result<f64> {
        let resp = self.admin_get(pod, "/metrics")?;
        Ok(resp
            .text()
            .lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|f| l.contains(f)))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            // An empty sum of floats is -0; adding 0 makes it print as 0.
            .sum::<f64>()
            + 0.0)
    }

    /// The sidecar's config dump, fetched from inside the pod.
    pub fn config_dump(&self, pod: &Pod) -> anyhow::Result<serde_json::Value> {
        let resp = self.admin_get(pod, "/config_dump")?;
        if resp.status != 200 {
            bail!("config dump of {}: status {}", pod.name(), resp.status);
        }
        resp.json()
    }

    /// Waits until `check` accepts the pod's config dump.
    pub fn wait_for_config(
        &mut self,
        pod: &Pod,
        what: &str,
        timeout: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        for _ in 0..(timeout.as_millis() / 200 + 1) {
            for p in &mut self.processes {
                p.ensure_running()?;
            }
            match self.config_dump(pod) {
                Ok(dump) if check(&dump) => return Ok(()),
                Ok(_) => last = "config does not satisfy the check yet".into(),
                Err(e) => last = format!("{e:#}"),
            }
            if start.elapsed() > timeout {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("pod {}: {what} not reached within {timeout:?} ({last})\n{}", pod.name(), self.log_tails(pod))
    }

    /// The last lines of the pod's sidecar log and of the control plane's,
    /// for failure messages: CI keeps no log files.
    pub fn log_tails(&self, pod: &Pod) -> String {
        let proxy_log = pod.log_file("proxy");
        let mut out = String::new();
        for process in &self.processes {
            if process.log_path() == proxy_log || process.log_path() == self.cluster.log_dir().join("weft-cp.log") {
                out += &format!("--- last lines of {} ---\n{}\n", process.log_path().display(), process.log_tail());
            }
        }
        out
    }

    /// Waits until the pod's sidecar holds a workload certificate.
    pub fn wait_for_certificate(&mut self, pod: &Pod, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for_config(pod, "a workload certificate", timeout, |d| d["certificate"]["identity"].is_string())
    }

    /// Starts `weft-load` in `pod`, requesting `/`.
    pub fn start_load(
        &self,
        pod: &Pod,
        connect: SocketAddr,
        host: &str,
        rate: u32,
        seconds: f64,
    ) -> anyhow::Result<Load> {
        self.start_load_path(pod, connect, host, "/", rate, seconds)
    }

    /// Starts `weft-load` in `pod`, requesting `path`.
    pub fn start_load_path(
        &self,
        pod: &Pod,
        connect: SocketAddr,
        host: &str,
        path: &str,
        rate: u32,
        seconds: f64,
    ) -> anyhow::Result<Load> {
        let n = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = pod.log_file(&format!("load-{n}"));
        let child = pod.spawn(
            &workspace_bin("weft-load")?,
            &[
                "--connect",
                &connect.to_string(),
                "--host",
                host,
                "--path",
                path,
                "--rate",
                &rate.to_string(),
                "--seconds",
                &seconds.to_string(),
            ],
            &[],
            &log,
        )?;
        Ok(Load { child, log, started: Instant::now(), seconds })
    }

    /// Runs `weft-load` in `pod` to completion.
    pub fn load(
        &self,
        pod: &Pod,
        connect: SocketAddr,
        host: &str,
        rate: u32,
        seconds: f64,
    ) -> anyhow::Result<Vec<Outcome>> {
        self.start_load(pod, connect, host, rate, seconds)?.finish()
    }
}

/// A running load.
#[derive(Debug)]
pub struct Load {
    child: ChildHandle,
    log: PathBuf,
    pub started: Instant,
    seconds: f64,
}

impl Load {
    /// Waits for the load to end and returns every request's outcome.
    pub fn finish(mut self) -> anyhow::Result<Vec<Outcome>> {
        let limit = Duration::from_secs_f64(self.seconds) + Duration::from_secs(20);
        let remaining = limit.saturating_sub(self.started.elapsed());
        match self.child.wait_timeout(remaining)? {
            Some(status) if status.success() => {}
            Some(status) => bail!("weft-load failed ({status}): {}", self.child.log()),
            None => bail!("weft-load did not finish within {limit:?}"),
        }
        let text = std::fs::read_to_string(&self.log)?;
        text.lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).with_context(|| format!("parsing {l}")))
            .collect()
    }
}
