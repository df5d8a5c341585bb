//! Shared by the chart, image and metrics tests: the ecosystem tools they
//! drive (real Helm, kubernetes-validate, promtool, umoci), found on PATH
//! or failing with where to get them, and bounded command runs.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The chart.
pub fn chart() -> PathBuf {
    repo().join("charts/weft")
}

/// A tool on PATH; a clear failure when it is missing (CI installs every
/// one with scripts/install-test-tools).
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "`{name}` is not on PATH: this test drives the real {name}. Install it with `scripts/install-test-tools` \
         (as root; .ci/run does), which also says where each tool comes from"
    )
}

/// Runs `command` with `stdin`, for at most `timeout`; returns (success,
/// stdout, stderr).
pub fn run_with(
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<(bool, String, String)> {
    let what = format!("{command:?}");
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().with_context(|| format!("starting {what}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)?;
    }
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut s);
        }
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    Ok((status.success(), stdout, stderr))
}

/// Runs `command`; its stdout, or an error with its output.
pub fn run(command: Command, timeout: Duration) -> anyhow::Result<String> {
    let what = format!("{command:?}");
    let (ok, out, err) = run_with(command, None, timeout)?;
    if !ok {
        bail!("{what} failed:\n{err}{out}");
    }
    Ok(out)
}

/// `helm template weft charts/weft -n weft-system ARGS...` with the real Helm.
pub fn helm_template(args: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new(tool("helm")?);
    command.args(["template", "weft"]).arg(chart()).args(["--namespace", "weft-system"]).args(args);
    run(command, Duration::from_secs(60))
}

/// The documents of a multi-document YAML stream (empty ones dropped).
pub fn documents(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let mut docs = Vec::new();
    for part in yaml.split("\n---").map(|p| p.trim_start_matches('\n')) {
        let body: String = part.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
        if body.trim().is_empty() || body.trim() == "---" {
            continue;
        }
        let body = body.strip_prefix("---").unwrap_or(&body);
        let v: Value = serde_saphyr::from_str(body).with_context(|| format!("parsing a document:\n{part}"))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// The document of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// What Prometheus 2.x/3.x sends when scraping.
pub const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// GETs `path` over plain HTTP/1.1 with an `Accept` header and expects 200:
/// `(content type, body)`.
pub fn scrape(addr: std::net::SocketAddr, path: &str, accept: &str) -> anyhow::Result<(String, String)> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let resp = weft_e2e::http1::Response::parse(&raw)?;
    if resp.status != 200 {
        bail!("GET {addr}{path}: {}\n{}", resp.status, resp.text());
    }
    Ok((resp.header("content-type").unwrap_or_default().to_string(), resp.text()))
}

/// What `promtool check metrics` said about an exposition.
#[derive(Debug)]
pub struct Promtool {
    /// Metric families (`# TYPE` lines).
    pub families: usize,
}

/// Runs Prometheus's linter on a scraped exposition; any complaint (a parse
/// error, a counter not named `_total`, a metric without help text, a bad
/// unit) fails.
pub fn promtool_check(what: &str, exposition: &str) -> anyhow::Result<Promtool> {
    let mut command = Command::new(tool("promtool")?);
    command.args(["check", "metrics"]);
    let (ok, out, err) = run_with(command, Some(exposition.as_bytes()), Duration::from_secs(30))?;
    let complaints: Vec<&str> = out.lines().chain(err.lines()).filter(|l| !l.trim().is_empty()).collect();
    if !ok || !complaints.is_empty() {
        bail!("promtool check metrics refuses the metrics of {what}:\n{out}{err}\n--- exposition ---\n{exposition}");
    }
    Ok(Promtool { families: exposition.lines().filter(|l| l.starts_with("# TYPE ")).count() })
}
