//! The control plane's Prometheus metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric, registered once; cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Generation of the published configuration.
    pub generation: Gauge,
    /// Load errors of the latest input (non-zero: the last good
    /// configuration is still served).
    pub load_errors: Gauge,
    /// Time to translate the snapshot.
    pub translate_seconds: Histogram,
    /// Time to compile (incrementally) for the connected proxies.
    pub compile_seconds: Histogram,
    /// Proxies with an open configuration stream.
    pub proxies_connected: Gauge,
    /// Configuration updates sent to proxies.
    pub updates_sent: Counter,
    /// Encoded bytes of those updates.
    pub update_bytes: Counter,
    /// Updates proxies acknowledged in full.
    pub acks: Counter,
    /// Resources proxies rejected (NACKs).
    pub rejections: Counter,
    /// Workload certificates issued, by mesh.
    pub certificates_issued: Family<Vec<(String, String)>, Counter>,
    /// Signing requests refused, by reason.
    pub certificates_refused: Family<Vec<(String, String)>, Counter>,
    /// Config streams refused (a proof that does not verify), by reason.
    pub streams_refused: Family<Vec<(String, String)>, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::with(|_| {})
    }
}

impl Metrics {
    /// The metrics, with more registered by `extra` (Kubernetes mode's).
    pub fn with(extra: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::with_prefix("weft_cp");
        extra(&mut registry);
        let m = Metrics {
            generation: Gauge::default(),
            load_errors: Gauge::default(),
            translate_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            compile_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            proxies_connected: Gauge::default(),
            updates_sent: Counter::default(),
            update_bytes: Counter::default(),
            acks: Counter::default(),
            rejections: Counter::default(),
            certificates_issued: Family::default(),
            certificates_refused: Family::default(),
            streams_refused: Family::default(),
            registry: Registry::default(),
        };
        registry.register("config_generation", "Generation of the published configuration", m.generation.clone());
        registry.register(
            "load_errors",
            "Errors in the latest input; the last good configuration is served",
            m.load_errors.clone(),
        );
        registry.register("translate_seconds", "Time to translate the snapshot", m.translate_seconds.clone());
        registry.register("compile_seconds", "Time to compile proxy configuration", m.compile_seconds.clone());
        registry.register(
            "proxies_connected",
            "Proxies with an open configuration stream",
            m.proxies_connected.clone(),
        );
        registry.register("config_updates_sent", "Configuration updates sent to proxies", m.updates_sent.clone());
        registry.register("config_update_bytes", "Encoded bytes of configuration updates", m.update_bytes.clone());
        registry.register("config_acks", "Updates acknowledged in full", m.acks.clone());
        registry.register("config_rejections", "Resources proxies rejected", m.rejections.clone());
        registry.register("certificates_issued", "Workload certificates issued", m.certificates_issued.clone());
        registry.register("certificates_refused", "Signing requests refused", m.certificates_refused.clone());
        registry.register(
            "config_streams_refused",
            "Config streams refused because their identity proof did not verify",
            m.streams_refused.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The exposition for a scrape with this `Accept` header:
    /// `(content type, body)`, OpenMetrics or the classic text format.
    pub fn encode(&self, accept: Option<&str>) -> (&'static str, String) {
        weft_metrics_exposition::encode(&self.registry, accept)
    }
}
