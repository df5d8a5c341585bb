//! Real third-party clients and servers through a gateway pod and through
//! sidecars, in a strict-mTLS mesh: a Python grpcio client and server
//! (unary, large messages, server, client and bidirectional streaming, an
//! expired deadline, an unrouted method), curl in HTTP/1.1 and h2c (prior
//! knowledge) against an HTTP/1.1-only server (Python's http.server) and an
//! HTTP/2-only server (nghttpd). Every client protocol reaches every
//! backend protocol with 200; a GRPCRoute to a backend declared HTTP/1.1
//! must fail, as UNAVAILABLE.
//!
//! CI installs the tools (.ci/run: Debian curl and nghttp2-server, PyPI
//! grpcio and grpcio-tools); a missing one fails the test with its name.
//! The Python stubs are generated from `grpc-py/streams.proto` at test time
//! into the cluster's log directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use weft_e2e::mesh::{Mesh, PodSpec, which};
use weft_e2e::netns::Pod;

const GRPC_VIP: &str = "10.96.60.10";
const H1_VIP: &str = "10.96.60.11";
const H2_VIP: &str = "10.96.60.12";

const MANIFESTS: &str = "\
apiVersion: weft.io/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  mtls: {mode: Strict}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec:
  controllerName: weft.io/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: apps}
spec:
  gatewayClassName: weft
  listeners:
  - {name: web, protocol: HTTP, port: 80}
---
apiVersion: v1
kind: Service
metadata: {name: pygrpc, namespace: apps}
spec:
  clusterIP: 10.96.60.10
  selector: {app: pygrpc}
  ports: [{name: grpc, port: 50051, appProtocol: kubernetes.io/h2c}]
