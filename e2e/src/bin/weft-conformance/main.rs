//! `weft-conformance`: runs Gateway API conformance cases (the data schema
//! of ../shared/conformance) on the netns harness: applies the manifests to
//! a control plane in local mode, starts a pod with an echo application
//! and a sidecar for every Deployment replica, a gateway pod for every
//! Gateway and, for gateway tests, a client pod outside the mesh; sends each
//! case's HTTP(S) requests (`weft-request`), gRPC calls (`weft-grpc`) or
//! raw TCP/TLS exchanges (`weft-tcp-probe`) from the client pod to the
//! Service's cluster IP (captured by iptables) or to the Gateway's address,
//! and judges the answers. Backends whose Deployment asks for the TCP echo
//! or a TLS listener get them from `weft-echo`, with the certificates the
//! upstream suite makes in code (see `certs`). Prints PASS/FAIL/SKIP per
//! test and ends with "N passed, M failed". A case with an expectation or
//! an action the runner does not take fails with a message saying so.

mod certs;
mod tcp;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use weft_e2e::mesh::{Mesh, PodSpec};
use weft_e2e::netns::Pod;
use weft_e2e::workspace_bin;

#[derive(Parser, Debug)]
struct Args {
    /// Directory of case files (`cases/` of the conformance data).
    #[arg(long)]
    cases: PathBuf,
    /// Root that manifest paths are relative to (default: the parent of --cases).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Only tests whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Only tests of this client: `gateway` or `mesh`.
    #[arg(long)]
    client: Option<String>,
    /// How long a failing case is retried while config converges.
    #[arg(long, default_value_t = 10)]
    converge_seconds: u64,
}

/// The certificates of this run (made once, shared by every test).
static CERTS: OnceLock<certs::Certs> = OnceLock::new();

fn certs() -> &'static certs::Certs {
    CERTS.get().expect("certificates are made before any test runs")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cert_dir = std::env::temp_dir().join(format!("weft-conformance-{}", std::process::id()));
    let made = certs::make(&cert_dir)?;
    let _ = CERTS.set(made);
    let outcome = run_all(&args);
    let _ = std::fs::remove_dir_all(&cert_dir);
    outcome
}

