//! Kubernetes mode on the harness: the API-server double (`weft-kube-double`)
//! in this process, `weft-cp` processes talking to it, and the real
//! `kubectl` (preinstalled as /usr/bin/kubectl) to apply and read objects
//! as a user would.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube_double::{ApiServer, Options, Recorded};
use serde_json::Value;

use crate::netns::spawn_on_host;
use crate::process::ChildHandle;
use crate::workspace_bin;

/// The user kubectl acts as.
pub const ADMIN: &str = "admin";
/// How long one kubectl call may take.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The upstream Gateway API CRDs of a release and channel (e.g.
/// `v1.5.1-experimental`).
pub fn gateway_api_crds(bundle: &str) -> PathBuf {
    repo_root().join("third_party/gateway-api-crds").join(format!("{bundle}.yaml"))
}

/// Weft's CRD files.
pub fn weft_crds() -> anyhow::Result<Vec<PathBuf>> {
    let dir = repo_root().join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The injection webhook's configuration as the chart installs it:
/// namespaces labelled for injection (never kube-system or the control
/// plane's own), and pods labelled for it in namespaces that say nothing;
/// opted-out pods never reach the webhook. No caBundle: the control plane
/// sets it.
pub const INJECTOR_WEBHOOK: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: weft-injector}
webhooks:
- name: namespaces.injector.weft.io
  clientConfig:
    service: {name: weft-cp, namespace: weft-system, port: 443, path: /inject}
  rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods], scope: Namespaced}]
  namespaceSelector:
    matchLabels: {weft.io/sidecar-injection: enabled}
    matchExpressions:
    - {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, weft-system]}
  objectSelector:
    matchExpressions:
    - {key: weft.io/sidecar-injection, operator: NotIn, values: [disabled]}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
  reinvocationPolicy: IfNeeded
- name: pods.injector.weft.io
  clientConfig:
    service: {name: weft-cp, namespace: weft-system, port: 443, path: /inject}
  rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods], scope: Namespaced}]
  namespaceSelector:
    matchExpressions:
    - {key: weft.io/sidecar-injection, operator: DoesNotExist}
    - {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, weft-system]}
  objectSelector:
    matchLabels: {weft.io/sidecar-injection: enabled}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
  reinvocationPolicy: IfNeeded
"#;

/// A control plane process started by [`Kube::start_control_plane`].
#[derive(Debug)]
pub struct ControlPlane {
    pub name: String,
    pub process: ChildHandle,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The injection webhook (HTTPS).
    pub webhook_addr: Option<SocketAddr>,
}

impl ControlPlane {
    /// GETs a path of the admin API (JSON).
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        http_get_json(self.admin_addr, path)
    }

    /// The Kubernetes state the admin API reports (leader, sync, invalid
    /// objects).
    pub fn kubernetes(&self) -> anyhow::Result<Value> {
        self.get("/api/v1/kubernetes")
    }

    /// Whether this replica holds the Lease.
    pub fn is_leader(&self) -> bool {
        self.kubernetes().ok().and_then(|k| k["leader"].as_bool()).unwrap_or(false)
    }

    /// The sum of a metric's samples whose line contains every fragment.
    pub fn metric(&self, name: &str, fragments: &[&str]) -> anyhow::Result<f64> {
        let text = http_get(self.admin_addr, "/metrics")?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| fragments.iter().all(|f| l.contains(f)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            + 0.0)
    }
}

/// The double, its kubeconfigs and the control planes started against it.
/// Dropping it stops the control planes, then the double.
#[derive(Debug)]
pub struct Kube {
    // Field order is drop order.
    pub control_planes: Vec<ControlPlane>,
    pub api: ApiServer,
    pub dir: PathBuf,
}

impl Kube {
    /// Starts the double with Weft's CRDs and, when `gateway_api` names a
    /// bundle (`v1.5.1-experimental`), the Gateway API's; creates the
    /// control plane's namespace.
    pub fn start(tag: &str, gateway_api: Option<&str>) -> anyhow::Result<Kube> {
        let mut files = weft_crds()?;
        if let Some(bundle) = gateway_api {
            files.push(gateway_api_crds(bundle));
        }
        let options =
            Options { namespaces: vec!["weft-system".into()], ..Options::default() }.with_crd_files(&files)?;
        Self::start_with(tag, options)
    }

