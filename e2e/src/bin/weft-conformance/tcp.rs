//! `tcp_request` cases: raw TCP and TLS exchanges with the TCP echo through
//! a gateway pod, made by `weft-tcp-probe` in the client pod, judged as
//! upstream's helpers judge them (conformance/README.md, "TCP and TLS
//! cases"): `connect`, `tls_handshake` and the echo probes need one
//! success; for `echo_check` the first attempt that completes the whole
//! exchange decides (only connection, read and JSON errors are retried);
//! `repeat` with `repeat_all_must_pass` and `distribution` judge every
//! sample.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use weft_e2e::netns::Pod;
use weft_e2e::tcp_echo::WELCOME;
use weft_e2e::workspace_bin;

/// Runs the probe: one JSON line per attempt.
fn probe(client: &Pod, addr: SocketAddr, case: &Value, count: u64) -> anyhow::Result<Vec<Value>> {
    let via = &case["via"];
    let exchange = case["tcp_request"]["exchange"].as_str().context("tcp_request.exchange")?;
    let timeout_ms = case["per_request_timeout_s"].as_u64().unwrap_or(10) * 1000;
    let bin = workspace_bin("weft-tcp-probe")?;
    let mut args = vec![
        bin.to_string_lossy().into_owned(),
        "--connect".into(),
        addr.to_string(),
        "--exchange".into(),
        exchange.into(),
        "--count".into(),
        count.to_string(),
        "--timeout-ms".into(),
        timeout_ms.to_string(),
    ];
    if via["scheme"] == "tls" {
        let tls = &via["tls"];
        args.extend(["--tls".into(), tls["server_name"].as_str().unwrap_or_default().into()]);
        if let Some(ca) = super::trusted_file(tls)? {
            args.extend(["--ca-file".into(), ca.to_string_lossy().into_owned()]);
        }
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let limit = Duration::from_millis(timeout_ms * count + 10_000);
    let out = client.exec_with(None, &refs, None, limit)?;
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    if lines.len() as u64 != count {
        bail!("{} answers for {count} attempts: {}", lines.len(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(lines)
}

/// A transient failure: retried (no connection, nothing read, bad JSON).
#[derive(Debug)]
struct Retry(String);

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Retry {}

/// The name of the pod that answered an echo exchange.
fn pod_of(line: &Value) -> Option<&str> {
    line["record"]["pod"].as_str().filter(|p| !p.is_empty())
}

/// One attempt against the case's expectation. `Err(Retry)` when it did
/// not complete, another error when it completed with a wrong answer.
fn judge_one(case: &Value, line: &Value) -> anyhow::Result<()> {
    let expect = &case["expect"];
    let exchange = case["tcp_request"]["exchange"].as_str().unwrap_or_default();
    if let Some(error) = line["error"].as_str() {
        if expect["connection_rejected"] == true && line["rejected"] == true {
            return Ok(());
        }
        return Err(Retry(error.to_owned()).into());
    }
    match exchange {
        "connect" => {
            if line["connected"] != true {
                bail!("not connected: {line}");
            }
        }
        "tls_handshake" => {
            if expect["connection_rejected"] == true {
                return Err(Retry(format!("the handshake completed ({line}); want the connection rejected")).into());
            }
        }
        "echo_check" | "echo_test_only" => {
            if line["welcome"] != WELCOME {
                bail!("welcome line {}, want {WELCOME:?}", line["welcome"]);
            }
            let tcp_echo = &expect["tcp_echo"];
            if exchange == "echo_check" {
                if line["pong"] != "PONG" {
                    bail!("PING answered {}", line["pong"]);
                }
                if let Some(is_tls) = tcp_echo["is_tls"].as_bool()
                    && line["is_tls"].as_str() != Some(if is_tls { "true" } else { "false" })
                {
                    bail!("IS_TLS answered {}, want {is_tls}", line["is_tls"]);
                }
            }
            let pod = pod_of(line).context("the TEST record names no pod")?;
            if let Some(name) = expect["backend"]["name"].as_str()
                && !pod.starts_with(&format!("{name}-"))
            {
                bail!("served by {pod}, want a pod of {name}");
            }
            if let Some(ns) = expect["backend"]["namespace"].as_str()
                && line["record"]["namespace"] != ns
            {
                bail!("served from namespace {}, want {ns}", line["record"]["namespace"]);
            }
            if let Some(sni) = tcp_echo["tls_server_name"].as_str()
                && line["record"]["tls"]["serverName"] != sni
            {
                bail!("the backend saw SNI {}, want {sni}", line["record"]["tls"]["serverName"]);
            }
        }
        other => bail!("tcp_request.exchange {other} is not made by weft-conformance"),
    }
    Ok(())
}

/// The backend a pod name belongs to: the name without its replica suffix.
fn backend_of<'a>(pod: &'a str, weights: &BTreeMap<String, f64>) -> Option<&'a str> {
    weights.keys().find(|b| pod.starts_with(&format!("{b}-"))).map(|b| &pod[..b.len()])
}

fn judge_distribution(case: &Value, lines: &[Value]) -> anyhow::Result<()> {
    let dist = &case["expect"]["distribution"];
    let weights: BTreeMap<String, f64> = dist["weights"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
        .collect();
    let tolerance = dist["tolerance_absolute"].as_f64().unwrap_or(0.05);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in lines {
        let pod = pod_of(line).with_context(|| format!("a sample failed: {line}"))?;
        let backend = backend_of(pod, &weights).with_context(|| format!("{pod} is not one of {weights:?}"))?;
        *counts.entry(backend).or_default() += 1;
    }
    for (backend, want) in &weights {
        let got = counts.get(backend.as_str()).copied().unwrap_or(0) as f64 / lines.len().max(1) as f64;
        if (*want == 0.0 && got > 0.0) || (got - want).abs() > tolerance {
            bail!("{backend} got {got:.3} of {} connections, want {want} ± {tolerance}", lines.len());
        }
    }
    Ok(())
}

pub fn run_case(client: &Pod, gateway: &Pod, case: &Value, converge: Duration) -> anyhow::Result<()> {
    let via = &case["via"];
    let port = via["port"].as_u64().context("via.port")? as u16;
    let addr = SocketAddr::new(gateway.ip().into(), port);
    let repeat = case["repeat"].as_u64().unwrap_or(1);
    if case["expect"].get("distribution").is_some() {
        let attempts = case["expect"]["distribution"]["max_attempts"].as_u64().unwrap_or(10);
        let mut last = anyhow::anyhow!("not run");
        for _ in 0..attempts {
            match judge_distribution(case, &probe(client, addr, case, repeat)?) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        return Err(last);
    }
    if repeat > 1 {
        // Every sample must succeed, no retry (repeat_all_must_pass).
        for (i, line) in probe(client, addr, case, repeat)?.iter().enumerate() {
            judge_one(case, line).with_context(|| format!("sample {} of {repeat}", i + 1))?;
        }
        return Ok(());
    }
    let deadline = Instant::now() + converge.max(Duration::from_secs(10));
    loop {
        let line = probe(client, addr, case, 1)?.remove(0);
        match judge_one(case, &line) {
            Ok(()) => return Ok(()),
            Err(e) if e.downcast_ref::<Retry>().is_some() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}
