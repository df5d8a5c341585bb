//! `weft-request`: sends HTTP/1.1 requests read from stdin (one JSON object
//! per line: method, host, path, headers as [[name, value], ...]) to one
//! address, each on a fresh connection, without following redirects; prints
//! one JSON line per response (status, headers, body) or error. The
//! conformance runner uses it inside client pods.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    connect: SocketAddr,
}

#[derive(Deserialize)]
struct Req {
    method: String,
    host: String,
    path: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

#[derive(Serialize)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    error: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let req: Req = serde_json::from_str(&line)?;
        let resp = match tokio::time::timeout(Duration::from_secs(10), send(args.connect, &req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Resp { status: 0, headers: vec![], body: String::new(), error: Some(format!("{e:#}")) },
            Err(_) => Resp { status: 0, headers: vec![], body: String::new(), error: Some("timed out".into()) },
        };
        writeln!(out, "{}", serde_json::to_string(&resp)?)?;
        out.flush()?;
    }
    Ok(())
}

async fn send(addr: SocketAddr, req: &Req) -> anyhow::Result<Resp> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut builder =
        http::Request::builder().method(req.method.as_str()).uri(req.path.as_str()).header("host", &req.host);
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let resp = sender.send_request(builder.body(Empty::<Bytes>::new())?).await?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned(), error: None })
}