fn run_all(args: &Args) -> anyhow::Result<()> {
    let root = args.root.clone().unwrap_or_else(|| args.cases.parent().map(Path::to_path_buf).unwrap_or_default());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.cases)
        .with_context(|| format!("--cases {}", args.cases.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let (mut cases_passed, mut cases_failed) = (0, 0);
    for file in files {
        let test: Value = serde_saphyr::from_str(&std::fs::read_to_string(&file)?)
            .with_context(|| format!("{}: not a case file", file.display()))?;
        let name = test["name"].as_str().unwrap_or_default().to_owned();
        if args.filter.as_deref().is_some_and(|f| !name.contains(f))
            || args.client.as_deref().is_some_and(|c| test["client"] != c)
        {
            continue;
        }
        if test["case_count"].as_u64() == Some(0) {
            // Status checks only: the translator's conformance_status test
            // (cargo test --workspace --test conformance_status) judges those.
            skipped += 1;
            println!("SKIP {name}: no request cases");
            continue;
        }
        let started = Instant::now();
        match run_test(&test, &root, Duration::from_secs(args.converge_seconds)) {
            Ok(Run::Skipped(why)) => {
                skipped += 1;
                println!("SKIP {name}: {why}");
            }
            Ok(Run::Done(results)) => {
                let bad: Vec<&(String, Option<String>)> = results.iter().filter(|(_, e)| e.is_some()).collect();
                cases_passed += results.len() - bad.len();
                cases_failed += bad.len();
                let secs = started.elapsed().as_secs_f64();
                if bad.is_empty() {
                    passed += 1;
                    println!("PASS {name} ({} cases, {secs:.1} s)", results.len());
                } else {
                    failed += 1;
                    println!("FAIL {name} ({} of {} cases failed, {secs:.1} s)", bad.len(), results.len());
                    for (case, err) in bad {
                        println!("     {case}: {}", err.as_deref().unwrap_or(""));
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {name}: {e:#}");
            }
        }
    }
    println!(
        "cases: {cases_passed} passed, {cases_failed} failed; {skipped} tests skipped (no request cases, or features the GatewayClass does not claim)"
    );
    println!("{passed} passed, {failed} failed");
    Ok(())
}

/// What a backend Deployment asks the echo image for: the TCP echo
/// (`TCP_ECHO_SERVER=1`) and a TLS listener on 8443 with the certificate
/// of the Secret its volume mounts (`TLS_SERVER_CERT`).
#[derive(Clone, Debug, Default)]
struct EchoMode {
    tcp: bool,
    tls: Option<(PathBuf, PathBuf)>,
}

/// The port echo-basic serves TLS on.
const ECHO_TLS_PORT: u16 = 8443;

fn echo_mode(doc: &Value) -> anyhow::Result<EchoMode> {
    let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
    let pod = &doc["spec"]["template"]["spec"];
    let env: BTreeMap<&str, &str> = pod["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["env"].as_array().into_iter().flatten())
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str().unwrap_or_default())))
        .collect();
    let tcp = env.get("TCP_ECHO_SERVER").is_some_and(|v| !v.is_empty() && *v != "0");
    let tls = match env.get("TLS_SERVER_CERT") {
        None => None,
        Some(_) => {
            let secret = pod["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|v| v["secret"]["secretName"].as_str())
                .context("TLS_SERVER_CERT without a Secret volume")?;
            let files = certs()
                .secrets
                .get(&format!("{ns}/{secret}"))
                .with_context(|| format!("no certificate is made for Secret {ns}/{secret}"))?;
            Some(files.clone())
        }
    };
    Ok(EchoMode { tcp, tls })
}

/// The echo command of a backend that needs the TCP echo or TLS: plain
/// listeners on its ports but 8443, TLS on 8443.
fn echo_command(spec: &PodSpec, mode: &EchoMode) -> anyhow::Result<Vec<String>> {
    let echo = workspace_bin("weft-echo")?;
    let mut args = vec![echo.to_string_lossy().into_owned(), "--namespace".into(), spec.namespace.clone()];
    args.extend(["--pod".into(), spec.name.clone()]);
    if mode.tcp {
        args.push("--tcp-echo".into());
    }
    for (_, port) in &spec.ports {
        match (&mode.tls, *port) {
            (Some((cert, key)), ECHO_TLS_PORT) => args.extend([
                "--tls-listen".into(),
                format!("0.0.0.0:{port}"),
                "--tls-cert".into(),
                cert.to_string_lossy().into_owned(),
                "--tls-key".into(),
                key.to_string_lossy().into_owned(),
            ]),
            _ => args.extend(["--listen".into(), format!("0.0.0.0:{port}")]),
        }
    }
    Ok(args)
}

/// A Deployment's replicas, as pods to start.
fn pods_of(doc: &Value) -> Vec<PodSpec> {
    let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = doc["metadata"]["name"].as_str().unwrap_or("pod");
    let replicas = doc["spec"]["replicas"].as_u64().unwrap_or(1);
    let template = &doc["spec"]["template"];
    (0..replicas)
        .map(|i| {
            // Pod names are unique across namespaces: the namespace's
            // initials go before the replica number.
            let initials: String = ns.split('-').filter_map(|w| w.chars().next()).collect();
            let mut spec = PodSpec::new(&pod_name(format!("{name}-{initials}{i}")), ns);
            if let Some(labels) = template["metadata"]["labels"].as_object() {
                for (k, v) in labels {
                    spec = spec.label(k, v.as_str().unwrap_or_default());
                }
            }
            for c in template["spec"]["containers"].as_array().into_iter().flatten() {
                for p in c["ports"].as_array().into_iter().flatten() {
                    if let Some(port) = p["containerPort"].as_u64() {
                        let pname = p["name"].as_str().map(str::to_owned).unwrap_or_else(|| format!("p{port}"));
                        spec = spec.port(&pname, port as u16);
                    }
                }
            }
            spec
        })
        .collect()
}

fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(d) = docs.last_mut() {
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.into_iter().filter(|d| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))).collect()
}

/// What running a test came to.
enum Run {
    /// Case labels with the failure of each (`None`: passed).
    Done(Vec<(String, Option<String>)>),
    Skipped(String),
}

/// The features Weft's GatewayClass claims in its status, as the upstream
/// suite reads them to choose its tests.
fn claimed_features(mesh: &Mesh) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(class) = mesh.control_plane_get(&format!("/api/v1/status/GatewayClass/{GATEWAY_CLASS_NAME}")) {
            let names: Vec<String> = class["status"]["supportedFeatures"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["name"].as_str().map(str::to_owned))
                .collect();
            if !names.is_empty() {
                return Ok(names);
            }
        }
        if Instant::now() > deadline {
            bail!("the GatewayClass has no supportedFeatures in its status after 20 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run_test(test: &Value, root: &Path, converge: Duration) -> anyhow::Result<Run> {
    let mut files: Vec<(String, String)> = Vec::new();
    let mut pods = Vec::new();
    let paths = test["base_manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(test["manifests"].as_array().into_iter().flatten());
    for (i, p) in paths.enumerate() {
        let path = root.join(p.as_str().unwrap_or_default());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        for doc in documents(&text) {
            let v: Value =
                serde_saphyr::from_str(&doc).with_context(|| format!("parsing a document of {}", path.display()))?;
            if v["kind"] == "Deployment" {
                let mode = echo_mode(&v)?;
                pods.extend(pods_of(&v).into_iter().map(|p| (p, mode.clone())));
            }
        }
        files.push((format!("{i:02}-{}", path.file_name().unwrap_or_default().to_string_lossy()), text));
    }
    // Backends that declare no container ports (the echo image listens on
    // its defaults) serve the target ports of the Services selecting them.
    let mut service_targets: Vec<(serde_json::Map<String, Value>, Vec<u16>)> = Vec::new();
    for (_, text) in &files {
        for doc in documents(text) {
            let v: Value = serde_saphyr::from_str(&doc).unwrap_or(Value::Null);
            if v["kind"] != "Service" {
                continue;
            }
            let Some(selector) = v["spec"]["selector"].as_object().cloned() else { continue };
            let ports = v["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["targetPort"].as_u64().or_else(|| p["port"].as_u64()))
                .filter_map(|p| u16::try_from(p).ok())
                .collect();
            service_targets.push((selector, ports));
        }
    }
    for (spec, _) in pods.iter_mut().filter(|(p, _)| p.ports.is_empty()) {
        let mut ports: Vec<u16> = service_targets
            .iter()
            .filter(|(selector, _)| {
                selector.iter().all(|(k, v)| spec.labels.iter().any(|(lk, lv)| lk == k && v.as_str() == Some(lv)))
            })
            .flat_map(|(_, ports)| ports.iter().copied())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            *spec = spec.clone().port(&format!("p{port}"), port);
        }
    }
    let mut pods: Vec<PodSpec> = pods
        .into_iter()
        .map(|(mut spec, mode)| {
            if mode.tcp || mode.tls.is_some() {
                spec.app = Some(echo_command(&spec, &mode)?);
            }
            Ok(spec)
        })
        .collect::<anyhow::Result<_>>()?;
    // Gateway tests: the suite's GatewayClass is Weft's, every Gateway gets
    // a gateway pod, and requests come from a pod outside the mesh.
    let gateway_test = test["client"] == "gateway";
    if gateway_test {
        for (_, text) in &mut files {
            *text = text.replace("{GATEWAY_CLASS_NAME}", GATEWAY_CLASS_NAME);
        }
        files.push(("00-gatewayclass.yaml".into(), GATEWAY_CLASS.into()));
        files.push(("00-certificates.yaml".into(), certs().manifest.clone()));
        for (_, text) in &files {
            for doc in documents(text) {
                let v: Value = serde_saphyr::from_str(&doc).unwrap_or(Value::Null);
                if v["kind"] == "Gateway" {
                    let ns = v["metadata"]["namespace"].as_str().unwrap_or("default");
                    let name = v["metadata"]["name"].as_str().unwrap_or_default();
                    pods.push(PodSpec::new(&gateway_pod_name(ns, name), ns).gateway(name));
                }
            }
        }
        pods.push(PodSpec::new(OUTSIDE_CLIENT, OUTSIDE_NAMESPACE).without_sidecar());
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(f, t)| (f.as_str(), t.as_str())).collect();
    let name = test["name"].as_str().unwrap_or("test").to_lowercase();
    let mut mesh = Mesh::start(&name, &refs)?;
    if gateway_test {
        let claimed = claimed_features(&mesh)?;
        let missing: Vec<&str> = test["features"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|f| !claimed.iter().any(|c| c == f))
            .collect();
        if !missing.is_empty() {
            return Ok(Run::Skipped(format!("features the GatewayClass does not claim: {}", missing.join(", "))));
        }
    }
    let mut started: Vec<(PodSpec, Pod)> = Vec::new();
    for spec in &pods {
        started.push((spec.clone(), mesh.add_pod(spec)?));
    }
    // As the upstream suite waits for Deployments to be ready: a sidecar is
    // ready once it holds its workload certificate, so the cases' own
    // retry budget covers only config convergence.
    for (spec, pod) in &started {
        if spec.sidecar {
            mesh.wait_for_certificate(pod, Duration::from_secs(30))?;
        }
    }
    let mut results = Vec::new();
    for step in test["steps"].as_array().into_iter().flatten() {
        if let Err(e) = take_actions(&mesh, &files, &started, &step["actions"]) {
            for case in step["cases"].as_array().into_iter().flatten() {
                results.push((case_label(case), Some(format!("{e:#}"))));
            }
            continue;
        }
        for case in step["cases"].as_array().into_iter().flatten() {
            let result = run_case(&mut mesh, &started, case, converge);
            results.push((case_label(case), result.err().map(|e| format!("{e:#}"))));
        }
    }
    Ok(Run::Done(results))
}

/// A step's actions, on the control plane's directory: `delete` rewrites
/// the file that holds the object without it, `create` writes a new file,
/// `populate_endpointslices` rewrites manual EndpointSlices with the
/// addresses of a Deployment's pods, `sleep` waits. Others fail the step's
/// cases with a message saying so.
fn take_actions(
    mesh: &Mesh,
    files: &[(String, String)],
    pods: &[(PodSpec, Pod)],
    actions: &Value,
) -> anyhow::Result<()> {
    for action in actions.as_array().into_iter().flatten() {
        if let Some(populate) = action.get("populate_endpointslices") {
            populate_endpointslices(mesh, files, pods, populate)?;
            continue;
        }
        if let Some(delete) = action.get("delete") {
            let kind = delete["kind"].as_str().unwrap_or_default();
            let (ns, name) = delete["name"].as_str().unwrap_or_default().split_once('/').unwrap_or(("", ""));
            let (file, text) = files
                .iter()
                .find(|(_, text)| documents(text).iter().any(|d| is_object(d, kind, ns, name)))
                .with_context(|| format!("delete: no manifest holds {kind} {ns}/{name}"))?;
            let kept: Vec<String> = documents(text).into_iter().filter(|d| !is_object(d, kind, ns, name)).collect();
            mesh.write(file, &kept.join("---\n"))?;
        } else if let Some(create) = action.get("create") {
            let kind = create["kind"].as_str().unwrap_or_default();
            let (ns, name) = create["name"].as_str().unwrap_or_default().split_once('/').unwrap_or(("", ""));
            let mut object = json!({
                "apiVersion": create["api_version"].as_str().unwrap_or("v1"),
                "kind": kind,
                "metadata": {"name": name, "namespace": ns},
            });
            for field in ["spec", "data"] {
                if let Some(v) = create.get(field) {
                    object[field] = v.clone();
                }
            }
            mesh.write(&format!("90-created-{kind}-{ns}-{name}.yaml"), &serde_json::to_string(&object)?)?;
        } else if let Some(sleep) = action.get("sleep") {
            std::thread::sleep(Duration::from_secs_f64(sleep["seconds"].as_f64().unwrap_or(1.0)));
        } else {
            let what = action.as_object().and_then(|o| o.keys().next().cloned()).unwrap_or_default();
            bail!("the step action {what:?} is not taken by weft-conformance");
        }
    }
    Ok(())
}

/// Fills each named EndpointSlice of the IPv4 family with one ready
/// endpoint per pod of the Deployment `with_pods_of` names (the harness's
/// pods are IPv4 only, so IPv6 slices stay empty, as upstream leaves slices
/// of a family the pods lack).
fn populate_endpointslices(
    mesh: &Mesh,
    files: &[(String, String)],
    pods: &[(PodSpec, Pod)],
    populate: &Value,
) -> anyhow::Result<()> {
    let owner = populate["with_pods_of"].as_str().unwrap_or_default().split_whitespace().next().unwrap_or_default();
    let (ns, deployment) = owner.split_once('/').context("populate_endpointslices.with_pods_of")?;
    let members: Vec<&(PodSpec, Pod)> = pods
        .iter()
        .filter(|(spec, _)| spec.namespace == ns && spec.name.starts_with(&format!("{deployment}-")))
        .collect();
    anyhow::ensure!(!members.is_empty(), "no pods of Deployment {owner}");
    let mut rewritten: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in populate["names"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let (slice_ns, slice_name) = name.split_once('/').context("an EndpointSlice name")?;
        let (file, text) = rewritten
            .iter()
            .find(|(_, docs)| docs.iter().any(|d| is_object(d, "EndpointSlice", slice_ns, slice_name)))
            .map(|(f, docs)| (f.clone(), docs.join("---\n")))
            .or_else(|| {
                files
                    .iter()
                    .find(|(_, t)| documents(t).iter().any(|d| is_object(d, "EndpointSlice", slice_ns, slice_name)))
                    .cloned()
            })
            .with_context(|| format!("no manifest holds EndpointSlice {name}"))?;
        let mut docs = documents(&text);
        for doc in docs.iter_mut().filter(|d| is_object(d, "EndpointSlice", slice_ns, slice_name)) {
            let mut slice: Value = serde_saphyr::from_str(doc)?;
            if slice["addressType"] != "IPv4" {
                continue;
            }
            slice["endpoints"] = members
                .iter()
                .map(|(spec, pod)| {
                    json!({
                        "addresses": [pod.ip().to_string()],
                        "conditions": {"ready": true, "serving": true, "terminating": false},
                        "targetRef": {"kind": "Pod", "name": spec.name, "namespace": spec.namespace},
                    })
                })
                .collect();
            *doc = format!("{}\n", serde_json::to_string(&slice)?);
        }
        rewritten.insert(file, docs);
    }
    for (file, docs) in rewritten {
        mesh.write(&file, &docs.join("---\n"))?;
    }
    Ok(())
}

/// Whether a YAML document is the object `kind` `namespace/name`.
fn is_object(doc: &str, kind: &str, namespace: &str, name: &str) -> bool {
    let v: Value = serde_saphyr::from_str(doc).unwrap_or(Value::Null);
    v["kind"] == kind
        && v["metadata"]["name"] == name
        && v["metadata"]["namespace"].as_str().unwrap_or("default") == namespace
}

/// The suite's GatewayClass, with Weft's controller.
const GATEWAY_CLASS_NAME: &str = "weft";
const GATEWAY_CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: weft}\nspec:\n  controllerName: weft.io/gateway-controller\n";
/// The pod gateway cases send their requests from: outside the mesh, as
/// the suite's client is.
const OUTSIDE_CLIENT: &str = "conformance-client";
const OUTSIDE_NAMESPACE: &str = "gateway-conformance-client";

/// The gateway pod serving Gateway `namespace/name` (pod names are unique
/// across namespaces, like the backends' are).
fn gateway_pod_name(namespace: &str, name: &str) -> String {
    let initials: String = namespace.split('-').filter_map(|w| w.chars().next()).collect();
    pod_name(format!("gw-{initials}-{name}"))
}

/// Pod names have at most 40 characters: a longer one keeps its start and
/// gets a hash of the whole, so long names stay distinct.
fn pod_name(full: String) -> String {
    if full.len() <= 40 {
        return full;
    }
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{}-{:06x}", full[..33].trim_end_matches('-'), hash & 0xff_ffff)
}

fn case_label(case: &Value) -> String {
    format!("#{} {}", case["id"], case["name"].as_str().unwrap_or_default())
}

fn client_pod<'a>(pods: &'a [(PodSpec, Pod)], via: &Value) -> anyhow::Result<&'a Pod> {
    let ns = via["from"]["namespace"].as_str().unwrap_or_default();
    let selector: Vec<(&str, &str)> = via["from"]["pod_selector"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    pods.iter()
        .find(|(spec, _)| {
            spec.namespace == ns && selector.iter().all(|(k, v)| spec.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, pod)| pod)
        .with_context(|| format!("no pod in {ns} matches {}", via["from"]["pod_selector"]))
}

/// The cluster IP and port a host name reaches from a pod of `namespace`,
/// resolved like cluster DNS would, from the sidecar's config.
fn resolve(dump: &Value, host: &str, namespace: &str) -> anyhow::Result<SocketAddr> {
    let (name, port) = match host.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().context("port")?),
        None => (host, 80u16),
    };
    // Traffic addressed to a pod, not a Service.
    if let Ok(ip) = name.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let parts: Vec<&str> = name.split('.').collect();
    let key = match parts.as_slice() {
        [svc] => format!("svc/{namespace}/{svc}"),
        [svc, ns, ..] => format!("svc/{ns}/{svc}"),
        [] => bail!("empty host"),
    };
    let vip =
        dump["services"][&key]["vips"][0].as_str().with_context(|| format!("{key} is not in the sidecar's config"))?;
    Ok(SocketAddr::new(vip.parse()?, port))
}

