//! Commands that read a running control plane's admin API: `get`, `status`
//! and `config-dump`.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Output formats of the inspection commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Yaml,
    Json,
}

/// Where the admin API is.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Admin API of the control plane.
    #[arg(long, global = true, env = "WEFT_ADMIN", default_value = "http://127.0.0.1:15000")]
    admin: String,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: Format,
}

async fn fetch(target: &Target, path: &str) -> anyhow::Result<Value> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("{}{}", target.admin.trim_end_matches('/'), path);
    let uri: hyper::Uri = url.parse().with_context(|| format!("invalid admin address {url}"))?;
    let response =
        client.get(uri).await.with_context(|| format!("cannot reach the control plane at {}", target.admin))?;
    let status = response.status();
    let body = response.into_body().collect().await.context("reading the response")?.to_bytes();
    let value: Value =
        serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
    if !status.is_success() {
        bail!("{}", value["error"].as_str().unwrap_or(&value.to_string()));
    }
    Ok(value)
}

fn print(target: &Target, value: &Value, table: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
    match target.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(value)?),
        Format::Table => print!("{}", table(value)),
    }
    Ok(())
}

/// Renders rows as aligned columns.
fn columns(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(s, "{c:<w$}  ", w = widths[i]);
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in &rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `weftctl get KIND`.
pub async fn get(target: &Target, kind: &str) -> anyhow::Result<()> {
    if kind == "errors" {
        // What the control plane could not load (file, document, line and
        // field; a broken file's last good version stays in force).
        let v = fetch(target, "/api/v1/errors").await?;
        return print(target, &v["errors"], |errors| {
            let rows = errors.as_array().into_iter().flatten().map(|e| vec![s(e)]).collect();
            columns(&["ERROR"], rows)
        });
    }
    if matches!(kind, "proxies" | "proxy") {
        let v = fetch(target, "/api/v1/proxies").await?;
        return print(target, &v["items"], |items| {
            let rows = items
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let rejected = p["rejected"].as_object().map(|m| m.len()).unwrap_or(0);
                    vec![
                        s(&p["id"]),
                        s(&p["role"]),
                        p["ips"].as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                        s(&p["synced_generation"]),
                        rejected.to_string(),
                        s(&p["pending_updates"]),
                    ]
                })
                .collect();
            columns(&["PROXY", "ROLE", "IPS", "SYNCED-GENERATION", "REJECTED", "PENDING"], rows)
        });
    }
    let v = fetch(target, &format!("/api/v1/generated/{kind}")).await?;
    print(target, &v["items"], |items| {
        let rows = items
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| {
                let m = &o["metadata"];
                let origin =
                    format!("{} {}", s(&m["labels"]["weft.io/origin-kind"]), s(&m["annotations"]["weft.io/origin"]));
                let target = match o["kind"].as_str() {
                    Some("MeshGateway") => {
                        format!("{} listener(s)", o["spec"]["listeners"].as_array().map(Vec::len).unwrap_or(0))
                    }
                    Some("MeshGatewayInstance") => s(&o["spec"]["meshGateway"]),
                    _ => format!(
                        "{}{}",
                        s(&o["spec"]["targetRef"]["kind"]),
                        o["spec"]["targetRef"]["name"].as_str().map(|n| format!("/{n}")).unwrap_or_default()
                    ),
                };
                vec![s(&m["namespace"]), s(&m["name"]), s(&m["labels"]["weft.io/mesh"]), target, origin]
            })
            .collect();
        columns(&["NAMESPACE", "NAME", "MESH", "TARGET", "ORIGIN"], rows)
    })
}

/// `weftctl status KIND/NAME` (NAME is `namespace/name` for namespaced kinds).
pub async fn status(target: &Target, object: &str) -> anyhow::Result<()> {
    let Some((kind, name)) = object.split_once('/') else {
        bail!("expected KIND/NAME or KIND/NAMESPACE/NAME, e.g. httproute/bookinfo/reviews");
    };
    let v = fetch(target, &format!("/api/v1/status/{kind}/{name}")).await?;
    print(target, &v, |doc| {
        let mut rows = Vec::new();
        let mut push = |scope: String, conditions: &Value| {
            for c in conditions.as_array().into_iter().flatten() {
                rows.push(vec![scope.clone(), s(&c["type"]), s(&c["status"]), s(&c["reason"]), s(&c["message"])]);
            }
        };
        push("object".into(), &doc["status"]["conditions"]);
        for l in doc["status"]["listeners"].as_array().into_iter().flatten() {
            push(format!("listener {}", s(&l["name"])), &l["conditions"]);
        }
        for p in doc["status"]["parents"].as_array().into_iter().flatten() {
            let r = &p["parentRef"];
            push(format!("parent {} {}", s(&r["kind"]), s(&r["name"])), &p["conditions"]);
        }
        columns(&["SCOPE", "TYPE", "STATUS", "REASON", "MESSAGE"], rows)
    })
}

/// `weftctl config-dump NAMESPACE/NAME`.
pub async fn config_dump(target: &Target, proxy: &str) -> anyhow::Result<()> {
    if !proxy.contains('/') {
        bail!("expected the proxy as NAMESPACE/NAME");
    }
    let v = fetch(target, &format!("/api/v1/proxies/{proxy}/config")).await?;
    print(target, &v, |dump| {
        let rows = dump["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let synced = dump["proxy"]["synced_generation"] == dump["generation"];
                let state = if !r["rejected"].is_null() {
                    format!("rejected: {}", s(&r["rejected"]["error"]))
                } else if synced {
                    "acked".into()
                } else {
                    "pending".into()
                };
                vec![s(&r["name"]), s(&r["version"]), state]
            })
            .collect();
        columns(&["RESOURCE", "VERSION", "STATE"], rows)
    })
}
