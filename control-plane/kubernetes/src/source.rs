//! The Kubernetes source: keeps one watcher per served resource (starting
//! and stopping them as discovery changes), applies their events to the
//! [`Index`], and hands the control loop a translator snapshot once every
//! watcher has listed, then after each change (debounced, as local mode
//! debounces file events).
//!
//! Nothing is sent before the first complete list: a control plane that
//! has just started must not tell proxies that Services or routes are gone
//! because it has not read them yet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::ApiResource;
use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use weft_translate::Snapshot;

use crate::gate::{self, Served};
use crate::index::{Event, Index, Invalid, Revisions};
use crate::kinds::Resource;
use crate::metrics::Metrics;
use crate::watch::{Tagged, WatchEvent};

/// How long the index must stay quiet before a snapshot is sent.
const QUIET: Duration = Duration::from_millis(100);
/// Send anyway after this long, even while changes keep coming.
const MAX_DELAY: Duration = Duration::from_millis(500);
/// Hints (CRD changes, 404s) within this window cause one discovery.
const HINT_SETTLE: Duration = Duration::from_millis(200);

/// A snapshot for the control loop.
#[derive(Debug)]
pub struct ClusterSnapshot {
    pub snapshot: Snapshot,
    /// Objects that could not be read; their last good version is in the
    /// snapshot.
    pub invalid: Vec<Invalid>,
    /// Every watcher had listed when the snapshot was taken. Only a
    /// complete snapshot may lead to deletions.
    pub complete: bool,
}

/// What the writer follows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    pub revisions: Revisions,
    /// Every active watcher has listed.
    pub synced: bool,
    /// The resources the cluster serves, with the version read.
    pub served: BTreeMap<Resource, ApiResource>,
}

/// The running source.
#[derive(Debug, Clone)]
pub struct Source {
    pub index: Arc<RwLock<Index>>,
    pub state: watch::Receiver<SourceState>,
}

struct Running {
    api_resource: ApiResource,
    incarnation: u64,
    task: JoinHandle<()>,
}

/// Starts the source; snapshots go to `out`. The returned task ends only
/// when `out` is closed.
pub fn spawn(
    client: kube::Client,
    metrics: Metrics,
    out: mpsc::Sender<ClusterSnapshot>,
    tls: Arc<crate::tls::TlsCache>,
) -> (Source, JoinHandle<()>) {
    let index = Arc::new(RwLock::new(Index::new()));
    let (state_tx, state) = watch::channel(SourceState::default());
    let task = tokio::spawn(run(client, metrics, out, index.clone(), state_tx, tls));
    (Source { index, state }, task)
}

struct Loop {
    client: kube::Client,
    metrics: Metrics,
    index: Arc<RwLock<Index>>,
    state: watch::Sender<SourceState>,
    running: BTreeMap<Resource, Running>,
    next_incarnation: u64,
    events: mpsc::Sender<Tagged>,
    discovered_once: bool,
    tls: Arc<crate::tls::TlsCache>,
}

impl Drop for Loop {
    fn drop(&mut self) {
        for r in self.running.values() {
            r.task.abort();
        }
    }
}