/// Replaces `{{pod_ip:<namespace>/<selector>}}` with that pod's address.
fn substitute_pod_ips(text: &str, pods: &[(PodSpec, Pod)]) -> String {
    let mut out = text.to_owned();
    while let Some(start) = out.find("{{pod_ip:") {
        let Some(len) = out[start..].find("}}") else { break };
        let inner = &out[start + 9..start + len];
        let (ns, selector) = inner.split_once('/').unwrap_or(("", inner));
        let via = json!({"from": {"namespace": ns, "pod_selector": selector}});
        let ip = client_pod(pods, &via).map(|p| p.ip().to_string()).unwrap_or_default();
        out.replace_range(start..start + len + 2, &ip);
    }
    out
}

fn fresh_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Where a case's requests go: a Service (mesh cases, resolved from the
/// client's sidecar config) or a Gateway's address and port.
enum Target {
    Mesh { namespace: String },
    Gateway(SocketAddr),
}

/// The request kinds of the case schema this runner makes, and the
/// `expect` keys it judges for each. Anything else fails the case with a
/// message saying so: a case the runner does not understand never passes.
const HTTP_EXPECT: &[&str] = &[
    "status",
    "backend",
    "backend_request",
    "response",
    "redirect",
    "answered_by_gateway",
    "mirrored_to",
    "mirror_distribution",
    "distribution",
    "websocket",
    "transport_error",
    "note",
];
/// Keys of `expect.backend_request` and `expect.response` the runner judges.
const BACKEND_REQUEST_EXPECT: &[&str] = &[
    "path",
    "method",
    "host",
    "headers",
    "absent_headers",
    "header_single_value_is_backend_pod_prefix",
    "grpc_method",
];
const RESPONSE_EXPECT: &[&str] = &["headers", "header_one_of", "absent_headers", "ignore_whitespace_in_header_values"];
const GRPC_EXPECT: &[&str] = &["grpc_status", "grpc_status_not", "backend", "backend_request", "distribution", "note"];

