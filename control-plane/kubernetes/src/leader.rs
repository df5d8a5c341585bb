//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every replica serves proxies and signs certificates; only the holder of
//! the Lease writes to the cluster. Each write of the Lease carries the
//! resourceVersion it was read at, so two candidates racing for an expired
//! Lease cannot both win: the loser gets a 409.
//!
//! Expiry is judged as client-go judges it, by the local time at which this
//! replica last saw the Lease change, never by comparing the holder's
//! `renewTime` with the local clock (clocks of two nodes differ). A leader
//! stops writing one renew interval before its Lease could expire
//! ([`Leadership::until`]), so a slow or failing API server cannot leave two
//! replicas writing at once; the writer checks that deadline before every
//! write.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the control plane's).
    pub namespace: String,
    /// One stable name across versions, so that during an upgrade exactly
    /// one version writes.
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How often a follower looks again.
    pub retry_every: Duration,
}

impl LeaseConfig {
    /// Defaults as client-go's: 15 s Lease, renewed every 5 s, looked at
    /// every 2 s.
    pub fn new(namespace: &str, identity: &str) -> Self {
        LeaseConfig {
            namespace: namespace.to_owned(),
            name: "weft-control-plane".to_owned(),
            identity: identity.to_owned(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// Whether this replica may write, and until when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    /// Writes are allowed until this instant (`None`: not the leader).
    pub until: Option<Instant>,
}

impl Leadership {
    /// Whether writes are allowed now.
    pub fn is_leader(&self) -> bool {
        self.until.is_some_and(|u| Instant::now() < u)
    }
}

/// What this replica last saw of the Lease.
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    /// Local time at which the holder or renew time last changed.
    changed_at: Instant,
}

/// Runs the election until `stop` turns true, then releases the Lease if
/// held. Returns only then: its caller joins it, and a lease task that died
/// must end the process (a replica that silently stopped competing would
/// look healthy while nobody writes).
pub async fn run(
    client: kube::Client,
    config: LeaseConfig,
    leadership: watch::Sender<Leadership>,
    mut stop: watch::Receiver<bool>,
    metrics: Metrics,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let margin = config.renew_every;
    let mut observed: Option<Observed> = None;
    let mut leading_until: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let now = Instant::now();
        let outcome = step(&api, &config, &mut observed, now).await;
        match outcome {
            Ok(true) => {
                let until = now + config.duration.saturating_sub(margin);
                if leading_until.is_none() {
                    tracing::info!(lease = %config.name, identity = %config.identity, "acquired the leader Lease");
                    metrics.leader_acquired.inc();
                    metrics.leader.set(1);
                }
                leading_until = Some(until);
            }
            Ok(false) => {
                if leading_until.take().is_some() {
                    tracing::warn!(lease = %config.name, "lost the leader Lease to another replica");
                    metrics.leader_lost.inc();
                    metrics.leader.set(0);
                }
            }
            Err(e) => {
                tracing::warn!(lease = %config.name, error = %e, "could not read or renew the Lease");
                if leading_until.is_some_and(|u| Instant::now() >= u) {
                    tracing::warn!(lease = %config.name, "stopping writes: the Lease could not be renewed in time");
                    leading_until = None;
                    metrics.leader_lost.inc();
                    metrics.leader.set(0);
                }
            }
        }
        leadership.send_if_modified(|l| {
            let new = Leadership { until: leading_until };
            let changed = *l != new;
            *l = new;
            changed
        });
        let wait = if leading_until.is_some() { config.renew_every } else { config.retry_every };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
    if leading_until.is_some() {
        leadership.send_replace(Leadership::default());
        metrics.leader.set(0);
        metrics.leader_lost.inc();
        match release(&api, &config).await {
            Ok(()) => tracing::info!(lease = %config.name, "released the leader Lease"),
            Err(e) => tracing::warn!(lease = %config.name, error = %e, "could not release the Lease; it expires"),
        }
    }
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn lease_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// One look at the Lease: renews it when held, takes it when free or
/// expired. Returns whether this replica holds it afterwards.
async fn step(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Option<Observed>,
    now: Instant,
) -> Result<bool, kube::Error> {
    let Some(lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(config.name.clone()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(lease_seconds(config.duration)),
                acquire_time: Some(now_micro()),
                renew_time: Some(now_micro()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let changed = observed.as_ref().is_none_or(|o| o.holder != holder || o.renew != spec.renew_time);
    if changed {
        *observed = Some(Observed { holder: holder.clone(), renew: spec.renew_time.clone(), changed_at: now });
    }
    let seen_at = observed.as_ref().map(|o| o.changed_at).unwrap_or(now);
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(config.duration);
    let ours = holder.as_deref() == Some(config.identity.as_str());
    let free = holder.is_none() || now >= seen_at + duration;
    if !ours && !free {
        return Ok(false);
    }
    let mut next = lease.clone();
    let mut s = spec.clone();
    s.holder_identity = Some(config.identity.clone());
    s.lease_duration_seconds = Some(lease_seconds(config.duration));
    s.renew_time = Some(now_micro());
    if !ours {
        s.acquire_time = Some(now_micro());
        s.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    next.spec = Some(s);
    // The read resourceVersion rides along: a concurrent change makes
    // this a 409 instead of a second leader.
    match api.replace(&config.name, &PostParams::default(), &next).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up so another replica takes over at once.
async fn release(api: &Api<Lease>, config: &LeaseConfig) -> Result<(), kube::Error> {
    let Some(lease) = api.get_opt(&config.name).await? else { return Ok(()) };
    let mut next = lease.clone();
    let mut spec = lease.spec.unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    next.spec = Some(spec);
    api.replace(&config.name, &PostParams::default(), &next).await.map(|_| ())
}