---
apiVersion: v1
kind: Service
metadata: {name: h1only, namespace: apps}
spec:
  clusterIP: 10.96.60.11
  selector: {app: h1only}
  ports: [{name: http, port: 8000, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: h2only, namespace: apps}
spec:
  clusterIP: 10.96.60.12
  selector: {app: h2only}
  ports: [{name: h2c, port: 9000, appProtocol: kubernetes.io/h2c}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h1, namespace: apps}
spec:
  parentRefs: [{name: edge}]
  hostnames: [h1.example]
  rules: [{backendRefs: [{name: h1only, port: 8000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h2, namespace: apps}
spec:
  parentRefs: [{name: edge}]
  hostnames: [h2.example]
  rules: [{backendRefs: [{name: h2only, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc, namespace: apps}
spec:
  parentRefs: [{name: edge}]
  hostnames: [grpc.example]
  rules:
  - matches: [{method: {service: weft.test.Streams}}]
    backendRefs: [{name: pygrpc, port: 50051}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: legacy, namespace: apps}
spec:
  parentRefs: [{name: edge}]
  hostnames: [legacy.example]
  rules: [{backendRefs: [{name: h1only, port: 8000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc-mesh, namespace: apps}
spec:
  parentRefs: [{group: \"\", kind: Service, name: pygrpc, port: 50051}]
  rules:
  - matches: [{method: {service: weft.test.Streams}}]
    backendRefs: [{name: pygrpc, port: 50051}]
";

/// Fails with the tool's name when something CI installs is missing.
fn require_tools() -> anyhow::Result<()> {
    for tool in ["python3", "curl", "nghttpd"] {
        which(tool)?;
    }
    let py = std::process::Command::new("python3").args(["-c", "import grpc, grpc_tools"]).output()?;
    ensure!(
        py.status.success(),
        "python3 cannot import grpc and grpc_tools (pip install grpcio grpcio-tools; .ci/run does): {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let curl = std::process::Command::new("curl").arg("--version").output()?;
    ensure!(
        String::from_utf8_lossy(&curl.stdout).contains("HTTP2"),
        "this curl has no HTTP/2 support (Debian's curl has)"
    );
    Ok(())
}

/// Generates the grpcio stubs of `grpc-py/streams.proto` into `dir`.
fn generate_stubs(dir: &Path) -> anyhow::Result<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("grpc-py");
    std::fs::create_dir_all(dir)?;
    let out = std::process::Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&source)
        .arg(format!("--python_out={}", dir.display()))
        .arg(format!("--grpc_python_out={}", dir.display()))
        .arg("streams.proto")
        .output()?;
    ensure!(out.status.success(), "grpc_tools.protoc failed: {}", String::from_utf8_lossy(&out.stderr));
    for script in ["server.py", "client.py"] {
        std::fs::copy(source.join(script), dir.join(script))?;
    }
    Ok(dir.to_path_buf())
}

/// Runs `args` in `pod` until `check` accepts the output, for at most 20 s
/// (config reaches the proxies asynchronously); returns the last output.
fn eventually(pod: &Pod, args: &[&str], what: &str, check: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = pod.exec_with(None, args, None, Duration::from_secs(60))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if check(&text) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("{what}: not as expected within 20 s; last output:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn real_grpc_and_http_clients_and_servers_through_gateway_and_sidecars() -> anyhow::Result<()> {
    weft_e2e::netns::Cluster::require_supported()?;
    require_tools()?;
    let mut mesh = Mesh::start("real-clients", &[("apps.yaml", MANIFESTS)])?;
    let py = generate_stubs(&mesh.cluster.log_dir().join("py"))?;
    let docroot = mesh.cluster.log_dir().join("www");
    std::fs::create_dir_all(&docroot)?;
    std::fs::write(docroot.join("hello.txt"), "hello from a real server\n")?;
    let (py_s, doc_s) = (py.to_string_lossy().into_owned(), docroot.to_string_lossy().into_owned());
    let pythonpath = format!("PYTHONPATH={py_s}");
    let server = format!("{py_s}/server.py");
    mesh.add_pod(&PodSpec::new("pygrpc-a", "apps").label("app", "pygrpc").port("grpc", 50051).app(&[
        "env",
        &pythonpath,
        "python3",
        &server,
        "--listen",
        "0.0.0.0:50051",
        "--name",
        "pygrpc-a",
    ]))?;
    mesh.add_pod(&PodSpec::new("h1only-a", "apps").label("app", "h1only").port("http", 8000).app(&[
        "python3",
        "-m",
        "http.server",
        "8000",
        "--bind",
        "0.0.0.0",
        "--directory",
        &doc_s,
    ]))?;
    mesh.add_pod(
        &PodSpec::new("h2only-a", "apps")
            .label("app", "h2only")
            .port("h2c", 9000)
            .app(&["nghttpd", "--no-tls", "-d", &doc_s, "9000"]),
    )?;
    let gateway =
        mesh.add_pod(&PodSpec::new("edge-gw", "apps").gateway("edge").proxy_args(&["--access-log", "web"]))?;
    let client = mesh.add_pod(&PodSpec::new("client", "apps").label("app", "client"))?;
    let outsider = mesh.add_pod(&PodSpec::new("outsider", "apps").without_sidecar())?;
    for pod in mesh.pods.clone() {
        if pod.name() != "outsider" {
            mesh.wait_for_certificate(&pod, Duration::from_secs(30))?;
        }
    }
    let endpoints_ready = |d: &Value| {
        ["ep/apps/pygrpc", "ep/apps/h1only", "ep/apps/h2only"]
            .iter()
            .all(|ep| d["endpoints"][ep]["endpoints"].as_array().is_some_and(|a| !a.is_empty()))
    };
    mesh.wait_for_config(&client, "endpoints of the three servers", Duration::from_secs(30), endpoints_ready)?;
    mesh.wait_for_config(&gateway, "the listener's four routes", Duration::from_secs(30), |d| {
        endpoints_ready(d)
            && d["gateways"]["gw/edge.apps"]["listeners"][0]["http_routes"].as_array().is_some_and(|r| r.len() == 4)
    })?;
    let gw = SocketAddr::new(gateway.ip().into(), 80);

    // curl, HTTP/1.1 and h2c, to the HTTP/1.1-only and the HTTP/2-only
    // server, through the client's sidecar and through the gateway.
    for (mode, flag) in [("HTTP/1.1", "--http1.1"), ("h2c", "--http2-prior-knowledge")] {
        for (backend, vip, port, host) in [
            ("http.server (HTTP/1.1 only)", H1_VIP, 8000, "h1.example"),
            ("nghttpd (HTTP/2 only)", H2_VIP, 9000, "h2.example"),
        ] {
            let want_version = if flag == "--http1.1" { " 1.1" } else { " 2" };
            let check = |out: &str| {
                out.contains("hello from a real server") && out.trim_end().ends_with(&format!("200{want_version}"))
            };
            let url = format!("http://{vip}:{port}/hello.txt");
            let fmt = "\n%{http_code} %{http_version}";
            let out = eventually(
                &client,
                &["curl", "-sS", "--max-time", "10", flag, "-w", fmt, &url],
                &format!("curl {mode} → sidecar → {backend}"),
                check,
            )?;
            println!("curl {mode} → sidecar → {backend}: {}", out.lines().last().unwrap_or(""));
            let connect_to = format!("{host}:80:{}:80", gw.ip());
            let url = format!("http://{host}/hello.txt");
            let out = eventually(
                &outsider,
                &["curl", "-sS", "--max-time", "10", flag, "--connect-to", &connect_to, "-w", fmt, &url],
                &format!("curl {mode} → gateway → {backend}"),
                check,
            )?;
            println!("curl {mode} → gateway → {backend}: {}", out.lines().last().unwrap_or(""));
        }
    }

    // grpcio, through the client's sidecar and through the gateway.
    let client_script = format!("{py_s}/client.py");
    let grpc_target = format!("{GRPC_VIP}:50051");
    let gw_target = gw.to_string();
    let runs: [(&Pod, &str, Option<&str>, &str); 2] = [
        (&client, grpc_target.as_str(), None, "sidecar"),
        (&outsider, gw_target.as_str(), Some("grpc.example"), "gateway"),
    ];
    for (pod, target, authority, via) in runs {
        let mut args = vec!["env", &pythonpath, "python3", &client_script, "--target", target];
        if let Some(a) = authority {
            args.extend(["--authority", a]);
        }
        let out = eventually(pod, &args, &format!("grpcio via the {via}"), |out| {
            out.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|v| v["unary"]["code"] == "OK")
        })?;
        let v: Value = out
            .lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .with_context(|| format!("no JSON from the grpcio client: {out}"))?;
        println!("grpcio via the {via}: {v}");
        let expect = [
            ("unary", "OK"),
            ("large", "OK"),
            ("server_stream", "OK"),
            ("client_stream", "OK"),
            ("bidi", "OK"),
            ("deadline", "DEADLINE_EXCEEDED"),
            ("unmatched", "UNIMPLEMENTED"),
        ];
        for (call, code) in expect {
            ensure!(v[call]["code"] == code, "grpcio via the {via}: {call} ended {}, want {code}: {v}", v[call]);
        }
        ensure!(v["unary"]["server"] == "pygrpc-a", "{v}");
        ensure!(v["large"]["bytes"] == 3 * 1024 * 1024, "the large message came back cut: {v}");
        ensure!(v["server_stream"]["messages"] == 50, "{v}");
        ensure!(v["client_stream"]["count"] == 40_000, "{v}");
        ensure!(v["bidi"]["messages"] == 20, "{v}");
    }

    // A GRPCRoute to a backend declared HTTP/1.1 cannot work: the
    // translator reports it, and the gateway answers UNAVAILABLE.
    let args = ["env", &pythonpath, "python3", &client_script, "--target", &gw_target, "--authority", "legacy.example"];
    let out = eventually(&outsider, &args, "grpcio to a GRPCRoute with an HTTP/1.1 backend", |out| {
        out.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|v| v["unary"]["code"] == "UNAVAILABLE")
    })?;
    println!("grpcio → gateway → GRPCRoute to an HTTP/1.1 backend: {}", out.trim());
    let status = mesh.control_plane_get("/api/v1/status/GRPCRoute/apps/legacy")?;
    ensure!(
        status.to_string().contains("UnsupportedProtocol"),
        "the GRPCRoute to an HTTP/1.1 backend should report UnsupportedProtocol: {status}"
    );

    // The gateway logged that 5xx at the default level, naming the route,
    // the backend and why; and its listener wrote JSON access logs.
    let log = std::fs::read_to_string(gateway.log_file("proxy"))?;
    let error_line = log
        .lines()
        .find(|l| l.contains("proxy answered with an error") && l.contains("apps/legacy"))
        .with_context(|| format!("no error line for the legacy route in the gateway's log:\n{log}"))?;
    ensure!(
        error_line.contains("apps/h1only") && error_line.contains("gRPC needs HTTP/2"),
        "the error line should name the backend and the reason: {error_line}"
    );
    println!("gateway error log: {error_line}");
    let access: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
    let grpc_ok =
        access.iter().find(|a| a["listener"] == "web" && a["path"] == "/weft.test.Streams/Unary" && a["status"] == 200);
    ensure!(grpc_ok.is_some(), "no access log line for a gRPC call on listener web; {} JSON lines", access.len());
    println!("gateway access log: {}", grpc_ok.map(Value::to_string).unwrap_or_default());
    Ok(())
}