fn check_understood(case: &Value) -> anyhow::Result<bool> {
    let grpc = case.get("grpc_request").is_some();
    if !grpc && case.get("request").is_none() {
        bail!("the case has no request kind weft-conformance knows (request, grpc_request)");
    }
    let known = if grpc { GRPC_EXPECT } else { HTTP_EXPECT };
    for key in case["expect"].as_object().into_iter().flatten().map(|(k, _)| k) {
        if !known.contains(&key.as_str()) {
            bail!("expect.{key} is not judged by weft-conformance");
        }
    }
    for (part, keys) in [("backend_request", BACKEND_REQUEST_EXPECT), ("response", RESPONSE_EXPECT)] {
        for key in case["expect"][part].as_object().into_iter().flatten().map(|(k, _)| k) {
            if !keys.contains(&key.as_str()) {
                bail!("expect.{part}.{key} is not judged by weft-conformance");
            }
        }
    }
    if let Some(p) = case["request"]["protocol"].as_str()
        && !matches!(p, "H2C_PRIOR_KNOWLEDGE" | "WEBSOCKET" | "H2")
    {
        bail!("request protocol {p} is not spoken by weft-conformance");
    }
    Ok(grpc)
}

/// The gateway pod a case's `via.gateway` names.
fn gateway_pod<'a>(pods: &'a [(PodSpec, Pod)], via: &Value) -> anyhow::Result<&'a Pod> {
    let (ns, name) = via["gateway"].as_str().unwrap_or_default().split_once('/').unwrap_or(("default", ""));
    pods.iter()
        .find(|(spec, _)| spec.name == gateway_pod_name(ns, name))
        .map(|(_, p)| p)
        .with_context(|| format!("no gateway pod for Gateway {ns}/{name}"))
}

