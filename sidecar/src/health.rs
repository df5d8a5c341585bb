//! The health port: what the kubelet probes, on the pod's address, in
//! plaintext (the init container leaves this port out of the capture).
//!
//! * `/ready` and `/live`: the proxy's own state (the injected startup
//!   probe on `/ready` is what holds the application back until the proxy
//!   has its configuration and certificate).
//! * `/app-probe/<container>/<probe>`: an application probe the injector
//!   moved here, performed now against the application over loopback, as
//!   the kubelet would have: HTTP GET (2xx and 3xx succeed; HTTPS without
//!   certificate verification, as the kubelet does), a TCP connect, or a
//!   gRPC health check. Over loopback the probe reaches the application
//!   directly: the proxy's own connections are not captured. A Strict mesh
//!   would refuse the kubelet's plaintext probe on the application's port.
//!
//! Nothing else is served here: this port is reachable from the node and
//! other pods, so it shows no configuration, metrics or certificates.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};

use crate::proxy::Proxy;

/// The longest an application probe may take here; the kubelet gives up
/// on its own timeout earlier.
const PROBE_LIMIT: Duration = Duration::from_secs(30);

/// One application probe as the injector recorded it (the JSON contract
/// with `weft-inject`'s `AppProbe`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProbe {
    Http {
        port: u16,
        path: String,
        scheme: String,
        #[serde(default)]
        headers: Vec<(String, String)>,
    },
    Tcp {
        port: u16,
    },
    Grpc {
        port: u16,
        #[serde(default)]
        service: String,
    },
}

/// The application probes, by `<container>/<probe>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppProbes(pub BTreeMap<String, AppProbe>);

impl AppProbes {
    /// Parses `WEFT_APP_PROBES`.
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json).map(AppProbes)
    }
}

/// Serves the health port until the listener fails.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, probes: Arc<AppProbes>, app_ip: IpAddr) {
    let mut backoff = crate::accept::AcceptBackoff::new("health");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.accepted();
                stream
            }
            Err(e) => {
                backoff.failed(&e, &proxy.metrics).await;
                continue;
            }
        };
        let (proxy, probes) = (proxy.clone(), probes.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (proxy, probes) = (proxy.clone(), probes.clone());
                async move { Ok::<_, Infallible>(handle(&proxy, &probes, app_ip, req.method(), req.uri().path()).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    r
}

async fn handle(
    proxy: &Proxy,
    probes: &AppProbes,
    app_ip: IpAddr,
    method: &Method,
    path: &str,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match path {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" if !proxy.is_synced() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "no config from the control plane yet\n")
        }
        "/ready" if !proxy.tls.ready() => text(StatusCode::SERVICE_UNAVAILABLE, "no workload certificate yet\n"),
        "/ready" => text(StatusCode::OK, "ready\n"),
        _ => match path.strip_prefix("/app-probe/").and_then(|name| probes.0.get(name).map(|p| (name, p))) {
            Some((name, probe)) => match tokio::time::timeout(PROBE_LIMIT, run_probe(probe, app_ip)).await {
                Ok(Ok(())) => text(StatusCode::OK, "ok\n"),
                Ok(Err(why)) => {
                    tracing::debug!(probe = name, %why, "application probe failed");
                    text(StatusCode::SERVICE_UNAVAILABLE, format!("{name}: {why}\n"))
                }
                Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{name}: no answer within {PROBE_LIMIT:?}\n")),
            },
            None => text(StatusCode::NOT_FOUND, "try /ready, /live or /app-probe/<container>/<probe>\n"),
        },
    }
}

/// Performs one probe against the application.
pub async fn run_probe(probe: &AppProbe, app_ip: IpAddr) -> Result<(), String> {
    match probe {
        AppProbe::Tcp { port } => {
            TcpStream::connect(SocketAddr::new(app_ip, *port)).await.map(|_| ()).map_err(|e| e.to_string())
        }
        AppProbe::Http { port, path, scheme, headers } => http_probe(app_ip, *port, path, scheme, headers).await,
        AppProbe::Grpc { port, service } => grpc_probe(app_ip, *port, service).await,
    }
}

async fn http_probe(
    ip: IpAddr,
    port: u16,
    path: &str,
    scheme: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let addr = SocketAddr::new(ip, port);
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut req = Request::builder().method(Method::GET).uri(path).header(header::HOST, addr.to_string());
    req = req.header(header::USER_AGENT, "weft-proxy-probe").header(header::ACCEPT, "*/*");
    for (name, value) in headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let status = if scheme.eq_ignore_ascii_case("HTTPS") {
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate))
            .with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::IpAddress(ip.into());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        send_http1(TokioIo::new(tls), req).await?
    } else {
        send_http1(TokioIo::new(tcp), req).await?
    };
    if (200..400).contains(&status.as_u16()) { Ok(()) } else { Err(format!("HTTP status {status}")) }
}