    /// Starts the double with `options`.
    pub fn start_with(tag: &str, options: Options) -> anyhow::Result<Kube> {
        let root = std::env::var_os("WEFT_E2E_LOG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("weft-e2e"));
        // Tests of one binary run in parallel: each double gets its own
        // directory.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.join(format!("kube-{tag}-{}-{seq}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir.join("kubectl-cache"))?;
        let api = ApiServer::start(options)?;
        api.write_kubeconfig(dir.join(format!("{ADMIN}.kubeconfig")), ADMIN)?;
        Ok(Kube { control_planes: Vec::new(), api, dir })
    }

    /// A kubeconfig file for `user` (the double records who sent each
    /// request).
    pub fn kubeconfig(&self, user: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("{user}.kubeconfig"));
        if !path.exists() {
            self.api.write_kubeconfig(&path, user)?;
        }
        Ok(path)
    }

    fn kubectl_command(&self, args: &[&str]) -> anyhow::Result<Command> {
        let kubectl = Path::new("/usr/bin/kubectl");
        if !kubectl.exists() {
            bail!("/usr/bin/kubectl is missing: Kubernetes-mode e2e tests drive the real kubectl (v1.32)");
        }
        let mut command = Command::new(kubectl);
        command
            .arg("--kubeconfig")
            .arg(self.dir.join(format!("{ADMIN}.kubeconfig")))
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .args(args);
        Ok(command)
    }

    /// Runs kubectl with `stdin`; returns (success, stdout, stderr).
    pub fn kubectl_with(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<(bool, String, String)> {
        let mut command = self.kubectl_command(args)?;
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().context("starting kubectl")?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(o) = out.as_mut() {
                let _ = o.read_to_string(&mut s);
            }
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > KUBECTL_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!("kubectl {} did not finish within {KUBECTL_TIMEOUT:?}", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        Ok((status.success(), stdout, stderr))
    }

    /// Runs kubectl; fails with its error output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let (ok, out, err) = self.kubectl_with(args, None)?;
        if !ok {
            bail!("kubectl {} failed: {err}{out}", args.join(" "));
        }
        Ok(out)
    }

    /// `kubectl apply --server-side -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        let (ok, out, err) = self.kubectl_with(&["apply", "--server-side", "-f", "-"], Some(yaml))?;
        if !ok {
            bail!("kubectl apply --server-side failed: {err}{out}");
        }
        Ok(out)
    }