/// The client pod of gateway cases (outside the mesh).
fn outside_client(pods: &[(PodSpec, Pod)]) -> anyhow::Result<Pod> {
    pods.iter()
        .find(|(spec, _)| spec.name == OUTSIDE_CLIENT)
        .map(|(_, p)| p.clone())
        .context("no client pod outside the mesh")
}

/// The PEM file a case's `via.tls` trusts: `tls.crt` of a Secret (leaf and
/// the test CA) or `ca.crt` of a ConfigMap; `None` for "system roots".
fn trusted_file(tls: &Value) -> anyhow::Result<Option<PathBuf>> {
    if let Some(secret) = tls["trusted_ca_from_secret"].as_str() {
        let (crt, _) = certs().secrets.get(secret).with_context(|| format!("no certificate for Secret {secret}"))?;
        return Ok(Some(crt.clone()));
    }
    if let Some(cm) = tls["trusted_ca_from_configmap"].as_str() {
        return Ok(Some(certs().config_maps.get(cm).with_context(|| format!("no CA for ConfigMap {cm}"))?.clone()));
    }
    Ok(None)
}

/// `weft-request`'s TLS parameters for an `https` case.
fn tls_request(via: &Value) -> anyhow::Result<Value> {
    if via["scheme"] != "https" {
        return Ok(Value::Null);
    }
    let tls = &via["tls"];
    let ca = trusted_file(tls)?.context("an https case without a trusted CA")?;
    let mut out = json!({"server_name": tls["server_name"], "ca_file": ca});
    if let Some(secret) = tls["client_certificate_from_secret"].as_str() {
        let (crt, key) = certs().secrets.get(secret).with_context(|| format!("no certificate for Secret {secret}"))?;
        out["client_cert_file"] = json!(crt);
        out["client_key_file"] = json!(key);
    }
    Ok(out)
}

