//! A mesh on the netns harness: the control plane in local mode on the
//! host, and pods each with an echo application, `weft-proxy init` and a
//! sidecar running under its own uid — real iptables capture, real
//! processes. Tests and the conformance runner build scenarios from it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::kube::Kube;
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
    // Field order is drop order: processes first, then the control plane
    // and API-server double of Kubernetes mode, then the cluster.
    processes: Vec<ChildHandle>,
    /// Kubernetes mode: the API-server double and the control plane
    /// running against it. Pods are registered there as the kubelet would.
    pub kube: Option<Kube>,
    pub cluster: Cluster,
    pub config_dir: PathBuf,
    /// The control plane's state directory (CAs, token key).
    pub state_dir: PathBuf,
    pub pods: Vec<Pod>,
    /// Local mode: how many times the control plane was started.
    cp_starts: u32,
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
        let mut mesh =
            Mesh { processes: Vec::new(), kube: None, cluster, config_dir, state_dir, pods: Vec::new(), cp_starts: 0 };
        mesh.start_control_plane()?;
        wait_for_tcp_from_root(grpc, Duration::from_secs(20)).context("the control plane did not start")?;
        mesh.processes[0].ensure_running()?;
        Ok(mesh)
    }

    /// Kills the local-mode control plane with SIGKILL (as a crash or an
    /// OOM kill would), leaves it down for `down`, and starts it again on
    /// the same directory and state directory. Returns once it listens
    /// (its directory may not be loaded yet).
    pub fn restart_control_plane(&mut self, down: Duration) -> anyhow::Result<()> {
        self.restart_control_plane_with(down, || Ok(()))
    }

    /// [`Mesh::restart_control_plane`], running `while_down` while the
    /// control plane is down (to damage its state, say).
    pub fn restart_control_plane_with(
        &mut self,
        down: Duration,
        while_down: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(self.kube.is_none(), "restart_control_plane is for local mode");
        let cp = &mut self.processes[0];
        cp.signal("KILL")?;
        let _ = cp.wait_timeout(Duration::from_secs(10))?;
        while_down()?;
        std::thread::sleep(down);
        self.start_control_plane()?;
        let grpc = SocketAddr::new(self.cluster.gateway().into(), CP_GRPC_PORT);
        wait_for_tcp_from_root(grpc, Duration::from_secs(20)).context("the restarted control plane did not listen")?;
        Ok(())
    }

    /// Starts (again) the local-mode control plane, as `processes[0]`.
    fn start_control_plane(&mut self) -> anyhow::Result<()> {
        let grpc = SocketAddr::new(self.cluster.gateway().into(), CP_GRPC_PORT);
        let admin = SocketAddr::new(self.cluster.gateway().into(), CP_ADMIN_PORT);
        let args = crate::control_plane_args(&self.config_dir, grpc, admin, &self.state_dir);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let starts = self.cp_starts;
        self.cp_starts += 1;
        let log = match starts {
            0 => self.cluster.log_dir().join("weft-cp.log"),
            n => self.cluster.log_dir().join(format!("weft-cp-restart-{n}.log")),
        };
        let cp = spawn_on_host(&workspace_bin("weft-cp")?, &refs, &[("RUST_LOG", "info")], &log)?;
        if self.processes.is_empty() {
            self.processes.push(cp);
        } else {
            self.processes[0] = cp;
        }
        Ok(())
    }

    /// Starts the control plane in Kubernetes mode, against an API-server
    /// double holding Weft's and the Gateway API's CRDs. Objects are
    /// applied with [`Kube::apply`] (the real kubectl); pods added with
    /// [`Mesh::add_pod`] are also registered as Pod objects, running and
    /// ready, so the double's EndpointSlice controller lists them.
    pub fn start_kubernetes(tag: &str) -> anyhow::Result<Mesh> {
        let cluster = Cluster::new(tag)?;
        let config_dir = cluster.log_dir().join("config");
        let state_dir = cluster.log_dir().join("state");
        std::fs::create_dir_all(&state_dir)?;
        let mut kube = Kube::start(tag, Some("v1.5.1-experimental"))?;
        let grpc = SocketAddr::new(cluster.gateway().into(), CP_GRPC_PORT);
        let admin = SocketAddr::new(cluster.gateway().into(), CP_ADMIN_PORT);
        kube.start_control_plane("weft-cp-0", 6, Some(grpc), Some(admin))?;
        // Join tokens are signed with the key the control plane keeps in a
        // Secret; `weftctl token create` reads it from a state directory.
        let key = kube.wait_for("the join-token key Secret", Duration::from_secs(30), |k| {
            let secret = k.api.get("v1", "Secret", "weft-system", "weft-join-token-key");
            Ok(secret.and_then(|s| s["data"]["token.key"].as_str().map(str::to_owned)))
        })?;
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.decode(key.trim())?;
        std::fs::write(state_dir.join("token.key"), key)?;
        let mut mesh = Mesh {
            processes: Vec::new(),
            kube: Some(kube),
            cluster,
            config_dir,
            state_dir,
            pods: Vec::new(),
            cp_starts: 0,
        };
        wait_for_tcp_from_root(grpc, Duration::from_secs(20)).context("the control plane did not start")?;
        mesh.ensure_running()?;
        Ok(mesh)
    }

    /// The Kubernetes-mode double and control plane.
    pub fn kube(&mut self) -> anyhow::Result<&mut Kube> {
        self.kube.as_mut().context("this mesh runs in local mode")
    }

    /// Fails when a process of the mesh has exited.
    fn ensure_running(&mut self) -> anyhow::Result<()> {
        for p in &mut self.processes {
            p.ensure_running()?;
        }
        if let Some(kube) = self.kube.as_mut() {
            for cp in &mut kube.control_planes {
                cp.process.ensure_running()?;
            }
        }
        Ok(())
    }

    /// Registers a started pod with the API-server double, as the kubelet
    /// would report it: running, ready, with its address.
    fn register_pod(&mut self, spec: &PodSpec, pod: &Pod) -> anyhow::Result<()> {
        let Some(kube) = self.kube.as_ref() else { return Ok(()) };
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": spec.namespace}});
        if kube.api.get("v1", "Namespace", "", &spec.namespace).is_none() {
            kube.api.create(ns).map_err(|e| anyhow::anyhow!("namespace {}: {e}", spec.namespace))?;
        }
        let mut labels: serde_json::Map<String, serde_json::Value> =
            spec.labels.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        if spec.sidecar {
            labels.insert("weft.io/mesh".into(), spec.mesh.clone().into());
        }
        let ports: Vec<serde_json::Value> = spec
            .ports
            .iter()
            .map(|(name, port)| serde_json::json!({"name": name, "containerPort": port, "protocol": "TCP"}))
            .collect();
        let object = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
            "spec": {"serviceAccountName": spec.service_account,
                     "containers": [{"name": "app", "image": "weft-echo", "ports": ports}]},
        });
        kube.api.create(object).map_err(|e| anyhow::anyhow!("pod {}: {e}", spec.name))?;
        let status = serde_json::json!({"status": {
            "phase": "Running", "podIP": pod.ip().to_string(), "podIPs": [{"ip": pod.ip().to_string()}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        kube.api
            .patch_status("v1", "Pod", &spec.namespace, &spec.name, status)
            .map_err(|e| anyhow::anyhow!("status of pod {}: {e}", spec.name))?;
        Ok(())
    }

    /// GETs `path` of the control plane's admin API (JSON), from the root
    /// namespace where the control plane runs.
    pub fn control_plane_get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.control_plane_response(path)?.json()
    }

    /// A text resource of the control plane's admin API (`/metrics`).
    pub fn control_plane_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self.control_plane_response(path)?.text())
    }

    fn control_plane_response(&self, path: &str) -> anyhow::Result<crate::http1::Response> {
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
        Ok(resp)
    }

    /// The control plane's config-stream (gRPC) address, as proxies reach it.
    pub fn control_plane_grpc(&self) -> SocketAddr {
        SocketAddr::new(self.cluster.gateway().into(), CP_GRPC_PORT)
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
            self.register_pod(spec, &pod)?;
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
        self.register_pod(spec, &pod)?;
        self.pods.push(pod.clone());
        Ok(pod)
    }

    /// Kubernetes mode: creates the pod through the API (so the injection
    /// webhook mutates it), then runs it as the kubelet would run the
    /// injected spec ([`Mesh::run_as_written`]). `token` replaces the
    /// projected token (to test refused ones). Returns the netns pod and
    /// the pod as the API stored it.
    pub fn add_injected_pod(
        &mut self,
        spec: &PodSpec,
        token: Option<String>,
    ) -> anyhow::Result<(Pod, serde_json::Value)> {
        let kube = self.kube.as_ref().context("injected pods need Kubernetes mode")?;
        let labels: serde_json::Map<String, serde_json::Value> =
            spec.labels.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        let ports: Vec<serde_json::Value> = spec
            .ports
            .iter()
            .map(|(name, port)| serde_json::json!({"name": name, "containerPort": port, "protocol": "TCP"}))
            .collect();
        let object = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
            "spec": {"serviceAccountName": spec.service_account,
                     "containers": [{"name": "app", "image": "weft-echo", "ports": ports}]},
        });
        kube.apply(&object.to_string())?;
        let stored = kube.get("pod", Some(&spec.namespace), &spec.name)?.context("the pod was not stored")?;
        let injected =
            stored["spec"]["initContainers"].as_array().into_iter().flatten().any(|c| c["name"] == "weft-proxy");
        if !injected {
            bail!("pod {}/{} was not injected: {stored}", spec.namespace, spec.name);
        }
        let pod = self.run_as_written(&stored, "weft-proxy", &spec.ports, token)?;
        Ok((pod, stored))
    }

    /// Kubernetes mode: a pod of a provisioned gateway Deployment, as its
    /// ReplicaSet would create it from the Deployment's pod template, run as
    /// the kubelet would. The Deployment is then reported as having one
    /// more available replica.
    pub fn add_gateway_replica(&mut self, namespace: &str, deployment: &str, name: &str) -> anyhow::Result<Pod> {
        let kube = self.kube.as_ref().context("gateway replicas need Kubernetes mode")?;
        let d = kube.get("deployment", Some(namespace), deployment)?.context("no such Deployment")?;
        let template = &d["spec"]["template"];
        let mut object = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": template["metadata"]["labels"].clone(),
                         "annotations": template["metadata"]["annotations"].clone()},
            "spec": template["spec"].clone(),
        });
        if object["metadata"]["annotations"].is_null() {
            object["metadata"].as_object_mut().map(|m| m.remove("annotations"));
        }
        kube.api.create(object).map_err(|e| anyhow::anyhow!("pod {name}: {e}"))?;
        let stored = kube.get("pod", Some(namespace), name)?.context("the pod was not stored")?;
        let pod = self.run_as_written(&stored, "weft-gateway", &[], None)?;
        let kube = self.kube.as_ref().context("Kubernetes mode")?;
        let available = d["status"]["availableReplicas"].as_i64().unwrap_or(0) + 1;
        let status = serde_json::json!({"status": {"replicas": available, "readyReplicas": available, "availableReplicas": available}});
        kube.api
            .patch_status("apps/v1", "Deployment", namespace, deployment, status)
            .map_err(|e| anyhow::anyhow!("status of deployment {deployment}: {e}"))?;
        Ok(pod)
    }

    /// Runs a stored pod in a new network namespace exactly as its spec
    /// says, as the kubelet would: the application (the echo, on `ports`),
    /// `weft-init`'s command (if the pod has one) as root to completion,
    /// then the proxy container `proxy` with its command, arguments, its
    /// environment (downward-API fields resolved) and its projected token
    /// mounted at the path the spec says, as the uid its security context
    /// says; the cluster DNS name of the control plane resolves to it. The
    /// pod's address is reported in its status.
    pub fn run_as_written(
        &mut self,
        stored: &serde_json::Value,
        proxy: &str,
        ports: &[(String, u16)],
        token: Option<String>,
    ) -> anyhow::Result<Pod> {
        let name = stored["metadata"]["name"].as_str().context("the pod has no name")?.to_string();
        let namespace = stored["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let service_account = stored["spec"]["serviceAccountName"].as_str().unwrap_or("default").to_string();
        let uid = stored["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let find = |n: &str| {
            stored["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(stored["spec"]["containers"].as_array().into_iter().flatten())
                .find(|c| c["name"] == n)
                .cloned()
        };
        let sidecar = find(proxy).with_context(|| format!("no container {proxy} in pod {namespace}/{name}"))?;
        let pod = self.cluster.pod(&name)?;
        let status = serde_json::json!({"status": {"phase": "Running", "podIP": pod.ip().to_string(),
            "podIPs": [{"ip": pod.ip().to_string()}]}});
        let kube = self.kube.as_ref().context("Kubernetes mode")?;
        kube.api
            .patch_status("v1", "Pod", &namespace, &name, status)
            .map_err(|e| anyhow::anyhow!("status of pod {name}: {e}"))?;

        // The application.
        if !ports.is_empty() {
            let mut args = vec!["--namespace".to_owned(), namespace.clone(), "--pod".to_owned(), name.clone()];
            for (_, port) in ports {
                args.extend(["--listen".to_owned(), format!("127.0.0.1:{port}")]);
                args.extend(["--listen".to_owned(), format!("{}:{port}", pod.ip())]);
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            self.processes.push(pod.spawn(&workspace_bin("weft-echo")?, &refs, &[], &pod.log_file("echo"))?);
        }
        let proxy_bin = workspace_bin("weft-proxy")?;
        let command_of = |c: &serde_json::Value| -> anyhow::Result<Vec<String>> {
            let mut argv: Vec<String> = c["command"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(c["args"].as_array().into_iter().flatten())
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            // The image's binary is this workspace's.
            match argv.first_mut() {
                Some(bin) if bin.ends_with("/weft-proxy") => *bin = proxy_bin.to_string_lossy().into_owned(),
                _ => bail!("unexpected command in {c}"),
            }
            Ok(argv)
        };

        // The init container, as root, to completion.
        if let Some(init) = find("weft-init") {
            let argv = command_of(&init)?;
            let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
            pod.exec_ok(&refs).context("weft-init")?;
        }
        // Unprivileged low ports, as the pod's safe sysctl asks.
        let sysctls = stored["spec"]["securityContext"]["sysctls"].as_array().cloned().unwrap_or_default();
        for s in sysctls {
            if s["name"] == "net.ipv4.ip_unprivileged_port_start" {
                let value = s["value"].as_str().unwrap_or("1024");
                pod.exec_ok(&["sh", "-c", &format!("echo {value} > /proc/sys/net/ipv4/ip_unprivileged_port_start")])?;
            }
        }

        // The proxy's environment, as the kubelet resolves it.
        let mut env: Vec<(String, String)> = Vec::new();
        for e in sidecar["env"].as_array().into_iter().flatten() {
            let var = e["name"].as_str().unwrap_or_default().to_string();
            let value = match (e["value"].as_str(), e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
                (Some(v), _) => v.to_string(),
                (None, Some("metadata.name")) => name.clone(),
                (None, Some("metadata.namespace")) => namespace.clone(),
                (None, Some("spec.serviceAccountName")) => service_account.clone(),
                (None, Some("status.podIP")) => pod.ip().to_string(),
                (None, other) => bail!("unsupported environment source {other:?} in {e}"),
            };
            env.push((var, value));
        }
        // The projected token at the mount path, and the cluster DNS name
        // of the control plane in the pod's hosts file.
        let token_volume = stored["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["projected"]["sources"][0]["serviceAccountToken"].is_object())
            .context("no projected token volume")?;
        let projection = &token_volume["projected"]["sources"][0]["serviceAccountToken"];
        let mount = sidecar["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == token_volume["name"])
            .context("the proxy does not mount the token")?;
        let mount_path = mount["mountPath"].as_str().unwrap_or_default().to_string();
        let kube = self.kube.as_ref().context("Kubernetes mode")?;
        let token = match token {
            Some(t) => t,
            None => kube.api.issue_token(
                &namespace,
                &service_account,
                &[projection["audience"].as_str().unwrap_or_default()],
                Duration::from_secs(projection["expirationSeconds"].as_u64().unwrap_or(3600)),
                Some((&name, &uid)),
            ),
        };
        let volume_dir = self.cluster.log_dir().join(format!("{name}-token"));
        std::fs::create_dir_all(&volume_dir)?;
        let file = volume_dir.join(projection["path"].as_str().unwrap_or("token"));
        std::fs::write(&file, &token)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&volume_dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        let hosts = self.cluster.log_dir().join(format!("{name}-hosts"));
        std::fs::write(&hosts, format!("127.0.0.1 localhost\n{} weft-cp.weft-system.svc\n", self.cluster.gateway()))?;
        let user = sidecar["securityContext"]["runAsUser"].as_u64().context("the proxy names no runAsUser")?;
        // `ip netns exec` gives the process its own mount namespace: the
        // mounts stay the pod's.
        let script = format!(
            "mkdir -p {mount_path} && mount --bind {} {mount_path} && mount --bind {} /etc/hosts && \
             exec setpriv --reuid={user} --regid={user} --clear-groups -- \"$@\"",
            volume_dir.display(),
            hosts.display()
        );
        let mut args = vec!["-c".to_string(), script, "sh".into()];
        args.extend(command_of(&sidecar)?);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.processes.push(pod.spawn(Path::new("/bin/sh"), &refs, &env_refs, &pod.log_file("proxy"))?);
        self.pods.push(pod.clone());
        Ok(pod)
    }

    /// Kubernetes mode: waits until the injected pod's proxy is ready on its
    /// health port (the kubelet's startup probe), then reports the pod Ready
    /// so that EndpointSlices list it.
    pub fn wait_ready_and_report(&mut self, pod: &Pod, namespace: &str, timeout: Duration) -> anyhow::Result<()> {
        let health: SocketAddr = "127.0.0.1:15021".parse()?;
        let start = Instant::now();
        loop {
            self.ensure_running()?;
            let req = b"GET /ready HTTP/1.1\r\nHost: kubelet\r\nConnection: close\r\n\r\n";
            if let Ok(raw) = pod.tcp_exchange(None, health, req, Duration::from_secs(5))
                && crate::http1::Response::parse(&raw).is_ok_and(|r| r.status == 200)
            {
                break;
            }
            if start.elapsed() > timeout {
                bail!("pod {}: the proxy was not ready within {timeout:?}\n{}", pod.name(), self.log_tails(pod));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let status = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        self.kube()?
            .api
            .patch_status("v1", "Pod", namespace, pod.name(), status)
            .map_err(|e| anyhow::anyhow!("readiness of pod {}: {e}", pod.name()))?;
        Ok(())
    }

    /// The process id of the pod's proxy (sidecar or gateway).
    pub fn proxy_pid(&self, pod: &Pod) -> Option<u32> {
        let log = pod.log_file("proxy");
        self.processes.iter().find(|p| p.log_path() == log).map(|p| p.pid())
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
            self.ensure_running()?;
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
            let control_plane =
                process.log_path().file_name().is_some_and(|n| n.to_string_lossy().starts_with("weft-cp"));
            if process.log_path() == proxy_log || control_plane {
                out += &format!("--- last lines of {} ---\n{}\n", process.log_path().display(), process.log_tail());
            }
        }
        if let Some(kube) = &self.kube {
            out += &kube.log_tails();
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

    /// Starts `weft-load` in `pod` over HTTPS to `host` (the SNI server name
    /// and the name verified), trusting the PEM roots in `ca`.
    pub fn start_load_tls(
        &self,
        pod: &Pod,
        connect: SocketAddr,
        host: &str,
        ca: &Path,
        rate: u32,
        seconds: f64,
    ) -> anyhow::Result<Load> {
        let n = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = pod.log_file(&format!("load-{n}"));
        let ca = ca.to_string_lossy();
        let args = [
            "--connect",
            &connect.to_string(),
            "--host",
            host,
            "--rate",
            &rate.to_string(),
            "--seconds",
            &seconds.to_string(),
            "--tls-ca",
            &ca,
        ];
        let child = pod.spawn(&workspace_bin("weft-load")?, &args, &[], &log)?;
        Ok(Load { child, log, started: Instant::now(), seconds })
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
