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

/// What `promtool check metrics` said about an exposition.
#[derive(Debug)]
pub struct Promtool {
    /// Metric families (`# TYPE` lines).
    pub families: usize,
    /// Complaints that come only from the OpenMetrics encoding being served
    /// as the classic text format: a counter's `# HELP`/`# TYPE` carry the
    /// family name (`x`) while its samples are `x_total`, so promtool (which
    /// reads text format 0.0.4) finds `x_total` without help text.
    pub openmetrics_counters: Vec<String>,
}

/// Runs Prometheus's linter on a scraped exposition. Fails on a parse
/// error and on every complaint but the counter naming of the OpenMetrics
/// encoding (reported in [`Promtool::openmetrics_counters`]).
pub fn promtool_check(what: &str, exposition: &str) -> anyhow::Result<Promtool> {
    let mut command = Command::new(tool("promtool")?);
    command.args(["check", "metrics"]);
    let (ok, out, err) = run_with(command, Some(exposition.as_bytes()), Duration::from_secs(30))?;
    let complaints: Vec<&str> = out.lines().chain(err.lines()).filter(|l| !l.trim().is_empty()).collect();
    let mut openmetrics_counters = Vec::new();
    let mut other = Vec::new();
    for c in &complaints {
        let known = c
            .strip_suffix(" no help text")
            .and_then(|name| name.strip_suffix("_total"))
            .filter(|family| exposition.lines().any(|l| l == format!("# TYPE {family} counter")))
            .filter(|family| exposition.lines().any(|l| l.starts_with(&format!("# HELP {family} "))));
        match known {
            Some(family) => openmetrics_counters.push(family.to_string()),
            None => other.push(*c),
        }
    }
    if (!ok && complaints.is_empty()) || !other.is_empty() {
        bail!(
            "promtool check metrics refuses the metrics of {what}:\n{}\n--- exposition ---\n{exposition}",
            if other.is_empty() { format!("{out}{err}") } else { other.join("\n") }
        );
    }
    Ok(Promtool { families: exposition.lines().filter(|l| l.starts_with("# TYPE ")).count(), openmetrics_counters })
}