fn run_case(mesh: &mut Mesh, pods: &[(PodSpec, Pod)], case: &Value, converge: Duration) -> anyhow::Result<()> {
    if case.get("tcp_request").is_some() {
        let client = outside_client(pods)?;
        let gateway = gateway_pod(pods, &case["via"])?;
        return tcp::run_case(&client, gateway, case, converge);
    }
    let grpc = check_understood(case)?;
    let via = &case["via"];
    let request = if grpc { &case["grpc_request"] } else { &case["request"] };
    let tls = tls_request(via)?;
    let (pod, target, host) = if via["kind"] == "gateway" {
        let gateway = gateway_pod(pods, via)?;
        let default_port = if via["scheme"] == "https" { 443 } else { 80 };
        let port = via["port"].as_u64().unwrap_or(default_port) as u16;
        let addr = SocketAddr::new(gateway.ip().into(), port);
        // Without a host, the request names the Gateway's address (a gRPC
        // client's default authority keeps the port).
        let host = match (grpc, request["host"].as_str().or(request["authority"].as_str())) {
            (_, Some(h)) => substitute_pod_ips(h, pods),
            (true, None) => addr.to_string(),
            (false, None) => addr.ip().to_string(),
        };
        (outside_client(pods)?, Target::Gateway(addr), host)
    } else {
        let pod = client_pod(pods, via)?.clone();
        let namespace = via["from"]["namespace"].as_str().unwrap_or_default().to_owned();
        let host = request["host"].as_str().or(request["target"].as_str()).unwrap_or_default();
        (pod, Target::Mesh { namespace }, substitute_pod_ips(host, pods))
    };
    if grpc {
        return run_grpc_case(mesh, &pod, &target, &host, case, converge);
    }
    let repeat = case["repeat"].as_u64().unwrap_or(1);
    let started = Instant::now();
    let mut last = anyhow::anyhow!("not run");
    for _ in 0..(converge.as_millis() / 500 + 1) {
        let outcome = (|| -> anyhow::Result<()> {
            let addr = match &target {
                Target::Gateway(addr) => *addr,
                Target::Mesh { namespace } => resolve(&mesh.config_dump(&pod)?, &host, namespace)?,
            };
            let request_id = fresh_id();
            // The first probe's uuid is the one expectations name.
            let first_uuid = fresh_id();
            let mut lines = String::new();
            for probe in 0..repeat {
                let mut headers: Vec<(String, String)> = request["headers"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().replace("{{request_id}}", &request_id)))
                    .collect();
                if let Some(set) = case["echo_set_response_headers"].as_object() {
                    let joined = set
                        .iter()
                        .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",");
                    headers.push(("X-Echo-Set-Header".into(), joined));
                }
                let path = request["path"]
                    .as_str()
                    .unwrap_or("/")
                    .replace("{{request_id}}", &request_id)
                    .replace("{{uuid}}", &if probe == 0 { first_uuid.clone() } else { fresh_id() });
                let line = json!({
                    "method": request["method"].as_str().unwrap_or("GET"),
                    "host": host,
                    "path": path,
                    "headers": headers,
                    "protocol": request["protocol"],
                    "websocket": case["expect"]["websocket"]["exchanges"],
                    "tls": tls,
                });
                lines.push_str(&line.to_string());
                lines.push('\n');
            }
            let bin = workspace_bin("weft-request")?;
            let out = pod.exec_with(
                None,
                &[&bin.to_string_lossy(), "--connect", &addr.to_string()],
                Some(lines.as_bytes()),
                Duration::from_secs(60),
            )?;
            let responses: Vec<Value> =
                String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            if responses.len() as u64 != repeat {
                bail!("{} responses for {repeat} requests: {}", responses.len(), String::from_utf8_lossy(&out.stderr));
            }
            let expect = substitute(&case["expect"], &request_id, &first_uuid);
            judge(&expect, &responses)?;
            let path = substitute(&request["path"], &request_id, &first_uuid);
            check_mirrors(&expect, pods, path.as_str().unwrap_or("/"))
        })();
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if started.elapsed() > converge {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}

fn header_values(headers: &Value, name: &str) -> Option<String> {
    // Echo requests: {"Name": ["a", "b"]}; responses: [["name", "a"], ...].
    if let Some(map) = headers.as_object() {
        return map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| {
            v.as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(",")).unwrap_or_default()
        });
    }
    let values: Vec<&str> = headers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pair| pair[0].as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
        .filter_map(|pair| pair[1].as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

fn judge(expect: &Value, responses: &[Value]) -> anyhow::Result<()> {
    if expect["transport_error"] == true {
        // No HTTP response at all: the TLS handshake (or connection) fails.
        for r in responses {
            if r["status"].as_u64().unwrap_or(0) != 0 {
                bail!("got status {}, want the connection to fail", r["status"]);
            }
        }
        return Ok(());
    }
    let allowed: Vec<u64> = expect["status"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    for r in responses {
        let status = r["status"].as_u64().unwrap_or(0);
        let timeout_ok = matches!(status, 408 | 504) && allowed.iter().any(|s| matches!(s, 408 | 504));
        if !allowed.is_empty() && !allowed.contains(&status) && !timeout_ok {
            bail!(
                "status {status}, want one of {allowed:?} ({})",
                r["error"].as_str().unwrap_or(r["body"].as_str().unwrap_or("")).trim()
            );
        }
    }
    if let Some(dist) = expect.get("distribution") {
        let weights: BTreeMap<String, f64> = dist["weights"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
            .collect();
        let tolerance = dist["tolerance_absolute"].as_f64().unwrap_or(0.05);
        let pods: Vec<String> = responses
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(r["body"].as_str().unwrap_or("")).ok())
            .filter_map(|b| b["pod"].as_str().map(str::to_owned))
            .collect();
        for (prefix, want) in &weights {
            let got = pods.iter().filter(|p| p.starts_with(&format!("{prefix}-"))).count() as f64
                / responses.len().max(1) as f64;
            if (*want == 0.0 && got > 0.0) || (got - want).abs() > tolerance {
                bail!("{prefix} got {:.3} of requests, want {want} ± {tolerance}", got);
            }
        }
        return Ok(());
    }
    if let Some(name) = expect["backend_request"]["header_single_value_is_backend_pod_prefix"].as_str() {
        // Every sampled request: exactly one value of the header, and the
        // serving pod's name starts with it (status is not asserted).
        for r in responses {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap_or("")).unwrap_or(Value::Null);
            let values: Vec<&str> = body["headers"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .flat_map(|(_, v)| v.as_array().into_iter().flatten().filter_map(Value::as_str))
                .collect();
            let pod = body["pod"].as_str().unwrap_or_default();
            if values.len() != 1 || !pod.starts_with(values[0]) {
                bail!("the backend saw {name}: {values:?}, served by {pod:?}; want one value that starts the pod name");
            }
        }
        return Ok(());
    }
    let r = &responses[0];
    let status = r["status"].as_u64().unwrap_or(0);
    if expect.get("websocket").is_some() && r["websocket"] != "ok" {
        bail!("WebSocket exchange: {}", r["websocket"]);
    }
    if let Some(redirect) = expect.get("redirect").filter(|_| (300..=308).contains(&status)) {
        let location = header_values(&r["headers"], "location").context("no Location header")?;
        let (scheme, rest) = location.split_once("://").context("Location is not absolute")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (authority, ""),
        };
        let check = |field: &str, got: &str| -> anyhow::Result<()> {
            match redirect.get(field) {
                Some(Value::Null) if field == "port" => {
                    let default = matches!((scheme, got), (_, "") | ("http", "80") | ("https", "443"));
                    if default { Ok(()) } else { bail!("Location {location}: port {got}, want none") }
                }
                Some(want) => {
                    let want = want.as_str().map(str::to_owned).unwrap_or_else(|| want.to_string());
                    if want == got { Ok(()) } else { bail!("Location {location}: {field} {got:?}, want {want:?}") }
                }
                None => Ok(()),
            }
        };
        check("scheme", scheme)?;
        check("host", host)?;
        check("port", port)?;
        check("path", path.split('?').next().unwrap_or(""))?;
    }
    if !matches!(status, 200 | 204) {
        return Ok(());
    }
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap_or("")).unwrap_or(Value::Null);
    let resp = &expect["response"];
    if expect["answered_by_gateway"] == true {
        // The proxy answers itself (a CORS preflight): no echo record, so
        // only the response can be judged.
        if body["pod"].is_string() {
            bail!("a backend answered ({}), want the gateway itself", body["pod"]);
        }
        return judge_response(resp, r);
    }
    if let Some(name) = expect["backend"]["name"].as_str()
        && !body["pod"].as_str().is_some_and(|p| p.starts_with(name))
    {
        bail!("served by {}, want {name}", body["pod"]);
    }
    let seen = &expect["backend_request"];
    for field in ["path", "method", "host"] {
        if let Some(want) = seen[field].as_str()
            && body[field].as_str() != Some(want)
        {
            bail!("backend saw {field} {}, want {want:?}", body[field]);
        }
    }
    for (name, want) in seen["headers"].as_object().into_iter().flatten() {
        let got = header_values(&body["headers"], name);
        if got.as_deref() != want.as_str() {
            bail!("backend saw header {name}: {got:?}, want {want}");
        }
    }
    for name in seen["absent_headers"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if header_values(&body["headers"], name).is_some() {
            bail!("backend saw header {name}, which should be absent");
        }
    }
    judge_response(resp, r)
}

