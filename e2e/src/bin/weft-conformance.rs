//! `weft-conformance`: runs Gateway API conformance cases (the data schema
//! of ../shared/conformance) through real sidecars on the netns harness:
//! applies the manifests to a control plane in local mode, starts a pod with
//! an echo application and a sidecar for every Deployment replica, sends
//! each case's requests from inside the client pod to the Service's cluster
//! IP (captured by iptables) and judges the answers. Prints PASS/FAIL per
//! test and ends with "N passed, M failed". Mesh tests only: the gateway
//! proxy mode does not exist yet, so gateway tests are listed as skipped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// How long a failing case is retried while config converges.
    #[arg(long, default_value_t = 10)]
    converge_seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
        if args.filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        if test["client"] != "mesh" {
            skipped += 1;
            continue;
        }
        let started = Instant::now();
        match run_test(&test, &root, Duration::from_secs(args.converge_seconds)) {
            Ok(results) => {
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
        "cases: {cases_passed} passed, {cases_failed} failed; {skipped} gateway tests skipped (no gateway mode yet)"
    );
    println!("{passed} passed, {failed} failed");
    Ok(())
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
            let mut spec = PodSpec::new(&format!("{name}-{initials}{i}"), ns);
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

fn run_test(test: &Value, root: &Path, converge: Duration) -> anyhow::Result<Vec<(String, Option<String>)>> {
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
                pods.extend(pods_of(&v));
            }
        }
        files.push((format!("{i:02}-{}", path.file_name().unwrap_or_default().to_string_lossy()), text));
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(f, t)| (f.as_str(), t.as_str())).collect();
    let name = test["name"].as_str().unwrap_or("test").to_lowercase();
    let mut mesh = Mesh::start(&name, &refs)?;
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
        if step.get("actions").is_some_and(|a| a.as_array().is_some_and(|a| !a.is_empty())) {
            for case in step["cases"].as_array().into_iter().flatten() {
                results.push((case_label(case), Some("step actions are not supported by the runner yet".into())));
            }
            continue;
        }
        for case in step["cases"].as_array().into_iter().flatten() {
            let result = run_case(&mut mesh, &started, case, converge);
            results.push((case_label(case), result.err().map(|e| format!("{e:#}"))));
        }
    }
    Ok(results)
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

fn run_case(mesh: &mut Mesh, pods: &[(PodSpec, Pod)], case: &Value, converge: Duration) -> anyhow::Result<()> {
    let pod = client_pod(pods, &case["via"])?.clone();
    let namespace = case["via"]["from"]["namespace"].as_str().unwrap_or_default().to_owned();
    let request = &case["request"];
    let host = substitute_pod_ips(request["host"].as_str().unwrap_or_default(), pods);
    let repeat = case["repeat"].as_u64().unwrap_or(1);
    let started = Instant::now();
    let mut last = anyhow::anyhow!("not run");
    for _ in 0..(converge.as_millis() / 500 + 1) {
        let outcome = (|| -> anyhow::Result<()> {
            let dump = mesh.config_dump(&pod)?;
            let addr = resolve(&dump, &host, &namespace)?;
            let request_id = fresh_id();
            let mut lines = String::new();
            for _ in 0..repeat {
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
                    .replace("{{uuid}}", &fresh_id());
                let line = json!({"method": request["method"].as_str().unwrap_or("GET"), "host": host, "path": path, "headers": headers});
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
            judge(&case["expect"], &responses)
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
    let r = &responses[0];
    let status = r["status"].as_u64().unwrap_or(0);
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
    let resp = &expect["response"];
    for (name, want) in resp["headers"].as_object().into_iter().flatten() {
        let got = header_values(&r["headers"], name);
        if got.as_deref() != want.as_str() {
            bail!("response header {name}: {got:?}, want {want}");
        }
    }
    for name in resp["absent_headers"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if header_values(&r["headers"], name).is_some() {
            bail!("response has header {name}, which should be absent");
        }
    }
    Ok(())
}
