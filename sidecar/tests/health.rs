//! The application probes the health port performs for the kubelet, each
//! against a real listener on loopback: success and failure.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use weft_proxy::health::{AppProbe, run_probe};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind(SocketAddr::new(LOOPBACK, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// An HTTP/1.1 application: /healthz is 200 when the X-Probe header says
/// "kubelet", /down is 503, /moved is a 302.
async fn http_app() -> u16 {
    let (l, port) = listener().await;
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let status = match req.uri().path() {
                        "/healthz" if req.headers().get("x-probe").is_some_and(|v| v == "kubelet") => StatusCode::OK,
                        "/healthz" => StatusCode::BAD_REQUEST,
                        "/moved" => StatusCode::FOUND,
                        _ => StatusCode::SERVICE_UNAVAILABLE,
                    };
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = status;
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    port
}

/// A gRPC health service: `store` is SERVING, `cart` NOT_SERVING, anything
/// else NOT_FOUND (grpc-status 5), as grpc.health.v1 defines.
async fn grpc_app() -> u16 {
    let (l, port) = listener().await;
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                    assert_eq!(req.headers()["te"], "trailers");
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let service = String::from_utf8_lossy(body.get(7..).unwrap_or_default()).into_owned();
                    let (status, grpc_status) = match service.as_str() {
                        "store" => (Some(1u8), "0"),
                        "cart" => (Some(2u8), "0"),
                        _ => (None, "5"),
                    };
                    let mut frame = Vec::new();
                    if let Some(s) = status {
                        frame.extend_from_slice(&[0, 0, 0, 0, 2, 0x08, s]);
                    }
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", grpc_status.parse().unwrap());
                    let body = http_body_util::StreamBody::new(futures::stream::iter(vec![
                        Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(frame))),
                        Ok(hyper::body::Frame::trailers(trailers)),
                    ]));
                    let mut r = Response::new(body);
                    r.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

fn http(port: u16, path: &str, headers: &[(&str, &str)]) -> AppProbe {
    AppProbe::Http {
        port,
        path: path.into(),
        scheme: "HTTP".into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

#[tokio::test]
async fn http_probes_follow_the_kubelets_rules() {
    let port = http_app().await;
    run_probe(&http(port, "/healthz", &[("X-Probe", "kubelet")]), LOOPBACK).await.unwrap();
    run_probe(&http(port, "/moved", &[]), LOOPBACK).await.unwrap();
    let e = run_probe(&http(port, "/healthz", &[]), LOOPBACK).await.unwrap_err();
    assert!(e.contains("400"), "{e}");
    assert!(run_probe(&http(port, "/down", &[]), LOOPBACK).await.unwrap_err().contains("503"));
    let (closed, closed_port) = listener().await;
    drop(closed);
    assert!(run_probe(&http(closed_port, "/", &[]), LOOPBACK).await.is_err());
}

#[tokio::test]
async fn tcp_probes_connect() {
    let (l, port) = listener().await;
    run_probe(&AppProbe::Tcp { port }, LOOPBACK).await.unwrap();
    drop(l);
    assert!(run_probe(&AppProbe::Tcp { port }, LOOPBACK).await.is_err());
}

#[tokio::test]
async fn grpc_probes_check_health() {
    let port = grpc_app().await;
    run_probe(&AppProbe::Grpc { port, service: "store".into() }, LOOPBACK).await.unwrap();
    let e = run_probe(&AppProbe::Grpc { port, service: "cart".into() }, LOOPBACK).await.unwrap_err();
    assert!(e.contains("not serving"), "{e}");
    let e = run_probe(&AppProbe::Grpc { port, service: "unknown".into() }, LOOPBACK).await.unwrap_err();
    assert!(e.contains("grpc-status 5"), "{e}");
}
