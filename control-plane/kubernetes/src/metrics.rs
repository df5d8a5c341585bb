//! Metrics of the Kubernetes mode, registered into the control plane's
//! registry under `weft_cp_kube_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels naming a resource (kind).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Labels of a write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: String,
    /// `ok`, `conflict`, `not_found` or `error`.
    pub result: String,
}

/// Every metric of the Kubernetes mode.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// Watch streams that ended in an error and were restarted.
    pub watch_errors: Family<KindLabels, Counter>,
    /// (Re)lists, initial ones included.
    pub relists: Family<KindLabels, Counter>,
    /// Objects that could not be read (their last good version is used).
    pub invalid_objects: Family<KindLabels, Gauge>,
    /// Resources served by the cluster and watched.
    pub watched_resources: Gauge,
    /// Generated objects applied.
    pub applies: Family<WriteLabels, Counter>,
    /// Stale generated objects deleted.
    pub deletes: Family<WriteLabels, Counter>,
    /// Status writes.
    pub status_writes: Family<WriteLabels, Counter>,
    /// Status comparisons that found the cluster already right.
    pub status_skipped_equal: Counter,
    /// Writes waiting in the queue.
    pub queue_depth: Gauge,
    /// 1 while this replica holds the Lease.
    pub leader: Gauge,
    /// Times this replica acquired the Lease.
    pub leader_acquired: Counter,
    /// Times this replica lost (or gave up) the Lease.
    pub leader_lost: Counter,
}

impl Metrics {
    /// Registers every metric into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("kube");
        r.register("watch_errors", "Watch streams that failed and were restarted", self.watch_errors.clone());
        r.register("relists", "Lists of a resource (initial and after a watch could not resume)", self.relists.clone());
        r.register(
            "invalid_objects",
            "Objects that could not be read; their last good version is used",
            self.invalid_objects.clone(),
        );
        r.register(
            "watched_resources",
            "Resources the cluster serves that are watched",
            self.watched_resources.clone(),
        );
        r.register("applies", "Generated objects applied (server-side apply)", self.applies.clone());
        r.register("deletes", "Stale generated objects deleted", self.deletes.clone());
        r.register("status_writes", "Status writes", self.status_writes.clone());
        r.register(
            "status_skipped_equal",
            "Status comparisons that found the cluster already up to date",
            self.status_skipped_equal.clone(),
        );
        r.register("write_queue_depth", "Writes waiting in the rate-limited queue", self.queue_depth.clone());
        r.register("leader", "1 while this replica holds the leader Lease", self.leader.clone());
        r.register("leader_acquired", "Times this replica acquired the leader Lease", self.leader_acquired.clone());
        r.register("leader_lost", "Times this replica lost or released the leader Lease", self.leader_lost.clone());
    }

    pub(crate) fn kind(kind: impl ToString) -> KindLabels {
        KindLabels { kind: kind.to_string() }
    }

    pub(crate) fn write(kind: impl ToString, result: &str) -> WriteLabels {
        WriteLabels { kind: kind.to_string(), result: result.to_string() }
    }
}
