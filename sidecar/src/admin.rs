//! The admin port (readiness, liveness, metrics and the config dump, on
//! loopback) and the metrics port (`/metrics` only, on the pod's address
//! for Prometheus; no configuration, certificates or probes there).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::proxy::Proxy;

pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) {
    serve_with(listener, proxy, "admin", handle).await
}

/// Serves `/metrics` and nothing else.
pub async fn serve_metrics(listener: TcpListener, proxy: Arc<Proxy>) {
    serve_with(listener, proxy, "metrics", handle_metrics).await
}

async fn serve_with(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    name: &'static str,
    handle: fn(&Proxy, &Request<Incoming>) -> Response<Full<Bytes>>,
) {
    let mut backoff = crate::accept::AcceptBackoff::new(name);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.accepted();
                stream
            }
            // Out of file descriptors: wait instead of spinning.
            Err(e) => {
                backoff.failed(&e, &proxy.metrics).await;
                continue;
            }
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(handle(&proxy, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn metrics(proxy: &Proxy, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = proxy.metrics.encode(accept);
    text(StatusCode::OK, content_type, body)
}

fn handle_metrics(proxy: &Proxy, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics(proxy, req),
        (_, "/metrics") => text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".into()),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "only /metrics is served here\n".into()),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}

fn handle(proxy: &Proxy, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".into());
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "text/plain", "live\n".into()),
        "/ready" if !proxy.is_synced() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no config from the control plane yet\n".into())
        }
        "/ready" if !proxy.tls.ready() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no workload certificate yet\n".into())
        }
        "/ready" => text(StatusCode::OK, "text/plain", "ready\n".into()),
        "/metrics" => metrics(proxy, req),
        "/config_dump" => {
            let c = proxy.config.load();
            let as_map = |items: Vec<(&String, serde_json::Value)>| {
                items.into_iter().map(|(k, v)| (k.clone(), v)).collect::<serde_json::Map<_, _>>()
            };
            let full = json!({
                "nonce": c.nonce,
                "versions": c.versions,
                "mesh": c.mesh.as_deref(),
                "mtls": proxy.tls.mode(),
                "certificate": proxy.tls.state().map(|s| json!({
                    "identity": s.identity.to_string(),
                    "expires_unix": s.not_after.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                    "roots": s.roots_pem().len(),
                    "signed_by_root": s.signed_by_root,
                })),
                "inbound": c.inbound.as_deref(),
                "services": as_map(c.services.iter().map(|(k, v)| (k, json!(v.as_ref()))).collect()),
                "endpoints": as_map(c.endpoints.iter().map(|(k, v)| (k, json!(v.as_ref()))).collect()),
                "gateways": as_map(c.gateways.iter().map(|(k, v)| (k, json!(v.as_ref()))).collect()),
                // Names, DNS names and expiry; never the key.
                "certificates": as_map(c.certificates.iter().map(|(k, v)| (k, json!(v.as_ref()))).collect()),
            });
            text(StatusCode::OK, "application/json", serde_json::to_string_pretty(&full).unwrap_or_default())
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "try /ready, /live, /metrics or /config_dump\n".into()),
    }
}
