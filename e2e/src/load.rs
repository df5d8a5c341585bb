//! A steady-rate HTTP load: requests at a fixed rate to one address with a
//! chosen Host, each result recorded (which pod answered, status, latency).
//! Used by the demo, and in pods by the e2e tests through `weft-load`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// One request's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Milliseconds from the start of the load to the request's start.
    pub at_ms: u64,
    /// HTTP status, or 0 when no response arrived.
    pub status: u16,
    /// The pod that answered (from the echo body), when one did.
    pub pod: Option<String>,
    pub latency_us: u64,
    /// Why there was no response, or the body of a non-200 one.
    pub error: Option<String>,
}

/// Where requests go: `connect` is dialled (a Service address that the
/// pod's iptables redirect to its sidecar, or a sidecar's outbound port
/// used as an explicit proxy); `host` is the Host header.
#[derive(Debug, Clone)]
pub struct Target {
    pub connect: SocketAddr,
    pub host: String,
    pub path: String,
    /// HTTPS, trusting these PEM roots; the host (without its port) is the
    /// SNI server name and the name verified.
    pub tls_roots: Option<String>,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `rate` requests a second for `duration`; every outcome goes to
/// `out` as it completes. Returns when the last request has finished.
pub async fn run(target: Target, rate: u32, duration: Duration, out: mpsc::UnboundedSender<Outcome>) {
    let connect = target.connect;
    match target.tls_roots.clone() {
        None => {
            let connector = tower::service_fn(move |_: http::Uri| {
                Box::pin(async move {
                    let s = TcpStream::connect(connect).await?;
                    s.set_nodelay(true)?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                })
            });
            drive(Client::builder(TokioExecutor::new()).build(connector), &target, "http", rate, duration, out).await
        }
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            use rustls::pki_types::pem::PemObject;
            for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
                let _ = roots.add(c);
            }
            let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
            let server = target.host.split(':').next().unwrap_or_default().to_owned();
            let connector = tower::service_fn(move |_: http::Uri| {
                let (tls, server) = (tls.clone(), server.clone());
                Box::pin(async move {
                    let s = TcpStream::connect(connect).await?;
                    s.set_nodelay(true)?;
                    let name = rustls::pki_types::ServerName::try_from(server)
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                    Ok::<_, std::io::Error>(TlsConnection(TokioIo::new(tls.connect(name, s).await?)))
                })
            });
            drive(Client::builder(TokioExecutor::new()).build(connector), &target, "https", rate, duration, out).await
        }
    }
}

/// A TLS connection the pooling client can use.
struct TlsConnection(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

impl hyper_util::client::legacy::connect::Connection for TlsConnection {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl hyper::rt::Read for TlsConnection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConnection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

async fn drive<C>(
    client: Client<C, Empty<Bytes>>,
    target: &Target,
    scheme: &str,
    rate: u32,
    duration: Duration,
    out: mpsc::UnboundedSender<Outcome>,
) where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let uri: http::Uri = match format!("{scheme}://{}{}", target.host, target.path).parse() {
        Ok(u) => u,
        Err(e) => {
            let _ = out.send(Outcome { at_ms: 0, status: 0, pod: None, latency_us: 0, error: Some(e.to_string()) });
            return;
        }
    };
    let start = Instant::now();
    let rate = f64::from(rate.max(1));
    // Request i is due at start + i/rate; a sender that falls behind (a
    // busy machine) catches up, so the count is exact.
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        let (client, uri, out) = (client.clone(), uri.clone(), out.clone());
        let at_ms = start.elapsed().as_millis() as u64;
        tasks.spawn(async move {
            let sent = Instant::now();
            let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, one(&client, uri)).await {
                Ok(Ok((status, body))) => {
                    let pod = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("pod").and_then(|p| p.as_str()).map(str::to_owned));
                    let error = (status != 200).then(|| String::from_utf8_lossy(&body).trim().to_owned());
                    Outcome { at_ms, status, pod, latency_us: sent.elapsed().as_micros() as u64, error }
                }
                Ok(Err(e)) => Outcome { at_ms, status: 0, pod: None, latency_us: 0, error: Some(e) },
                Err(_) => Outcome { at_ms, status: 0, pod: None, latency_us: 0, error: Some("timed out".into()) },
            };
            let _ = out.send(outcome);
        });
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn one<C>(client: &Client<C, Empty<Bytes>>, uri: http::Uri) -> Result<(u16, Bytes), String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let req = http::Request::get(uri).body(Empty::new()).map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body))
}

/// Share of responses per pod-name prefix (e.g. `reviews-v1`) among the
/// successful ones.
pub fn shares<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>, prefixes: &[&str]) -> Vec<f64> {
    let mut counts = vec![0u64; prefixes.len()];
    let mut total = 0u64;
    for o in outcomes {
        if o.status != 200 {
            continue;
        }
        total += 1;
        if let Some(pod) = &o.pod
            && let Some(i) = prefixes.iter().position(|p| pod.starts_with(p))
        {
            counts[i] += 1;
        }
    }
    counts.iter().map(|c| if total == 0 { 0.0 } else { *c as f64 / total as f64 }).collect()
}