async fn run(
    client: kube::Client,
    metrics: Metrics,
    out: mpsc::Sender<ClusterSnapshot>,
    index: Arc<RwLock<Index>>,
    state: watch::Sender<SourceState>,
    tls: Arc<crate::tls::TlsCache>,
) {
    let (events_tx, mut events) = mpsc::channel::<Tagged>(4096);
    let (hints_tx, mut hints) = mpsc::channel::<()>(64);
    let crd_watch = tokio::spawn(gate::watch_crds(client.clone(), hints_tx));
    let _abort_crd_watch = AbortOnDrop(crd_watch);
    let mut l = Loop {
        client,
        metrics,
        index,
        state,
        running: BTreeMap::new(),
        next_incarnation: 1,
        events: events_tx,
        discovered_once: false,
        tls,
    };
    let mut rediscover = tokio::time::interval(gate::REDISCOVER);
    rediscover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut discover_at: Option<Instant> = Some(Instant::now());
    // Inputs revision and invalid objects last sent; None before the first
    // complete snapshot.
    let mut sent: Option<(u64, Vec<Invalid>)> = None;
    let mut pending: Option<(Instant, Instant)> = None; // (first change, last change)
    loop {
        let send_at = pending.map(|(first, last)| (last + QUIET).min(first + MAX_DELAY));
        tokio::select! {
            _ = rediscover.tick() => discover_at = discover_at.or(Some(Instant::now())),
            hint = hints.recv() => {
                if hint.is_some() {
                    discover_at = discover_at.or(Some(Instant::now() + HINT_SETTLE));
                }
            }
            _ = sleep_until(discover_at), if discover_at.is_some() => {
                discover_at = None;
                l.discover().await;
            }
            tagged = events.recv() => {
                let Some(tagged) = tagged else { return };
                if let Some(rediscover_hint) = l.on_event(tagged) {
                    discover_at = discover_at.or(Some(Instant::now() + rediscover_hint));
                }
            }
            _ = sleep_until(send_at), if send_at.is_some() => {
                pending = None;
                let (snapshot, invalid, complete, inputs) = {
                    let index = l.index.read();
                    (index.snapshot(), index.invalid(), index.synced(), index.revisions().inputs)
                };
                let objects = snapshot.len();
                tracing::debug!(objects, invalid = invalid.len(), complete, "sending the cluster snapshot");
                sent = Some((inputs, invalid.clone()));
                if out.send(ClusterSnapshot { snapshot, invalid, complete }).await.is_err() {
                    return;
                }
            }
        }
        // Whatever happened (an event, a discovery that stopped a watch),
        // schedule a snapshot if the inputs moved.
        let (synced, inputs, invalid) = {
            let index = l.index.read();
            (index.synced(), index.revisions().inputs, index.invalid())
        };
        let changed = match &sent {
            // Before the first discovery nothing is known to be watched.
            None => synced && l.discovered_once,
            Some((rev, inv)) => *rev != inputs || *inv != invalid,
        };
        if changed {
            let now = Instant::now();
            // The first complete snapshot goes out at once.
            pending = Some(match (sent.is_none(), pending) {
                (true, _) => (now.checked_sub(MAX_DELAY).unwrap_or(now), now),
                (false, Some((first, _))) => (first, now),
                (false, None) => (now, now),
            });
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Loop {
    /// Applies a watcher's event; returns a delay after which discovery
    /// should run again, when the event calls for it.
    fn on_event(&mut self, tagged: Tagged) -> Option<Duration> {
        let resource = match &tagged.event {
            WatchEvent::NotServed(r) => *r,
            WatchEvent::Index(
                Event::Started(r)
                | Event::Init(r)
                | Event::InitDone(r)
                | Event::Stopped(r)
                | Event::Apply { resource: r, .. }
                | Event::Delete { resource: r, .. },
            ) => *r,
        };
        if self.running.get(&resource).map(|r| r.incarnation) != Some(tagged.incarnation) {
            return None;
        }
        match tagged.event {
            WatchEvent::NotServed(_) => Some(HINT_SETTLE),
            WatchEvent::Index(event) => {
                if let Event::InitDone(r) = &event {
                    tracing::info!(resource = %r, "listed");
                }
                self.index.write().apply(event);
                self.publish_state();
                None
            }
        }
    }

    fn publish_state(&self) {
        let (revisions, synced, invalid) = {
            let index = self.index.read();
            (index.revisions(), index.synced(), index.invalid_counts())
        };
        for kind in crate::kinds::Kind::ALL {
            self.metrics
                .invalid_objects
                .get_or_create(&Metrics::kind(kind))
                .set(invalid.get(&kind).copied().unwrap_or(0) as i64);
        }
        let served = self.running.iter().map(|(r, run)| (*r, run.api_resource.clone())).collect();
        // Pods without a proxy are only looked at periodically: their churn
        // must not wake the writer.
        let revisions = Revisions { observed: 0, ..revisions };
        self.state.send_if_modified(|s| {
            let new = SourceState { revisions, synced, served };
            if *s == new {
                false
            } else {
                *s = new;
                true
            }
        });
    }

    async fn discover(&mut self) {
        let served = match gate::discover(&self.client).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "discovery failed; keeping the watches as they are");
                return;
            }
        };
        self.reconcile(served);
        self.discovered_once = true;
    }

    fn reconcile(&mut self, served: Served) {
        for (resource, choice) in served {
            let current = self.running.get(&resource).map(|r| r.api_resource.version.clone());
            match (current, choice) {
                (None, Some(ar)) => self.start(resource, ar),
                (Some(version), Some(ar)) if version != ar.version => {
                    tracing::info!(%resource, from = %version, to = %ar.version, "served version changed");
                    self.stop(resource);
                    self.start(resource, ar);
                }
                (Some(_), None) => {
                    tracing::info!(%resource, "no longer served by the cluster; its objects are gone");
                    self.stop(resource);
                }
                (None, None) if !self.discovered_once => {
                    tracing::info!(%resource, group = resource.group(), "not served by the cluster (yet)");
                }
                _ => {}
            }
        }
        self.metrics.watched_resources.set(self.running.len() as i64);
        self.publish_state();
    }

    fn start(&mut self, resource: Resource, ar: ApiResource) {
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        tracing::info!(%resource, api_version = %ar.api_version, "watching");
        // Unsynced from now on, not from when the task gets to run: a
        // snapshot taken in between would be missing the resource.
        self.index.write().apply(Event::Started(resource));
        let task = tokio::spawn(crate::watch::run(
            self.client.clone(),
            resource,
            ar.clone(),
            incarnation,
            self.events.clone(),
            self.metrics.clone(),
            self.tls.clone(),
        ));
        self.running.insert(resource, Running { api_resource: ar, incarnation, task });
    }

    fn stop(&mut self, resource: Resource) {
        if let Some(r) = self.running.remove(&resource) {
            r.task.abort();
        }
        self.index.write().apply(Event::Stopped(resource));
    }
}