    /// `kubectl get KIND NAME -o json`, or `None` when it does not exist.
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> anyhow::Result<Option<Value>> {
        let mut args = vec!["get", kind, name, "-o", "json"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        let (ok, out, err) = self.kubectl_with(&args, None)?;
        if !ok {
            if err.contains("NotFound") || err.contains("not found") {
                return Ok(None);
            }
            bail!("kubectl {} failed: {err}", args.join(" "));
        }
        Ok(Some(serde_json::from_str(&out).with_context(|| format!("parsing kubectl output: {out}"))?))
    }

    /// `kubectl get KIND -o json` (all namespaces when `namespace` is None)
    /// items, optionally with a label selector.
    pub fn list(&self, kind: &str, namespace: Option<&str>, selector: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let mut args = vec!["get", kind, "-o", "json"];
        match namespace {
            Some(ns) => args.extend(["-n", ns]),
            None => args.push("-A"),
        }
        if let Some(s) = selector {
            args.extend(["-l", s]);
        }
        let out = self.kubectl(&args)?;
        let v: Value = serde_json::from_str(&out)?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// Starts `weft-cp` in Kubernetes mode as replica `name` (its pod name
    /// and its user at the API), with a Lease of `lease_seconds`. With
    /// `grpc` set it listens there for proxies (else on a free loopback
    /// port).
    pub fn start_control_plane(
        &mut self,
        name: &str,
        lease_seconds: u32,
        grpc: Option<SocketAddr>,
        admin: Option<SocketAddr>,
    ) -> anyhow::Result<&ControlPlane> {
        let kubeconfig = self.kubeconfig(name)?;
        let log = self.dir.join(format!("{name}.log"));
        let grpc = grpc.unwrap_or_else(|| "127.0.0.1:0".parse().expect("an address"));
        let admin = admin.unwrap_or_else(|| "127.0.0.1:0".parse().expect("an address"));
        let args = [
            "run".to_string(),
            "--kubeconfig".into(),
            kubeconfig.to_string_lossy().into_owned(),
            "--namespace".into(),
            "weft-system".into(),
            "--pod-name".into(),
            name.into(),
            "--lease-duration".into(),
            lease_seconds.to_string(),
            "--grpc-addr".into(),
            grpc.to_string(),
            "--admin-addr".into(),
            admin.to_string(),
            "--webhook-addr".into(),
            "127.0.0.1:0".into(),
        ];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = spawn_on_host(&workspace_bin("weft-cp")?, &refs, &[("RUST_LOG", "info")], &log)?;
        let mut cp =
            ControlPlane { name: name.into(), process, grpc_addr: grpc, admin_addr: admin, webhook_addr: None };
        // The bound addresses are in its start line (ports may be 0).
        let started = Instant::now();
        loop {
            cp.process.ensure_running()?;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("control plane started")) {
                cp.grpc_addr = field(line, "grpc_addr=")?;
                cp.admin_addr = field(line, "admin_addr=")?;
                if let Some(line) = text.lines().find(|l| l.contains("injection webhook listening")) {
                    cp.webhook_addr = Some(field(line, "webhook_addr=")?);
                }
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("weft-cp {name} did not start within 30 s:\n{}", cp.process.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.control_planes.push(cp);
        Ok(self.control_planes.last().expect("just pushed"))
    }

    /// Installs [`INJECTOR_WEBHOOK`] pointing at the first control plane's
    /// webhook (the double reaches the Service `weft-system/weft-cp:443`
    /// there; the real API server would go through the Service) and waits
    /// until the control plane has set its caBundle.
    pub fn install_webhook(&mut self) -> anyhow::Result<()> {
        let webhook = self.control_planes.first().and_then(|c| c.webhook_addr).context("no control plane webhook")?;
        self.api.route_service("weft-system", "weft-cp", 443, webhook);
        self.apply(INJECTOR_WEBHOOK)?;
        self.wait_for("the caBundle set by the control plane", Duration::from_secs(20), |k| {
            let mwc = k.get("mutatingwebhookconfiguration", None, "weft-injector")?.context("the configuration")?;
            let set =
                mwc["webhooks"].as_array().into_iter().flatten().all(|w| w["clientConfig"]["caBundle"].is_string());
            Ok(set.then_some(()))
        })
    }

    /// The control plane named `name`.
    pub fn control_plane(&mut self, name: &str) -> anyhow::Result<&mut ControlPlane> {
        self.control_planes.iter_mut().find(|c| c.name == name).with_context(|| format!("no control plane {name}"))
    }

    /// Requests that changed something, sent by `user`.
    pub fn writes_by(&self, user: &str) -> Vec<Recorded> {
        self.api.recorded().into_iter().filter(|r| r.user == user && is_write(r)).collect()
    }

    /// The last log lines of every control plane, for failure messages.
    pub fn log_tails(&self) -> String {
        self.control_planes
            .iter()
            .map(|c| format!("--- last lines of {} ---\n{}\n", c.process.log_path().display(), c.process.log_tail()))
            .collect()
    }

    /// Polls `check` until it returns `Some`, or fails after `timeout`
    /// with what it last said and the control planes' logs.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Kube) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let started = Instant::now();
        let mut last = String::new();
        for _ in 0..(timeout.as_millis() / 100 + 2) {
            for cp in &mut self.control_planes {
                cp.process.ensure_running()?;
            }
            match check(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => last = "not yet".into(),
                Err(e) => last = format!("{e:#}"),
            }
            if started.elapsed() > timeout {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{what}: not within {timeout:?} ({last})\n{}", self.log_tails())
    }
}

/// Whether a recorded request is a write.
pub fn is_write(r: &Recorded) -> bool {
    matches!(r.verb.as_str(), "create" | "update" | "patch" | "delete" | "deletecollection")
}

fn field(line: &str, name: &str) -> anyhow::Result<SocketAddr> {
    let start = line.find(name).with_context(|| format!("no {name} in {line}"))? + name.len();
    let value: String = line[start..].chars().take_while(|c| !c.is_whitespace()).collect();
    value.parse().with_context(|| format!("{name}{value}"))
}

fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: weft-cp\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let resp = crate::http1::Response::parse(&raw)?;
    if resp.status != 200 {
        bail!("GET {path}: status {}: {}", resp.status, resp.text());
    }
    Ok(resp.text())
}

fn http_get_json(addr: SocketAddr, path: &str) -> anyhow::Result<Value> {
    let text = http_get(addr, path)?;
    serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON: {text}"))
}