/// `mirrored_to`: every listed backend logged the request (the echo logs
/// each request target it serves, as the upstream echo does). A share
/// below 100 % is a statistical expectation, judged by
/// `mirror_distribution` over the case's requests (which share one path).
fn check_mirrors(expect: &Value, pods: &[(PodSpec, Pod)], path: &str) -> anyhow::Result<()> {
    let line = format!("Echoing back request made to {path} to client");
    if let Some(dist) = expect.get("mirror_distribution") {
        return check_mirror_distribution(expect, dist, pods, &line);
    }
    for mirror in expect["mirrored_to"].as_array().into_iter().flatten() {
        if mirror["percent"].as_u64().is_some_and(|p| p < 100) {
            continue;
        }
        let name = mirror["name"].as_str().unwrap_or_default();
        let namespace = mirror["namespace"].as_str().unwrap_or_default();
        let logged = pods
            .iter()
            .filter(|(spec, _)| spec.namespace == namespace && spec.name.starts_with(&format!("{name}-")))
            .any(|(_, pod)| std::fs::read_to_string(pod.log_file("echo")).is_ok_and(|log| log.contains(&line)));
        if !logged {
            bail!("no pod of {namespace}/{name} received the mirrored request {path}");
        }
    }
    Ok(())
}

/// Percentage mirroring: the mirror backend logged the attempt's path a
/// number of times within 3 binomial standard deviations of
/// `total_requests × expected_fraction` (mirrors are sent after the
/// responses: the count is read once it stops growing).
fn check_mirror_distribution(expect: &Value, dist: &Value, pods: &[(PodSpec, Pod)], line: &str) -> anyhow::Result<()> {
    let mirror = &expect["mirrored_to"][0];
    let (name, namespace) =
        (mirror["name"].as_str().unwrap_or_default(), mirror["namespace"].as_str().unwrap_or_default());
    let count = || -> usize {
        pods.iter()
            .filter(|(spec, _)| spec.namespace == namespace && spec.name.starts_with(&format!("{name}-")))
            .map(|(_, pod)| std::fs::read_to_string(pod.log_file("echo")).map_or(0, |log| log.matches(line).count()))
            .sum()
    };
    let mut seen = count();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let now = count();
        if now == seen {
            break;
        }
        seen = now;
    }
    let n = dist["total_requests"].as_f64().unwrap_or(500.0);
    let p = dist["expected_fraction"].as_f64().context("mirror_distribution.expected_fraction")?;
    let (mean, sd) = (n * p, (n * p * (1.0 - p)).sqrt());
    let got = seen as f64;
    if (got - mean).abs() > 3.0 * sd {
        bail!("{namespace}/{name} received {seen} of {n} requests mirrored, want {mean:.0} ± {:.1}", 3.0 * sd);
    }
    Ok(())
}

/// The response-header expectations of a case.
fn judge_response(resp: &Value, r: &Value) -> anyhow::Result<()> {
    let squash = resp["ignore_whitespace_in_header_values"] == true;
    let norm = |v: &str| if squash { v.chars().filter(|c| !c.is_whitespace()).collect() } else { v.to_owned() };
    for (name, want) in resp["headers"].as_object().into_iter().flatten() {
        let got = header_values(&r["headers"], name);
        if got.as_deref().map(norm) != want.as_str().map(norm) {
            bail!("response header {name}: {got:?}, want {want}");
        }
    }
    for (name, options) in resp["header_one_of"].as_object().into_iter().flatten() {
        let got = header_values(&r["headers"], name).map(|g| norm(&g));
        let allowed: Vec<String> =
            options.as_array().into_iter().flatten().filter_map(Value::as_str).map(norm).collect();
        if !got.as_ref().is_some_and(|g| allowed.contains(g)) {
            bail!("response header {name}: {got:?}, want one of {allowed:?}");
        }
    }
    for name in resp["absent_headers"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if header_values(&r["headers"], name).is_some() {
            bail!("response has header {name}, which should be absent");
        }
    }
    Ok(())
}

/// `value` with the case's placeholders filled in, in every string.
fn substitute(value: &Value, request_id: &str, uuid: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace("{{request_id}}", request_id).replace("{{uuid}}", uuid)),
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute(v, request_id, uuid)).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), substitute(v, request_id, uuid))).collect())
        }
        other => other.clone(),
    }
}

