//! Prometheus metrics of the proxy.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `namespace/name` of the route (empty when none matched).
    pub route: String,
    /// `namespace/name` of the backend Service (empty when none was picked).
    pub backend: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpdateLabels {
    /// `applied` or `rejected`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `outbound_http`, `outbound_tcp` or `inbound`.
    pub kind: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub config_updates: Family<UpdateLabels, Counter>,
    pub config_nonce: Gauge,
    pub config_resources: Gauge,
    pub connections: Family<ConnectionLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weft_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "HTTP requests by route, backend and response status", requests.clone());
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        registry.register("request_duration_seconds", "Time to the response head, by route", latency.clone());
        let config_updates = Family::<UpdateLabels, Counter>::default();
        registry.register("config_updates", "Config updates from the control plane, by result", config_updates.clone());
        let config_nonce = Gauge::default();
        registry.register("config_nonce", "Nonce of the last config update applied", config_nonce.clone());
        let config_resources = Gauge::default();
        registry.register("config_resources", "Config resources held", config_resources.clone());
        let connections = Family::<ConnectionLabels, Counter>::default();
        registry.register("connections", "Accepted connections by kind", connections.clone());
        Metrics { registry, requests, latency, config_updates, config_nonce, config_resources, connections }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
