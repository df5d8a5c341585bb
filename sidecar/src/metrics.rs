//! Prometheus metrics of the proxy.

use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label values are shared strings made once per config update, so that
/// counting a request copies pointers instead of allocating.
pub type LabelValue = Arc<str>;

/// The empty label value: no route matched, or no backend was picked.
pub static NO_LABEL: LazyLock<LabelValue> = LazyLock::new(|| Arc::from(""));

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `namespace/name` of the route (empty when none matched).
    pub route: LabelValue,
    /// `namespace/name` of the backend Service (empty when none was picked).
    pub backend: LabelValue,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: LabelValue,
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// `mtls`, `plaintext`, `plaintext_refused`, `handshake_failed` or `no_certificate`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `issued` or `failed`.
    pub result: &'static str,
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
    pub tls: Family<TlsLabels, Counter>,
    pub certificate_requests: Family<ResultLabels, Counter>,
    /// Unix time at which the workload certificate in force expires.
    pub certificate_expiry: Gauge,
    /// Failed accepts (out of file descriptors, ...) by listener.
    pub accept_errors: Family<ListenerLabels, Counter>,
    /// HTTP/1 connections closed because a request's header section did
    /// not arrive within the header read timeout (slow or idle clients).
    pub header_timeouts: Family<ListenerLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `outbound`, `inbound`, `gateway`, `admin`, `health` or `metrics`.
    pub listener: &'static str,
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
        let tls = Family::<TlsLabels, Counter>::default();
        registry.register("tls_connections", "Connections between proxies by direction and mTLS outcome", tls.clone());
        let certificate_requests = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_requests",
            "Workload certificate requests to the control plane, by result",
            certificate_requests.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_unix_seconds",
            "When the workload certificate in force expires",
            certificate_expiry.clone(),
        );
        let accept_errors = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "accept_errors",
            "Failed accepts by listener (the accept loop backs off after each)",
            accept_errors.clone(),
        );
        let header_timeouts = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "header_read_timeouts",
            "HTTP/1 connections closed because a header section took longer than the header read timeout",
            header_timeouts.clone(),
        );
        Metrics {
            registry,
            accept_errors,
            header_timeouts,
            requests,
            latency,
            config_updates,
            config_nonce,
            config_resources,
            connections,
            tls,
            certificate_requests,
            certificate_expiry,
        }
    }
}

impl Metrics {
    /// The exposition for a scrape with this `Accept` header:
    /// `(content type, body)`, OpenMetrics or the classic text format.
    pub fn encode(&self, accept: Option<&str>) -> (&'static str, String) {
        weft_metrics_exposition::encode(&self.registry, accept)
    }
}

/// The request counters of one route's backend, by status, taken from the
/// registry's family once: counting a forwarded request then needs no
/// label hashing. The handles share their values with the family, so what
/// is exported does not change.
#[derive(Debug, Default)]
pub struct BackendCounters {
    by_status: Mutex<Vec<(u16, Counter)>>,
}

impl BackendCounters {
    pub fn inc(&self, family: &Family<RequestLabels, Counter>, route: &LabelValue, backend: &LabelValue, status: u16) {
        let mut by_status = self.by_status.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = by_status.iter().find(|(s, _)| *s == status) {
            c.inc();
            return;
        }
        let c = family.get_or_create(&RequestLabels { route: route.clone(), backend: backend.clone(), status }).clone();
        c.inc();
        by_status.push((status, c));
    }
}

/// A route's latency histogram, taken from the registry's family once.
#[derive(Debug, Default)]
pub struct RouteLatency(OnceLock<Histogram>);

impl RouteLatency {
    pub fn observe(&self, family: &Family<RouteLabels, Histogram>, route: &LabelValue, seconds: f64) {
        self.0.get_or_init(|| family.get_or_create(&RouteLabels { route: route.clone() }).clone()).observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_handles_count_into_the_exported_families() {
        let metrics = Metrics::default();
        let (route, backend): (LabelValue, LabelValue) = (Arc::from("ns/r"), Arc::from("ns/b"));
        let counters = BackendCounters::default();
        counters.inc(&metrics.requests, &route, &backend, 200);
        counters.inc(&metrics.requests, &route, &backend, 200);
        counters.inc(&metrics.requests, &route, &backend, 503);
        // A second cache for the same labels (a config update rebuilt the
        // route) adds to the same series.
        BackendCounters::default().inc(&metrics.requests, &route, &backend, 200);
        let latency = RouteLatency::default();
        latency.observe(&metrics.latency, &route, 0.002);
        latency.observe(&metrics.latency, &route, 0.2);
        let (_, text) = metrics.encode(None);
        assert!(text.contains(r#"weft_proxy_requests_total{route="ns/r",backend="ns/b",status="200"} 3"#), "{text}");
        assert!(text.contains(r#"weft_proxy_requests_total{route="ns/r",backend="ns/b",status="503"} 1"#), "{text}");
        assert!(text.contains(r#"weft_proxy_request_duration_seconds_count{route="ns/r"} 2"#), "{text}");
    }
}