/// A gRPC case: unary calls made with `weft-grpc` from the client pod,
/// retried like HTTP cases while config converges.
fn run_grpc_case(
    mesh: &mut Mesh,
    pod: &Pod,
    target: &Target,
    authority: &str,
    case: &Value,
    converge: Duration,
) -> anyhow::Result<()> {
    let call = &case["grpc_request"];
    let repeat = case["repeat"].as_u64().unwrap_or(1);
    let metadata: Vec<(String, String)> = call["metadata"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let line = json!({
        "service": call["service"],
        "method": call["method"],
        "authority": authority,
        "metadata": metadata,
    })
    .to_string();
    let input = format!("{line}\n").repeat(repeat as usize);
    let started = Instant::now();
    let mut last = anyhow::anyhow!("not run");
    for _ in 0..(converge.as_millis() / 500 + 1) {
        let outcome = (|| -> anyhow::Result<()> {
            let addr = match target {
                Target::Gateway(addr) => *addr,
                Target::Mesh { namespace } => resolve(&mesh.config_dump(pod)?, authority, namespace)?,
            };
            let bin = workspace_bin("weft-grpc")?;
            let mut args = vec![bin.to_string_lossy().into_owned(), "--connect".into(), addr.to_string()];
            // Upstream's gateway weight samples each use a new connection.
            if matches!(target, Target::Gateway(_)) && repeat > 1 {
                args.push("--fresh-connections".into());
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = pod.exec_with(None, &refs, Some(input.as_bytes()), Duration::from_secs(120))?;
            let results: Vec<Value> =
                String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            if results.len() as u64 != repeat {
                bail!("{} results for {repeat} calls: {}", results.len(), String::from_utf8_lossy(&out.stderr));
            }
            judge_grpc(&case["expect"], &results, matches!(target, Target::Mesh { .. }))
        })();
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if started.elapsed() > converge {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}

/// A status code name as the case data (`OK`, `Unimplemented`) or tonic
/// (`Ok`, `DeadlineExceeded`) spells it, compared without case or `_`.
fn code_key(name: &str) -> String {
    name.chars().filter(|c| *c != '_').collect::<String>().to_ascii_lowercase()
}

/// The pod that answered a call, as the echo service reported it.
fn grpc_pod(result: &Value, mesh_echo: bool) -> Option<String> {
    if mesh_echo {
        result["response"]["text"].as_str()?.lines().find_map(|l| l.strip_prefix("Hostname=")).map(str::to_owned)
    } else {
        result["response"]["pod"].as_str().map(str::to_owned)
    }
}

fn judge_grpc(expect: &Value, results: &[Value], mesh_echo: bool) -> anyhow::Result<()> {
    for r in results {
        let code = code_key(r["code"].as_str().unwrap_or(""));
        if let Some(want) = expect["grpc_status"].as_str()
            && code != code_key(want)
        {
            bail!("gRPC status {}, want {want} ({})", r["code"], r["message"].as_str().unwrap_or(""));
        }
        if let Some(not) = expect["grpc_status_not"].as_array()
            && (code == "ok" || not.iter().filter_map(Value::as_str).any(|n| code_key(n) == code))
        {
            bail!("gRPC status {}, want anything but OK and {not:?}", r["code"]);
        }
    }
    if let Some(dist) = expect.get("distribution") {
        let tolerance = dist["tolerance_absolute"].as_f64().unwrap_or(0.05);
        let pods: Vec<String> = results.iter().filter_map(|r| grpc_pod(r, mesh_echo)).collect();
        for (prefix, want) in dist["weights"].as_object().into_iter().flatten() {
            let want = want.as_f64().unwrap_or(0.0);
            let got = pods.iter().filter(|p| p.starts_with(&format!("{prefix}-"))).count() as f64
                / results.len().max(1) as f64;
            if (want == 0.0 && got > 0.0) || (got - want).abs() > tolerance {
                bail!("{prefix} answered {got:.3} of the calls, want {want} ± {tolerance}");
            }
        }
        return Ok(());
    }
    let r = &results[0];
    if code_key(r["code"].as_str().unwrap_or("")) != "ok" {
        return Ok(());
    }
    let pod = grpc_pod(r, mesh_echo).unwrap_or_default();
    if let Some(name) = expect["backend"]["name"].as_str()
        && !pod.starts_with(name)
    {
        bail!("answered by {pod:?}, want {name}");
    }
    if !mesh_echo
        && let Some(ns) = expect["backend"]["namespace"].as_str()
        && r["response"]["namespace"].as_str() != Some(ns)
    {
        bail!("answered in namespace {}, want {ns}", r["response"]["namespace"]);
    }
    let seen = &expect["backend_request"];
    if let Some(method) = seen["grpc_method"].as_str()
        && r["response"]["fully_qualified_method"].as_str() != Some(method)
    {
        bail!("the echo saw method {}, want {method}", r["response"]["fully_qualified_method"]);
    }
    // Metadata the backend saw: the mesh echo's RequestHeader lines, or
    // the conformance echo's headers.
    let received: Vec<(String, String)> = if mesh_echo {
        r["response"]["text"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("RequestHeader="))
            .filter_map(|h| h.split_once(':'))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect()
    } else {
        r["response"]["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p[0].as_str()?.to_ascii_lowercase(), p[1].as_str()?.to_owned())))
            .collect()
    };
    let joined = |name: &str| -> Option<String> {
        let values: Vec<&str> =
            received.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    for (name, want) in seen["headers"].as_object().into_iter().flatten() {
        let got = joined(name);
        if got.as_deref() != want.as_str() {
            bail!("the backend saw metadata {name}: {got:?}, want {want}");
        }
    }
    for name in seen["absent_headers"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if let Some(v) = joined(name) {
            bail!("the backend saw metadata {name}: {v:?}, which should be absent");
        }
    }
    Ok(())
}
