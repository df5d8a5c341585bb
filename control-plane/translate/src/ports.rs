//! How Weft reads Service ports: which carry HTTP, which are opaque. One
//! definition shared by the translator (which routes may attach) and the
//! compiler (how proxies handle each port).

use weft_k8s_api::k8s_openapi::api::core::v1::{Service, ServicePort};

/// The ports of a Service.
pub fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or(&[])
}

/// True for a headless Service (`clusterIP: None`).
pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// How a Service port's traffic can be handled, from `appProtocol` or the
/// port name (Weft's documented rule, see docs/translation.md, "Service ports").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortProtocol {
    /// HTTP/1.1, h2c, gRPC or WebSocket: routed by HTTP rules.
    Http,
    /// Declared as something else: forwarded as opaque TCP.
    Opaque,
    /// Nothing declared: the sidecar detects HTTP, and forwards anything else
    /// as TCP.
    Detect,
}

/// The protocol class of a port. `appProtocol` wins; without it, an
/// Istio-style name prefix (`http`, `http-web`, `grpc`, `tcp-db`...) decides.
pub fn port_protocol(port: &ServicePort) -> PortProtocol {
    if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
        return PortProtocol::Opaque;
    }
    if let Some(ap) = port.app_protocol.as_deref() {
        return if is_http_app_protocol(ap) { PortProtocol::Http } else { PortProtocol::Opaque };
    }
    let name = port.name.as_deref().unwrap_or("").to_ascii_lowercase();
    let prefix = name.split(['-', '_']).next().unwrap_or("");
    match prefix {
        "http" | "http2" | "h2c" | "grpc" | "grpc-web" | "ws" => PortProtocol::Http,
        "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" | "postgres" | "postgresql" | "kafka" | "amqp" => {
            PortProtocol::Opaque
        }
        _ => PortProtocol::Detect,
    }
}

/// appProtocol values that carry HTTP the sidecar can route.
pub fn is_http_app_protocol(ap: &str) -> bool {
    matches!(
        ap.to_ascii_lowercase().as_str(),
        "http" | "http2" | "h2c" | "grpc" | "grpc-web" | "ws" | "kubernetes.io/h2c" | "kubernetes.io/ws"
    )
}

/// appProtocol values of ports that take HTTP/2, which gRPC needs (a
/// GRPCRoute backend declared otherwise cannot be reached in gRPC).
pub fn is_h2_app_protocol(ap: &str) -> bool {
    matches!(ap.to_ascii_lowercase().as_str(), "h2c" | "http2" | "grpc" | "kubernetes.io/h2c")
}

/// Whether the proxy should speak HTTP/2 without TLS to this port (h2c,
/// gRPC): from `appProtocol`, else the port name's prefix.
pub fn uses_h2c(port: &ServicePort) -> bool {
    if let Some(ap) = port.app_protocol.as_deref() {
        return is_h2_app_protocol(ap);
    }
    let name = port.name.as_deref().unwrap_or("").to_ascii_lowercase();
    matches!(name.split(['-', '_']).next().unwrap_or(""), "grpc" | "h2c" | "http2")
}
