//! `weft-grpc`: makes unary gRPC calls read from stdin (one JSON object per
//! line: service, method, optional authority, metadata as [[key, value],
//! ...]) to one address, cleartext HTTP/2 with prior knowledge as upstream's
//! conformance client does, and prints one JSON line per call: the status
//! code name, the message and what the echo service reported. Knows the
//! two echo services of the conformance cases; any other service is an
//! error line, so a case the runner cannot make fails visibly. The
//! conformance runner uses it inside client pods.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};
use weft_e2e::grpc_echo::{GRPC_ECHO_SERVICE, MESH_ECHO_SERVICE, conformance, mesh};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    connect: SocketAddr,
    /// A new connection for every call (else one connection for all).
    #[arg(long)]
    fresh_connections: bool,
}

#[derive(Deserialize)]
struct Call {
    service: String,
    method: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    metadata: Vec<(String, String)>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut out = std::io::stdout().lock();
    let mut shared: Option<(Option<String>, Channel)> = None;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let call: Call = serde_json::from_str(&line)?;
        let channel = match &shared {
            Some((authority, ch)) if !args.fresh_connections && *authority == call.authority => Ok(ch.clone()),
            _ => connect(args.connect, call.authority.as_deref()).await,
        };
        let result = match channel {
            Ok(ch) => {
                if !args.fresh_connections {
                    shared = Some((call.authority.clone(), ch.clone()));
                }
                match tokio::time::timeout(Duration::from_secs(10), invoke(ch, &call)).await {
                    Ok(r) => r,
                    Err(_) => json!({"code": "DeadlineExceeded", "message": "no answer within 10 s"}),
                }
            }
            Err(e) => json!({"code": "Unavailable", "message": format!("connect: {e:#}")}),
        };
        writeln!(out, "{result}")?;
        out.flush()?;
    }
    Ok(())
}

async fn connect(addr: SocketAddr, authority: Option<&str>) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(Duration::from_secs(5));
    if let Some(a) = authority {
        endpoint = endpoint.origin(format!("http://{a}").parse()?);
    }
    Ok(endpoint.connect().await?)
}

fn request<T>(message: T, call: &Call) -> anyhow::Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(message);
    for (k, v) in &call.metadata {
        let key: tonic::metadata::MetadataKey<tonic::metadata::Ascii> = k.parse()?;
        req.metadata_mut().append(key, v.parse()?);
    }
    Ok(req)
}

fn status_line(s: &tonic::Status) -> Value {
    json!({"code": format!("{:?}", s.code()), "message": s.message()})
}

async fn invoke(channel: Channel, call: &Call) -> Value {
    match (call.service.as_str(), call.method.as_str()) {
        (GRPC_ECHO_SERVICE, method @ ("Echo" | "EchoTwo" | "EchoThree")) => {
            let mut client = conformance::grpc_echo_client::GrpcEchoClient::new(channel);
            let req = match request(conformance::EchoRequest {}, call) {
                Ok(r) => r,
                Err(e) => return json!({"code": "Internal", "message": format!("bad metadata: {e:#}")}),
            };
            let result = match method {
                "Echo" => client.echo(req).await,
                "EchoTwo" => client.echo_two(req).await,
                _ => client.echo_three(req).await,
            };
            match result {
                Ok(resp) => {
                    let a = resp.into_inner().assertions.unwrap_or_default();
                    let ctx = a.context.unwrap_or_default();
                    json!({
                        "code": "Ok",
                        "response": {
                            "fully_qualified_method": a.fully_qualified_method,
                            "authority": a.authority,
                            "namespace": ctx.namespace,
                            "pod": ctx.pod,
                            "headers": a.headers.iter().map(|h| (h.key.clone(), h.value.clone())).collect::<Vec<_>>(),
                        }
                    })
                }
                Err(s) => status_line(&s),
            }
        }
        (MESH_ECHO_SERVICE, "Echo") => {
            let mut client = mesh::echo_test_service_client::EchoTestServiceClient::new(channel);
            let req = match request(mesh::EchoRequest { message: String::new() }, call) {
                Ok(r) => r,
                Err(e) => return json!({"code": "Internal", "message": format!("bad metadata: {e:#}")}),
            };
            match client.echo(req).await {
                Ok(resp) => json!({"code": "Ok", "response": {"text": resp.into_inner().message}}),
                Err(s) => status_line(&s),
            }
        }
        (service, method) => json!({
            "code": "ClientError",
            "message": format!("weft-grpc cannot call /{service}/{method}: not an echo service method it knows"),
        }),
    }
}