async fn send_http1<T>(io: T, req: Request<Empty<Bytes>>) -> Result<StatusCode, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status())
}

/// A gRPC health check (grpc.health.v1.Health/Check) over HTTP/2 with
/// prior knowledge, as the kubelet's gRPC probe does.
async fn grpc_probe(ip: IpAddr, port: u16, service: &str) -> Result<(), String> {
    let tcp = TcpStream::connect(SocketAddr::new(ip, port)).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    // HealthCheckRequest { service = 1 (string) }, in one length-prefixed
    // gRPC message.
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{ip}:{port}/grpc.health.v1.Health/Check"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(Full::new(Bytes::from(frame)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        return Err(format!("HTTP status {}", resp.status()));
    }
    let headers_status = resp.headers().get("grpc-status").cloned();
    let collected = resp.into_body().collect().await.map_err(|e| e.to_string())?;
    let trailers_status = collected.trailers().and_then(|t| t.get("grpc-status").cloned());
    let status = trailers_status.or(headers_status);
    if let Some(s) = status.as_ref().and_then(|s| s.to_str().ok()).filter(|s| *s != "0") {
        return Err(format!("grpc-status {s}"));
    }
    let mut body = collected.to_bytes();
    if body.len() < 5 {
        return Err("no HealthCheckResponse".into());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    body.advance(5);
    let message = body.get(..len).ok_or("a truncated HealthCheckResponse")?;
    // HealthCheckResponse { status = 1 (enum) }: SERVING is 1.
    match health_status(message) {
        Some(1) => Ok(()),
        Some(other) => Err(format!("the service is not serving (status {other})")),
        None => Err("the service reported no status (UNKNOWN)".into()),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The `status` field of an encoded HealthCheckResponse.
fn health_status(mut message: &[u8]) -> Option<u64> {
    let varint = |m: &mut &[u8]| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = m.split_first()?;
            *m = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    let mut status = None;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = Some(varint(&mut message)?),
            (_, 0) => {
                varint(&mut message)?;
            }
            (_, 2) => {
                let len = varint(&mut message)? as usize;
                message = message.get(len..)?;
            }
            (_, 5) => message = message.get(4..)?,
            (_, 1) => message = message.get(8..)?,
            _ => return None,
        }
    }
    status
}

/// Accepts any server certificate: an HTTPS probe checks that the
/// application answers, as the kubelet's does, not who it is.
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &crate::tls::provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &crate::tls::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        crate::tls::provider().signature_verification_algorithms.supported_schemes()
    }
}

/// Waits until the health port says ready (the fallback injection's
/// postStart hook, which holds the application's containers).
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("not reachable");
    while tokio::time::Instant::now() < deadline {
        let probe = AppProbe::Http { port: addr.port(), path: "/ready".into(), scheme: "HTTP".into(), headers: vec![] };
        match tokio::time::timeout(Duration::from_secs(2), run_probe(&probe, addr.ip())).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "no answer within 2 s".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the proxy at {addr} was not ready within {timeout:?}: {last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_injectors_json() {
        let json = r#"{"app/liveness":{"tcp":{"port":8080}},"app/readiness":{"http":{"port":8080,"path":"/ready","scheme":"HTTP","headers":[["X-Probe","1"]]}},"app/startup":{"grpc":{"port":9090,"service":"store"}}}"#;
        let probes = AppProbes::parse(json).unwrap();
        assert_eq!(probes.0["app/liveness"], AppProbe::Tcp { port: 8080 });
        assert_eq!(
            probes.0["app/readiness"],
            AppProbe::Http {
                port: 8080,
                path: "/ready".into(),
                scheme: "HTTP".into(),
                headers: vec![("X-Probe".into(), "1".into())]
            }
        );
        assert_eq!(probes.0["app/startup"], AppProbe::Grpc { port: 9090, service: "store".into() });
    }

    #[test]
    fn health_responses() {
        assert_eq!(health_status(&[0x08, 0x01]), Some(1));
        assert_eq!(health_status(&[0x08, 0x02]), Some(2));
        assert_eq!(health_status(&[]), None);
        // An unknown length-delimited field first.
        assert_eq!(health_status(&[0x12, 0x02, b'h', b'i', 0x08, 0x01]), Some(1));
        assert_eq!(health_status(&[0x08]), None);
    }
}
